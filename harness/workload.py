"""Workloads: render manifests for a namespace and image, apply them, roll out and roll back."""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from harness.errors import BadInput, HarnessError, ManifestRejected

MANAGED_LABEL = "incident-harness.io/managed"
FIELD_MANAGER = "incident-harness"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


@dataclass(frozen=True)
class Workload:
    """What was applied: the namespace, the objects, and the Deployment to watch."""

    namespace: str
    objects: tuple[dict[str, Any], ...]
    deployment: str | None
    selector: str


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every YAML document of the files, in order; a bad file names itself and the document."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except OSError as exc:
            raise HarnessError(
                f"cannot read manifest {path}: {exc.strerror}", "check the path in the scenario"
            ) from exc
        except yaml.YAMLError as exc:
            raise HarnessError(f"manifest {path} is not valid YAML: {exc}", "fix the file") from exc
        for index, doc in enumerate(loaded):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise HarnessError(
                    f"manifest {path}, document {index + 1}: not a Kubernetes object (no kind/apiVersion)",
                    "every YAML document must be an object with apiVersion, kind and metadata",
                )
            docs.append(doc)
    return docs


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.setdefault("spec", {})  # type: ignore[no-any-return]
    if kind in POD_KINDS:
        return obj.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})  # type: ignore[no-any-return]
    return None


def render(
    docs: list[dict[str, Any]],
    *,
    namespace: str,
    image: str | None = None,
    container: str | None = None,
    pull_policy: str | None = None,
    init_image: str | None = None,
    patches: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Copies of the objects placed in the namespace, with the image (and pull policy) set.

    ``image`` replaces the image of every container (or only ``container``); ``init_image``
    adds nothing but replaces the images of init containers; ``patches`` is merged into each
    Deployment's spec (e.g. {"progressDeadlineSeconds": 30}).
    """
    out = []
    for original in docs:
        obj = copy.deepcopy(original)
        meta = obj.setdefault("metadata", {})
        if obj["kind"] != "Namespace":
            meta["namespace"] = namespace
        meta.setdefault("labels", {})[MANAGED_LABEL] = "true"
        spec = pod_spec(obj)
        if spec is not None:
            for c in spec.get("containers", []):
                if image and (container is None or c.get("name") == container):
                    c["image"] = image
                if pull_policy:
                    c["imagePullPolicy"] = pull_policy
            for c in spec.get("initContainers", []):
                if init_image:
                    c["image"] = init_image
                if pull_policy:
                    c["imagePullPolicy"] = pull_policy
        if patches and obj["kind"] == "Deployment":
            _merge(obj["spec"], patches)
        out.append(obj)
    return out


def substitute(docs: list[dict[str, Any]], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Copies of the objects with ``${NAME}`` placeholders in string values replaced (envsubst's syntax).

    Only the names in values are replaced; any other ``$`` text is left as written.
    """

    def fill(value: Any) -> Any:
        if isinstance(value, str) and "$" in value:
            return string.Template(value).safe_substitute(values)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return [fill(doc) for doc in docs]


def image_repository(image: str) -> str | None:
    """The repository path of an image reference, without registry host, tag or digest.

    "registry.example.com/orders-api:${GIT_SHA}" -> "orders-api"; "python:3.11" -> "python";
    None when nothing is left (an image of only placeholders).
    """
    name = image.split("@", 1)[0]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        name = rest
    head, colon, tail = name.rpartition(":")
    if colon and "/" not in tail:
        name = head
    name = name.lower()
    return name if re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", name) else None


def container_images(docs: Iterable[dict[str, Any]], *, init: bool, container: str | None = None) -> list[str]:
    """The images the manifests name for their (init) containers, in order (only `container`, if named)."""
    found = []
    for doc in docs:
        spec = pod_spec(copy.deepcopy(doc))
        for c in (spec or {}).get("initContainers" if init else "containers", []):
            if (container is None or init or c.get("name") == container) and isinstance(c.get("image"), str):
                found.append(c["image"])
    return found


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def selector_of(objects: Iterable[dict[str, Any]], deployment: str | None) -> tuple[str | None, str]:
    """The Deployment to watch (None for other controllers and bare Pods) and its pods' label selector."""
    for obj in objects:
        if obj["kind"] == "Deployment" and (deployment is None or obj["metadata"]["name"] == deployment):
            labels = obj["spec"]["selector"].get("matchLabels", {})
            return obj["metadata"]["name"], ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    objects = list(objects)
    for obj in objects:
        if obj["kind"] in POD_KINDS - {"Deployment"} and obj["spec"].get("selector", {}).get("matchLabels"):
            labels = obj["spec"]["selector"]["matchLabels"]
            return None, ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    for obj in objects:
        if obj["kind"] == "Pod":
            labels = obj["metadata"].get("labels", {})
            return None, ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != MANAGED_LABEL)
    raise HarnessError(
        "the workload has no Deployment, other pod controller or Pod to watch", "add one to the scenario's manifests"
    )


