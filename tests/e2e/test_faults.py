"""A node that stops answering while the runner talks to it ends the run with ENVIRONMENT, in bounded time.

The fault is real: the cluster's node container is paused (`docker pause`) right before the
runner creates the namespace, or right before it applies the manifests. A paused node still
accepts TCP connections and never answers; without bounds the run would hang there forever.
After each case the node is unpaused and the cluster must answer again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import tools, workload
from harness.cluster import MANAGED_LABEL, KindCluster
from harness.runner import ExitStatus, RunOptions, api_problem, run_scenario
from harness.scenario import load

pytestmark = pytest.mark.e2e

SEED = Path(__file__).resolve().parents[2] / "scenarios" / "arm64-on-amd64.yaml"
# The API call times out after 30 s at most (REQUEST_TIMEOUT), the supervised apply gives up
# after 15 s of failed probes; the rest is the evidence note and clean-up attempts.
BOUND_SECONDS = 90


@pytest.fixture
def paused_node(harness_cluster: KindCluster) -> Iterator[Callable[[], None]]:
    """pause(): pause every node of the cluster.

    Afterwards the nodes are unpaused, the cluster must answer again, and the namespaces the
    paused runs made are removed: their clean-up could not reach the API server, and a create
    sent just before the pause is carried out by the API server once it runs again.
    """
    docker = tools.docker_binary()
    nodes = harness_cluster.nodes()
    began = datetime.now(UTC)

    def pause() -> None:
        for node in nodes:
            tools.run([docker, "pause", node], timeout=60)

    yield pause
    for node in nodes:
        tools.run([docker, "unpause", node], check=False, timeout=60)
    harness_cluster.wait_ready(timeout=180)
    assert api_problem(harness_cluster.kubeconfig) is None
    for ns in harness_cluster.core.list_namespace(label_selector=f"{MANAGED_LABEL}=true").items:
        if ns.metadata.creation_timestamp >= began.replace(microsecond=0):
            workload.delete_namespace(harness_cluster.core, ns.metadata.name)


@pytest.mark.parametrize(
    ("call", "step"),
    [("create_namespace", "apply workload"), ("apply", "apply workload")],
    ids=["before-namespace", "before-apply"],
)
def test_node_paused_mid_run_ends_with_environment_in_bounded_time(
    call: str,
    step: str,
    harness_cluster: KindCluster,
    paused_node: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    real = getattr(workload, call)
    paused_at: list[float] = []

    def pause_then_call(*args: Any, **kwargs: Any) -> Any:
        paused_node()
        paused_at.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(workload, call, pause_then_call)
    said: list[str] = []
    result = run_scenario(
        load(SEED),
        RunOptions(
            cluster=harness_cluster,
            report_dir=tmp_path / "reports",
            artifacts_dir=tmp_path / "artifacts",
            say=said.append,
        ),
    )
    took = time.monotonic() - paused_at[0]
    print(f"paused {call}: {result.exit_status.name} {took:.1f} s after the pause: {result.report.error}")
    log = "\n".join(said)

    assert result.exit_status is ExitStatus.ENVIRONMENT, log
    error = result.report.error or ""
    assert f"cluster {harness_cluster.name!r} stopped answering" in error and "no verdict" in error, error
    assert "unpause" in error, error
    assert took < BOUND_SECONDS, f"ended {took:.0f} s after the pause\n{log}"
    failed = [s for s in result.report.steps if s.status.value == "failed"]
    assert [s.name for s in failed] == [step], result.report.steps
    assert not result.verdicts, "a paused cluster must give no verdict"
    (evidence,) = result.report.artifacts
    missing = (Path(evidence) / "evidence-missing.txt").read_text()
    assert "paused" in missing, missing
