"""The guard on kubeconfig files: only a local kind cluster made by the harness is ever touched.

Kubeconfigs are written to tmp_path; the node check uses a stand-in for CoreV1Api (the real API
server case is in tests/e2e/test_cluster_lifecycle.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from harness import cluster as cluster_module
from harness import engine, tools
from harness.cluster import (
    CONFIG_LABEL,
    KIND_CLUSTER_LABEL,
    KIND_ROLE_LABEL,
    MANAGED_LABEL,
    KindCluster,
    NodeImageChoice,
    Ownership,
    config_fingerprint,
    creation_record,
    ensure_harness_context,
    judge_ownership,
    kubeadm_node_ips,
    kubeadm_node_labels,
    moved_nodes,
)
from harness.errors import GuardRefused, HarnessError, NotManaged


def write_kubeconfig(
    directory: Path,
    *,
    context: str = "kind-incident-harness",
    server: str = "https://127.0.0.1:40123",
    current: str | None = None,
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": "Cg=="}}],
        "users": [{"name": context, "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context if current is None else current,
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class FakeCore:
    """Answers list_node like CoreV1Api: the nodes whose labels match the selector."""

    def __init__(self, nodes: list[dict[str, str]] | None = None, error: Exception | None = None) -> None:
        self.nodes = nodes or []
        self.error = error
        self.selectors: list[str] = []

    def list_node(self, label_selector: str = "") -> Any:
        self.selectors.append(label_selector)
        if self.error is not None:
            raise self.error
        key, _, value = label_selector.partition("=")
        return SimpleNamespace(items=[n for n in self.nodes if n.get(key) == value])


def refused(path: Path, core: Any = None, **kwargs: Any) -> GuardRefused:
    with pytest.raises(GuardRefused) as caught:
        ensure_harness_context(path, core, **kwargs)
    error = caught.value
    assert isinstance(error, HarnessError)
    assert error.remedy, "a refusal says what to do"
    return error


@pytest.mark.parametrize(
    "server",
    ["https://127.0.0.1:40123", "https://localhost:6443", "https://[::1]:6443", "http://127.0.0.1:8080"],
)
def test_a_local_kind_context_is_accepted(tmp_path: Path, server: str) -> None:
    ensure_harness_context(write_kubeconfig(tmp_path, server=server))


@pytest.mark.parametrize("context", ["prod-aks-westeurope", "arn:aws:eks:eu-west-1:1234:cluster/prod", "minikube"])
def test_a_context_that_is_not_kind_is_refused(tmp_path: Path, context: str) -> None:
    path = write_kubeconfig(tmp_path, context=context)
    error = refused(path)
    assert f"refusing context {context!r}" in error.cause
    assert str(path) in error.cause and "not a kind cluster" in error.cause
    assert "make cluster" in error.remedy and "never deploys elsewhere" in error.remedy
    assert "\n" not in error.cause


def test_a_current_context_missing_from_the_file_is_refused(tmp_path: Path) -> None:
    error = refused(write_kubeconfig(tmp_path, current="kind-gone"))
    assert "'kind-gone'" in error.cause


def test_no_current_context_is_refused(tmp_path: Path) -> None:
    error = refused(write_kubeconfig(tmp_path, current=""))
    assert "refusing context ''" in error.cause


@pytest.mark.parametrize(
    "server",
    [
        "https://10.0.0.12:6443",
        "https://prod-aks-dns-1a2b3c.hcp.westeurope.azmk8s.io:443",
        "https://127.0.0.1.nip.io:6443",
        "https://172.18.0.2:6443",
    ],
)
def test_a_kind_context_with_a_remote_server_is_refused(tmp_path: Path, server: str) -> None:
    error = refused(write_kubeconfig(tmp_path, context="kind-prod", server=server))
    assert "'kind-prod'" in error.cause and server in error.cause and "not on this machine" in error.cause


def test_a_missing_kubeconfig_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "kubeconfig"
    error = refused(missing)
    assert f"cannot read kubeconfig {missing}" in error.cause
    assert "make cluster" in error.remedy


def test_a_kubeconfig_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [\n")
    assert f"cannot read kubeconfig {path}" in refused(path).cause


def test_an_empty_kubeconfig_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("")
    assert "not a kind cluster" in refused(path).cause


def test_nodes_with_the_harness_label_are_accepted(tmp_path: Path) -> None:
    core = FakeCore([{MANAGED_LABEL: "true"}])
    ensure_harness_context(write_kubeconfig(tmp_path), core)  # type: ignore[arg-type]
    assert core.selectors == [f"{MANAGED_LABEL}=true"]


def test_nodes_without_the_harness_label_are_refused(tmp_path: Path) -> None:
    """A kind cluster someone made by hand (`kind create cluster`): its nodes carry no harness label."""
    core = FakeCore([{"kubernetes.io/hostname": "kind-control-plane"}])
    error = refused(write_kubeconfig(tmp_path, context="kind-kind"), core)
    assert "'kind-kind'" in error.cause and f"lack the {MANAGED_LABEL} label" in error.cause


def test_the_label_to_require_can_be_chosen(tmp_path: Path) -> None:
    core = FakeCore([{MANAGED_LABEL: "true"}])
    error = refused(write_kubeconfig(tmp_path), core, label="example.com/other")
    assert "lack the example.com/other label" in error.cause
    assert core.selectors == ["example.com/other=true"]


def test_an_api_server_that_does_not_answer_is_refused(tmp_path: Path) -> None:
    core = FakeCore(error=ConnectionRefusedError(111, "Connection refused"))
    error = refused(write_kubeconfig(tmp_path), core)
    assert "cannot list its nodes" in error.cause and "Connection refused" in error.cause


def test_the_server_is_checked_before_the_api_is_asked(tmp_path: Path) -> None:
    """A remote server is refused from the file alone: not one request goes to it."""
    core = FakeCore([{MANAGED_LABEL: "true"}])
    refused(write_kubeconfig(tmp_path, context="kind-x", server="https://203.0.113.7:6443"), core)
    assert core.selectors == []


# -- ownership of kind clusters: what the harness may delete, load into or reuse --------------------
#
# The node containers and their kubeadm configs are stand-ins; the real engine case (a cluster
# made with plain `kind create cluster`) is in tests/e2e/test_safety.py.

KUBEADM = Path(__file__).parent / "data" / "kubeadm"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def kubeadm_config(labels: str, *, beta4: bool = False) -> bytes:
    """A kubeadm config as kind writes it (InitConfiguration and JoinConfiguration), node labels given."""
    if beta4:
        extra = f'  kubeletExtraArgs:\n  - name: node-ip\n    value: "172.18.0.2"\n  - name: node-labels\n    value: "{labels}"\n'
    else:
        extra = f'  kubeletExtraArgs:\n    node-ip: "172.18.0.2"\n    node-labels: "{labels}"\n'
    docs = [
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nclusterName: x\n",
        f"apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\nnodeRegistration:\n{extra}",
        f"apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\nnodeRegistration:\n{extra}",
    ]
    return "---\n".join(docs).encode()


def node(name: str, *, created: datetime = T0, role: str = "control-plane") -> engine.Container:
    labels = {KIND_CLUSTER_LABEL: "c", KIND_ROLE_LABEL: role, "io.incident-harness.managed": "true"}
    return engine.Container(id=f"id-{name}", name=name, state="running", created=created, labels=labels)


@pytest.mark.parametrize("beta4", [False, True])
def test_node_labels_are_read_from_the_kubeadm_config(beta4: bool) -> None:
    text = kubeadm_config(f"{MANAGED_LABEL}=true,tier=web,", beta4=beta4).decode()
    assert kubeadm_node_labels(text) == {MANAGED_LABEL: "true", "tier": "web"}


@pytest.mark.parametrize("text", ["", "not: [yaml", "kind: InitConfiguration\nnodeRegistration: {}\n", "- a\n- b\n"])
def test_a_kubeadm_config_without_labels_has_none(text: str) -> None:
    assert kubeadm_node_labels(text) == {}


def test_recorded_kubeadm_configs_of_a_harness_and_a_plain_kind_node() -> None:
    """Recorded from real kind v0.30.0 nodes (see data/kubeadm/README.md)."""
    harness = kubeadm_node_labels((KUBEADM / "harness-control-plane.conf").read_text())
    plain = kubeadm_node_labels((KUBEADM / "plain-kind-control-plane.conf").read_text())
    assert harness.get(MANAGED_LABEL) == "true"
    assert MANAGED_LABEL not in plain


def test_the_pinned_node_address_is_read_from_the_recorded_kubeadm_config() -> None:
    """kind pins each node's address for the kubelet (and kubeadm for etcd and the API server)."""
    assert kubeadm_node_ips((KUBEADM / "fast-control-plane.conf").read_text()) == {"172.18.0.3"}
    assert kubeadm_node_ips("not: [yaml") == set() and kubeadm_node_ips("") == set()


