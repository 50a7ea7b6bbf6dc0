"""Capture an incident's evidence from any cluster, read-only, into one bundle (harness.bundle).

This is the one command that talks to a cluster the harness did not make, so it can never write
there: the client it uses refuses every request that is not a GET (a watch is a GET) in its
transport, before anything is sent, whatever the RBAC would allow (``guard``). The kubeconfig
is read, never written (``persist_config=False``: a refreshed token is not saved back).

What it reads: the workload (a Deployment and its ReplicaSets, or the owners of the selector's
pods), the pods with status, the namespace's events about them, the current and last-terminated
log of every container (bounded), each node's ``nodeInfo`` for the nodes the pods ran on. It
never reads Secrets or ConfigMaps: env values taken from them stay references (``valueFrom``)
as the pod spec holds them. ``managedFields`` are stripped. A read the cluster refuses (RBAC
403, not found, a log the kubelet removed) is one line in the bundle's manifest; what could be
read is still saved. For each image, the imageID that ran is kept, with the node's platform and,
when the local Docker engine holds that very image (same ID or repo digest), its platform.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from harness import bundle
from harness.bundle import Obj
from harness.errors import HarnessError
from harness.outcomes import LOG_GONE, selector_string

READ_METHODS: Final = frozenset({"GET"})
LOG_TAIL_LINES: Final = 200
LOG_LIMIT_BYTES: Final = 256 * 1024
REQUEST_TIMEOUT: Final = (5, 30)
# What a node's status.nodeInfo tells about the platform and its software (not its machine or boot IDs).
NODE_INFO: Final = frozenset(
    {
        "architecture",
        "operatingSystem",
        "osImage",
        "kernelVersion",
        "kubeletVersion",
        "kubeProxyVersion",
        "containerRuntimeVersion",
    }
)
OWNER_READERS: Final = {
    "ReplicaSet": ("apps", "read_namespaced_replica_set"),
    "Deployment": ("apps", "read_namespaced_deployment"),
    "StatefulSet": ("apps", "read_namespaced_stateful_set"),
    "DaemonSet": ("apps", "read_namespaced_daemon_set"),
    "Job": ("batch", "read_namespaced_job"),
    "CronJob": ("batch", "read_namespaced_cron_job"),
}


class ReadOnlyViolation(HarnessError):
    """A request other than GET was about to leave the capture client: refused before it was sent."""


class CaptureError(HarnessError):
    """Capture cannot start or go on: the kubeconfig, the context, or the workload named is not there."""


# ---------------------------------------------------------------------------------------------
# The read-only client


def refuse_writes(method: str, url: str) -> None:
    """Raise ReadOnlyViolation unless method is GET (watches are GETs)."""
    if str(method).upper() not in READ_METHODS:
        path = urlsplit(str(url)).path or str(url)
        raise ReadOnlyViolation(
            f"refused {str(method).upper()} {path}: capture is read-only and sends only GET requests",
            "this is a bug in the harness if capture made it; nothing was sent to the cluster",
        )


class _ReadOnlyPool:
    """Stands in for the REST client's urllib3 pool manager: every request is checked before it is sent."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        refuse_writes(method, url)
        return self._inner.request(method, url, *args, **kwargs)

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        refuse_writes(method, url)
        return self._inner.urlopen(method, url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def guard(api: k8s.ApiClient) -> k8s.ApiClient:
    """Make api refuse every non-GET request, twice over: at the REST client's request() and in its transport.

    The transport is the urllib3 pool manager every request of the client goes through; it is
    replaced by a wrapper that checks the method before delegating, so a refused request never
    reaches a socket.
    """
    rest = api.rest_client
    if isinstance(rest.pool_manager, _ReadOnlyPool):
        return api
    rest.pool_manager = _ReadOnlyPool(rest.pool_manager)  # type: ignore[assignment]
    original: Callable[..., Any] = rest.request

    def checked(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        refuse_writes(method, url)
        return original(method, url, *args, **kwargs)

    rest.request = checked  # type: ignore[method-assign]
    return api


def is_guarded(api: k8s.ApiClient) -> bool:
    return isinstance(api.rest_client.pool_manager, _ReadOnlyPool)


def kubeconfig_file(kubeconfig: Path | None) -> str:
    """The kubeconfig a capture reads: --kubeconfig, else $KUBECONFIG (may list several), else ~/.kube/config."""
    if kubeconfig is not None:
        return str(kubeconfig)
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def open_client(context: str, kubeconfig: Path | None = None) -> k8s.ApiClient:
    """A guarded (GET-only) client for one context of the user's kubeconfig; the file is never written."""
    where = kubeconfig_file(kubeconfig)
    if kubeconfig is not None and not kubeconfig.is_file():
        raise CaptureError(f"kubeconfig {kubeconfig} does not exist", "pass the file kubectl uses (--kubeconfig)")
    try:
        contexts, _active = k8s_config.list_kube_config_contexts(config_file=where)
    except (ConfigException, OSError) as exc:
        raise CaptureError(
            f"kubeconfig {where} cannot be read ({' '.join(str(exc).split())})", "check it with kubectl config view"
        ) from exc
    names = [str(c.get("name")) for c in contexts or []]
    if context not in names:
        raise CaptureError(
            f"context {context!r} is not in kubeconfig {where} (it has: {', '.join(names) or 'none'})",
            "name one of them with --context (kubectl config get-contexts)",
        )
    try:
        api = k8s_config.new_client_from_config(config_file=where, context=context, persist_config=False)
    except (ConfigException, OSError) as exc:
        raise CaptureError(
            f"context {context!r} of {where} cannot be used ({' '.join(str(exc).split())})",
            "check it with kubectl --context it get pods",
        ) from exc
    return guard(api)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Target:
    namespace: str
    deployment: str | None = None
    selector: str | None = None


@dataclass(frozen=True)
class CaptureResult:
    path: Path
    pods: int
    captured: tuple[str, ...]
    missing: tuple[str, ...]


def strip_managed(obj: Obj) -> Obj:
    """The object without metadata.managedFields (nested items too)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


class _Reader:
    """Raw JSON reads; a refused read (403, 404) becomes one line in missing."""

    def __init__(self, api: k8s.ApiClient, context: str) -> None:
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.context = context
        self.missing: list[str] = []
        self.host = str(getattr(api.configuration, "host", ""))

    def raw(self, what: str, fn: Callable[..., Any], *args: Any, quiet: Sequence[int] = (), **kwargs: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if not exc.status:
                raise self._gone(what, exc) from exc
            if exc.status in quiet:
                return None
            self.missing.append(f"{what}: {_refusal(exc)}")
            return None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._gone(what, exc) from exc
        return resp.data

    def json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj | None:
        data = self.raw(what, fn, *args, **kwargs)
        if data is None:
            return None
        try:
            loaded = json.loads(data)
        except ValueError:
            self.missing.append(f"{what}: the API server answered with something that is not JSON")
            return None
        return loaded if isinstance(loaded, dict) else None

    def _gone(self, what: str, exc: BaseException) -> CaptureError:
        text = " ".join(str(getattr(exc, "reason", None) or exc).split())[:200]
        return CaptureError(
            f"the API server {self.host} of context {self.context!r} does not answer while {what} ({text})",
            "check it with kubectl --context it get --raw /readyz",
        )


def _refusal(exc: ApiException) -> str:
    if exc.status == 403:
        return "forbidden by RBAC (HTTP 403)"
    if exc.status == 404:
        return "not found (HTTP 404)"
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


def _items(doc: Obj | None) -> list[Obj]:
    """A list's items, each with the kind and apiVersion the API leaves out of list items."""
    doc = doc or {}
    kind = str(doc.get("kind") or "").removesuffix("List")
    head = {"apiVersion": doc.get("apiVersion"), "kind": kind} if kind else {}
    return [strip_managed({**head, **i}) for i in doc.get("items") or [] if isinstance(i, dict)]


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    owners = [o for o in (obj.get("metadata") or {}).get("ownerReferences") or [] if isinstance(o, Mapping)]
    chosen = next((o for o in owners if o.get("controller")), None)
    return (str(chosen.get("kind")), str(chosen.get("name"))) if chosen else None


def _kind_name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{_name(obj)}"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _workload(reader: _Reader, target: Target) -> tuple[list[Obj], list[Obj]]:
    """(workload objects, pods)."""
    ns = target.namespace
    if target.deployment:
        dep = reader.json(
            f"deployment {ns}/{target.deployment}", reader.apps.read_namespaced_deployment, target.deployment, ns
        )
        if dep is None and any(m.endswith("(HTTP 404)") for m in reader.missing):
            raise CaptureError(
                f"no deployment {target.deployment!r} in namespace {ns!r} (context {reader.context!r})",
                f"list them with kubectl --context {reader.context} -n {ns} get deployments",
            )
        objects = [strip_managed(dep)] if dep else []
        selector = selector_string((dep or {}).get("spec", {}).get("selector") or {}) if dep else ""
        replica_sets = _items(
            reader.json(
                f"replicasets of deployment {ns}/{target.deployment}",
                reader.apps.list_namespaced_replica_set,
                ns,
                **({"label_selector": selector} if selector else {}),
            )
        )
        replica_sets = [rs for rs in replica_sets if _controller(rs) == ("Deployment", target.deployment)]
        objects += replica_sets
        pods = _items(
            reader.json(
                f"pods of deployment {ns}/{target.deployment}",
                reader.core.list_namespaced_pod,
                ns,
                **({"label_selector": selector} if selector else {}),
            )
        )
        owners = {_name(rs) for rs in replica_sets}
        prefix = f"{target.deployment}-"
        pods = [
            p
            for p in pods
            if (c := _controller(p)) is not None
            and c[0] == "ReplicaSet"
            and (c[1] in owners or (not owners and c[1].startswith(prefix)))
        ]
        return objects, pods
    pods = _items(
        reader.json(
            f"pods in {ns} with selector {target.selector}",
            reader.core.list_namespaced_pod,
            ns,
            label_selector=target.selector or "",
        )
    )
    owners_found: list[Obj] = []
    seen: set[tuple[str, str]] = set()
    queue = [c for p in pods if (c := _controller(p)) is not None]
    while queue:
        kind, name = queue.pop(0)
        if (kind, name) in seen or kind not in OWNER_READERS:
            continue
        seen.add((kind, name))
        group, method = OWNER_READERS[kind]
        api = reader.apps if group == "apps" else reader.batch
        obj = reader.json(f"{kind.lower()} {ns}/{name}", getattr(api, method), name, ns)
        if obj is None:
            continue
        owners_found.append(strip_managed(obj))
        owner = _controller(obj)
        if owner is not None:
            queue.append(owner)
    return owners_found, pods


def _events(reader: _Reader, namespace: str, objects: Sequence[Obj], pods: Sequence[Obj]) -> list[Obj]:
    about = {(str(o.get("kind") or ""), _name(o)) for o in objects} | {("Pod", _name(p)) for p in pods}
    events = _items(reader.json(f"events in {namespace}", reader.core.list_namespaced_event, namespace))
    kept = []
    for e in events:
        inv = e.get("involvedObject") or {}
        if (str(inv.get("kind") or ""), str(inv.get("name") or "")) in about:
            kept.append(e)
    return kept


def _read_log(reader: _Reader, ns: str, pod: str, container: str, previous: bool) -> str | None:
    data = reader.raw(
        f"log of {ns}/{pod} container {container}{' (previous instance)' if previous else ''}",
        reader.core.read_namespaced_pod_log,
        pod,
        ns,
        container=container,
        previous=previous,
        tail_lines=LOG_TAIL_LINES,
        limit_bytes=LOG_LIMIT_BYTES,
        quiet=(400, 404),
    )
    if data is None:
        return None
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return None if text.startswith(LOG_GONE) else text


def _logs(reader: _Reader, ns: str, pods: Sequence[Obj]) -> list[tuple[str, str, str, str, str]]:
    """(pod, container, which, text, instance) for each log read.

    The last terminated instance, as the harness's watch reads it: a container that is
    terminated now is its own last instance (its current log); one that runs or waits again
    after an exit has it in lastState (--previous, else the current log while the kubelet has
    not started a new instance yet). A log the kubelet removed is a line in missing.
    """
    found = []
    for pod in pods:
        name = _name(pod)
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in status.get(key) or []:
                cname = str(cs.get("name") or "")
                state, last = cs.get("state") or {}, cs.get("lastState") or {}
                if state.get("running") or state.get("terminated"):
                    current = _read_log(reader, ns, name, cname, previous=False)
                    instance = str((state.get("running") or state.get("terminated") or {}).get("containerID") or "")
                    if current is not None:
                        found.append((name, cname, "current", current, instance))
                    if state.get("terminated"):
                        if current is not None:
                            found.append((name, cname, "previous", current, instance))
                        continue
                if last.get("terminated"):
                    instance = str(last["terminated"].get("containerID") or "")
                    text = _read_log(reader, ns, name, cname, previous=True)
                    if text is None and not state.get("running"):
                        text = _read_log(reader, ns, name, cname, previous=False)
                    if text is None:
                        reader.missing.append(
                            f"log of {ns}/{name} container {cname} (last terminated instance): "
                            "gone (the kubelet keeps one dead instance per container)"
                        )
                    else:
                        found.append((name, cname, "previous", text, instance))
    return found


def _nodes(reader: _Reader, pods: Sequence[Obj]) -> list[Obj]:
    names = sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""})
    nodes = []
    for name in names:
        node = reader.json(f"node {name}", reader.core.read_node, name)
        if node is None:
            continue
        labels = (node.get("metadata") or {}).get("labels") or {}
        nodes.append(
            {
                "name": name,
                "nodeInfo": {
                    k: v for k, v in ((node.get("status") or {}).get("nodeInfo") or {}).items() if k in NODE_INFO
                },
                "labels": {k: v for k, v in labels.items() if k.startswith(("kubernetes.io/", "node.kubernetes.io/"))},
            }
        )
    return nodes


