"""Finding and removing what the harness made: clusters, containers, images (by label and name)."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass

from harness import registry, tools
from harness.cluster import KindCluster


@dataclass(frozen=True)
class Made:
    kind: str  # "cluster", "container", "registry", "image"
    name: str


def find(clusters: Collection[str] | None = None) -> list[Made]:
    """Clusters with a harness kubeconfig folder, labelled containers, and incident-harness/* images.

    With clusters: only those of these clusters the harness made, and their labelled node
    containers; no images (other clusters may use them).
    """
    tools.ensure_engine()
    docker = tools.docker_binary()
    found: list[Made] = []
    clusters_dir = tools.cache_dir() / "clusters"
    existing = set(tools.run([tools.kind_binary(), "get", "clusters"], timeout=60).stdout.split())
    if clusters_dir.is_dir():
        found += [
            Made("cluster", d.name)
            for d in sorted(clusters_dir.iterdir())
            if d.is_dir() and d.name in existing and (clusters is None or d.name in clusters)
        ]
    listed = tools.run(
        [
            docker,
            "ps",
            "-a",
            "--filter",
            "label=io.incident-harness.managed=true",
            "--format",
            '{{.Names}}\t{{.Label "io.x-k8s.kind.cluster"}}',
        ],
        timeout=60,
    ).stdout.splitlines()
    for line in listed:
        name, _, cluster = line.partition("\t")
        if name and (clusters is None or cluster in clusters):
            found.append(Made("container", name))
    if clusters is not None:
        return found
    found += [Made("registry", name) for name in registry.managed_containers()]
    images = tools.run([docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60).stdout.split()
    found += [Made("image", i) for i in images if i.startswith("incident-harness/") and not i.endswith(":<none>")]
    return found


def remove(items: list[Made]) -> None:
    docker = tools.docker_binary()
    for item in items:
        if item.kind == "cluster":
            KindCluster(name=item.name).delete()
        elif item.kind == "container":
            tools.run([docker, "rm", "-f", item.name], check=False, timeout=120)
        elif item.kind == "registry":
            registry.remove_container(item.name)  # only one carrying our labels; its data too
    refs = [i.name for i in items if i.kind == "image"]
    if refs:
        tools.run([docker, "rmi", "-f", *refs], check=False, timeout=600)
    leftover = tools.cache_dir() / "clusters"
    for item in items:
        if item.kind == "cluster":
            shutil.rmtree(leftover / item.name, ignore_errors=True)
