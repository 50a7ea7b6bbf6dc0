"""Rendering workloads for a test namespace and image, and finding the pods to watch (no cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.workload import MANAGED_LABEL, load_manifests, render, selector_of

REPO = Path(__file__).resolve().parents[2]
SERVICE_MANIFEST = REPO / "k8s" / "deployment.yaml"


def deployment(name: str = "api", *, init: bool = False, containers: tuple[str, ...] = ("api",)) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": f"registry.example.com/{c}:1"} for c in containers]}
    if init:
        spec["initContainers"] = [{"name": "migrate", "image": "registry.example.com/migrate:1"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"team": "orders"}},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": name, "tier": "web"}},
            "template": {"metadata": {"labels": {"app": name, "tier": "web"}}, "spec": spec},
        },
    }


def service(name: str = "api") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


def pod(name: str = "solo") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "run": "once"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
    }


def containers_of(obj: dict[str, Any], init: bool = False) -> list[dict[str, Any]]:
    spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = spec.get("initContainers" if init else "containers", [])
    return found


# -- load_manifests -----------------------------------------------------------------------------


def test_load_manifests_reads_every_document_in_order(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n---\n")
    docs = load_manifests([SERVICE_MANIFEST, extra])
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "orders-api"),
        ("Service", "orders-api"),
        ("ConfigMap", "settings"),
    ]


def test_load_manifests_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(HarnessError) as caught:
        load_manifests([missing])
    assert str(missing) in caught.value.cause and "cannot read manifest" in caught.value.cause
    assert caught.value.remedy


def test_load_manifests_names_the_document_that_is_not_an_object(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n- just\n- a list\n")
    with pytest.raises(HarnessError) as caught:
        load_manifests([bad])
    assert f"manifest {bad}, document 2" in caught.value.cause
    assert "apiVersion, kind" in caught.value.remedy


def test_load_manifests_names_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("kind: [Deployment\n")
    with pytest.raises(HarnessError) as caught:
        load_manifests([bad])
    assert f"manifest {bad} is not valid YAML" in caught.value.cause


# -- render -------------------------------------------------------------------------------------


def test_render_places_objects_in_the_namespace_and_labels_them() -> None:
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep-me"}}
    out = render([deployment(), service(), namespace_doc], namespace="test-ns-1a2b3c")
    assert [o["metadata"].get("namespace") for o in out] == ["test-ns-1a2b3c", "test-ns-1a2b3c", None]
    for obj in out:
        assert obj["metadata"]["labels"][MANAGED_LABEL] == "true"
    assert out[0]["metadata"]["labels"]["team"] == "orders", "existing labels stay"


def test_render_sets_the_image_and_pull_policy_of_every_container() -> None:
    (out,) = render(
        [deployment(containers=("api", "sidecar"), init=True)],
        namespace="ns",
        image="incident-harness/laptop-build:linux-arm64-abc",
        pull_policy="IfNotPresent",
    )
    main = containers_of(out)
    assert [c["image"] for c in main] == ["incident-harness/laptop-build:linux-arm64-abc"] * 2
    assert {c["imagePullPolicy"] for c in main} == {"IfNotPresent"}
    (init,) = containers_of(out, init=True)
    assert init["image"] == "registry.example.com/migrate:1", "init containers keep their image without init_image"
    assert init["imagePullPolicy"] == "IfNotPresent"


def test_render_sets_only_the_named_container() -> None:
    (out,) = render([deployment(containers=("api", "sidecar"))], namespace="ns", image="new:1", container="api")
    assert [(c["name"], c["image"]) for c in containers_of(out)] == [
        ("api", "new:1"),
        ("sidecar", "registry.example.com/sidecar:1"),
    ]
    assert all("imagePullPolicy" not in c for c in containers_of(out)), "no pull policy given: none set"


def test_render_sets_the_init_image() -> None:
    (out,) = render([deployment(init=True)], namespace="ns", init_image="incident-harness/migrate:arm64")
    assert containers_of(out, init=True)[0]["image"] == "incident-harness/migrate:arm64"
    assert containers_of(out)[0]["image"] == "registry.example.com/api:1"


def test_render_the_service_manifest_as_the_seed_scenario_does() -> None:
    docs = load_manifests([SERVICE_MANIFEST])
    out = render(docs, namespace="arm64-on-amd64-abc123", image="incident-harness/laptop-build:x", pull_policy="Never")
    dep, svc = out
    (c,) = containers_of(dep)
    assert c["image"] == "incident-harness/laptop-build:x" and c["imagePullPolicy"] == "Never"
    assert c["readinessProbe"] == docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "orders-api"}, "a Service's spec is untouched"


def test_render_merges_patches_into_deployments_only() -> None:
    patches: dict[str, Any] = {
        "progressDeadlineSeconds": 30,
        "replicas": 1,
        "strategy": {"rollingUpdate": {"maxUnavailable": 1}},
    }
    dep, svc = render([deployment(), service()], namespace="ns", patches=patches)
    assert dep["spec"]["progressDeadlineSeconds"] == 30 and dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    assert "progressDeadlineSeconds" not in svc["spec"]
    patches["strategy"]["rollingUpdate"]["maxUnavailable"] = 5
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1, "patch values are copied"


def test_render_leaves_its_input_alone() -> None:
    docs = [deployment(init=True), service()]
    before = copy.deepcopy(docs)
    render(docs, namespace="ns", image="x:1", init_image="y:1", pull_policy="Never", patches={"replicas": 3})
    assert docs == before


def test_render_handles_a_bare_pod() -> None:
    (out,) = render([pod()], namespace="ns", image="x:1", pull_policy="IfNotPresent")
    assert out["spec"]["containers"] == [{"name": "main", "image": "x:1", "imagePullPolicy": "IfNotPresent"}]
    assert out["metadata"]["namespace"] == "ns"


# -- selector_of --------------------------------------------------------------------------------


def test_selector_of_the_first_deployment() -> None:
    assert selector_of([service(), deployment("api"), deployment("worker")], None) == ("api", "app=api,tier=web")


def test_selector_of_a_named_deployment() -> None:
    assert selector_of([deployment("api"), deployment("worker")], "worker") == ("worker", "app=worker,tier=web")


def test_selector_of_the_rendered_service_manifest() -> None:
    rendered = render(load_manifests([SERVICE_MANIFEST]), namespace="ns")
    assert selector_of(rendered, "orders-api") == ("orders-api", "app.kubernetes.io/name=orders-api")


def test_selector_of_a_pod_leaves_out_the_harness_label() -> None:
    rendered = render([service(), pod()], namespace="ns")
    assert selector_of(rendered, None) == (None, "app=solo,run=once")


def test_selector_of_nothing_to_watch() -> None:
    with pytest.raises(HarnessError) as caught:
        selector_of([service()], None)
    assert "no Deployment" in caught.value.cause and "Pod to watch" in caught.value.cause
    with pytest.raises(HarnessError):
        selector_of([deployment("api")], "not-there")


def test_selector_of_daemonset() -> None:
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {"containers": []}}},
    }
    assert selector_of([service(), daemonset], None) == (None, "app=agent")
