"""Cluster profiles: the kind config each profile makes, configz parsing, label reading, the refusals.

configz documents are recorded from real v1.34.4 kubelets (tests/unit/data/configz/README.md);
the node containers and their kubeadm configs are a stand-in for the engine (the real cases are
in tests/e2e/test_profiles_e2e.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from harness import cli, engine, profiles, tools
from harness.cluster import (
    CONFIG_LABEL,
    KIND_CLUSTER_LABEL,
    KIND_ROLE_LABEL,
    MANAGED_LABEL,
    KindCluster,
    ProfileMismatch,
    config_fingerprint,
    creation_lock,
    default_name,
    kubeadm_node_labels,
)
from harness.errors import BadInput
from harness.profiles import (
    FEATURE_GATE,
    PROFILE_LABEL,
    KubeletSettings,
    Profile,
    ProfileError,
    ProfileNotApplied,
    check_applied,
    check_node_image,
    duration_seconds,
    parse_configz,
    parse_version,
    profile_of_labels,
    profile_of_nodes,
    read_kubelet_settings,
)

DATA = Path(__file__).parent / "data" / "configz"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


# -- names ----------------------------------------------------------------------------------------


def test_profile_names_parse_and_an_unknown_one_lists_the_valid_ones() -> None:
    assert Profile.parse("fast") is Profile.FAST
    assert Profile.parse(" Faithful ") is Profile.FAITHFUL
    assert Profile.parse(Profile.FAST) is Profile.FAST
    with pytest.raises(ProfileError) as caught:
        Profile.parse("quick")
    assert isinstance(caught.value, BadInput)
    assert caught.value.cause == "unknown cluster profile 'quick'"
    assert caught.value.remedy == "use one of: faithful, fast"


def test_the_cli_knows_the_same_profile_names() -> None:
    assert list(cli.PROFILES) == profiles.names()
    args = cli.build_parser().parse_args(["reproduce", "seed", "--profile", "fast"])
    assert args.profile == "fast"
    assert cli.build_parser().parse_args(["reproduce", "seed"]).profile == "faithful"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["reproduce", "seed", "--profile", "quick"])


def test_default_names_per_profile_and_harness_cluster_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CLUSTER", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")  # every xdist worker: the same shared cluster
    assert default_name() == "incident-harness"
    assert default_name(Profile.FAITHFUL) == "incident-harness"
    assert default_name("fast") == "incident-harness-fast"
    monkeypatch.setenv("HARNESS_CLUSTER", "mine")
    assert default_name("fast") == "mine"


# -- what a profile sets --------------------------------------------------------------------------


def test_faithful_kind_config_adds_nothing_so_its_fingerprint_is_that_of_older_clusters() -> None:
    config = KindCluster(name="c", profile=Profile.FAITHFUL).kind_config()
    assert "kubeadmConfigPatches" not in config
    labels = config["nodes"][0]["labels"]
    assert labels[PROFILE_LABEL] == "faithful"
    without_nodes = {k: v for k, v in config.items() if k != "nodes"}
    assert set(without_nodes) == {"kind", "apiVersion", "containerdConfigPatches"}
    assert labels[CONFIG_LABEL] == config_fingerprint(without_nodes)


def test_fast_kind_config_patches_every_kubelet_and_labels_every_node() -> None:
    config = KindCluster(name="c", profile="fast", workers=2).kind_config()  # type: ignore[arg-type]
    (patch,) = config["kubeadmConfigPatches"]
    assert yaml.safe_load(patch) == {
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "featureGates": {FEATURE_GATE: True},
        "crashLoopBackOff": {"maxContainerRestartPeriod": "1s"},
    }
    assert duration_seconds(profiles.FAST_MAX_RESTART_PERIOD) >= 1
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    for node in config["nodes"]:
        assert node["labels"][PROFILE_LABEL] == "fast" and node["labels"][MANAGED_LABEL] == "true"
    faithful = KindCluster(name="c").kind_config()
    assert config["nodes"][0]["labels"][CONFIG_LABEL] != faithful["nodes"][0]["labels"][CONFIG_LABEL]


def test_versions_of_node_images() -> None:
    assert parse_version("incident-harness/node:v1.34.4") == (1, 34)
    assert parse_version("incident-harness/node:v1.34.4-5713ff800a0d") == (1, 34)
    assert parse_version("kindest/node:v1.31.2@sha256:abc") is None or parse_version("kindest/node:v1.31.2") == (1, 31)
    assert parse_version("localhost:5000/node:latest") is None
    assert parse_version("v1.35.0") == (1, 35)


def test_a_node_image_older_than_the_gate_is_refused_before_creation_for_fast_only() -> None:
    with pytest.raises(ProfileNotApplied) as caught:
        check_node_image(Profile.FAST, "kindest/node:v1.31.4")
    assert "Kubernetes v1.31" in caught.value.cause and FEATURE_GATE in caught.value.cause
    assert "--profile faithful" in caught.value.remedy and "\n" not in caught.value.cause
    check_node_image(Profile.FAITHFUL, "kindest/node:v1.31.4")
    check_node_image(Profile.FAST, "kindest/node:v1.34.0")
    check_node_image(Profile.FAST, "my/node:custom")  # no version in the tag: configz tells after creation


# -- reading back ---------------------------------------------------------------------------------


def test_durations() -> None:
    assert duration_seconds("1s") == 1
    assert duration_seconds("5m0s") == 300
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("300ms") == pytest.approx(0.3)
    assert duration_seconds("0") == 0
    with pytest.raises(ValueError):
        duration_seconds("ten seconds")


def test_recorded_configz_of_a_fast_node() -> None:
    n = parse_configz("n1", recorded("v1.34.4-fast.json"), "v1.34.4")
    assert n.configured and n.max_container_restart_period == "1s" and n.feature_gate is True
    assert n.gate_on and n.effective_period == "1s"
    settings = KubeletSettings((n,))
    check_applied(Profile.FAST, settings, "c")
    check_applied(Profile.FAITHFUL, settings, "c")  # faithful asks nothing of the kubelet
    assert settings.facts() == {
        "kubelet maxContainerRestartPeriod": "1s",
        f"kubelet {FEATURE_GATE}": "on",
        "kubelet version": "v1.34.4",
        "kubelet settings read from": "configz of 1 node",
    }


def test_recorded_configz_of_a_faithful_node_is_the_default_300s() -> None:
    n = parse_configz("n1", recorded("v1.34.4-faithful.json"), "v1.34.4")
    assert not n.configured and n.feature_gate is None and not n.gate_on
    assert n.effective_period == "300s"
    settings = KubeletSettings((n,))
    assert settings.max_container_restart_period == "300s"
    assert settings.feature_gate == "off (default)"
    with pytest.raises(ProfileNotApplied) as caught:
        check_applied(Profile.FAST, settings, "c")
    assert caught.value.cause == (
        "cluster c: profile fast did not take on node n1 (kubelet v1.34.4): "
        "crashLoopBackOff.maxContainerRestartPeriod is absent from its configz"
    )
    assert "--profile faithful" in caught.value.remedy


def test_the_setting_without_the_gate_does_not_count_before_v1_35() -> None:
    data = recorded("v1.34.4-fast.json")
    del data["kubeletconfig"]["featureGates"]
    old = parse_configz("n1", data, "v1.34.4")
    assert old.configured and not old.gate_on and old.effective_period == "300s"
    with pytest.raises(ProfileNotApplied, match="feature gate is off"):
        check_applied(Profile.FAST, KubeletSettings((old,)), "c")
    new = parse_configz("n1", data, "v1.35.0")  # beta: on by default
    assert new.gate_on and new.effective_period == "1s"
    assert KubeletSettings((new,)).feature_gate == "on by default"


def test_nodes_that_disagree_are_each_named() -> None:
    fast = parse_configz("a", recorded("v1.34.4-fast.json"), "v1.34.4")
    slow = parse_configz("b", recorded("v1.34.4-faithful.json"), "v1.34.4")
    settings = KubeletSettings((fast, slow))
    assert settings.max_container_restart_period == "a=1s, b=300s"
    with pytest.raises(ProfileNotApplied, match="on node b"):
        check_applied(Profile.FAST, settings, "c")


def test_a_configz_without_kubeletconfig_is_an_error_naming_the_node() -> None:
    with pytest.raises(profiles.HarnessError, match="node n1: its configz has no kubeletconfig"):
        parse_configz("n1", {"other": {}})


class FakeCore:
    """list_node and the node proxy's configz, as CoreV1Api answers them (raw bytes: _preload_content=False)."""

    def __init__(self, configz: dict[str, dict[str, Any]]) -> None:
        self.configz = configz
        self.asked: list[tuple[str, str, bool]] = []

    def list_node(self) -> Any:
        items = [
            SimpleNamespace(
                metadata=SimpleNamespace(name=name, labels={}),
                status=SimpleNamespace(node_info=SimpleNamespace(kubelet_version="v1.34.4")),
            )
            for name in self.configz
        ]
        return SimpleNamespace(items=items)

    def connect_get_node_proxy_with_path(self, name: str, path: str, _preload_content: bool = True) -> Any:
        self.asked.append((name, path, _preload_content))
        return SimpleNamespace(data=json.dumps(self.configz[name]).encode())


