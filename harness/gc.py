"""Finding and removing what the harness made, and only that: clusters, containers, images, binfmt leftovers.

What counts as made by the harness:
- a kind cluster whose node containers carry the harness's node label (see cluster.judge_ownership);
- a container carrying the label io.incident-harness.managed=true that is not a kind node (the
  node image carries that label, so a kind node made from it by someone else inherits it: a node
  goes only with its cluster, when the cluster is the harness's);
- an image tagged incident-harness/... or carrying that label;
- a binfmt_misc handler that a killed harness run registered (platforms.binfmt_leftovers).
Each is checked again right before it is removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass, field

from harness import engine, platforms, registry, tools
from harness.cluster import KIND_CLUSTER_LABEL, KindCluster, Ownership, check_ownership
from harness.errors import NotManaged

CONTAINER_LABEL = "io.incident-harness.managed"  # on the images the harness builds, and so on their containers
IMAGE_PREFIX = "incident-harness/"


@dataclass(frozen=True)
class Made:
    kind: str  # "cluster", "container", "registry", "image", "binfmt"
    name: str


@dataclass(frozen=True)
class Skipped:
    """Something gc saw and leaves alone: why, and how to remove it by hand if it should go."""

    kind: str
    name: str
    reason: str


@dataclass(frozen=True)
class Survey:
    found: list[Made] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def image_is_managed(ref: str, labels: dict[str, str] | None) -> bool:
    """An image the harness made: tagged incident-harness/..., or labelled io.incident-harness.managed=true."""
    return ref.startswith(IMAGE_PREFIX) or (labels or {}).get(CONTAINER_LABEL) == "true"


def survey(clusters: Collection[str] | None = None) -> Survey:
    """What gc would remove, and what it leaves alone (not the harness's), with the reason.

    With clusters: only those clusters and their node containers; no images (other clusters
    may use them) and no binfmt leftovers.
    """
    tools.ensure_engine()
    result = Survey()
    names = set(tools.run([tools.kind_binary(), "get", "clusters"], timeout=60).stdout.split())
    managed: set[str] = set()
    for name in sorted(names):
        if clusters is not None and name not in clusters:
            continue
        check = check_ownership(name)
        if check.ownership is Ownership.MANAGED:
            managed.add(name)
            result.found.append(Made("cluster", name))
        elif check.ownership is Ownership.FOREIGN:
            result.skipped.append(
                Skipped("cluster", name, _by_hand(check.reason, f"kind delete cluster --name {name}"))
            )
    for container in engine.containers(f"{CONTAINER_LABEL}=true"):
        cluster = container.labels.get(KIND_CLUSTER_LABEL)
        if clusters is not None and cluster not in clusters:
            continue
        if cluster is None:
            result.found.append(Made("container", container.name))
        # else a kind node: it goes with its cluster if that is the harness's (kind deletes its
        # nodes), and stays with it otherwise (the cluster is reported as left alone)
    if clusters is not None:
        return result
    result.found.extend(Made("registry", name) for name in registry.managed_containers())
    labelled = set(engine.image_tags(f"{CONTAINER_LABEL}=true"))
    for ref in engine.image_tags():
        if image_is_managed(ref, None) or ref in labelled:
            result.found.append(Made("image", ref))
    for leftover in platforms.binfmt_leftovers():
        result.found.append(Made("binfmt", leftover.describe()))
    return result


def find(clusters: Collection[str] | None = None) -> list[Made]:
    """What gc would remove (see survey)."""
    return survey(clusters).found


def _by_hand(reason: str, command: str) -> str:
    return f"not made by the harness ({reason}); if it should go, remove it by hand: {command}"


def remove(items: list[Made]) -> list[Skipped]:
    """Remove items, each checked again first; returns those refused (not the harness's)."""
    docker = tools.docker_binary()
    refused: list[Skipped] = []
    for item in items:
        if item.kind == "cluster":
            try:
                KindCluster(name=item.name).delete()
            except NotManaged as exc:
                refused.append(Skipped("cluster", item.name, f"{exc.cause}; {exc.remedy}"))
        elif item.kind == "container":
            reason = _container_refusal(item.name)
            if reason:
                refused.append(Skipped("container", item.name, reason))
            else:
                tools.run([docker, "rm", "-f", item.name], check=False, timeout=120)
        elif item.kind == "registry":
            registry.remove_container(item.name)  # only one carrying the registry's labels; its data too
    refs = []
    for item in items:
        if item.kind != "image":
            continue
        labels = engine.image_labels(item.name)
        if labels is None:
            continue  # gone already
        if image_is_managed(item.name, labels):
            refs.append(item.name)
        else:
            reason = _by_hand(
                f"neither tagged {IMAGE_PREFIX}... nor labelled {CONTAINER_LABEL}", f"docker rmi {item.name}"
            )
            refused.append(Skipped("image", item.name, reason))
    if refs:
        tools.run([docker, "rmi", "-f", *refs], check=False, timeout=600)
    if any(item.kind == "binfmt" for item in items):
        platforms.repair_binfmt()
    leftover = tools.cache_dir() / "clusters"
    for item in items:
        if item.kind == "cluster" and not any(r.kind == "cluster" and r.name == item.name for r in refused):
            shutil.rmtree(leftover / item.name, ignore_errors=True)
    return refused


def _container_refusal(name: str) -> str:
    """Why the container called name may not be removed ("" when it may)."""
    found = engine.container(name)
    if found is None:
        return ""  # gone already: `docker rm -f` of nothing does nothing
    if found.labels.get(CONTAINER_LABEL) != "true":
        return _by_hand(f"it lacks the {CONTAINER_LABEL}=true label", f"docker rm -f {name}")
    cluster = found.labels.get(KIND_CLUSTER_LABEL)
    if cluster is not None:
        check = check_ownership(cluster)
        if check.ownership is Ownership.FOREIGN:
            return _by_hand(
                f"a node of kind cluster {cluster!r}: {check.reason}", f"kind delete cluster --name {cluster}"
            )
    return ""
