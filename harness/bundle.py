"""Evidence bundles: the format capture writes and draft reads, and plain kubectl files saved by hand.

A bundle is a folder (or a .tar.gz of one) holding:

- ``manifest.json``: the format, when and from where it was captured, what was captured and
  what could not be read (each a line naming it);
- ``workload.json``: the workload objects (a Deployment and its ReplicaSets, or the pods' owners);
- ``pods.json``: the pods with status; ``events.json``: the namespace's events about them;
- ``nodes.json``: each node the pods ran on, with its ``nodeInfo`` and platform;
- ``images.json``: per container, the image the pod spec names, the ``imageID`` that ran, the
  node's platform and, where it was known, the image's own platform and how it was known;
- ``logs/POD/CONTAINER.current.log`` and ``.previous.log`` (the last terminated instance).

A folder without ``manifest.json`` is read as plain files saved by hand: any ``*.yaml``,
``*.yml`` or ``*.json`` holding Pods, Events, workload objects or Nodes (single objects or
``kind: List``, as ``kubectl get ... -o yaml`` writes them), and log files named
``POD_CONTAINER.previous.log`` (``kubectl logs POD -c CONTAINER --previous``),
``POD_CONTAINER.log`` (the current log), or ``POD.previous.log`` for a one-container pod.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from harness.errors import HarnessError

Obj = dict[str, Any]

FORMAT: Final = "incident-harness/evidence-bundle/v1"
MANIFEST: Final = "manifest.json"
WORKLOAD: Final = "workload.json"
PODS: Final = "pods.json"
EVENTS: Final = "events.json"
NODES: Final = "nodes.json"
IMAGES: Final = "images.json"
LOGS: Final = "logs"
WORKLOAD_KINDS: Final = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"})
PLAIN_CONVENTION: Final = (
    "kubectl get pod -o yaml > pods.yaml; kubectl get events -o yaml > events.yaml; "
    "kubectl logs POD -c CONTAINER --previous > POD_CONTAINER.previous.log"
)


class BundleError(HarnessError):
    """An evidence bundle (or folder of kubectl files) that cannot be drafted from: names the path and the part."""


@dataclass(frozen=True)
class LogText:
    """One container's log as captured: which instance (current, or previous = the last terminated one)."""

    pod: str
    container: str
    which: str  # "current" | "previous"
    lines: tuple[str, ...]


@dataclass(frozen=True)
class ImageRecord:
    """One container that ran: the image named, the imageID that ran, where, and what is known of its platform."""

    pod: str
    container: str
    init: bool
    image: str
    image_id: str
    node: str
    node_platform: str
    image_platform: str = ""  # "" when the bundle does not know it
    platform_source: str = ""  # how image_platform was known


@dataclass(frozen=True)
class Bundle:
    source: Path
    plain: bool  # read from hand-saved kubectl files, not a captured bundle
    namespace: str
    context: str
    captured_at: str
    workload: tuple[Obj, ...]
    pods: tuple[Obj, ...]
    events: tuple[Obj, ...]
    logs: tuple[LogText, ...]
    nodes: Mapping[str, Obj]  # node name -> its nodeInfo
    images: tuple[ImageRecord, ...]
    missing: tuple[str, ...] = field(default=())

    def log(self, pod: str, container: str, which: str) -> tuple[str, ...]:
        return next(
            (x.lines for x in self.logs if (x.pod, x.container, x.which) == (pod, container, which)),
            (),
        )


def _get(obj: Any, *path: str) -> Any:
    cur = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def node_platform(node_info: Mapping[str, Any]) -> str:
    """linux/amd64 from a node's status.nodeInfo ("" when it does not say)."""
    os_name, arch = str(node_info.get("operatingSystem") or ""), str(node_info.get("architecture") or "")
    return f"{os_name}/{arch}" if os_name and arch else ""


