"""The registry's pure parts: hosts.toml, the KEP-1755 ConfigMap, config_path, ports, index JSON."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from harness import images, registry
from harness.cluster import KindCluster
from harness.errors import HarnessError
from harness.images import OCI_INDEX, PushedImage, index_manifest, push_index
from harness.platforms import Platform
from harness.registry import (
    CONTAINERD_CONFIG_PATCH,
    Manifest,
    PortOwner,
    Registry,
    check_config_path,
    hosting_configmap,
    hosts_toml,
    listening_inodes,
    published_port,
    socket_owner,
)

ROOT = Path(__file__).resolve().parents[2]
NODE_CONTAINERD_CONFIG = ROOT / "hermetic" / "node" / "rootfs" / "etc" / "containerd" / "config.toml"
MANAGED = Registry(
    host="localhost:5001",
    endpoint="http://incident-harness-registry:5000",
    api="http://127.0.0.1:5001",
    container="incident-harness-registry",
)


def test_hosts_toml_points_the_pods_name_at_the_endpoint_nodes_reach() -> None:
    text = hosts_toml(MANAGED.endpoint)
    assert text == (
        'server = "http://incident-harness-registry:5000"\n'
        "\n"
        '[host."http://incident-harness-registry:5000"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    parsed = tomllib.loads(text)
    assert parsed["host"]["http://incident-harness-registry:5000"]["capabilities"] == ["pull", "resolve"]


def test_hosts_toml_keeps_tls_and_drops_paths() -> None:
    assert tomllib.loads(hosts_toml("https://registry.example:443/v2/"))["server"] == "https://registry.example:443"


@pytest.mark.parametrize("endpoint", ["registry:5000", "ftp://registry:5000", "http://"])
def test_hosts_toml_refuses_what_is_not_an_http_url(endpoint: str) -> None:
    with pytest.raises(HarnessError, match="not an http"):
        hosts_toml(endpoint)


def test_local_registry_hosting_configmap_has_the_kep_1755_fields() -> None:
    body = hosting_configmap(MANAGED)
    assert body["metadata"]["name"] == "local-registry-hosting"
    assert body["metadata"]["namespace"] == "kube-public"
    assert body["metadata"]["labels"] == {"incident-harness.io/managed": "true"}
    document = yaml.safe_load(body["data"]["localRegistryHosting.v1"])
    assert document == {
        "host": "localhost:5001",
        "hostFromContainerRuntime": "incident-harness-registry:5000",
        "hostFromClusterNetwork": "incident-harness-registry:5000",
        "help": "https://kind.sigs.k8s.io/docs/user/local-registry/",
    }


def test_the_containerd_patch_applies_to_the_node_images_config() -> None:
    # kind merges the patch into the node's config.toml; the node image's config has no registry
    # table yet, so the merge equals appending it. It must parse and set config_path.
    merged = NODE_CONTAINERD_CONFIG.read_text() + "\n" + CONTAINERD_CONFIG_PATCH
    check_config_path("node", merged, "c")
    assert tomllib.loads(merged)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == (
        "/etc/containerd/certs.d"
    )


def test_kind_config_carries_the_containerd_patch() -> None:
    config = KindCluster(name="unit", kubeconfig=Path("/nonexistent/kubeconfig")).kind_config()
    assert config["containerdConfigPatches"] == [CONTAINERD_CONFIG_PATCH]


def test_a_node_without_config_path_is_a_clear_error() -> None:
    with pytest.raises(HarnessError) as caught:
        check_config_path("c-control-plane", NODE_CONTAINERD_CONFIG.read_text(), "c")
    assert "no config_path /etc/containerd/certs.d" in caught.value.cause
    assert "cluster delete --name c" in caught.value.remedy


def test_config_path_may_be_one_of_several() -> None:
    text = (
        '[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/etc/docker/certs.d:/etc/containerd/certs.d"\n'
    )
    check_config_path("n", text, "c")


# /proc/net/tcp as Linux prints it: 127.0.0.1:5001 listening (0A), one established connection
# to the same port, and 0.0.0.0:22 listening.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1389 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 20 4 30 10 -1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1389 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
"""


