"""Ctrl-C during a reproduction: `python -m harness reproduce` stops at once with exit status 130.

The CLI runs in a process group of its own and gets SIGINT, as from a terminal, while it watches
the pods; it must end with 130 (never a traceback, never SIGABRT from threads left behind), and
remove its namespace, or keep it with --keep-namespace.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from harness import workload
from harness.cluster import KindCluster
from harness.runner import ExitStatus
from harness.tools import REPO_ROOT
from scripts.bench_support import LiveProcess

pytestmark = pytest.mark.e2e

SEED = REPO_ROOT / "scenarios" / "arm64-on-amd64.yaml"


def _interrupted_run(harness_cluster: KindCluster, tmp_path: Path, *extra: str) -> tuple[int | None, float, str, str]:
    """Start a reproduction, SIGINT it once a pod state shows; (exit status, seconds to exit, namespace, output)."""
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
        assert run.expect(lambda line: "==> watch:" in line, timeout=180), "\n".join(run.output)
        assert run.expect(lambda line: " state " in line, timeout=60), "\n".join(run.output)
        sent = run.signal()
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
