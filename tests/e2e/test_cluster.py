"""The registry-free path works end to end: a real kind cluster, real images, real probes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import tools
from harness.cluster import KindCluster
from harness.outcomes import Outcome, Verdict
from harness.workload import Workload

pytestmark = pytest.mark.e2e


def test_node_ready_and_system_pods_running(harness_cluster: KindCluster) -> None:
    nodes = harness_cluster.core.list_node().items
    assert nodes, "the cluster has no nodes"
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", f"node {node.metadata.name} is not Ready"
    pods = harness_cluster.core.list_namespaced_pod("kube-system").items
    names = sorted(p.metadata.name for p in pods)
    for component in (
        "etcd-",
        "kube-apiserver-",
        "kube-controller-manager-",
        "kube-scheduler-",
        "coredns-",
        "kube-proxy-",
    ):
        assert any(n.startswith(component) for n in names), f"no {component}* pod in kube-system: {names}"
    not_running = [f"{p.metadata.name}: {p.status.phase}" for p in pods if p.status.phase != "Running"]
    assert not not_running, not_running


def test_images_present_on_node_after_loading(harness_cluster: KindCluster, httpd_images: dict[str, str]) -> None:
    for node in harness_cluster.nodes():
        listed = harness_cluster.node_exec(node, ["crictl", "images"]).stdout
        for ref in httpd_images.values():
            repo, tag = ref.rsplit(":", 1)
            assert repo in listed and tag in listed, f"{ref} not in crictl images on {node}:\n{listed}"


def test_native_httpd_becomes_ready_and_answers(
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    harness_cluster: KindCluster,
    httpd_images: dict[str, str],
    deploy: Callable[..., Workload],
    expect_outcome: Callable[..., Verdict],
) -> None:
    applied = deploy(httpd_deployment("httpd-native"), image=httpd_images["native"])
    verdict = expect_outcome(applied, Outcome.HEALTHY, timeout=90)
    assert verdict.ready_seen
    pod = harness_cluster.core.list_namespaced_pod(applied.namespace, label_selector=applied.selector).items[0]
    node = pod.spec.node_name
    # Ask the pod over the pod network from its node (bash's /dev/tcp: no client in the node needed).
    script = (
        f"exec 3<>/dev/tcp/{pod.status.pod_ip}/8080; printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
    )
    answer = tools.run(["docker", "exec", node, "bash", "-c", script], timeout=30).stdout
    assert "200 OK" in answer and "ok" in answer, answer


def test_foreign_httpd_crash_loops_with_exec_format_error(
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    deploy: Callable[..., Workload],
    expect_outcome: Callable[..., Verdict],
) -> None:
    applied = deploy(httpd_deployment("httpd-foreign"), image=httpd_images["foreign"])
    verdict = expect_outcome(applied, Outcome.CRASH_LOOP, timeout=90)
    assert verdict.cause is not None
    assert verdict.cause.exec_format_error, verdict.summary
    assert any("exec format error" in line for line in verdict.cause.log_lines), verdict.cause.log_lines
    assert not verdict.ready_seen
