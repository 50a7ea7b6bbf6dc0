"""A node that stops answering ends the run (CLI door) or the test (plugin door) as an environment
failure, in bounded time: never a Timeout verdict, never a hang.

The fault is real: the cluster's node containers are paused (`docker pause`). A paused node
still accepts TCP connections and never answers. The runner is paused right before it creates
the namespace, or right before it applies the manifests; the plugin's watch is paused mid-watch;
a failed plugin test's evidence is collected while the node is paused. After each case the
nodes are unpaused and the cluster must answer again.

These tests pause the session's cluster: run them on a cluster of their own
(HARNESS_CLUSTER=<name>, which the fixtures create), never on a shared one.
"""

from __future__ import annotations

import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch as k8s_watch

from harness import tools, workload
from harness.cluster import MANAGED_LABEL, KindCluster
from harness.errors import ClusterGone
from harness.outcomes import Outcome, Verdict
from harness.runner import ExitStatus, RunOptions, run_scenario
from harness.scenario import load
from harness.session import CLUSTER_GONE_AFTER, REQUEST_TIMEOUT, Session, api_problem

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive_cluster]  # under xdist: alone on the shared cluster
pytest_plugins = ["pytester"]

CACHE = tools.cache_dir()  # the real cache: pytester points HOME elsewhere
SEED = Path(__file__).resolve().parents[2] / "scenarios" / "arm64-on-amd64.yaml"
# One API call gives up after REQUEST_TIMEOUT's read limit, a supervised call after
# CLUSTER_GONE_AFTER of failed probes; the rest is the evidence note and clean-up attempts.
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
    _wait_untainted(harness_cluster, timeout=180)
    assert api_problem(harness_cluster.kubeconfig) is None
    for ns in harness_cluster.core.list_namespace(label_selector=f"{MANAGED_LABEL}=true").items:
        if ns.metadata.creation_timestamp >= began.replace(microsecond=0):
            workload.delete_namespace(harness_cluster.core, ns.metadata.name)


def _wait_untainted(cluster: KindCluster, timeout: float, settle: float = 15.0) -> None:
    """Watch the nodes until none has carried a node.kubernetes.io/* taint for `settle` seconds.

    After a pause the controller manager (paused with the node) resumes with stale leases: it may
    taint the node unreachable after it is Ready again, and lift the taint a little later. A pod
    created in between is refused by the scheduler, so the next test would be judged on a
    half-recovered node.
    """
    deadline = time.monotonic() + timeout

    def tainted(node: Any) -> list[str]:
        return [t.key for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]

    listed = cluster.core.list_node()
    nodes = {n.metadata.name: tainted(n) for n in listed.items}
    version = listed.metadata.resource_version
    while time.monotonic() < deadline:
        clean = not any(nodes.values())
        wait = settle if clean else deadline - time.monotonic()
        changed = False
        for event in k8s_watch.Watch().stream(
            cluster.core.list_node,
            resource_version=version,
            timeout_seconds=max(1, int(wait)),
            _request_timeout=(10, wait + 15),
        ):
            version = event["object"].metadata.resource_version
            before = any(nodes.values())
            nodes[event["object"].metadata.name] = tainted(event["object"])
            if any(nodes.values()) != before:
                changed = True
                break
        if clean and not changed:
            return
    raise AssertionError(f"nodes still tainted (or not settled) after {timeout:.0f} s: {nodes}")


# -- the plugin door: first, while the node has never been paused (it must schedule a pod)