def test_read_kubelet_settings_asks_every_node_through_the_proxy() -> None:
    core = FakeCore({"cp": recorded("v1.34.4-fast.json"), "w1": recorded("v1.34.4-fast.json")})
    settings = read_kubelet_settings(core)  # type: ignore[arg-type]
    assert core.asked == [("cp", "configz", False), ("w1", "configz", False)]
    assert [n.node for n in settings.nodes] == ["cp", "w1"]
    assert settings.max_container_restart_period == "1s" and settings.kubelet_versions == "v1.34.4"


# -- labels and the refusal -----------------------------------------------------------------------


def test_profile_labels() -> None:
    assert profile_of_labels({PROFILE_LABEL: "fast"}) is Profile.FAST
    assert profile_of_labels({MANAGED_LABEL: "true"}) is Profile.FAITHFUL  # made before profiles: defaults
    assert profile_of_labels(None) is Profile.FAITHFUL
    assert profile_of_nodes([{PROFILE_LABEL: "fast"}, {PROFILE_LABEL: "fast"}]) is Profile.FAST
    assert profile_of_nodes([{PROFILE_LABEL: "fast"}, {}]) is None
    assert profile_of_nodes([]) is None


def kubeadm_config(labels: str) -> bytes:
    """Init- and JoinConfiguration as kind writes them, with these node labels (see data/kubeadm)."""
    extra = f'  kubeletExtraArgs:\n  - name: node-labels\n    value: "{labels}"\n'
    return (
        f"apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n{extra}---\n"
        f"apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\nnodeRegistration:\n{extra}"
    ).encode()


