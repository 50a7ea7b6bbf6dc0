"""Ctrl-C, SIGTERM and SIGHUP during a reproduction: `python -m harness reproduce` stops, cleans up, reports.

The CLI runs in a process group of its own and gets the signal as from a terminal (SIGINT, SIGHUP)
or from `timeout` or a CI cancel (SIGTERM, to the whole group). It must end with 130, 143 or 129
(never a traceback, never SIGABRT from threads left behind), write a report that names the step it
stopped in, and remove its namespace, or keep it with --keep-namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness import engine, tools, workload
from harness.cluster import KindCluster, creation_record
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
            "--profile",
            harness_cluster.profile.value,
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
    if failed:
        stopped = failed[-1]["name"]
        assert stopped.startswith(steps), f"stopped in {stopped!r}, expected one of {steps}\n{output}"
        where = f"during step '{stopped}'"
    else:
        # The signal came between a step's "==> name" line and its start (the runner announces a
        # step before it records it): the report names the last step that ended.
        where = f"after step '{report['steps'][-1]['name']}'"
    assert report["error"] == f"interrupted by {signum.name} {where}"
    assert f"error: interrupted by {signum.name} {where}" in output
    print(f"{signum.name} in phase {phase}: stopped {where}, exit {status}, {took:.1f} s")
    namespace = report["facts"].get("namespace", namespace)
    if namespace:  # created before the signal came: removed since (or going)
        assert _namespace_phase(harness_cluster, namespace) in (None, "Terminating"), output


def test_sigterm_while_kind_creates_the_cluster_deletes_the_half_made_cluster(tmp_path: Path) -> None:
    """A cluster of the test's own: its node exists but kind has not yet written the node's labels.

    The harness recorded that it was creating the cluster before kind made the container, so it
    knows the half-made node is its own and deletes it; nothing of the cluster is left.
    """
    name = f"safety-half-{os.getpid() % 1000:03d}"
    node = f"{name}-control-plane"
    kind = tools.kind_binary()
    run = LiveProcess(
        [
            sys.executable,
            "-m",
            "harness",
            "reproduce",
            str(SEED),
            "--cluster-name",
            name,
            "--report-dir",
            str(tmp_path / "reports"),
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
        ],
        cwd=REPO_ROOT,
    )
    try:
        assert run.expect(lambda line: line.startswith("==> cluster"), timeout=120), "\n".join(run.output)
        deadline = time.monotonic() + 120
        while engine.container(node) is None and time.monotonic() < deadline:
            threading.Event().wait(0.2)
        assert engine.container(node) is not None, "\n".join(run.output)
        run.signal(signal.SIGTERM)
        status = run.wait(timeout=150)
        output = "\n".join(run.output)
        assert status == ExitStatus.TERMINATED, f"exit status {status}\n{output}"
        assert "deleting the half-made cluster" in output, output
        assert _report(tmp_path)["error"] == "interrupted by SIGTERM during step 'cluster'"
        assert engine.containers(f"io.x-k8s.kind.cluster={name}") == [], output
        assert name not in tools.run([kind, "get", "clusters"], timeout=60).stdout.split()
        assert not creation_record(name).exists()  # forgotten once nothing of the cluster is left
    finally:
        run.kill()
        if engine.containers(f"io.x-k8s.kind.cluster={name}"):
            tools.run([kind, "delete", "cluster", "--name", name, "--kubeconfig", str(tmp_path / "kc")], check=False)