def apply(
    api: k8s.ApiClient,
    objects: list[dict[str, Any]],
    deployment: str | None = None,
    origins: Sequence[str] | None = None,
) -> Workload:
    """Server-side apply of every object (create or update), in order; origins[i] names the file of objects[i].

    ManifestRejected (bad input) when the API server refuses an object (HTTP 400 or 422) or knows
    no such kind; other failures are HarnessError.
    """
    dynamic = DynamicClient(api)
    namespace = ""
    for index, obj in enumerate(objects):
        meta = obj.get("metadata") or {}
        name, kind, version = str(meta.get("name", "")), str(obj.get("kind", "")), str(obj.get("apiVersion", ""))
        origin = origins[index] if origins and index < len(origins) and origins[index] else "an object given in code"
        where = f"{origin}: {kind}/{name}"
        try:
            resource = dynamic.resources.get(api_version=version, kind=kind)
        except ResourceNotFoundError as exc:
            raise ManifestRejected(
                f"{where}: the API server knows no kind {kind!r} in {version!r}",
                "fix apiVersion or kind in the manifest (or install the resource's CRD first)",
            ) from exc
        ns = meta.get("namespace")
        namespace = ns or namespace
        try:
            resource.server_side_apply(
                body=obj, name=name, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True
            )
        except ApiException as exc:
            if exc.status in (400, 422):
                raise ManifestRejected(
                    f"{where}: rejected by the API server (HTTP {exc.status} {exc.reason}): {_api_message(exc)}",
                    "fix the manifest (or the scenario's patch) so the API server accepts it",
                ) from exc
            raise HarnessError(
                f"{where}: applying failed: HTTP {exc.status} {exc.reason}: {_api_message(exc)}",
                "check the cluster and the kubeconfig's permissions, then run again",
            ) from exc
    try:
        watched_deployment, selector = selector_of(objects, deployment)
    except HarnessError as exc:
        files = sorted({o for o in origins or () if o}) or ["the objects given"]
        raise BadInput(f"{', '.join(files)}: {exc.cause}", exc.remedy) from exc
    return Workload(namespace, tuple(objects), watched_deployment, selector)


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return " ".join(str(exc.body).split())[:300]
    message = body.get("message", exc.body) if isinstance(body, dict) else exc.body
    return " ".join(str(message).split())[:300]


def create_namespace(core: k8s.CoreV1Api, prefix: str) -> str:
    """A fresh namespace labelled as the harness's, named <prefix>-<random>."""
    name = f"{prefix[:40].rstrip('-')}-{secrets.token_hex(3)}"
    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={MANAGED_LABEL: "true"}))
    core.create_namespace(body)
    return name


def delete_namespace(core: k8s.CoreV1Api, name: str) -> None:
    """Delete a namespace the harness made (background: the API finishes it)."""
    try:
        core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise


def set_image(
    apps: k8s.AppsV1Api,
    namespace: str,
    deployment: str,
    image: str,
    *,
    container: str | None = None,
    pull_policy: str | None = None,
) -> None:
    dep: Any = apps.read_namespaced_deployment(deployment, namespace)
    containers = []
    for c in dep.spec.template.spec.containers:
        if container is None or c.name == container:
            entry: dict[str, Any] = {"name": c.name, "image": image}
            if pull_policy:
                entry["imagePullPolicy"] = pull_policy
            containers.append(entry)
    apps.patch_namespaced_deployment(
        deployment, namespace, {"spec": {"template": {"spec": {"containers": containers}}}}
    )


def rollout_restart(apps: k8s.AppsV1Api, namespace: str, deployment: str) -> None:
    """What `kubectl rollout restart` does: a new pod-template annotation."""
    stamp = datetime.now(UTC).isoformat()
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
    apps.patch_namespaced_deployment(deployment, namespace, patch)


def rollback(apps: k8s.AppsV1Api, namespace: str, deployment: str) -> int:
    """What `kubectl rollout undo` does: restore the previous revision's pod template; returns it."""
    dep: Any = apps.read_namespaced_deployment(deployment, namespace)
    current = int((dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "0"))
    replica_sets: list[Any] = apps.list_namespaced_replica_set(namespace).items
    owned = [
        rs for rs in replica_sets if any(ref.uid == dep.metadata.uid for ref in rs.metadata.owner_references or [])
    ]
    revisions = sorted(
        ((int((rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "0")), rs) for rs in owned),
        key=lambda pair: pair[0],
    )
    previous = [(rev, rs) for rev, rs in revisions if rev < current]
    if not previous:
        raise HarnessError(
            f"deployment {deployment} has no earlier revision to roll back to", "roll out a second version first"
        )
    revision, rs = previous[-1]
    template = apps.api_client.sanitize_for_serialization(rs.spec.template)
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    apps.patch_namespaced_deployment(
        deployment, namespace, [{"op": "replace", "path": "/spec/template", "value": template}]
    )
    return revision
