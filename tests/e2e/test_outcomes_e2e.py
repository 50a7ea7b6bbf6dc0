"""Every outcome this registry-free cluster can produce, classified through the plugin's fixtures.

Each test deploys a one-replica Deployment into a fresh namespace (the ``deploy`` fixture) and
watches it (``expect_outcome``); the assertions are on what a user reads: the outcome, its cause
and the evidence (events, the previous container's log). A foreign-platform image is expected to
crash with "exec format error" only while no emulator for it is registered on the host; when one
is (another test may register QEMU, kernel-wide), it is expected to run under emulation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import outcomes, workload
from harness.cluster import KindCluster
from harness.outcomes import Outcome, Verdict
from harness.platforms import Expectation, Platform, expected_outcome, read_binfmt
from harness.workload import Workload
from scripts.bench_support import node_free_cpu

pytestmark = pytest.mark.e2e

Deploy = Callable[..., Workload]
ExpectOutcome = Callable[..., Verdict]

# An image that no node holds and no registry serves: with IfNotPresent the kubelet tries to pull it.
NEVER_LOADED = "incident-harness/never-loaded:v1"
NO_SUCH_NODE_LABEL = "incident-harness.io/no-such-pool"


def foreign_expectation(foreign: Platform, node_arch: Platform) -> Expectation:
    """What a foreign image does right now on this host (emulation is kernel-wide and may change)."""
    return expected_outcome(foreign, node_arch, read_binfmt())


def test_native_image_is_healthy(
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    deploy: Deploy,
    expect_outcome: ExpectOutcome,
) -> None:
    applied = deploy(httpd_deployment("healthy"), image=httpd_images["native"])
    verdict = expect_outcome(applied, Outcome.HEALTHY, timeout=90)

    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.ready_seen
    assert verdict.restarts == 0
    assert verdict.cause is None
    assert verdict.summary.startswith("healthy after"), verdict.summary
    assert len(verdict.pods) == 1 and verdict.pods[0].startswith("healthy-"), verdict.pods


def test_foreign_image_crash_loops_with_exec_format_error(
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    node_arch: Platform,
    foreign: Platform,
    deploy: Deploy,
    expect_outcome: ExpectOutcome,
) -> None:
    expectation = foreign_expectation(foreign, node_arch)
    applied = deploy(httpd_deployment("foreign"), image=httpd_images["foreign"])
    if expectation is Expectation.EMULATED:
        # The host emulates the foreign CPU: the image runs, and must not pass as plain Healthy.
        verdict = expect_outcome(applied, Outcome.RAN_EMULATED, timeout=90, emulated=True)
        assert verdict.outcome is Outcome.RAN_EMULATED and "emulation" in verdict.summary
        return
    if expectation is not Expectation.EXEC_FORMAT_ERROR:
        pytest.skip(f"{foreign} on {node_arch} here: {expectation.value}, not exec format error")
    # The harness knows the image's platform (it built it): only that lets the cause blame the CPU.
    known = {httpd_images["foreign"]: (str(foreign),)}
    verdict = expect_outcome(applied, Outcome.CRASH_LOOP, timeout=90, image_platforms=known)

    assert verdict.outcome is Outcome.CRASH_LOOP
    assert not verdict.ready_seen
    cause = verdict.cause
    assert cause is not None
    assert cause.exec_format_error, cause
    assert cause.reason == "exec format error"
    assert cause.container == "httpd" and cause.image.endswith(httpd_images["foreign"].split("/", 1)[-1])
    assert cause.exit_code not in (None, 0), cause
    # The previous container's log is the incident's evidence: exec /bin/busybox: exec format error.
    assert any("exec /bin/busybox: exec format error" in line for line in cause.log_lines), cause.log_lines
    assert "exec format error" in verdict.summary and "another CPU architecture" in verdict.summary
    kinds = {e.kind for e in verdict.timeline}
    assert {"state", "log"} <= kinds, kinds


def test_image_never_loaded_is_image_pull_back_off(
    httpd_deployment: Callable[..., list[dict[str, Any]]], deploy: Deploy, expect_outcome: ExpectOutcome
) -> None:
    applied = deploy(httpd_deployment("never-loaded"), image=NEVER_LOADED, pull_policy="IfNotPresent")
    verdict = expect_outcome(applied, Outcome.IMAGE_PULL, timeout=90)

    assert verdict.outcome is Outcome.IMAGE_PULL
    cause = verdict.cause
    assert cause is not None
    assert cause.reason in {"ErrImagePull", "ImagePullBackOff"}, cause
    assert cause.container == "httpd"
    # The kubelet's words name the image it could not pull, in the status message or the events.
    said = " ".join([cause.message, *cause.events])
    assert NEVER_LOADED in said, said
    assert any(e.startswith("Failed:") and "Failed to pull image" in e for e in cause.events), cause.events
    # The summary carries containerd's own reason, not a guess at one.
    assert "failed to pull and unpack image" in verdict.summary or "failed to resolve" in verdict.summary, (
        verdict.summary
    )


def test_impossible_node_selector_is_unschedulable(
    httpd_deployment: Callable[..., list[dict[str, Any]]], deploy: Deploy, expect_outcome: ExpectOutcome
) -> None:
    spec = {"nodeSelector": {NO_SUCH_NODE_LABEL: "true"}}
    applied = deploy(httpd_deployment("nowhere", **spec), image="set-by-test-never-started:v1")
    verdict = expect_outcome(applied, Outcome.UNSCHEDULABLE, timeout=60)

    assert verdict.outcome is Outcome.UNSCHEDULABLE
    cause = verdict.cause
    assert cause is not None
    assert cause.reason == "Unschedulable"
    # The scheduler's message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector..."
    assert "nodes are available" in cause.message and "node affinity/selector" in cause.message, cause.message
    assert "Unschedulable" in verdict.summary
    assert "Running" not in verdict.phases_seen, verdict.phases_seen


def test_expecting_healthy_on_foreign_image_fails_fast_with_the_reason(
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    node_arch: Platform,
    foreign: Platform,
    deploy: Deploy,
    expect_outcome: ExpectOutcome,
) -> None:
    """The watch stops at the first CrashLoopBackOff instead of running out a 120 s clock."""
    if foreign_expectation(foreign, node_arch) is not Expectation.EXEC_FORMAT_ERROR:
        pytest.skip(f"{foreign} runs on this host right now ({read_binfmt().describe()}): nothing fails")
    applied = deploy(httpd_deployment("fail-fast"), image=httpd_images["foreign"])
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        expect_outcome(applied, Outcome.HEALTHY, timeout=120)
    took = time.monotonic() - started

    assert took < 40, f"expect_outcome took {took:.1f} s: it ran out the clock instead of failing fast"
    message = str(failed.value)
    first_line = message.splitlines()[0]
    assert first_line.startswith("expected Healthy, got CrashLoopBackOff"), first_line
    assert "exec format error" in message, message
    assert "no decision within" not in message, message


@pytest.mark.exclusive_cluster  # fills the node's CPU: under xdist, alone on the shared cluster
def test_rollout_on_a_full_node_waits_for_the_replaced_pod_to_free_its_cpu(
    harness_cluster: KindCluster,
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    deploy: Deploy,
    expect_outcome: ExpectOutcome,
) -> None:
    """The new pod of a rollout does not fit until the old one is gone: Pending for a while, then healthy.

    One replica asks for 60 % of the node's free CPU, so the old and the new pod never fit
    together; maxUnavailable=1 deletes the old pod as the new one is made, and a preStop hook
    keeps it terminating (holding its CPU) for some seconds. The scheduler first reports the
    new pod "Insufficient cpu"; the verdict must wait for the old pod to go, not call it
    Unschedulable.
    """
    node = harness_cluster.nodes()[0]
    request = f"{int(node_free_cpu(harness_cluster.core, node) * 0.6)}m"
    docs = httpd_deployment(
        "full-node", terminationGracePeriodSeconds=15, nodeSelector={"kubernetes.io/hostname": node}
    )
    docs[0]["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": request}}
    container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/busybox", "sleep", "6"]}}}
    applied = deploy(docs, image=httpd_images["native"])
    expect_outcome(applied, Outcome.HEALTHY, timeout=90)

    workload.rollout_restart(harness_cluster.apps, applied.namespace, "full-node")
    verdict = outcomes.wait_deployment_available(
        harness_cluster.apps, harness_cluster.core, applied.namespace, "full-node", 120
    )

    said = [e.text for e in verdict.timeline]
    assert verdict.outcome is Outcome.HEALTHY, "\n".join(said)
    assert any("Insufficient cpu" in t for t in said), said  # the new pod really did not fit at first
    assert any("being deleted still hold" in t for t in said), said
