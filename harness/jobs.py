"""Many scenarios on one session, N at a time: `python -m harness reproduce A.yaml B.yaml --jobs N`.

Each scenario runs in a thread of its own, in its own namespace, with its own report; the
session (one cluster) is shared, and its capacity gate admits them by the nodes' room. Every
line a run prints is prefixed with its scenario's name. The exit status is the worst: an
interrupt wins, then BAD_INPUT > ENVIRONMENT > MASKED_BY_EMULATION > EXPECTATION_FAILED > OK.

Ctrl-C (or SIGTERM, SIGHUP) in the main thread is passed on to every run still going, as the
same interrupt raised in its thread: each cleans up its own namespace and writes its report
("interrupted during step ..."); the session's clean-up then removes whatever is left.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from harness import report, signals
from harness.errors import Interrupted
from harness.outcomes import Evidence
from harness.runner import ExitStatus, RunOptions, RunResult, run_scenario
from harness.scenario import Scenario

INTERRUPTED_JOIN_SECONDS = 90.0  # after an interrupt, the runs are given this long to clean up
_RANK = {
    ExitStatus.OK: 0,
    ExitStatus.EXPECTATION_FAILED: 1,
    ExitStatus.MASKED_BY_EMULATION: 2,
    ExitStatus.ENVIRONMENT: 3,
    ExitStatus.BAD_INPUT: 4,
}


def _rank(status: int) -> int:
    try:
        return _RANK.get(ExitStatus(status), len(_RANK))  # an interrupt (129, 130, 143) outranks them all
    except ValueError:
        return len(_RANK)


def worst(statuses: Sequence[int]) -> int:
    """The exit status of many runs: an interrupt wins, then BAD_INPUT > ENVIRONMENT > MASKED > EXPECTATION_FAILED > OK."""
    return max(statuses, key=_rank, default=int(ExitStatus.OK))


@dataclass(frozen=True)
class Job:
    """One scenario of a batch, and the label its lines are prefixed with (unique in the batch)."""

    scenario: Scenario
    label: str


def label_jobs(scenarios: Sequence[Scenario]) -> list[Job]:
    """Jobs labelled by scenario name; a name given twice is numbered (name#2)."""
    seen: dict[str, int] = {}
    jobs = []
    for s in scenarios:
        seen[s.name] = seen.get(s.name, 0) + 1
        jobs.append(Job(s, s.name if seen[s.name] == 1 else f"{s.name}#{seen[s.name]}"))
    return jobs


class Output:
    """Whole lines to one stream from many threads, each prefixed; muted once the batch is over."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.muted = False

    def line(self, prefix: str, text: str) -> None:
        with self.lock:
            if self.muted:
                return
            for part in text.splitlines() or [""]:
                self.stream.write(f"[{prefix}] {part}\n")
            self.stream.flush()


@dataclass
class JobResult:
    """One job's end: its result (None if it never started), its time, and an error outside the run."""

    job: Job
    result: RunResult | None = None
    seconds: float = 0.0
    error: str = ""
    began: float | None = None  # time.monotonic() when it got its slot
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def status(self) -> int:
        if self.result is not None:
            return int(self.result.exit_status)
        return int(ExitStatus.INTERRUPTED) if "interrupted" in self.error else int(ExitStatus.ENVIRONMENT)


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise exc_type in another thread (at its next Python instruction)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _interrupt_type(signum: int) -> type[Interrupted]:
    """An Interrupted for signum that can be raised by type (as another thread's interrupt)."""

    class Passed(Interrupted):
        def __init__(self, *_args: object) -> None:
            super().__init__(signum)

    return Passed


def run_jobs(
    jobs: Sequence[Job],
    options_for: Callable[[Job, Output], RunOptions],
    out: Output,
    parallel: int,
) -> tuple[list[JobResult], KeyboardInterrupt | None]:
    """Run the jobs, at most `parallel` at once; on an interrupt, pass it on to the runs, and return it."""
    slots = threading.Semaphore(max(parallel, 1))
    outcomes = [JobResult(job) for job in jobs]
    stopping = threading.Event()

    def work(outcome: JobResult) -> None:
        signals.leave_to_main_thread()
        try:
            while not slots.acquire(timeout=0.5):  # a timed wait: an interrupt passed on is seen
                if stopping.is_set():
                    outcome.error = "interrupted before it started"
                    return
            outcome.began = time.monotonic()  # its own time, not the wait for a slot
            try:
                out.line(outcome.job.label, f"scenario {outcome.job.scenario.name}: {outcome.job.scenario.title}")
                outcome.result = run_scenario(outcome.job.scenario, options_for(outcome.job, out))
            finally:
                slots.release()
        except KeyboardInterrupt:
            outcome.error = outcome.error or (
                "interrupted before it started" if outcome.began is None else "interrupted; no report"
            )
        except Exception as exc:  # noqa: BLE001 - a bug in one run must not hide the others
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            outcome.seconds = time.monotonic() - outcome.began if outcome.began is not None else 0.0
            outcome.done.set()

    threads = [
        threading.Thread(target=work, args=(o,), name=f"harness job {o.job.label}", daemon=True) for o in outcomes
    ]
    # The main thread waits on events, never in Thread.join: an interrupt inside join() marks the
    # thread joined as stopped though it still runs (CPython 3.11's _wait_for_tstate_lock).
    try:
        for thread in threads:
            thread.start()
        for o in outcomes:
            while not o.done.wait(0.5):
                pass
    except KeyboardInterrupt as exc:
        stopping.set()
        interrupt = _interrupt_type(signals.as_interrupted(exc).signum)
        for thread, o in zip(threads, outcomes, strict=True):
            if not o.done.is_set():
                _raise_in(thread, interrupt)
        deadline = time.monotonic() + INTERRUPTED_JOIN_SECONDS
        try:
            for thread, o in zip(threads, outcomes, strict=True):
                if thread.ident is not None:  # started
                    o.done.wait(max(deadline - time.monotonic(), 0.0))
        except KeyboardInterrupt:
            pass  # a second interrupt: leave what is left to the session's clean-up
        for o in outcomes:
            if o.result is None and not o.error:
                if o.began is None:
                    o.error = "interrupted before it started"
                else:  # interrupted twice: its clean-up was cut short, the session's removes what is left
                    o.error = "interrupted; no report (a second interrupt cut its clean-up short)"
                    o.seconds = time.monotonic() - o.began
        return outcomes, exc
    return outcomes, None


def summary(outcomes: Sequence[JobResult]) -> str:
    """The table printed at the end: one row per scenario."""
    rows = [("scenario", "status", "s", "verdict", "report")]
    for o in outcomes:
        if o.result is not None:
            verdict = o.result.report.headline()
            path = str(o.result.report_paths[0]) if o.result.report_paths else "-"
        else:
            verdict, path = o.error or "no result", "-"
        rows.append((o.job.label, ExitStatus(o.status).name, f"{o.seconds:.1f}", verdict, path))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )


def evidence_printer(out: Output, label: str) -> Callable[[Evidence], None]:
    """An on_evidence callback printing each line of the live timeline with the job's prefix."""

    def show(e: Evidence) -> None:
        out.line(label, report.format_evidence(e))

    return show


__all__ = ["Job", "JobResult", "Output", "evidence_printer", "label_jobs", "run_jobs", "summary", "worst"]
