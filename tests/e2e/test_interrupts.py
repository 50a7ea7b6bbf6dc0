"""Ctrl-C, SIGTERM and SIGHUP during a reproduction: `python -m harness reproduce` stops, cleans up, reports.

The CLI runs in a process group of its own and gets the signal as from a terminal (SIGINT, SIGHUP)
or from `timeout` or a CI cancel (SIGTERM, to the whole group). It must end with 130, 143 or 129
(never a traceback, never SIGABRT from threads left behind), write a report that names the step it
stopped in, and remove its namespace, or keep it with --keep-namespace.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness import workload
from harness.cluster import KindCluster
from harness.runner import ExitStatus
from harness.tools import REPO_ROOT
from scripts.bench_support import LiveProcess

pytestmark = pytest.mark.e2e

SEED = REPO_ROOT / "scenarios" / "arm64-on-amd64.yaml"


def _watching(run: LiveProcess) -> bool:
    """Wait until the watch reports a pod state."""
    return bool(
        run.expect(lambda line: "==> watch:" in line, timeout=180)
        and run.expect(lambda line: " state " in line, timeout=60)
    )


def _interrupted_run(
    harness_cluster: KindCluster,
    tmp_path: Path,
    *extra: str,
    signum: int = signal.SIGINT,
    when: Callable[[LiveProcess], bool] = _watching,
) -> tuple[int | None, float, str, str]:
    """Start a reproduction, signal it once `when` says; (exit status, seconds to exit, namespace, output)."""
    run = LiveProcess(
        [
            sys.executable,
            "-m",
            "harness",
            "reproduce",
            str(SEED),
            "--cluster-name",
            harness_cluster.name,
            "--report-dir",
            str(tmp_path / "reports"),
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
            *extra,
        ],
        cwd=REPO_ROOT,
    )
    try:
        assert when(run), "\n".join(run.output)
        sent = run.signal(signum)
        status = run.wait(timeout=30)
        took = run.lines[-1][0] - (sent - run.started) if run.lines else 0.0
    finally:
        run.kill()
    output = "\n".join(run.output)
    found = re.search(r"namespace (\S+), watching", output)
    return status, took, found.group(1) if found else "", output


def _namespace_phase(harness_cluster: KindCluster, name: str) -> str | None:
    try:
        return str(harness_cluster.core.read_namespace(name).status.phase)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_interrupt_during_the_watch_removes_the_namespace(harness_cluster: KindCluster, tmp_path: Path) -> None:
    status, took, namespace, output = _interrupted_run(harness_cluster, tmp_path)
    assert status == ExitStatus.INTERRUPTED, output
    assert took < 5, f"{took:.1f} s from SIGINT to the last line\n{output}"
    assert "error: interrupted" in output and "Traceback" not in output, output
    assert namespace and _namespace_phase(harness_cluster, namespace) in (None, "Terminating"), output


@pytest.mark.parametrize("attempt", range(3))
def test_interrupt_with_keep_namespace_exits_130_and_keeps_it(
    attempt: int, harness_cluster: KindCluster, tmp_path: Path
) -> None:
    """Repeated: the abandoned watch's threads once made about one such exit in five a SIGABRT."""
    status, took, namespace, output = _interrupted_run(harness_cluster, tmp_path, "--keep-namespace")
    try:
        assert status == ExitStatus.INTERRUPTED, f"exit status {status}\n{output}"
        assert took < 5, f"{took:.1f} s from SIGINT to the last line\n{output}"
        assert namespace and _namespace_phase(harness_cluster, namespace) == "Active", output
    finally:
        if namespace:
            workload.delete_namespace(harness_cluster.core, namespace)


def _report(tmp_path: Path) -> dict[str, Any]:
    (path,) = (tmp_path / "reports").glob("*.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _step_begins(prefix: str) -> Callable[[LiveProcess], bool]:
    return lambda run: run.expect(lambda line: line.startswith(f"==> {prefix}"), timeout=240) is not None


# The phase, when to send the signal, and the steps the run may be in by the time it arrives: a
# cached build can end within the moment between the line and the signal.
PHASES = {
    "build": (_step_begins("build"), ("build ", "load ")),
    "apply": (_step_begins("apply workload"), ("apply workload", "watch: ")),
    "watch": (_watching, ("watch: ",)),
}


@pytest.mark.parametrize(
    ("phase", "signum"),
    [("build", signal.SIGTERM), ("apply", signal.SIGTERM), ("watch", signal.SIGTERM), ("watch", signal.SIGHUP)],
)
def test_sigterm_and_sighup_clean_up_report_the_step_and_exit_143_or_129(
    phase: str, signum: signal.Signals, harness_cluster: KindCluster, tmp_path: Path
) -> None:
    when, steps = PHASES[phase]
    status, took, namespace, output = _interrupted_run(harness_cluster, tmp_path, signum=signum, when=when)
    assert status == 128 + signum, f"exit status {status}\n{output}"
    assert took < 10, f"{took:.1f} s from {signum.name} to the last line\n{output}"
    assert "Traceback" not in output, output
    report = _report(tmp_path)
    assert report["exit_status"] == 128 + signum
    failed = [s for s in report["steps"] if s["status"] == "failed"]
    assert failed, report["steps"]
    stopped = failed[-1]["name"]
    assert stopped.startswith(steps), f"stopped in {stopped!r}, expected one of {steps}\n{output}"
    assert report["error"] == f"interrupted by {signum.name} during step '{stopped}'"
    assert f"error: interrupted by {signum.name} during step '{stopped}'" in output
    namespace = report["facts"].get("namespace", namespace)
    if namespace:  # created before the signal came: removed since (or going)
        assert _namespace_phase(harness_cluster, namespace) in (None, "Terminating"), output
