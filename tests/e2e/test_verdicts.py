"""Verdicts a Kubernetes engineer would sign: each new rule shown on the real cluster.

Every test deploys into a fresh namespace (the ``deploy`` fixture) and calls watch_workload
directly, so the assertions are on the verdict itself: its outcome, when it was decided, which
evidence decided it, and the cause's words. Timeouts are tight but leave the kubelet room: the
probes here run every 2 s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import outcomes, workload
from harness.cluster import KindCluster
from harness.errors import WatchStopped
from harness.images import Builder
from harness.outcomes import Outcome, Verdict
from harness.outcomes.classify import RESTART_LOOP
from harness.platforms import Expectation, Platform, expected_outcome, read_binfmt
from harness.workload import Workload

pytestmark = pytest.mark.e2e

Deploy = Callable[..., Workload]
HttpdDeployment = Callable[..., list[dict[str, Any]]]

# A shell script without a "#!" line: a shell would run it, the kernel's execve refuses it (ENOEXEC).
NO_SHEBANG_SCRIPT = b"/bin/busybox echo this line is never printed\n"


def watch(
    cluster: KindCluster, applied: Workload, expect: Outcome | set[Outcome], timeout: float, **kw: Any
) -> Verdict:
    return outcomes.watch_workload(
        cluster.core, applied.namespace, applied.selector, expect=expect, timeout=timeout, **kw
    )


def said(verdict: Verdict) -> str:
    return "\n".join(f"{e.elapsed:7.2f} {e.kind:5} {e.subject}: {e.text}" for e in verdict.timeline)


def _ready_at(verdict: Verdict, pod: str) -> float:
    """When the watch saw the pod become Ready (elapsed seconds)."""
    for e in verdict.timeline:
        if e.subject.startswith(f"pod/{pod}") and (e.text == "Ready" or e.text.startswith("Running, ready")):
            return e.elapsed
    raise AssertionError(f"pod {pod} was never seen Ready:\n{said(verdict)}")


def test_liveness_probe_on_a_dead_port_is_never_healthy_but_a_crash_loop(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    """Readiness passes on 8080, liveness asks 9999 where nothing listens: the kubelet kills the container."""
    docs = httpd_deployment("dead-liveness", probes={"livenessProbe": {"port": 9999, "initialDelaySeconds": 2}})
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=90)

    assert verdict.outcome is Outcome.CRASH_LOOP, f"{verdict.summary}\n{said(verdict)}"
    assert verdict.ready_seen, "readiness passed, so the pod was Ready for a while"
    cause = verdict.cause
    assert cause is not None
    assert cause.reason == "liveness probe failed" and cause.probe == "liveness", cause
    assert cause.message.startswith("Liveness probe failed:") and "9999" in cause.message, cause.message
    assert "event Killing on pod/" in cause.evidence, cause.evidence
    assert "liveness" in verdict.probe_failures_seen
    # With a short maximum back-off (the fast profile) the restart may come before the API shows
    # the Waiting reason; the restarts after failures are the crash loop then.
    assert "CrashLoopBackOff" in verdict.waiting_reasons_seen or verdict.restarts >= RESTART_LOOP, verdict
    assert "the kubelet killed the container after its liveness probe failed" in verdict.summary


def test_never_ready_pod_is_not_ready_well_before_the_timeout(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    docs = httpd_deployment("never-ready", probes={"readinessProbe": {"path": "/missing"}})
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=120)

    assert verdict.outcome is Outcome.NOT_READY, f"{verdict.summary}\n{said(verdict)}"
    assert verdict.seconds < 40, f"decided after {verdict.seconds:.1f} s: it waited instead of counting failures"
    cause = verdict.cause
    assert cause is not None and cause.probe == "readiness"
    assert cause.message == "Readiness probe failed: HTTP probe failed with statuscode: 404", cause.message
    assert "Running, 0/1 Ready" in cause.explanation, cause.explanation
    assert "event Unhealthy on pod/" in cause.evidence
    assert verdict.restarts == 0 and not verdict.ready_seen


@pytest.fixture(scope="module")
def no_shebang_image(
    tmp_path_factory: pytest.TempPathFactory,
    image_builder: Callable[..., str],
    httpd_images: dict[str, str],
    node_arch: Platform,
) -> str:
    """A native image (the busybox httpd's, FROM scratch in effect) whose ENTRYPOINT is a script without #!."""
    context = tmp_path_factory.mktemp("no-shebang")
    script = context / "entry.sh"
    script.write_bytes(NO_SHEBANG_SCRIPT)
    os.chmod(script, 0o755)
    (context / "Dockerfile").write_text(
        f'FROM {httpd_images["native"]}\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\n'
    )
    return image_builder(Path(context), node_arch, repository="incident-harness/no-shebang", builder=Builder.CLASSIC)


def test_script_without_shebang_on_a_native_image_is_not_blamed_on_the_architecture(
    harness_cluster: KindCluster,
    httpd_deployment: HttpdDeployment,
    no_shebang_image: str,
    node_arch: Platform,
    deploy: Deploy,
) -> None:
    docs = httpd_deployment("no-shebang")
    applied = deploy(docs, image=no_shebang_image)
    verdict = watch(
        harness_cluster,
        applied,
        Outcome.HEALTHY,
        timeout=90,
        image_platforms={no_shebang_image: (str(node_arch),)},
    )

    assert verdict.outcome in (Outcome.CRASH_LOOP, Outcome.CREATE_ERROR), f"{verdict.summary}\n{said(verdict)}"
    cause = verdict.cause
    assert cause is not None and cause.exec_format_error, cause
    assert not cause.platform_mismatch
    assert cause.explanation == (
        f"exec format error from a {node_arch} image on a {node_arch} node: "
        "the entrypoint is not an executable for this CPU"
    ), cause.explanation
    assert "another CPU architecture" not in verdict.summary, verdict.summary
    assert cause.instance and cause.instance in cause.describe()

    # Without the image's platform the cause says only what was seen.
    again = watch(harness_cluster, applied, {Outcome.CRASH_LOOP, Outcome.CREATE_ERROR}, timeout=30)
    assert again.cause is not None
    assert again.cause.explanation == f"exec format error on a {node_arch} node (image platform unknown)"
    assert "another CPU architecture" not in again.summary


def _job(name: str, backoff_limit: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "manualSelector": True,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "task", "image": "set-by-test"}],
                    },
                },
            },
        }
    ]