def test_listening_inodes_reads_listeners_of_the_port_only() -> None:
    assert listening_inodes(PROC_NET_TCP, 5001) == {424242}
    assert listening_inodes(PROC_NET_TCP, 22) == {1111}
    assert listening_inodes(PROC_NET_TCP6, 5001) == {777}
    assert listening_inodes(PROC_NET_TCP, 5002) == set()
    assert listening_inodes("garbage\nmore garbage\n", 5001) == set()


def test_socket_owner_finds_the_process_holding_the_inode(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, inode, cmdline in ((41, 9, b"sshd\0"), (42, 424242, b"python3\0-m\0http.server\x005001\0")):
        (proc / str(pid) / "fd").mkdir(parents=True)
        os.symlink(f"socket:[{inode}]", proc / str(pid) / "fd" / "3")
        (proc / str(pid) / "cmdline").write_bytes(cmdline)
    (proc / "self").mkdir()
    assert socket_owner({424242}, proc) == (42, "python3 -m http.server 5001")
    assert socket_owner({1}, proc) is None
    assert socket_owner(set(), proc) is None


def test_a_real_listener_is_found_in_this_machines_proc() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inodes = listening_inodes(Path("/proc/net/tcp").read_text(), port)
        assert inodes
        owner = socket_owner(inodes)
        assert owner is not None and owner[0] == os.getpid()
        assert not registry.port_free(port)
    assert registry.port_free(port)


def test_port_owner_describes_process_and_container() -> None:
    assert PortOwner(5001, 42, "python3 -m http.server").describe() == "process 42 (python3 -m http.server)"
    assert PortOwner(5001, 7, "docker-proxy", "kind-registry").describe() == (
        "process 7 (docker-proxy), published by container kind-registry"
    )
    assert PortOwner(5001).describe() == "a process this user cannot see"


def test_published_port_from_running_and_stopped_containers() -> None:
    running = {"NetworkSettings": {"Ports": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5001"}]}}}
    stopped = {"NetworkSettings": {"Ports": {}}, "HostConfig": {"PortBindings": {"5000/tcp": [{"HostPort": "5009"}]}}}
    assert published_port(running) == 5001
    assert published_port(stopped) == 5009
    assert published_port({}) is None


def test_only_containers_with_both_labels_are_ours() -> None:
    labels = {"incident-harness.io/managed": "true", "incident-harness.io/component": "registry"}
    assert registry._ours({"Config": {"Labels": labels}})
    assert not registry._ours({"Config": {"Labels": {"incident-harness.io/managed": "true"}}})
    assert not registry._ours({"Config": {"Labels": None}})


def test_a_user_supplied_registry_is_described_like_ours() -> None:
    user = registry._external("registry.example:5000")
    assert user == Registry("registry.example:5000", "http://registry.example:5000", "http://registry.example:5000")
    assert not user.managed
    tls = registry._external("https://registry.example")
    assert tls.endpoint == "https://registry.example" and tls.host == "registry.example"
    assert hosting_configmap(user)["data"]["localRegistryHosting.v1"].startswith('host: "registry.example:5000"')


@pytest.mark.parametrize("address", ["", "registry.example:port", "ftp://registry.example", "a b:5000"])
def test_a_malformed_registry_address_is_bad_input(address: str) -> None:
    with pytest.raises(HarnessError, match="is not HOST"):
        registry._external(address or " ")


def test_ref_names_repository_and_tag_in_the_registry() -> None:
    assert MANAGED.ref("orders-api", "3f2c1ab") == "localhost:5001/orders-api:3f2c1ab"
    assert MANAGED.ref("team/orders-api", "v1.2.3") == "localhost:5001/team/orders-api:v1.2.3"
    with pytest.raises(HarnessError, match="repository name"):
        MANAGED.ref("Orders", "x")
    with pytest.raises(HarnessError, match="tag"):
        MANAGED.ref("orders-api", "-x")


def _descriptor(digest: str, arch: str) -> dict[str, object]:
    return {
        "mediaType": images.DOCKER_MANIFEST,
        "digest": digest,
        "size": 523,
        "platform": {"architecture": arch, "os": "linux"},
    }


def test_index_manifest_is_one_canonical_oci_index() -> None:
    body = index_manifest([_descriptor("sha256:" + "a" * 64, "arm64"), _descriptor("sha256:" + "b" * 64, "amd64")])
    data = json.loads(body)
    assert data["schemaVersion"] == 2 and data["mediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in data["manifests"]] == ["arm64", "amd64"]
    assert body == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def test_index_manifest_refuses_empty_duplicate_and_incomplete_entries() -> None:
    with pytest.raises(HarnessError, match="at least one"):
        index_manifest([])
    with pytest.raises(HarnessError, match="same platform"):
        index_manifest([_descriptor("sha256:" + "a" * 64, "arm64"), _descriptor("sha256:" + "b" * 64, "arm64")])
    with pytest.raises(HarnessError, match="lacks platform"):
        index_manifest([{"mediaType": OCI_INDEX, "digest": "sha256:" + "a" * 64, "size": 1}])


@dataclass(frozen=True)
class _FakeRegistry(Registry):
    """A registry whose HTTP API is a dict (the real one is exercised by tests/e2e/test_registry_e2e.py)."""

    store: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        media_type, body = self.store[f"{repository}:{reference}"]
        return Manifest(repository, "sha256:" + hashlib.sha256(body).hexdigest(), media_type, body)

    def get_blob(self, repository: str, digest: str) -> bytes:
        return self.store[f"{repository}@{digest}"][1]

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        self.store[f"{repository}:{reference}"] = (media_type, body)
        return "sha256:" + hashlib.sha256(body).hexdigest()


def test_push_index_ties_pushed_platforms_into_one_index() -> None:
    fake = _FakeRegistry("localhost:5001", "http://r:5000", "http://127.0.0.1:5001", "r")
    members = []
    for arch in ("arm64", "amd64"):
        config = json.dumps({"os": "linux", "architecture": arch}).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = json.dumps({"schemaVersion": 2, "config": {"digest": config_digest}, "layers": []}).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        fake.store[f"app@{config_digest}"] = ("", config)
        fake.store[f"app:{digest}"] = (images.DOCKER_MANIFEST, manifest)
        members.append(
            PushedImage(f"localhost:5001/app:t-{arch}", "app", f"t-{arch}", digest, images.DOCKER_MANIFEST, 1,
                        (Platform("linux", arch),), 0.0)
        )  # fmt: skip
    pushed = push_index(fake, "app", "t", members)
    assert pushed.ref == "localhost:5001/app:t" and pushed.is_index
    assert pushed.platforms == (Platform("linux", "arm64"), Platform("linux", "amd64"))
    index = json.loads(fake.store["app:t"][1])
    assert [m["digest"] for m in index["manifests"]] == [m.digest for m in members]
    assert pushed.by_digest == f"localhost:5001/app@{pushed.digest}"
    with pytest.raises(HarnessError, match="cannot go into an index"):
        push_index(fake, "other", "t", members)


def test_gc_lists_only_registry_containers_carrying_both_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import tools

    printed = "incident-harness-registry\ttrue\tregistry\nimpostor\t\tregistry\nother\ttrue\tnode\n"
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> tools.Result:
        seen.append(cmd)
        return tools.Result(tuple(cmd), 0, printed, "")

    monkeypatch.setattr(tools, "run", fake_run)
    monkeypatch.setattr(tools, "docker_binary", lambda: "docker")
    assert registry.managed_containers() == ["incident-harness-registry"]
    assert "label=incident-harness.io/managed=true" in seen[0]