def _platform_of(info: Mapping[str, Any]) -> str:
    if not info.get("Os") or not info.get("Architecture"):
        return ""
    return f"{info['Os']}/{info['Architecture']}" + (f"/{info['Variant']}" if info.get("Variant") else "")


def local_image_platforms(runs: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """imageID (or the reference, for a container that never started) -> (platform, how it was known).

    Best: the engine has the very image that ran (its ID or a repo digest is the imageID). Else an
    image under the same reference, said so (kind's image import gives loaded images an imageID of
    its own, so the engine's ID cannot be compared there).
    """
    from harness import layers

    known: dict[str, tuple[str, str]] = {}
    for image_id, ref in sorted(set(runs)):
        if (image_id or ref) in known or not (image_id or ref):
            continue
        try:
            by_id = (
                layers.engine_inspect(image_id.removeprefix("docker-pullable://").removeprefix("docker.io/"))
                if image_id
                else None
            )
            digest = image_id.rpartition("@")[2]
            if by_id and (
                by_id.get("Id") == image_id
                or any(str(d).endswith(f"@{digest}") for d in by_id.get("RepoDigests") or [])
            ):
                if _platform_of(by_id):
                    known[image_id] = (
                        _platform_of(by_id),
                        f"local Docker engine image {by_id.get('Id')}: the imageID that ran",
                    )
                continue
            by_ref = layers.engine_inspect(ref) if ref else None
        except HarnessError:
            return known  # no engine here: platforms stay unknown
        if by_ref and _platform_of(by_ref):
            known[image_id or ref] = (
                _platform_of(by_ref),
                f"local Docker engine image {ref} ({by_ref.get('Id')}): same reference, "
                + ("not compared with the imageID that ran" if image_id else "the container never started"),
            )
    return known


# ---------------------------------------------------------------------------------------------
# Writing


def default_out(target: Target, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    what = target.deployment or "pods"
    return Path(f"incident-{target.namespace}-{what}-{stamp}")


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temp folder next to final; removed unless renamed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def capture(
    api: k8s.ApiClient,
    target: Target,
    out: Path,
    *,
    context: str = "",
    local_images: bool = True,
    now: datetime | None = None,
) -> CaptureResult:
    """Read the target's evidence through api (guarded here if it is not yet) and write one bundle at out.

    out ending in .tar.gz makes an archive, anything else a folder; it must not exist. The bundle is
    written next to it under a temporary name and renamed into place when complete.
    """
    if not (target.deployment or target.selector) or (target.deployment and target.selector):
        raise CaptureError("name the workload with one of --deployment or --selector", "e.g. --deployment orders-api")
    if out.exists():
        raise CaptureError(f"{out} already exists", "name a new folder or .tar.gz with --out")
    if not is_guarded(api):
        guard(api)
    reader = _Reader(api, context)
    objects, pods = _workload(reader, target)
    if not pods:
        reader.missing.append(
            f"pods of {(target.deployment and 'deployment ' + target.deployment) or 'selector ' + str(target.selector)}"
            f" in {target.namespace}: none found"
        )
    events = _events(reader, target.namespace, objects, pods)
    logs = _logs(reader, target.namespace, pods)
    nodes = _nodes(reader, pods)
    infos = {n["name"]: n["nodeInfo"] for n in nodes}
    runs = bundle.image_runs(pods, infos)
    known = local_image_platforms([(r.image_id, r.image) for r in runs]) if local_images else {}
    runs = bundle.image_runs(pods, infos, known)
    captured_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    final = out
    archive = out.name.endswith((".tar.gz", ".tgz"))
    folder_name = out.name.removesuffix(".tar.gz").removesuffix(".tgz") if archive else out.name
    with _staging(final) as tmp:
        root = tmp / folder_name
        root.mkdir()
        _dump(root / bundle.WORKLOAD, {"kind": "List", "items": objects})
        _dump(root / bundle.PODS, {"kind": "List", "items": pods})
        _dump(root / bundle.EVENTS, {"kind": "List", "items": events})
        _dump(root / bundle.NODES, nodes)
        _dump(root / bundle.IMAGES, [bundle.record_json(r) for r in runs])
        log_entries = []
        for pod, container, which, text, instance in logs:
            rel = bundle.log_path(pod, container, which)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
            log_entries.append({"pod": pod, "container": container, "which": which, "instance": instance, "file": rel})
        captured = [
            f"{bundle.WORKLOAD}: {', '.join(_kind_name(o) for o in objects) or 'none'}",
            f"{bundle.PODS}: {len(pods)} pod(s)",
            f"{bundle.EVENTS}: {len(events)} event(s)",
            f"{bundle.NODES}: {', '.join(n['name'] for n in nodes) or 'none'}",
            f"{bundle.IMAGES}: {len(runs)} container(s), {len(known)} image platform(s) known",
            f"{bundle.LOGS}: {len(log_entries)} log(s) (last {LOG_TAIL_LINES} lines, at most {LOG_LIMIT_BYTES} bytes each)",
        ]
        missing = list(dict.fromkeys(reader.missing))
        _dump(
            root / bundle.MANIFEST,
            {
                "format": bundle.FORMAT,
                "capturedAt": captured_at,
                "context": context,
                "namespace": target.namespace,
                "target": {"deployment": target.deployment, "selector": target.selector},
                "captured": captured,
                "missing": missing,
                "logs": log_entries,
                "limits": {"tailLines": LOG_TAIL_LINES, "limitBytes": LOG_LIMIT_BYTES},
                "notes": [
                    "read-only: only GET requests were sent",
                    "Secrets and ConfigMaps were not read; env values from them are references (valueFrom)",
                    "managedFields stripped",
                ],
            },
        )
        if archive:
            staged = tmp / out.name
            with tarfile.open(staged, "w:gz") as tar:
                tar.add(root, arcname=folder_name)
            os.replace(staged, final)
        else:
            os.rename(root, final)
    return CaptureResult(final, len(pods), tuple(captured), tuple(missing))