def test_a_node_back_at_another_address_is_moved_and_one_at_its_own_is_not() -> None:
    """After the engine restarts, two clusters' nodes may swap addresses: the control plane cannot start."""
    config = (KUBEADM / "fast-control-plane.conf").read_bytes()  # pinned at 172.18.0.3
    same = replace(node("a-control-plane"), addresses=("172.18.0.3",))
    swapped = replace(node("b-control-plane"), addresses=("172.18.0.2",))
    stopped = replace(node("c-control-plane"), state="exited", addresses=())
    unknown = replace(node("d-control-plane"), addresses=("172.18.0.9",))
    configs = {same.id: config, swapped.id: config, stopped.id: config, unknown.id: None}
    assert moved_nodes([same, swapped, stopped, unknown], configs) == [
        "b-control-plane: made at 172.18.0.3, now at 172.18.0.2"
    ]


def test_a_cluster_whose_every_node_carries_the_label_is_the_harness_s() -> None:
    nodes = [node("c-control-plane"), node("c-worker", role="worker")]
    configs = {n.id: kubeadm_config(f"{MANAGED_LABEL}=true,") for n in nodes}
    assert judge_ownership("c", nodes, configs, None).ownership is Ownership.MANAGED


def test_one_node_without_the_label_makes_the_cluster_foreign() -> None:
    nodes = [node("c-control-plane"), node("c-worker", role="worker")]
    configs = {nodes[0].id: kubeadm_config(f"{MANAGED_LABEL}=true,"), nodes[1].id: kubeadm_config("")}
    check = judge_ownership("c", nodes, configs, None)
    assert (
        check.ownership is Ownership.FOREIGN and check.reason == f"node c-worker lacks the {MANAGED_LABEL}=true label"
    )


