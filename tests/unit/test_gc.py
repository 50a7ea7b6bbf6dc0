"""gc lists and removes what the harness made, and nothing else.

The engine's and kind's answers are stand-ins (tables below); the real case, a cluster made with
plain `kind create cluster` and an image of someone else's, is in tests/e2e/test_safety.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import engine, gc, tools
from harness.cluster import KIND_CLUSTER_LABEL, KIND_ROLE_LABEL, MANAGED_LABEL
from harness.gc import CONTAINER_LABEL, Made

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HARNESS_CONFIG = f'kind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    node-labels: "{MANAGED_LABEL}=true,"\n'.encode()
PLAIN_CONFIG = b'kind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    node-labels: ""\n'


def _node(cluster: str) -> engine.Container:
    # Every node made from the harness's node image inherits the image's label, the plain one too.
    labels = {KIND_CLUSTER_LABEL: cluster, KIND_ROLE_LABEL: "control-plane", CONTAINER_LABEL: "true"}
    return engine.Container(f"id-{cluster}", f"{cluster}-control-plane", "running", T0, labels)


class Machine:
    """Two harness clusters, one made with plain kind from the harness's node image, a build container, images."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.commands: list[list[str]] = []
        self.containers = [
            _node("incident-harness"),
            _node("soak-faults"),
            _node("plain-kind-1"),
            engine.Container("id-build", "node-image-build", "exited", T0, {CONTAINER_LABEL: "true"}),
            engine.Container("id-other", "someones-db", "running", T0, {}),
        ]
        self.configs = {
            "id-incident-harness": HARNESS_CONFIG,
            "id-soak-faults": HARNESS_CONFIG,
            "id-plain-kind-1": PLAIN_CONFIG,
        }
        self.images = {
            "incident-harness/node:v1": {CONTAINER_LABEL: "true"},
            "incident-harness/orders-api:linux-arm64-0123": {},
            "staged-node:1": {CONTAINER_LABEL: "true"},
            "soak-decoy:1": {},
        }
        (tmp_path / "clusters" / "stale").mkdir(parents=True)
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
        monkeypatch.setattr(tools, "run", self.run)
        monkeypatch.setattr(tools, "ensure_engine", lambda: None)
        monkeypatch.setattr(tools, "kind_binary", lambda explicit=None: "kind")
        monkeypatch.setattr(tools, "docker_binary", lambda: "docker")
        monkeypatch.setattr(engine, "containers", self.by_label)
        monkeypatch.setattr(
            engine, "container", lambda name: next((c for c in self.containers if c.name == name), None)
        )
        monkeypatch.setattr(engine, "read_file", lambda cid, path: self.configs.get(cid))
        monkeypatch.setattr(engine, "image_tags", self.image_tags)
        monkeypatch.setattr(engine, "image_labels", lambda ref: self.images.get(ref))

    def by_label(self, label: str) -> list[engine.Container]:
        key, _, value = label.partition("=")
        return [c for c in self.containers if c.labels.get(key) == value]

    def image_tags(self, label: str | None = None) -> list[str]:
        key, _, value = (label or "").partition("=")
        return sorted(ref for ref, labels in self.images.items() if not label or labels.get(key) == value)

    def run(self, cmd: list[str], **_: Any) -> tools.Result:
        self.commands.append(list(cmd))
        clusters = sorted({c.labels[KIND_CLUSTER_LABEL] for c in self.containers if KIND_CLUSTER_LABEL in c.labels})
        out = "\n".join(clusters) + "\n" if cmd[1:3] == ["get", "clusters"] else ""
        return tools.Result(tuple(cmd), 0, out, "")

    def destructive(self) -> list[list[str]]:
        return [c for c in self.commands if c[1:2] in (["delete"], ["rm"], ["rmi"])]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Machine:
    return Machine(monkeypatch, tmp_path)


def test_gc_finds_only_what_the_harness_made(machine: Machine) -> None:
    surveyed = gc.survey()
    assert {(m.kind, m.name) for m in surveyed.found} == {
        ("cluster", "incident-harness"),
        ("cluster", "soak-faults"),
        ("container", "node-image-build"),
        ("image", "incident-harness/node:v1"),
        ("image", "incident-harness/orders-api:linux-arm64-0123"),
        ("image", "staged-node:1"),  # no prefix, but the harness's label
    }
    (skipped,) = surveyed.skipped
    assert (skipped.kind, skipped.name) == ("cluster", "plain-kind-1")
    assert f"lacks the {MANAGED_LABEL}=true label" in skipped.reason
    assert skipped.reason.endswith("remove it by hand: kind delete cluster --name plain-kind-1")


def test_gc_with_clusters_lists_only_them_and_no_images(machine: Machine) -> None:
    assert gc.find(["soak-faults"]) == [Made("cluster", "soak-faults")]  # its node goes with it
    assert gc.find(["stale"]) == []  # a folder without a kind cluster is not a cluster
    surveyed = gc.survey(["plain-kind-1"])
    assert surveyed.found == [] and [s.name for s in surveyed.skipped] == ["plain-kind-1"]


def test_remove_checks_each_item_again_and_refuses_what_is_not_the_harness_s(machine: Machine) -> None:
    forged = [
        Made("cluster", "plain-kind-1"),
        Made("container", "plain-kind-1-control-plane"),
        Made("container", "someones-db"),
        Made("image", "soak-decoy:1"),
    ]
    refused = gc.remove(forged)
    assert [(r.kind, r.name) for r in refused] == [(m.kind, m.name) for m in forged]
    assert machine.destructive() == []
    assert "kind delete cluster --name plain-kind-1" in refused[0].reason
    assert "docker rmi soak-decoy:1" in refused[3].reason


def test_remove_removes_what_the_harness_made(machine: Machine) -> None:
    assert gc.remove(gc.find()) == []
    removed = machine.destructive()
    assert removed[0][:5] == ["kind", "delete", "cluster", "--name", "incident-harness"]
    assert ["docker", "rm", "-f", "node-image-build"] in removed
    rmi = next(c for c in removed if c[1] == "rmi")
    assert sorted(rmi[3:]) == [
        "incident-harness/node:v1",
        "incident-harness/orders-api:linux-arm64-0123",
        "staged-node:1",
    ]