def test_job_running_a_foreign_image_fails_after_its_backoff_limit_not_by_timeout(
    harness_cluster: KindCluster,
    httpd_images: dict[str, str],
    node_arch: Platform,
    foreign: Platform,
    deploy: Deploy,
) -> None:
    expectation = expected_outcome(foreign, node_arch, read_binfmt())
    if expectation is not Expectation.EXEC_FORMAT_ERROR:
        pytest.skip(f"{foreign} on {node_arch} here: {expectation.value}, not exec format error")
    applied = deploy(_job("foreign-job", backoff_limit=1), image=httpd_images["foreign"])
    verdict = watch(
        harness_cluster,
        applied,
        Outcome.COMPLETE,
        timeout=120,
        image_platforms={httpd_images["foreign"]: (str(foreign),)},
    )

    assert verdict.outcome is Outcome.FAILED, f"{verdict.summary}\n{said(verdict)}"
    assert len(verdict.pods) == 2, f"backoffLimit 1 means two attempts: {verdict.pods}"
    assert "BackoffLimitExceeded" in verdict.summary, verdict.summary
    cause = verdict.cause
    assert cause is not None and cause.exec_format_error and cause.platform_mismatch, cause
    assert "another CPU architecture" in verdict.summary
    assert verdict.seconds < 100


def test_statefulset_of_two_is_healthy_only_when_both_are_ready(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    docs = httpd_deployment("pair")
    sts = docs[0]
    sts["kind"] = "StatefulSet"
    sts["spec"]["replicas"] = 2
    sts["spec"]["serviceName"] = "pair"
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=120)

    assert verdict.outcome is Outcome.HEALTHY, f"{verdict.summary}\n{said(verdict)}"
    assert set(verdict.pods) == {"pair-0", "pair-1"}
    decided = verdict.seconds
    assert _ready_at(verdict, "pair-1") <= decided and _ready_at(verdict, "pair-0") <= decided
    assert verdict.health is not None
    assert "2 pod(s) Ready" in verdict.health.detail
    assert any("statefulset/pair: 1 of 2 replica(s) Ready" in e.text for e in verdict.timeline), said(verdict)


def test_two_replica_deployment_decides_after_both_ready_and_probe_evidence(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    docs = httpd_deployment("two")
    docs[0]["spec"]["replicas"] = 2
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=120)

    assert verdict.outcome is Outcome.HEALTHY, f"{verdict.summary}\n{said(verdict)}"
    assert len(verdict.pods) == 2
    for pod in verdict.pods:
        assert _ready_at(verdict, pod) <= verdict.seconds
    health = verdict.health
    assert health is not None
    assert health.source == "kubelet prober metrics", health
    for pod in verdict.pods:
        assert f"pod/{pod} container httpd liveness:" in health.detail, health.detail
    assert "evidence: kubelet prober metrics" in verdict.summary
    assert verdict.restarts == 0
    assert verdict.images_ran and all(run.image_id for run in verdict.images_ran)


