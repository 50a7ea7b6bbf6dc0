"""Many scenarios at once: the worst exit status, labels, prefixed lines, N at a time, interrupts passed on.

run_scenario is replaced by a stand-in (no cluster); the threads are real.
"""

from __future__ import annotations

import dataclasses
import io
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import cli, jobs
from harness.errors import Interrupted
from harness.report import RunReport
from harness.runner import ExitStatus, RunOptions, RunResult

S = ExitStatus


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], S.OK),
        ([S.OK, S.OK], S.OK),
        ([S.OK, S.EXPECTATION_FAILED], S.EXPECTATION_FAILED),
        ([S.EXPECTATION_FAILED, S.ENVIRONMENT, S.OK], S.ENVIRONMENT),
        ([S.ENVIRONMENT, S.BAD_INPUT, S.EXPECTATION_FAILED], S.BAD_INPUT),
        ([S.MASKED_BY_EMULATION, S.EXPECTATION_FAILED], S.MASKED_BY_EMULATION),
        ([S.BAD_INPUT, S.INTERRUPTED, S.OK], S.INTERRUPTED),
        ([S.TERMINATED, S.BAD_INPUT], S.TERMINATED),
    ],
)
def test_the_worst_status_wins_and_an_interrupt_wins_over_all(statuses: list[int], expected: int) -> None:
    assert jobs.worst([int(s) for s in statuses]) == int(expected)


@dataclasses.dataclass(frozen=True)
class FakeScenario:
    name: str
    title: str = "a fake"


def batch(*names: str) -> list[jobs.Job]:
    return jobs.label_jobs([FakeScenario(n) for n in names])  # type: ignore[misc]


def test_a_name_given_twice_is_numbered() -> None:
    assert [j.label for j in batch("a", "b", "a")] == ["a", "b", "a#2"]


def result_of(name: str, status: ExitStatus) -> RunResult:
    now = datetime.now(UTC)
    rep = RunReport(
        scenario=name, started=now, finished=now, host_platform="", node_platform="", exit_status=int(status)
    )
    return RunResult(FakeScenario(name), rep, [], [])  # type: ignore[arg-type]


def test_n_at_a_time_each_line_prefixed_and_a_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    running: list[str] = []
    most = [0]
    lock = threading.Lock()

    def fake_run(s: Any, options: RunOptions) -> RunResult:
        with lock:
            running.append(s.name)
            most[0] = max(most[0], len(running))
        options.say(f"==> working on {s.name}")
        time.sleep(0.2)  # stands for a run (no Kubernetes here)
        with lock:
            running.remove(s.name)
        return result_of(s.name, S.EXPECTATION_FAILED if s.name == "c" else S.OK)

    monkeypatch.setattr(jobs, "run_scenario", fake_run)
    stream = io.StringIO()
    out = jobs.Output(stream)

    def options_for(job: jobs.Job, out: jobs.Output) -> RunOptions:
        return RunOptions(report_dir=None, say=lambda line: out.line(job.label, line))

    results, interrupt = jobs.run_jobs(batch("a", "b", "c", "d"), options_for, out, 2)
    assert interrupt is None
    assert most[0] == 2
    assert [r.status for r in results] == [0, 0, 1, 0]
    assert jobs.worst([r.status for r in results]) == 1
    lines = stream.getvalue().splitlines()
    assert "[c] ==> working on c" in lines
    assert all(line.startswith("[") for line in lines)
    table = jobs.summary(results)
    assert table.splitlines()[0].split()[:3] == ["scenario", "status", "s"]
    assert "EXPECTATION_FAILED" in table


def test_an_interrupt_is_passed_on_to_every_run_which_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    cleaned: list[str] = []
    started = threading.Semaphore(0)

    def fake_run(s: Any, options: RunOptions) -> RunResult:
        started.release()
        try:
            while True:
                time.sleep(0.05)  # a run's bounded waits: the interrupt arrives between them
        except KeyboardInterrupt as exc:
            cleaned.append(s.name)
            assert isinstance(exc, Interrupted) and exc.signum == signal.SIGTERM
            return result_of(s.name, S.TERMINATED)

    monkeypatch.setattr(jobs, "run_scenario", fake_run)
    out = jobs.Output(io.StringIO())

    def options_for(job: jobs.Job, out: jobs.Output) -> RunOptions:
        return RunOptions(report_dir=None)

    def interrupt_main() -> None:
        started.acquire()
        started.acquire()
        signal.raise_signal(signal.SIGTERM)

    from harness import signals

    threading.Thread(target=interrupt_main, daemon=True).start()
    with signals.interrupting():
        results, interrupt = jobs.run_jobs(batch("a", "b", "c"), options_for, out, 2)
    assert interrupt is not None
    assert sorted(cleaned) == ["a", "b"]
    assert [r.status for r in results] == [143, 143, 130]  # c never started
    assert results[2].error == "interrupted before it started"
    assert jobs.worst([r.status for r in results] + [signals.exit_status(interrupt)]) == 143


def test_the_cli_takes_many_scenarios_and_jobs() -> None:
    args = cli.build_parser().parse_args(["reproduce", "a.yaml", "b.yaml", "--jobs", "4"])
    assert args.scenario == ["a.yaml", "b.yaml"] and args.jobs == 4
    assert cli.main(["reproduce", "a.yaml", "--jobs", "0"]) == cli.BAD_INPUT


def test_summary_names_a_run_that_never_started(tmp_path: Path) -> None:
    (job,) = batch("a")
    table = jobs.summary([jobs.JobResult(job, None, 0.0, "interrupted before it started")])
    assert "INTERRUPTED" in table and "interrupted before it started" in table
