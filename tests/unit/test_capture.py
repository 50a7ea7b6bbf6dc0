"""capture: the read-only guard, the kubeconfig left alone, and a bundle written from a (local, fake) API server.

The API server here is a small HTTP server on 127.0.0.1 that answers from a bundle recorded on the
harness's cluster (tests/unit/data/bundles, see its README) and counts every request it receives:
a write refused by the guard must never reach it.
"""

from __future__ import annotations

import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client as k8s

from harness import bundle, capture
from harness.capture import CaptureError, ReadOnlyViolation, Target

DATA = Path(__file__).parent / "data" / "bundles"
SEED = DATA / "arm64-on-amd64"


class FakeApi:
    """Answers GETs from a recorded bundle; records (method, path, query) of every request it gets."""

    def __init__(self, recorded: Path, forbidden: tuple[str, ...] = ()) -> None:
        self.recorded = recorded
        self.forbidden = forbidden
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.manifest = json.loads((recorded / bundle.MANIFEST).read_text())
        self.namespace = self.manifest["namespace"]

    def items(self, name: str) -> list[dict[str, Any]]:
        return list(json.loads((self.recorded / name).read_text())["items"])

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        self.requests.append((method, path, query))
        if method != "GET":
            return 201, "application/json", b"{}"
        if any(path.endswith(f) for f in self.forbidden):
            return 403, "application/json", json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden"}).encode()
        ns = f"/namespaces/{self.namespace}"
        workload = self.items(bundle.WORKLOAD)
        if path.startswith(f"/apis/apps/v1{ns}/deployments/"):
            name = path.rsplit("/", 1)[1]
            found = [o for o in workload if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
            return (200, "application/json", json.dumps(found[0]).encode()) if found else (404, "text/plain", b"")
        if path.startswith(f"/apis/apps/v1{ns}/replicasets/"):
            name = path.rsplit("/", 1)[1]
            found = [o for o in workload if o["kind"] == "ReplicaSet" and o["metadata"]["name"] == name]
            return (200, "application/json", json.dumps(found[0]).encode()) if found else (404, "text/plain", b"")
        if path == f"/apis/apps/v1{ns}/replicasets":
            body = {"kind": "ReplicaSetList", "items": [o for o in workload if o["kind"] == "ReplicaSet"]}
            return 200, "application/json", json.dumps(body).encode()
        if path == f"/api/v1{ns}/pods":
            return 200, "application/json", json.dumps({"kind": "PodList", "items": self.items(bundle.PODS)}).encode()
        if path == f"/api/v1{ns}/events":
            body = {"kind": "EventList", "items": self.items(bundle.EVENTS)}
            return 200, "application/json", json.dumps(body).encode()
        if path.startswith(f"/api/v1{ns}/pods/") and path.endswith("/log"):
            pod = path.split("/")[-2]
            container = query["container"][0]
            which = "previous" if query.get("previous") == ["true"] else "current"
            log = self.recorded / bundle.log_path(pod, container, which)
            if not log.is_file():
                return 400, "application/json", b'{"kind":"Status","code":400}'
            return 200, "text/plain", log.read_bytes()
        if path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            nodes = json.loads((self.recorded / bundle.NODES).read_text())
            found = [n for n in nodes if n["name"] == name]
            if not found:
                return 404, "text/plain", b""
            body = {"kind": "Node", "metadata": {"name": name, "labels": found[0]["labels"]}}
            body["status"] = {"nodeInfo": found[0]["nodeInfo"]}
            return 200, "application/json", json.dumps(body).encode()
        if path == "/api/v1/namespaces":
            return 200, "application/json", b'{"kind":"NamespaceList","items":[]}'
        return 404, "text/plain", b""


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    yield from _serve(FakeApi(SEED))


def _serve(api: FakeApi) -> Iterator[tuple[FakeApi, str]]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, kind, body = api.answer(self.command, parts.path, parse_qs(parts.query))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: prod\n  cluster:\n    server: {server}\n"
        "users:\n- name: sre\n  user:\n    token: not-a-secret\n"
        "contexts:\n- name: aks-prod\n  context:\n    cluster: prod\n    user: sre\n"
        "current-context: aks-prod\n"
    )
    return path


