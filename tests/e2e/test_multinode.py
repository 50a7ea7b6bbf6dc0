"""Two nodes: the node image's CNI agent routes pod traffic across nodes, and workers join."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from harness import outcomes, platforms, tools, workload
from harness.cluster import KindCluster, default_name
from harness.errors import HarnessError
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_nodes(request: pytest.FixtureRequest) -> Iterator[KindCluster]:
    cluster = KindCluster(
        name=f"{default_name()}-2n",
        workers=1,
        node_image=request.config.getoption("--harness-node-image"),
        kind_bin=request.config.getoption("--harness-kind-bin"),
    )
    try:
        tools.ensure_engine()
    except HarnessError as exc:
        pytest.skip(f"no kind cluster possible here: {exc.cause}")
    cluster.create()
    yield cluster
    cluster.delete()


def test_worker_joins_and_pods_reach_each_other_across_nodes(two_nodes: KindCluster) -> None:
    nodes = two_nodes.core.list_node().items
    assert len(nodes) == 2, [n.metadata.name for n in nodes]
    native = platforms.node_platform(two_nodes.core.api_client.sanitize_for_serialization(nodes[0]))
    ref = ensure_busybox_httpd(str(native)).ref
    two_nodes.load_image(ref)

    namespace = workload.create_namespace(two_nodes.core, "multinode")
    try:
        daemonset = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "httpd"},
            "spec": {
                "selector": {"matchLabels": {"app": "httpd"}},
                "template": {
                    "metadata": {"labels": {"app": "httpd"}},
                    "spec": {
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {
                                "name": "httpd",
                                "image": ref,
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
                            }
                        ],
                    },
                },
            },
        }
        docs = workload.render([daemonset], namespace=namespace, pull_policy="IfNotPresent")
        applied = workload.apply(two_nodes.api_client(), docs)
        verdict = outcomes.watch_workload(
            two_nodes.core, namespace, applied.selector, expect=outcomes.Outcome.HEALTHY, timeout=90, min_pods=2
        )
        assert verdict.outcome is outcomes.Outcome.HEALTHY, verdict.summary

        pods = two_nodes.core.list_namespaced_pod(namespace, label_selector=applied.selector).items
        assert {p.spec.node_name for p in pods} == {n.metadata.name for n in nodes}
        for node in two_nodes.nodes():
            for pod in pods:
                script = (
                    f"exec 3<>/dev/tcp/{pod.status.pod_ip}/8080; "
                    "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
                )
                answer = two_nodes.node_exec(node, ["bash", "-c", script], check=False, timeout=30)
                assert "200 OK" in answer.stdout, (
                    f"{node} could not reach pod {pod.metadata.name} ({pod.status.pod_ip}) on {pod.spec.node_name}: "
                    f"{answer.stdout or answer.stderr}"
                )
    finally:
        workload.delete_namespace(two_nodes.core, namespace)


def _free_address(network: str) -> str:
    """An IPv4 address of the engine's network that no container holds (from the top of its subnet)."""
    docker = tools.docker_binary()
    info = json.loads(tools.run([docker, "network", "inspect", network], timeout=60).stdout)[0]
    subnet = next(ipaddress.ip_network(c["Subnet"]) for c in info["IPAM"]["Config"] if ":" not in c.get("Subnet", ":"))
    held = {
        str(ipaddress.ip_interface(c["IPv4Address"]).ip) for c in info["Containers"].values() if c.get("IPv4Address")
    }
    return next(str(ip) for ip in reversed(list(subnet.hosts())) if str(ip) not in held)


def test_a_cluster_whose_node_came_back_at_another_address_is_made_again(
    two_nodes: KindCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last (it re-makes the cluster): the engine gave the worker another address, as after a restart of the
    engine with several clusters; kubeadm pinned the old one, so reusing the cluster cannot work."""
    docker = tools.docker_binary()
    worker = f"{two_nodes.name}-worker"
    address = _free_address("kind")
    tools.run([docker, "network", "disconnect", "kind", worker], timeout=60)
    tools.run([docker, "network", "connect", "--ip", address, "kind", worker], timeout=60)
    capsys.readouterr()

    again = KindCluster(name=two_nodes.name, workers=1, node_image=two_nodes.node_image, kind_bin=two_nodes.kind_bin)
    again.create()

    said = capsys.readouterr().out
    assert f"cluster {two_nodes.name}: its nodes' addresses changed since it was made ({worker}: made at " in said
    assert f", now at {address})" in said and "deleting it and creating it again" in said, said
    assert not again.reused
    ready = [
        n
        for n in again.core.list_node().items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
    ]
    assert len(ready) == 2, [n.metadata.name for n in again.core.list_node().items]