def image_runs(
    pods: Iterable[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    known: Mapping[str, tuple[str, str]] | None = None,
) -> list[ImageRecord]:
    """Per container status: the image, its imageID, the node's platform.

    known maps an imageID (or, for a container that never started, its image reference) to
    (platform, how it was known).
    """
    records = []
    for pod in pods:
        name = str(_get(pod, "metadata", "name") or "")
        node = str(_get(pod, "spec", "nodeName") or "")
        spec_images = {
            c.get("name"): c.get("image")
            for key in ("initContainers", "containers")
            for c in _get(pod, "spec", key) or []
            if isinstance(c, Mapping)
        }
        for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
            for status in _get(pod, "status", key) or []:
                if not isinstance(status, Mapping):
                    continue
                image_id = str(status.get("imageID") or "")
                ref = str(spec_images.get(status.get("name")) or status.get("image") or "")
                platform, source = (known or {}).get(image_id or ref, ("", ""))
                records.append(
                    ImageRecord(
                        pod=name,
                        container=str(status.get("name") or ""),
                        init=init,
                        image=ref,
                        image_id=image_id,
                        node=node,
                        node_platform=node_platform(nodes.get(node) or {}),
                        image_platform=platform,
                        platform_source=source,
                    )
                )
    return records


def record_json(record: ImageRecord) -> Obj:
    return {
        "pod": record.pod,
        "container": record.container,
        "init": record.init,
        "image": record.image,
        "imageID": record.image_id,
        "node": record.node,
        "nodePlatform": record.node_platform,
        "imagePlatform": record.image_platform,
        "platformSource": record.platform_source,
    }


def _record(raw: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(
        pod=str(raw.get("pod") or ""),
        container=str(raw.get("container") or ""),
        init=bool(raw.get("init")),
        image=str(raw.get("image") or ""),
        image_id=str(raw.get("imageID") or ""),
        node=str(raw.get("node") or ""),
        node_platform=str(raw.get("nodePlatform") or ""),
        image_platform=str(raw.get("imagePlatform") or ""),
        platform_source=str(raw.get("platformSource") or ""),
    )


def log_path(pod: str, container: str, which: str) -> str:
    """The bundle-relative path of a container's log."""
    return f"{LOGS}/{pod}/{container}.{which}.log"


def log_lines(text: str) -> tuple[str, ...]:
    return tuple(line.rstrip("\r") for line in text.splitlines() if line.strip())


# ---------------------------------------------------------------------------------------------
# Reading


def read(path: Path) -> Bundle:
    """A captured bundle (folder or .tar.gz) or a folder of plain kubectl files; BundleError when unusable."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="harness-bundle-") as tmp:
            try:
                with tarfile.open(path, "r:gz") as archive:
                    archive.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleError(f"{path}: not a readable .tar.gz ({exc})", "capture it again") from exc
            entries = list(Path(tmp).iterdir())
            folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
            return _replace_source(_read_folder(folder), path)
    if not path.is_dir():
        raise BundleError(
            f"{path}: no such bundle (a folder or .tar.gz from 'python -m harness capture', or a folder of kubectl files)",
            f"pass the path capture printed, or save files by hand: {PLAIN_CONVENTION}",
        )
    return _read_folder(path)


def _replace_source(bundle: Bundle, source: Path) -> Bundle:
    from dataclasses import replace

    return replace(bundle, source=source)


def _load_json(path: Path, missing: list[str]) -> Any:
    if not path.is_file():
        missing.append(f"{path.name}: not in the bundle")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        missing.append(f"{path.name}: unreadable ({exc})")
        return None


def _items(doc: Any) -> list[Obj]:
    if isinstance(doc, Mapping) and isinstance(doc.get("items"), list):
        return [dict(i) for i in doc["items"] if isinstance(i, Mapping)]
    if isinstance(doc, list):
        return [dict(i) for i in doc if isinstance(i, Mapping)]
    if isinstance(doc, Mapping) and doc.get("kind"):
        return [dict(doc)]
    return []


def _read_folder(folder: Path) -> Bundle:
    if not (folder / MANIFEST).is_file():
        return _read_plain(folder)
    missing: list[str] = []
    manifest = _load_json(folder / MANIFEST, missing) or {}
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}",
            "capture it again with this version of the harness",
        )
    missing += [str(m) for m in manifest.get("missing") or []]
    pods = _items(_load_json(folder / PODS, missing))
    if not pods:
        raise BundleError(
            f"{folder}: the bundle holds no pods ({PODS} missing or empty)",
            "capture again while the pods exist, or add them: kubectl get pod -o yaml > pods.yaml",
        )
    nodes_raw = _load_json(folder / NODES, missing) or []
    nodes = {str(n.get("name")): dict(n.get("nodeInfo") or {}) for n in nodes_raw if isinstance(n, Mapping)}
    images = [_record(r) for r in _load_json(folder / IMAGES, missing) or [] if isinstance(r, Mapping)]
    logs = []
    for entry in manifest.get("logs") or []:
        rel = str(entry.get("file") or "")
        if rel and (folder / rel).is_file():
            logs.append(
                LogText(
                    str(entry.get("pod")),
                    str(entry.get("container")),
                    str(entry.get("which")),
                    log_lines((folder / rel).read_text(errors="replace")),
                )
            )
    return Bundle(
        source=folder,
        plain=False,
        namespace=str(manifest.get("namespace") or ""),
        context=str(manifest.get("context") or ""),
        captured_at=str(manifest.get("capturedAt") or ""),
        workload=tuple(_items(_load_json(folder / WORKLOAD, missing))),
        pods=tuple(pods),
        events=tuple(_items(_load_json(folder / EVENTS, missing))),
        logs=tuple(logs),
        nodes=nodes,
        images=tuple(images or image_runs(pods, nodes)),
        missing=tuple(dict.fromkeys(missing)),
    )


def _log_name(name: str, pods: Sequence[Obj]) -> tuple[str, str, str] | None:
    """(pod, container, which) from POD_CONTAINER.previous.log, POD_CONTAINER.log or POD.previous.log."""
    stem = name.rsplit(".", 1)[0]
    which = "current"
    if stem.endswith(".previous"):
        stem, which = stem[: -len(".previous")], "previous"
    pod, _, container = stem.partition("_")
    match = next((p for p in pods if _get(p, "metadata", "name") == pod), None)
    if match is None:
        return None
    if not container:
        names = [c.get("name") for c in _get(match, "spec", "containers") or [] if isinstance(c, Mapping)]
        if len(names) != 1:
            return None
        container = str(names[0])
    return pod, container, which


def _read_plain(folder: Path) -> Bundle:
    pods: list[Obj] = []
    events: list[Obj] = []
    objects: list[Obj] = []
    nodes: dict[str, Obj] = {}
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))  # JSON is YAML
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{path.name}: not readable as YAML or JSON ({' '.join(str(exc).split())[:160]})")
            continue
        for doc in docs:
            for item in _items(doc):
                kind = item.get("kind")
                if kind == "Pod":
                    pods.append(item)
                elif kind == "Event":
                    events.append(item)
                elif kind in WORKLOAD_KINDS:
                    objects.append(item)
                elif kind == "Node":
                    nodes[str(_get(item, "metadata", "name"))] = dict(_get(item, "status", "nodeInfo") or {})
    if not pods:
        raise BundleError(
            f"{folder}: no pods in it (no manifest.json, and no file holds kind Pod)",
            f"save them by hand: {PLAIN_CONVENTION}",
        )
    logs = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".log", ".txt") and path.is_file():
            named = _log_name(path.name, pods)
            if named is None:
                problems.append(f"{path.name}: names no pod (and container) of the pods here; not used")
                continue
            logs.append(LogText(*named, log_lines(path.read_text(errors="replace"))))
    if not events:
        problems.append("events: no file holds kind Event (kubectl get events -o yaml > events.yaml)")
    if not any(x.which == "previous" for x in logs):
        problems.append("logs: no POD_CONTAINER.previous.log (kubectl logs POD -c CONTAINER --previous)")
    if not nodes:
        problems.append("nodes: no Node objects, so the nodes' platform is unknown (kubectl get node NAME -o yaml)")
    namespace = str(_get(pods[0], "metadata", "namespace") or "")
    return Bundle(
        source=folder,
        plain=True,
        namespace=namespace,
        context="",
        captured_at="",
        workload=tuple(objects),
        pods=tuple(pods),
        events=tuple(events),
        logs=tuple(logs),
        nodes=nodes,
        images=tuple(image_runs(pods, nodes)),
        missing=tuple(problems),
    )