class Existing:
    """One running harness cluster 'shared' as the engine and kind show it; its node's kubeadm config is set by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config = b""
        self.commands: list[list[str]] = []
        node = engine.Container(
            id="id-shared",
            name="shared-control-plane",
            state="running",
            created=datetime(2026, 1, 1, tzinfo=UTC),
            labels={KIND_CLUSTER_LABEL: "shared", KIND_ROLE_LABEL: "control-plane"},
        )

        def run(cmd: list[str], **_: Any) -> tools.Result:
            self.commands.append(list(cmd))
            out = "shared\n" if cmd[1:3] == ["get", "clusters"] else ""
            return tools.Result(tuple(cmd), 0, out, "")

        monkeypatch.setattr(engine, "containers", lambda label: [node] if label.endswith("=shared") else [])
        monkeypatch.setattr(engine, "read_file", lambda cid, path: self.config)
        monkeypatch.setattr(tools, "run", run)
        monkeypatch.setattr(tools, "ensure_engine", lambda: None)
        monkeypatch.setattr(tools, "kind_binary", lambda explicit=None: "kind")

    def changed_anything(self) -> bool:
        return any(word in cmd for cmd in self.commands for word in ("create", "delete", "export"))


@pytest.fixture
def existing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Existing:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    return Existing(monkeypatch)


def test_a_cluster_of_another_profile_is_refused_not_remade(existing: Existing) -> None:
    existing.config = kubeadm_config(f"{MANAGED_LABEL}=true,{PROFILE_LABEL}=faithful")
    cluster = KindCluster(name="shared", profile=Profile.FAST)
    with pytest.raises(ProfileMismatch) as caught:
        cluster.create()
    error = caught.value
    assert error.cause == (
        "cluster 'shared' was made with profile faithful, not the requested fast: "
        "it is not reused with other kubelet settings"
    )
    assert "pass --profile faithful" in error.remedy and "cluster delete --name shared" in error.remedy
    assert not existing.changed_anything(), existing.commands


def test_a_cluster_made_before_profiles_counts_as_faithful(existing: Existing) -> None:
    existing.config = kubeadm_config(f"{MANAGED_LABEL}=true")
    assert KindCluster(name="shared").existing_profile() is Profile.FAITHFUL
    with pytest.raises(ProfileMismatch, match="made with profile faithful, not the requested fast"):
        KindCluster(name="shared", profile=Profile.FAST).create()
    assert not existing.changed_anything()


def test_the_profile_of_an_existing_fast_cluster_is_read_from_its_nodes(existing: Existing) -> None:
    existing.config = kubeadm_config(f"{MANAGED_LABEL}=true,{PROFILE_LABEL}=fast")
    assert KindCluster(name="shared").existing_profile() is Profile.FAST
    with pytest.raises(ProfileMismatch, match="pass --profile fast"):
        KindCluster(name="shared", profile=Profile.FAITHFUL).create()


def test_the_creation_lock_is_exclusive_between_open_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fcntl

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    said: list[str] = []
    with creation_lock("c", say=said.append):
        path = tmp_path / "locks" / "cluster-c.lock"
        with path.open("a+") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with path.open("a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end of the block
    assert said == []


def test_a_recorded_fast_node_s_kubeadm_config_names_its_profile_and_carries_the_patch() -> None:
    text = (Path(__file__).parent / "data" / "kubeadm" / "fast-control-plane.conf").read_text()
    labels = kubeadm_node_labels(text)
    assert profile_of_labels(labels) is Profile.FAST and labels[MANAGED_LABEL] == "true"
    kubelet = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "KubeletConfiguration")
    assert kubelet["crashLoopBackOff"] == {"maxContainerRestartPeriod": "1s"}
    assert kubelet["featureGates"][FEATURE_GATE] is True