def test_the_label_must_be_true() -> None:
    (n,) = [node("c-control-plane")]
    check = judge_ownership("c", [n], {n.id: kubeadm_config(f"{MANAGED_LABEL}=false")}, None)
    assert check.ownership is Ownership.FOREIGN


def test_no_node_container_means_absent() -> None:
    assert judge_ownership("c", [], {}, None).ownership is Ownership.ABSENT


def test_a_half_made_node_is_the_harness_s_only_after_its_creation_record() -> None:
    """kind writes /kind/kubeadm.conf after it starts the containers: an interrupted create has none."""
    made_after = node("c-control-plane", created=T0 + timedelta(seconds=3))
    made_before = node("c-control-plane", created=T0 - timedelta(minutes=5))
    made_much_later = node("c-control-plane", created=T0 + timedelta(hours=2))
    assert judge_ownership("c", [made_after], {made_after.id: None}, T0).ownership is Ownership.MANAGED
    for stranger in (made_before, made_much_later):
        check = judge_ownership("c", [stranger], {stranger.id: None}, T0)
        assert check.ownership is Ownership.FOREIGN and "did not start creating it" in check.reason
    assert judge_ownership("c", [made_after], {made_after.id: None}, None).ownership is Ownership.FOREIGN


def test_a_creation_record_does_not_make_a_finished_foreign_node_ours() -> None:
    n = node("c-control-plane", created=T0 + timedelta(seconds=3))
    assert judge_ownership("c", [n], {n.id: kubeadm_config("")}, T0).ownership is Ownership.FOREIGN


