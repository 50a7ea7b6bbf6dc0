"""The guard on kubeconfig files: only a local kind cluster made by the harness is ever touched.

Kubeconfigs are written to tmp_path; the node check uses a stand-in for CoreV1Api (the real API
server case is in tests/e2e/test_cluster_lifecycle.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from harness.cluster import MANAGED_LABEL, ensure_harness_context
from harness.errors import GuardRefused, HarnessError


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
