"""The harness's registry on a real kind cluster: push, pull with imagePullPolicy Always, the digest
the node ran, the index without the nodes' platform, the KEP-1755 ConfigMap, a taken port.

Needs the Docker engine and the session's kind cluster (created with the harness's kind config,
so containerd reads /etc/containerd/certs.d). Everything is built here: the registry image from a
static crane binary, the test image from the registry-free busybox httpd. "native" is the nodes'
platform, "foreign" the other of amd64/arm64.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch

from harness import images, tools
from harness.cluster import KindCluster
from harness.errors import ToolError
from harness.platforms import Platform
from harness.registry import (
    CERTS_DIR,
    HOSTING_CONFIGMAP,
    HOSTING_KEY,
    HOSTING_NAMESPACE,
    PORT_IN_CONTAINER,
    PortTaken,
    Registry,
    RegistryGone,
    data_dir,
    hosts_toml,
)
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = pytest.mark.e2e

REPOSITORY = "e2e/httpd"
NO_MATCH = "no match for platform in manifest"


@pytest.fixture(scope="module")
def local_registry(harness_cluster: KindCluster) -> Iterator[Registry]:
    """The harness's registry, started or reused, wired into the session's cluster.

    Pushing through the docker driver leaves a local tag per push; the e2e ones are untagged after.
    """
    registry = Registry.ensure()
    registry.connect(harness_cluster)
    yield registry
    listed = tools.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
    ours = [ref for ref in listed if ref.startswith(f"{registry.host}/e2e/") and ":e2e-" in ref]
    if ours:
        tools.run(["docker", "rmi", *ours], check=False)


@pytest.fixture(scope="module")
def httpd_base(node_arch: Platform) -> str:
    """The registry-free busybox httpd image for the nodes' platform (a local image)."""
    return ensure_busybox_httpd(str(node_arch)).ref


@pytest.fixture
def context(tmp_path: Path, httpd_base: str) -> Path:
    """A build context FROM the busybox httpd with a file unique to this test (a new digest each time)."""
    (tmp_path / "marker").write_text(f"{uuid.uuid4()}\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {httpd_base}\nCOPY marker /www/marker\n")
    return tmp_path


def _tag() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def _pod(name: str, image: str, policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "httpd", "image": image, "imagePullPolicy": policy, "ports": [{"containerPort": 8080}]}
            ],
        },
    }


def _wait_pod(core: k8s.CoreV1Api, namespace: str, name: str, done: Callable[[Any], bool], timeout: float) -> Any:
    """Watch the pod until done(pod) holds; fail with its last status after timeout seconds."""
    deadline = time.monotonic() + timeout
    pod = core.read_namespaced_pod(name, namespace)
    while not done(pod):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"pod {namespace}/{name} did not get there in {timeout:.0f} s: {pod.status}")
        stream = watch.Watch().stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=pod.metadata.resource_version,
            timeout_seconds=max(1, int(min(remaining, 30))),
        )
        for event in stream:
            pod = event["object"]
            if done(pod):
                break
    return pod


def _running(pod: Any) -> bool:
    statuses = pod.status.container_statuses or []
    return bool(statuses) and all(s.state is not None and s.state.running is not None for s in statuses)


def _pull_failed(pod: Any) -> bool:
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff") and waiting.message:
            return True
    return False


