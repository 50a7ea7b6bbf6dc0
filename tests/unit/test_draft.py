"""draft: bundles recorded on the harness's cluster (tests/unit/data/bundles, see its README) -> scenarios that load."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import bundle, draft, scenario
from harness.bundle import BundleError
from harness.outcomes import Outcome
from harness.project import find_project

DATA = Path(__file__).parent / "data" / "bundles"
SEED = DATA / "arm64-on-amd64"
INIT = DATA / "foreign-init-container"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "service"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.incident-harness]\n")
    return root


def _write(b: bundle.Bundle, root: Path, name: str = "drafted") -> draft.Written:
    return draft.write(b, root / "scenarios" / f"{name}.yaml", root=root)


def test_seed_bundle_drafts_the_incident(project: Path) -> None:
    written = _write(bundle.read(SEED), project)
    s = scenario.load(written.scenario, find_project(root=project))
    assert s.expect.outcome is Outcome.CRASH_LOOP
    symptoms = {(x.kind, x.value) for x in s.expect.symptoms}
    assert ("previousLogContains", "exec /usr/local/bin/uvicorn: exec format error") in symptoms
    assert ("terminatedReason", "Error") in symptoms
    assert ("neverReady", True) in symptoms
    assert ("restartsAtLeast", 2) in symptoms
    assert ("waitingReason", "CrashLoopBackOff") in symptoms
    assert any(k == "exitCode" for k, _ in symptoms)
    assert [i.platform for i in s.images.values()] == ["foreign"]  # an arm64 image on amd64 nodes
    text = written.scenario.read_text()
    assert "# TODO:" in text and "x-evidence:" in text
    assert s.workload.deployment == "orders-api" and s.workload.init_image is None
    # the placeholder context refuses to build, on purpose, and says why
    context = written.contexts[0]
    assert "TODO replace-this-placeholder" in (context / "Dockerfile").read_text()
    assert "build context" in (context / "README.md").read_text()
    assert not list(project.rglob(".*.tmp")) and not list(project.rglob(".*partial*"))


def test_init_bundle_drafts_init_crash_loop(project: Path) -> None:
    written = _write(bundle.read(INIT), project)
    s = scenario.load(written.scenario, find_project(root=project))
    assert s.expect.outcome is Outcome.INIT_CRASH_LOOP
    assert s.workload.init_image is not None and s.workload.init_image != s.workload.image
    assert s.images[s.workload.init_image].platform == "foreign"
    assert s.images[s.workload.image].platform == "native"
    symptoms = {(x.kind, x.value) for x in s.expect.symptoms}
    assert ("previousLogContains", "exec /usr/local/bin/python3: exec format error") in symptoms


def test_manifest_is_cleaned_of_what_the_cluster_added(project: Path) -> None:
    written = _write(bundle.read(SEED), project)
    manifest = yaml.safe_load(written.manifest.read_text())
    text = yaml.safe_dump(manifest)  # the objects, not the header comment
    for word in (
        "status:",
        "managedFields",
        "uid:",
        "resourceVersion",
        "creationTimestamp",
        "generation:",
        "deployment.kubernetes.io/revision",
        "last-applied-configuration",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "dnsPolicy",
        "schedulerName",
        "nodeName",
        "namespace:",
    ):
        assert word not in text, word
    pod = manifest["spec"]["template"]["spec"]
    assert "securityContext" in pod  # the manifest's own, kept
    assert pod.get("restartPolicy") is None
    assert manifest["spec"]["revisionHistoryLimit"] == 5  # set by the manifest, not a default: kept
    assert manifest["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_clean_manifest_drops_defaults_only() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "uid": "u",
            "annotations": {"deployment.kubernetes.io/revision": "3", "team": "payments"},
        },
        "spec": {
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                "spec": {
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                    "nodeName": "aks-nodepool1-0",
                    "containers": [
                        {
                            "name": "web",
                            "image": "web:1.2",
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
                        },
                        {"name": "side", "image": "side:latest", "imagePullPolicy": "IfNotPresent"},
                    ],
                },
            },
        },
        "status": {"replicas": 1},
    }
    cleaned = draft.clean_manifest(obj)
    assert cleaned["metadata"] == {"name": "web", "annotations": {"team": "payments"}}
    assert set(cleaned["spec"]) == {"selector", "template"}
    pod = cleaned["spec"]["template"]["spec"]
    assert set(pod) == {"containers"}
    web, side = pod["containers"]
    assert web == {
        "name": "web",
        "image": "web:1.2",
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
    }
    assert side["imagePullPolicy"] == "IfNotPresent"  # not the default for :latest (Always): kept
    assert "creationTimestamp" not in cleaned["spec"]["template"]["metadata"]


def _plain_folder(src: Path, dst: Path) -> Path:
    """What a user saves by hand from a bundle's cluster: kubectl get -o yaml files and logs --previous."""
    dst.mkdir()
    b = bundle.read(src)
    (dst / "pods.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(b.pods)}))
    (dst / "events.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(b.events)}))
    deployment = next(o for o in b.workload if o["kind"] == "Deployment")
    (dst / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    for log in b.logs:
        if log.which == "previous":
            (dst / f"{log.pod}_{log.container}.previous.log").write_text("\n".join(log.lines) + "\n")
    return dst


def test_plain_kubectl_files_draft_too(project: Path, tmp_path: Path) -> None:
    folder = _plain_folder(SEED, tmp_path / "by-hand")
    b = bundle.read(folder)
    assert b.plain and b.logs
    assert any("nodes" in m for m in b.missing)  # no Node saved: the platform is unknown, and said so
    written = _write(b, project)
    s = scenario.load(written.scenario, find_project(root=project))
    assert s.expect.outcome is Outcome.CRASH_LOOP
    assert ("previousLogContains", "exec /usr/local/bin/uvicorn: exec format error") in {
        (x.kind, x.value) for x in s.expect.symptoms
    }
    text = written.scenario.read_text()
    assert "TODO: platform unknown" in text  # no node, no image platform: native, marked
    written2 = draft.write(
        b,
        project / "scenarios" / "with-platform.yaml",
        root=project,
        platforms={next(iter(b.images)).image: "linux/arm64"},
    )
    assert "platform: native" in written2.scenario.read_text()  # node platform unknown: cannot say foreign


def test_a_single_pod_file_is_accepted(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    pod = bundle.read(SEED).pods[0]
    (folder / "pod.yaml").write_text(yaml.safe_dump(pod))
    b = bundle.read(folder)
    assert len(b.pods) == 1 and b.workload == ()
    written = _write(b, project)
    assert "bare pod" in written.scenario.read_text()
    assert scenario.load(written.scenario, find_project(root=project)).workload.deployment is None


def test_bad_bundles_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError) as no_pods:
        bundle.read(empty)
    assert "no pods" in no_pods.value.cause and "\n" not in no_pods.value.cause
    with pytest.raises(BundleError, match="no such bundle"):
        bundle.read(tmp_path / "missing")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(BundleError, match="not a readable"):
        bundle.read(broken)
    partial = tmp_path / "partial"
    shutil.copytree(SEED, partial)
    (partial / bundle.PODS).unlink()
    with pytest.raises(BundleError, match="holds no pods"):
        bundle.read(partial)


def test_a_bundle_missing_events_and_logs_still_drafts(project: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(SEED, partial)
    (partial / bundle.EVENTS).unlink()
    shutil.rmtree(partial / bundle.LOGS)
    b = bundle.read(partial)
    assert any("events.json" in m for m in b.missing)
    written = _write(b, project)
    kinds = {x.kind for x in scenario.load(written.scenario, find_project(root=project)).expect.symptoms}
    assert "previousLogContains" not in kinds and "eventContains" not in kinds
    assert "events.json: not in the bundle" in written.scenario.read_text()


def _with_states(source: Path, into: Path, statuses: str, state: dict[str, Any], **fields: Any) -> bundle.Bundle:
    """A copy of a recorded bundle whose pods' STATUSES (containerStatuses ...) all show STATE (and FIELDS)."""
    shutil.copytree(source, into)
    pods = json.loads((into / bundle.PODS).read_text())
    for pod in pods["items"]:
        for cs in pod["status"][statuses]:
            cs.update(state=state, **fields)
    (into / bundle.PODS).write_text(json.dumps(pods))
    return bundle.read(into)


def test_between_restarts_is_still_a_crash_loop(project: Path, tmp_path: Path) -> None:
    """A snapshot that caught the container running again after an exit: lastState and BackOff decide."""
    running = {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
    written = _write(_with_states(SEED, tmp_path / "between", "containerStatuses", running, ready=False), project)
    s = scenario.load(written.scenario, find_project(root=project))
    assert s.expect.outcome is Outcome.CRASH_LOOP
    assert "between restarts" in written.scenario.read_text()


def test_init_container_caught_terminated_is_still_an_init_crash_loop(project: Path, tmp_path: Path) -> None:
    """The pod is Pending and its init container shows Error before the back-off's Waiting reason: BackOff decides."""
    failed = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-12-01T10:35:00Z"}}
    written = _write(_with_states(INIT, tmp_path / "init-between", "initContainerStatuses", failed), project)
    s = scenario.load(written.scenario, find_project(root=project))
    assert s.expect.outcome is Outcome.INIT_CRASH_LOOP
    symptoms = {(x.kind, x.value) for x in s.expect.symptoms}
    assert ("terminatedReason", "Error") in symptoms and ("exitCode", 1) in symptoms
    assert "between restarts" in written.scenario.read_text()


def test_existing_files_are_never_overwritten(project: Path) -> None:
    b = bundle.read(SEED)
    _write(b, project)
    with pytest.raises(BundleError, match="already exists"):
        _write(b, project)


def test_an_invalid_draft_leaves_nothing(project: Path, tmp_path: Path) -> None:
    copied = tmp_path / "job"
    shutil.copytree(SEED, copied)
    workload = json.loads((copied / bundle.WORKLOAD).read_text())
    dep = next(o for o in workload["items"] if o["kind"] == "Deployment")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Never"  # no Deployment allows this
    workload["items"] = [bad]
    (copied / bundle.WORKLOAD).write_text(json.dumps(workload))
    with pytest.raises(Exception):  # noqa: B017 - ScenarioError or BundleError, either names the file
        _write(bundle.read(copied), project)
    assert not (project / "scenarios" / "drafted.yaml").exists()
    assert not (project / "scenarios" / "manifests" / "drafted.yaml").exists()
    assert not list((project / "scenarios").rglob("*.yaml"))