def test_writes_are_refused_before_they_leave_the_process(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    config = _kubeconfig(tmp_path, server)
    client = capture.open_client("aks-prod", config)
    core = k8s.CoreV1Api(client)
    apps = k8s.AppsV1Api(client)
    writes = [
        lambda: core.create_namespace({"metadata": {"name": "x"}}),
        lambda: core.delete_namespace("default"),
        lambda: core.patch_namespace("default", {"metadata": {"labels": {"a": "b"}}}),
        lambda: apps.delete_namespaced_deployment("orders-api", "default"),
        lambda: core.delete_collection_namespaced_pod("default"),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyViolation) as refused:
            write()
        assert "capture is read-only" in refused.value.cause
    # the transport itself refuses, for a caller that goes around the API classes
    with pytest.raises(ReadOnlyViolation):
        client.rest_client.pool_manager.request("POST", f"{server}/api/v1/namespaces", body=b"{}")
    with pytest.raises(ReadOnlyViolation):
        client.rest_client.pool_manager.urlopen("DELETE", f"{server}/api/v1/namespaces/default")
    assert api.requests == [], "a refused write reached the server"
    core.list_namespace()  # a read goes through
    assert [(m, p) for m, p, _ in api.requests] == [("GET", "/api/v1/namespaces")]


def test_guard_is_idempotent_and_marks_the_client(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    _, server = fake_api
    client = capture.open_client("aks-prod", _kubeconfig(tmp_path, server))
    assert capture.is_guarded(client)
    assert capture.guard(client) is client
    assert capture.is_guarded(client)


def test_missing_context_and_kubeconfig_are_one_line(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(CaptureError) as missing:
        capture.open_client("aks-staging", config)
    assert "aks-staging" in missing.value.cause and "aks-prod" in missing.value.cause
    assert "\n" not in missing.value.cause
    with pytest.raises(CaptureError) as no_file:
        capture.open_client("aks-prod", tmp_path / "nope")
    assert "does not exist" in no_file.value.cause


def _capture(api: FakeApi, server: str, tmp_path: Path, out: Path, **kw: Any) -> capture.CaptureResult:
    config = tmp_path / "config"
    client = capture.open_client("aks-prod", config if config.is_file() else _kubeconfig(tmp_path, server))
    deployment = api.manifest["target"]["deployment"]
    return capture.capture(
        client, Target(api.namespace, deployment=deployment), out, context="aks-prod", local_images=False, **kw
    )


def test_capture_writes_a_complete_bundle_with_gets_only(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    config = _kubeconfig(tmp_path, server)
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    out = tmp_path / "out" / "bundle"
    result = _capture(api, server, tmp_path, out)
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before, "the kubeconfig was written"
    assert {m for m, _, _ in api.requests} == {"GET"}
    paths = [p for _, p, _ in api.requests]
    assert not [p for p in paths if "/secrets" in p or "/configmaps" in p], paths
    assert result.path == out and out.is_dir()
    assert [p.name for p in out.parent.iterdir()] == ["bundle"], "a temporary folder was left"
    read = bundle.read(out)
    recorded = bundle.read(SEED)
    assert [p["metadata"]["name"] for p in read.pods] == [p["metadata"]["name"] for p in recorded.pods]
    assert {o["kind"] for o in read.workload} == {"Deployment", "ReplicaSet"}
    assert all("managedFields" not in o["metadata"] for o in [*read.workload, *read.pods])
    assert read.events and read.nodes
    assert {(x.pod, x.container, x.which) for x in read.logs} >= {
        (x.pod, x.container, x.which) for x in recorded.logs if x.which == "previous"
    }
    assert all(r.image_id and r.node_platform for r in read.images)
    logs = [q for _, p, q in api.requests if p.endswith("/log")]
    assert logs and all(q["tailLines"] == ["200"] and q["limitBytes"] == [str(256 * 1024)] for q in logs)
    assert read.missing == ()


def test_a_forbidden_read_is_one_line_and_the_rest_is_saved(tmp_path: Path) -> None:
    for api, server in _serve(FakeApi(SEED, forbidden=("/events",))):
        result = _capture(api, server, tmp_path, tmp_path / "b.tar.gz")
        assert any("events" in m and "forbidden by RBAC (HTTP 403)" in m for m in result.missing), result.missing
        manifest_missing = bundle.read(result.path).missing
        assert any("forbidden" in m for m in manifest_missing)
        read = bundle.read(result.path)
        assert read.pods and read.events == ()


def test_tar_gz_bundle_is_renamed_into_place(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    out = tmp_path / "incident.tar.gz"
    _capture(api, server, tmp_path, out)
    assert [p.name for p in tmp_path.iterdir() if p.name != "config"] == ["incident.tar.gz"]
    with tarfile.open(out) as archive:
        names = archive.getnames()
    assert "incident/manifest.json" in names and "incident/pods.json" in names


def test_existing_out_and_no_target_are_refused(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    (tmp_path / "taken").mkdir()
    with pytest.raises(CaptureError, match="already exists"):
        _capture(api, server, tmp_path, tmp_path / "taken")
    client = capture.open_client("aks-prod", _kubeconfig(tmp_path, server))
    with pytest.raises(CaptureError, match="--deployment or --selector"):
        capture.capture(client, Target(api.namespace), tmp_path / "x", local_images=False)
    assert api.requests == []


def test_a_deployment_that_is_not_there(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    client = capture.open_client("aks-prod", _kubeconfig(tmp_path, server))
    with pytest.raises(CaptureError, match="no deployment 'nope'"):
        capture.capture(client, Target(api.namespace, deployment="nope"), tmp_path / "x", local_images=False)
    assert not (tmp_path / "x").exists()


def test_selector_capture_reads_the_pods_owners(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, server = fake_api
    client = capture.open_client("aks-prod", _kubeconfig(tmp_path, server))
    result = capture.capture(
        client,
        Target(api.namespace, selector="app.kubernetes.io/name=orders-api"),
        tmp_path / "sel",
        local_images=False,
    )
    read = bundle.read(result.path)
    assert {o["kind"] for o in read.workload} == {"Deployment", "ReplicaSet"}


def test_strip_managed() -> None:
    obj = {"kind": "Pod", "metadata": {"name": "p", "managedFields": [{"manager": "kubectl"}]}}
    assert capture.strip_managed(obj) == {"kind": "Pod", "metadata": {"name": "p"}}


def test_cli_has_capture_and_draft() -> None:
    from harness import cli

    parser = cli.build_parser()
    args = parser.parse_args(["capture", "--context", "c", "-n", "ns", "--deployment", "d", "--out", "b.tar.gz"])
    assert (args.context, args.namespace, args.deployment, args.selector, args.out) == (
        "c",
        "ns",
        "d",
        None,
        "b.tar.gz",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["capture", "--context", "c", "-n", "ns", "--deployment", "d", "--selector", "a=b"])
    args = parser.parse_args(["draft", "bundle", "--out", "scenarios/x.yaml", "--image-platform", "img:1=linux/arm64"])
    assert (args.bundle, args.out, args.image_platform) == ("bundle", "scenarios/x.yaml", ["img:1=linux/arm64"])


def test_missing_context_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    config = _kubeconfig(tmp_path, "http://127.0.0.1:9")
    status = cli.main(["capture", "--kubeconfig", str(config), "--context", "nope", "-n", "x", "--deployment", "y"])
    err = capsys.readouterr().err
    assert status == 3 and "context 'nope' is not in kubeconfig" in err


def test_local_image_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's image with the imageID that ran; else the same reference, said so; else unknown."""
    from harness import layers

    engine = {
        "sha256:aaa": {"Id": "sha256:aaa", "Os": "linux", "Architecture": "arm64", "Variant": "v8"},
        "web:2": {"Id": "sha256:bbb", "Os": "linux", "Architecture": "amd64"},
    }
    monkeypatch.setattr(layers, "engine_inspect", lambda ref: engine.get(ref))
    known = capture.local_image_platforms(
        [("sha256:aaa", "web:1"), ("docker.io/library/import@sha256:ccc", "web:2"), ("", "web:2"), ("", "nope:1")]
    )
    assert known["sha256:aaa"] == ("linux/arm64/v8", "local Docker engine image sha256:aaa: the imageID that ran")
    assert known["docker.io/library/import@sha256:ccc"][0] == "linux/amd64"
    assert "not compared with the imageID" in known["docker.io/library/import@sha256:ccc"][1]
    assert "never started" in known["web:2"][1]
    assert "nope:1" not in known