def _bare_pod(name: str, command: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "task", "image": "set-by-test", "command": command}],
            },
        }
    ]


@pytest.mark.parametrize(
    ("command", "outcome", "exit_code"),
    [(["/bin/busybox", "true"], Outcome.COMPLETE, 0), (["/bin/busybox", "false"], Outcome.FAILED, 1)],
    ids=["succeeds", "fails"],
)
def test_bare_pod_with_restart_policy_never_ends_complete_or_failed(
    harness_cluster: KindCluster,
    httpd_images: dict[str, str],
    deploy: Deploy,
    command: list[str],
    outcome: Outcome,
    exit_code: int,
) -> None:
    applied = deploy(_bare_pod("once", command), image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=60)

    assert verdict.outcome is outcome, f"{verdict.summary}\n{said(verdict)}"
    assert verdict.seconds < 30
    assert verdict.exit_codes_seen == frozenset({exit_code})
    if outcome is Outcome.FAILED:
        assert verdict.cause is not None and verdict.cause.exit_code == 1, verdict.cause
        assert verdict.cause.instance in verdict.summary
    else:
        assert verdict.cause is None and "Complete after" in verdict.summary


def test_daemonset_is_healthy_on_every_node_it_wants(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    docs = httpd_deployment("agent")
    ds = docs[0]
    ds["kind"] = "DaemonSet"
    del ds["spec"]["replicas"]
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=90)

    assert verdict.outcome is Outcome.HEALTHY, f"{verdict.summary}\n{said(verdict)}"
    assert len(verdict.pods) == len(harness_cluster.nodes())
    assert verdict.health is not None and verdict.health.source == "kubelet prober metrics"


def test_stop_ends_a_real_watch_within_a_second_and_leaves_no_thread(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    """Another thread sets stop: the TLS reads of both watch streams are closed, WatchStopped is raised."""
    docs = httpd_deployment("stopped")
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"httpGet": {"path": "/missing", "port": 8080}, "periodSeconds": 2}
    container["livenessProbe"]["initialDelaySeconds"] = 600  # never alive in time: the watch stays undecided
    applied = deploy(docs, image=httpd_images["native"])
    stop = threading.Event()
    timer = threading.Timer(3.0, stop.set)
    before = set(threading.enumerate())
    timer.start()
    started = time.monotonic()
    with pytest.raises(WatchStopped):
        watch(harness_cluster, applied, Outcome.HEALTHY, timeout=120, stop=stop)
    took = time.monotonic() - started
    assert 3.0 <= took < 4.5, f"the watch ended {took - 3.0:.1f} s after stop was set"
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("watching ")]
    assert not left, f"threads still running: {left}"


def test_startup_probe_past_its_threshold_is_a_crash_loop_named_after_the_startup_probe(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    docs = httpd_deployment("dead-startup", probes={"startupProbe": {"port": 9999, "periodSeconds": 1}})
    applied = deploy(docs, image=httpd_images["native"])
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=90)

    assert verdict.outcome is Outcome.CRASH_LOOP, f"{verdict.summary}\n{said(verdict)}"
    cause = verdict.cause
    assert cause is not None
    assert (cause.reason, cause.probe) == ("startup probe failed", "startup"), cause
    assert cause.message.startswith("Startup probe failed:"), cause.message
    assert "startup" in verdict.probe_failures_seen
    assert not verdict.ready_seen


def test_a_rollout_is_not_healthy_while_a_pod_of_the_old_replica_set_still_serves(
    harness_cluster: KindCluster, httpd_deployment: HttpdDeployment, httpd_images: dict[str, str], deploy: Deploy
) -> None:
    """minReadySeconds keeps the old pod serving for a while after the new one is Ready: wait for it to go."""
    docs = httpd_deployment("rolling")
    docs[0]["spec"]["minReadySeconds"] = 6
    docs[0]["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    applied = deploy(docs, image=httpd_images["native"])
    first = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=90)
    assert first.outcome is Outcome.HEALTHY, f"{first.summary}\n{said(first)}"
    old_pod = first.pods[0]

    workload.rollout_restart(harness_cluster.apps, applied.namespace, "rolling")
    verdict = watch(harness_cluster, applied, Outcome.HEALTHY, timeout=90)

    assert verdict.outcome is Outcome.HEALTHY, f"{verdict.summary}\n{said(verdict)}"
    texts = [e.text for e in verdict.timeline]
    assert any("pod(s) of an older ReplicaSet still serving" in t for t in texts), said(verdict)
    gone = next(
        (e.elapsed for e in verdict.timeline if e.subject == f"pod/{old_pod}" and e.text in ("Terminating", "Deleted")),
        None,
    )
    assert gone is not None and gone <= verdict.seconds, said(verdict)