def test_the_load_balancer_container_is_judged_by_the_nodes() -> None:
    nodes = [node("c-control-plane"), node("c-external-load-balancer", role="external-load-balancer")]
    configs = {nodes[0].id: kubeadm_config(f"{MANAGED_LABEL}=true"), nodes[1].id: None}
    assert judge_ownership("c", nodes, configs, None).ownership is Ownership.MANAGED


class FakeEngine:
    """The engine calls cluster.check_ownership makes, answered from a table; kind and docker calls recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, clusters: dict[str, bytes | None], state: str = "running"):
        self.commands: list[list[str]] = []
        self.nodes = {
            name: engine.Container(
                id=f"id-{name}",
                name=f"{name}-control-plane",
                state=state,
                created=T0,
                labels={KIND_CLUSTER_LABEL: name, KIND_ROLE_LABEL: "control-plane"},
            )
            for name in clusters
        }
        self.configs = {f"id-{name}": config for name, config in clusters.items()}

        def containers(label: str) -> list[engine.Container]:
            key, _, value = label.partition("=")
            return [n for n in self.nodes.values() if n.labels.get(key) == value]

        def run(cmd: list[str], **_: Any) -> tools.Result:
            self.commands.append(list(cmd))
            out = "\n".join(self.nodes) + "\n" if cmd[1:3] == ["get", "clusters"] else ""
            return tools.Result(tuple(cmd), 0, out, "")

        monkeypatch.setattr(engine, "containers", containers)
        monkeypatch.setattr(engine, "read_file", lambda cid, path: self.configs.get(cid))
        monkeypatch.setattr(tools, "run", run)
        monkeypatch.setattr(tools, "ensure_engine", lambda: None)
        monkeypatch.setattr(tools, "kind_binary", lambda explicit=None: "kind")

    def ran(self, *words: str) -> bool:
        return any(all(w in cmd for w in words) for cmd in self.commands)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    return tmp_path


def test_delete_refuses_a_cluster_the_harness_did_not_make(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    fake = FakeEngine(monkeypatch, {"someone-else": kubeadm_config("")})
    cluster = KindCluster(name="someone-else")
    cluster.kubeconfig.parent.mkdir(parents=True)
    with pytest.raises(NotManaged) as caught:
        cluster.delete()
    error = caught.value
    assert error.cause == (
        "refusing to delete kind cluster 'someone-else': the harness did not make it "
        f"(node someone-else-control-plane lacks the {MANAGED_LABEL}=true label)"
    )
    assert error.remedy == "if it is yours to remove, delete it by hand: kind delete cluster --name someone-else"
    assert not fake.ran("delete") and cluster.kubeconfig.parent.is_dir()


def test_delete_deletes_a_harness_cluster(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    fake = FakeEngine(monkeypatch, {"mine": kubeadm_config(f"{MANAGED_LABEL}=true,")})
    KindCluster(name="mine").delete()
    assert fake.ran("delete", "cluster", "--name", "mine", "--kubeconfig")


def test_create_refuses_to_delete_or_reuse_a_stopped_cluster_it_did_not_make(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    fake = FakeEngine(monkeypatch, {"someone-else": kubeadm_config("")}, state="exited")
    with pytest.raises(NotManaged, match="refusing to reuse kind cluster 'someone-else'"):
        KindCluster(name="someone-else").create()
    assert not fake.ran("delete") and not fake.ran("create")


def test_create_deletes_its_own_stopped_cluster_with_its_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    fake = FakeEngine(monkeypatch, {"mine": kubeadm_config(f"{MANAGED_LABEL}=true")}, state="exited")
    monkeypatch.setattr(KindCluster, "exists", lambda self: not fake.ran("delete"))
    monkeypatch.setattr(KindCluster, "wait_ready", lambda self, timeout=0: None)
    monkeypatch.setattr(cluster_module, "resolve_node_image", lambda forced=None: NodeImageChoice("n:1", "forced"))
    monkeypatch.setattr(os, "chmod", lambda *a: None)
    monkeypatch.setattr(cluster_module.registry, "on_cluster_created", lambda cluster: None)
    KindCluster(name="mine").create()
    assert fake.ran("delete", "cluster", "--name", "mine", "--kubeconfig")
    assert fake.ran("create", "cluster", "--name", "mine")
    assert not creation_record("mine").exists()  # kept only while kind creates


@pytest.mark.parametrize("load", ["image", "archive"])
def test_loading_into_a_cluster_the_harness_did_not_make_is_refused(
    monkeypatch: pytest.MonkeyPatch, cache: Path, load: str
) -> None:
    fake = FakeEngine(monkeypatch, {"someone-else": kubeadm_config("")})
    cluster = KindCluster(name="someone-else")
    with pytest.raises(NotManaged, match="refusing to load an image"):
        if load == "image":
            cluster.load_image("incident-harness/x:1")
        else:
            cluster.load_archive(cache / "x.tar", ["incident-harness/x:1"])
    assert not fake.ran("load")


def test_the_creation_record_is_written_before_kind_creates(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    seen: list[bool] = []
    fake = FakeEngine(monkeypatch, {})
    original = tools.run

    def run(cmd: list[str], **kwargs: Any) -> tools.Result:
        if cmd[1:3] == ["create", "cluster"]:
            seen.append(creation_record("new").is_file())
            raise KeyboardInterrupt  # the user gives up while kind creates
        return original(cmd, **kwargs)

    monkeypatch.setattr(tools, "run", run)
    monkeypatch.setattr(cluster_module, "resolve_node_image", lambda forced=None: NodeImageChoice("n:1", "forced"))
    with pytest.raises(KeyboardInterrupt):
        KindCluster(name="new").create()
    assert seen == [True] and creation_record("new").is_file()  # kept: the half-made nodes are known to be ours
    assert not fake.ran("delete")


def test_deleting_a_cluster_that_is_gone_forgets_its_creation_record(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    FakeEngine(monkeypatch, {})
    creation_record("gone").parent.mkdir(parents=True)
    creation_record("gone").write_text("{}")
    KindCluster(name="gone").delete()
    assert not creation_record("gone").exists()


def test_every_node_carries_the_fingerprint_of_the_kind_configuration() -> None:
    config = KindCluster(name="mine", workers=1).kind_config()
    fingerprints = {n["labels"][CONFIG_LABEL] for n in config["nodes"]}
    assert fingerprints == {config_fingerprint({k: v for k, v in config.items() if k != "nodes"})}
    assert len(config["nodes"]) == 2 and all(n["labels"][MANAGED_LABEL] == "true" for n in config["nodes"])


def test_a_cluster_made_with_another_configuration_is_made_again_not_reused(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    """An older harness made it without the containerd patch the registry needs: no label, no reuse."""
    fake = FakeEngine(monkeypatch, {"mine": kubeadm_config(f"{MANAGED_LABEL}=true")})
    monkeypatch.setattr(KindCluster, "exists", lambda self: not fake.ran("delete"))
    monkeypatch.setattr(KindCluster, "wait_ready", lambda self, timeout=0: None)
    monkeypatch.setattr(cluster_module, "resolve_node_image", lambda forced=None: NodeImageChoice("n:1", "forced"))
    monkeypatch.setattr(os, "chmod", lambda *a: None)
    monkeypatch.setattr(cluster_module.registry, "on_cluster_created", lambda cluster: None)
    made = KindCluster(name="mine").create()
    assert fake.ran("delete", "cluster", "--name", "mine") and fake.ran("create", "cluster", "--name", "mine")
    assert not made.reused


def test_a_cluster_made_with_this_configuration_is_reused(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    wanted = KindCluster(name="mine").kind_config()["nodes"][0]["labels"][CONFIG_LABEL]
    fake = FakeEngine(monkeypatch, {"mine": kubeadm_config(f"{MANAGED_LABEL}=true,{CONFIG_LABEL}={wanted}")})
    monkeypatch.setattr(KindCluster, "wait_ready", lambda self, timeout=0: None)
    monkeypatch.setattr(os, "chmod", lambda *a: None)
    made = KindCluster(name="mine").create()
    assert made.reused and not fake.ran("delete") and not fake.ran("create")