def test_plugin_watch_of_a_frozen_node_raises_cluster_gone_not_timeout(
    harness_session: Session,
    paused_node: Callable[[], None],
    deploy: Callable[..., workload.Workload],
    expect_outcome: Callable[..., Verdict],
    httpd_images: dict[str, str],
    httpd_deployment: Callable[..., list[dict[str, Any]]],
) -> None:
    """expect_outcome on a node that freezes mid-watch: ClusterGone within bounds, long before the watch's timeout.

    The pod runs but is never Ready (its readiness probe asks for a page that does not exist,
    with a threshold it never reaches), so the watch is still waiting when the node freezes.
    """
    docs = httpd_deployment("frozen", probes={"readinessProbe": {"path": "/nope", "failureThreshold": 1000}})
    applied = deploy(docs, image=httpd_images["native"])
    freeze = threading.Timer(8.0, paused_node)
    freeze.start()
    began = time.monotonic()
    try:
        with pytest.raises(ClusterGone) as gone:
            expect_outcome(applied, Outcome.HEALTHY, timeout=600)
    finally:
        freeze.join()
    took = time.monotonic() - began - 8.0
    print(f"frozen node: ClusterGone {took:.1f} s after the freeze: {gone.value.cause}")
    assert f"cluster {harness_session.cluster.name!r} stopped answering while watching" in gone.value.cause
    assert took < CLUSTER_GONE_AFTER + REQUEST_TIMEOUT[1] + 30, f"took {took:.0f} s"


# -- the CLI door ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "step"),
    [((workload, "create_namespace"), "apply workload"), ((workload, "DynamicClient"), "apply workload")],
    ids=["before-namespace", "before-apply"],
)
def test_node_paused_mid_run_ends_with_environment_in_bounded_time(
    target: tuple[Any, str],
    step: str,
    harness_session: Session,
    paused_node: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    module, name = target
    real = getattr(module, name)
    paused_at: list[float] = []

    def pause_then_call(*args: Any, **kwargs: Any) -> Any:
        paused_node()
        paused_at.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, pause_then_call)
    said: list[str] = []
    result = run_scenario(
        load(SEED),
        RunOptions(
            session=harness_session,
            report_dir=tmp_path / "reports",
            artifacts_dir=tmp_path / "artifacts",
            say=said.append,
        ),
    )
    took = time.monotonic() - paused_at[0]
    print(f"paused before {name}: {result.exit_status.name} {took:.1f} s after the pause: {result.report.error}")
    log = "\n".join(said)

    assert result.exit_status is ExitStatus.ENVIRONMENT, log
    error = result.report.error or ""
    cluster = harness_session.cluster.name
    assert f"cluster {cluster!r} stopped answering" in error and "no verdict" in error, error
    assert "unpause" in error, error
    assert took < BOUND_SECONDS, f"ended {took:.0f} s after the pause\n{log}"
    failed = [s for s in result.report.steps if s.status.value == "failed"]
    assert [s.name for s in failed] == [step], result.report.steps
    assert not result.verdicts, "a paused cluster must give no verdict"
    (evidence,) = result.report.artifacts
    missing = (Path(evidence) / "evidence-missing.txt").read_text()
    assert "paused" in missing, missing


# -- the plugin door: evidence


INNER_TEST = """
import pytest
from harness import tools

pytestmark = pytest.mark.e2e


def test_fails_while_the_node_is_paused(harness_session, harness_namespace):
    for node in harness_session.cluster.nodes():
        tools.run([tools.docker_binary(), "pause", node], timeout=60)
    assert False, "deliberate failure on a paused node"
"""


def test_plugin_evidence_on_a_paused_node_is_bounded_and_says_why(
    harness_cluster: KindCluster,
    paused_node: Callable[[], None],
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A test that fails on a paused node: its evidence is a note naming the paused node, in bounded time."""
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TEST))
    monkeypatch.setenv("HARNESS_CACHE", str(CACHE))
    artifacts = tmp_path / "artifacts"
    began = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p",
        "incident_harness",
        "--harness-keep-cluster",
        "--harness-cluster",
        harness_cluster.name,
        "--harness-artifacts-dir",
        str(artifacts),
        "-p",
        "no:cacheprovider",
        timeout=300,
    )
    took = time.monotonic() - began
    output = result.stdout.str()
    print(f"inner session on a paused node: {took:.1f} s")
    result.assert_outcomes(failed=1)
    found = re.search(r"saved in (\S+)", output)
    assert found, output
    missing = (Path(found.group(1)) / "evidence-missing.txt").read_text()
    assert "paused" in missing and f"{harness_cluster.name}-control-plane" in missing, missing
    assert not (Path(found.group(1)) / "kind-logs").exists(), "kind export logs ran against a paused node"
    assert took < 200, f"the inner session took {took:.0f} s"