def _pulled_seconds(core: k8s.CoreV1Api, namespace: str, name: str, timeout: float = 30) -> float:
    """The kubelet's own pull time for the pod's image, from its Pulled event ("... in 412ms (...)")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},reason=Pulled")
        for event in events.items:
            found = re.search(r"Successfully pulled image \S+ in ((?:[0-9.]+[a-zµ]+)+)", event.message or "")
            if found:
                return _go_duration(found.group(1))
        time.sleep(0.5)  # events are written after the status; a short bounded poll
    pytest.fail(f"no Pulled event for pod {namespace}/{name}")


def _go_duration(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)([a-zµ]+)", text))


# --------------------------------------------------------------------------------------------


def test_registry_is_published_on_loopback_only_on_the_kind_network_and_reused(local_registry: Registry) -> None:
    info = json.loads(tools.run(["docker", "container", "inspect", local_registry.container]).stdout)[0]
    bindings = info["HostConfig"]["PortBindings"][f"{PORT_IN_CONTAINER}/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
    assert "kind" in info["NetworkSettings"]["Networks"]
    assert info["Config"]["Labels"]["incident-harness.io/managed"] == "true"
    assert local_registry.answers()
    started = time.monotonic()
    again = Registry.ensure()
    warm = time.monotonic() - started
    assert again == local_registry
    assert json.loads(tools.run(["docker", "container", "inspect", again.container]).stdout)[0]["Id"] == info["Id"]
    print(f"\nregistry warm start (reuse of the running container): {warm:.2f} s")


def test_every_node_has_hosts_toml_and_the_kep_1755_configmap_is_there(
    harness_cluster: KindCluster, local_registry: Registry
) -> None:
    for node in harness_cluster.nodes():
        text = harness_cluster.node_exec(node, ["cat", f"{CERTS_DIR}/{local_registry.host}/hosts.toml"]).stdout
        assert text == hosts_toml(local_registry.endpoint)
    configmap = harness_cluster.core.read_namespaced_config_map(HOSTING_CONFIGMAP, HOSTING_NAMESPACE)
    hosting = yaml.safe_load(configmap.data[HOSTING_KEY])
    assert hosting["host"] == local_registry.host
    assert hosting["hostFromClusterNetwork"] == local_registry.host_from_cluster_network
    assert hosting["hostFromContainerRuntime"] == local_registry.host_from_cluster_network
    assert hosting["help"].startswith("https://")


def test_a_user_supplied_registry_is_wired_by_the_same_connect(
    harness_cluster: KindCluster, local_registry: Registry
) -> None:
    # The harness's own registry named as a user would name theirs: HOST:PORT on the host's
    # loopback. The nodes reach it through the container that publishes that port.
    user = Registry.ensure(local_registry.host)
    assert not user.managed
    assert (user.host, user.endpoint) == (local_registry.host, local_registry.endpoint)
    user.connect(harness_cluster)
    for node in harness_cluster.nodes():
        text = harness_cluster.node_exec(node, ["cat", f"{CERTS_DIR}/{user.host}/hosts.toml"]).stdout
        assert text == hosts_toml(user.endpoint)


def test_a_pushed_image_is_pulled_with_always_and_the_node_runs_the_pushed_digest(
    harness_cluster: KindCluster, harness_namespace: str, local_registry: Registry, context: Path, node_arch: Platform
) -> None:
    pushed = images.push_build(local_registry, REPOSITORY, _tag(), context, node_arch)
    assert pushed.platforms == (node_arch,) and not pushed.is_index
    assert pushed.digest == local_registry.manifest_digest(REPOSITORY, pushed.tag)
    core = harness_cluster.core
    core.create_namespaced_pod(harness_namespace, _pod("pulled", pushed.ref, "Always"))
    pod = _wait_pod(core, harness_namespace, "pulled", _running, timeout=120)
    status = pod.status.container_statuses[0]
    assert status.image_id == f"{local_registry.host}/{REPOSITORY}@{pushed.digest}", status
    assert pushed.by_digest == status.image_id


def test_an_index_without_the_nodes_platform_fails_to_pull_with_containerds_message(
    harness_cluster: KindCluster,
    harness_namespace: str,
    local_registry: Registry,
    context: Path,
    node_arch: Platform,
    foreign: Platform,
) -> None:
    ensure_busybox_httpd(str(foreign))  # the foreign base for the build
    (context / "Dockerfile").write_text(
        f"FROM {ensure_busybox_httpd(str(foreign)).ref}\nCOPY marker /www/marker\n", encoding="utf-8"
    )
    pushed = images.push_multi(local_registry, REPOSITORY, _tag(), context, [foreign])
    assert pushed.is_index and pushed.media_type == images.OCI_INDEX
    assert pushed.platforms == (foreign,)
    core = harness_cluster.core
    core.create_namespaced_pod(harness_namespace, _pod("no-match", pushed.ref, "Always"))
    pod = _wait_pod(core, harness_namespace, "no-match", _pull_failed, timeout=120)
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    assert NO_MATCH in waiting.message, waiting.message
    assert pod.status.container_statuses[0].restart_count == 0  # never ran: no exec format error


def test_a_two_platform_index_runs_the_nodes_platform_and_reports_the_index_digest(
    harness_cluster: KindCluster,
    harness_namespace: str,
    local_registry: Registry,
    context: Path,
    node_arch: Platform,
    foreign: Platform,
) -> None:
    # One context per platform: the FROM differs (each base exists locally for one platform only).
    contexts = {}
    for platform in (foreign, node_arch):
        directory = context / platform.architecture
        directory.mkdir()
        (directory / "marker").write_text((context / "marker").read_text())
        (directory / "Dockerfile").write_text(
            f"FROM {ensure_busybox_httpd(str(platform)).ref}\nCOPY marker /www/marker\n"
        )
        contexts[platform] = directory
    tag = _tag()
    members = [
        images.push_build(local_registry, REPOSITORY, f"{tag}-{images.platform_slug(p)}", contexts[p], p)
        for p in (foreign, node_arch)
    ]
    index = images.push_index(local_registry, REPOSITORY, tag, members)
    assert index.platforms == (foreign, node_arch)
    core = harness_cluster.core
    core.create_namespaced_pod(harness_namespace, _pod("index", index.ref, "Always"))
    pod = _wait_pod(core, harness_namespace, "index", _running, timeout=120)
    # The kubelet reports the digest it resolved the tag to: the index's, not the platform manifest's.
    assert pod.status.container_statuses[0].image_id == index.by_digest


def test_a_registry_that_died_fails_the_push_with_dockers_lines_and_is_started_again() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = f"registry-e2e-dies-{uuid.uuid4().hex[:6]}"
    registry = Registry.ensure(port=port, name=name)
    try:
        source = ensure_busybox_httpd("linux/amd64").ref
        images.push_local(registry, source, "e2e/dies", "before")
        registry.stop()
        assert not registry.answers()
        with pytest.raises(ToolError) as caught:
            images.push_local(registry, source, "e2e/dies", "after")
        assert "docker push" in caught.value.cause and f"127.0.0.1:{port}" in str(caught.value), str(caught.value)
        with pytest.raises(RegistryGone):
            registry.wait_answering(1)
        again = Registry.ensure(port=port, name=name)
        assert again == registry and again.answers()
    finally:
        registry.remove()
        tools.run(["docker", "rmi", f"{registry.host}/e2e/dies:before", f"{registry.host}/e2e/dies:after"], check=False)
    assert not data_dir(name).exists()


def test_a_port_held_by_another_process_is_a_clear_error_and_nothing_is_started() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import socket, sys, time
                s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen()
                print("listening", flush=True); time.sleep(120)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    name = f"registry-e2e-port-{uuid.uuid4().hex[:6]}"
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "listening"
        with pytest.raises(PortTaken) as caught:
            Registry.ensure(port=port, name=name)
        assert f"port {port}" in caught.value.cause
        assert f"process {holder.pid} (" in caught.value.cause, caught.value.cause
        assert "HARNESS_REGISTRY_PORT" in caught.value.remedy
        assert tools.run(["docker", "container", "inspect", name], check=False).returncode != 0
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_push_carries_the_builders_last_lines(local_registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY not-in-the-context /x\n")
    with pytest.raises(ToolError) as caught:
        images.push_build(local_registry, REPOSITORY, _tag(), tmp_path, Platform("linux", "amd64"))
    assert "not-in-the-context" in str(caught.value), str(caught.value)


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    figures: dict[str, float] = {}
    yield figures
    line = ", ".join(f"{key} {value:.2f} s" for key, value in figures.items() if key != "MB")
    if "MB" in figures:
        line = f"{figures['MB']:.1f} MB: {line}"
    print(f"\n{request.node.name}: {line}")


def _unique_image(directory: Path, megabytes: int, platform: Platform) -> str:
    """A local FROM-scratch image of one layer: megabytes of fresh base64 text (gzip takes ~25 % off).
    Nothing of it exists in the registry or on a node yet, so a delivery moves all of it."""
    directory.mkdir()
    with open(directory / "payload", "wb") as out:
        for _ in range(megabytes):
            out.write(base64.b64encode(os.urandom(786_432)))  # 1 MiB of text
    (directory / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    ref = f"incident-harness/e2e-payload:{megabytes}mb-{uuid.uuid4().hex[:12]}"
    tools.run(
        ["docker", "build", "--platform", str(platform), "-q", "-t", ref, str(directory)],
        env={"DOCKER_BUILDKIT": "0"},
    )
    return ref


@pytest.mark.parametrize("megabytes", [2, 40])
def test_push_and_pull_against_side_loading_an_image_of_the_same_size(
    harness_cluster: KindCluster,
    harness_namespace: str,
    local_registry: Registry,
    node_arch: Platform,
    tmp_path: Path,
    megabytes: int,
    measured: dict[str, float],
) -> None:
    """Two fresh images of equal size, one delivered by push and pull, one by kind load.

    The pod never starts (there is no program in the image): the kubelet's Pulled event gives the
    pull time, which is all a delivery is. Two images, because whatever one delivery leaves on the
    node (content, unpacked snapshots) would shorten the other.
    """
    by_pull, by_load = (_unique_image(tmp_path / w, megabytes, node_arch) for w in ("pull", "load"))
    try:
        measured["MB"] = float(megabytes)
        started = time.monotonic()
        pushed = images.push_local(local_registry, by_pull, "e2e/payload", _tag())
        measured["push"] = time.monotonic() - started
        harness_cluster.core.create_namespaced_pod(harness_namespace, _pod("by-pull", pushed.ref, "Always"))
        measured["kubelet pull"] = _pulled_seconds(harness_cluster.core, harness_namespace, "by-pull", timeout=300)
        measured["push+pull"] = measured["push"] + measured["kubelet pull"]
        started = time.monotonic()
        harness_cluster.load_image(by_load)
        measured["kind load"] = time.monotonic() - started
    finally:
        tools.run(["docker", "rmi", by_pull, by_load], check=False)
