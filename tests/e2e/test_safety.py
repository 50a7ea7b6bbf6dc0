"""The harness deletes, loads into, reuses and collects only what it made: checked against a cluster it did not.

The cluster is made here with plain `kind create cluster` from the harness's own node image, so
its node containers even inherit the image's io.incident-harness.managed label: only the nodes'
kubelet labels (the harness labels its nodes at create) tell the two apart. `python -m harness
cluster delete`, `cluster create` (reuse, and delete of a stopped cluster), `gc` and gc's removal
must refuse it and leave it running; the test deletes it with kind at the end. Likewise an image
neither tagged incident-harness/... nor labelled. kubectl's cache goes under the harness cache.

The shared cluster is only read (its node labels, one evidence collection); nothing here deletes,
stops or pauses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import engine, gc, tools
from harness.cluster import REGISTRY_FREE_REPO, KindCluster, Ownership, check_ownership
from harness.errors import HarnessError, NotManaged
from harness.gc import Made
from harness.tools import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SUFFIX = f"{os.getpid() % 1000:03d}"
PLAIN = f"plain-kind-{SUFFIX}"
FOREIGN_IMAGE = f"safety-probe-{SUFFIX}/not-ours:1"


def harness(*args: str, env: dict[str, str] | None = None) -> tools.Result:
    """`python -m harness ARGS` as a user runs it."""
    return tools.run([sys.executable, "-m", "harness", *args], check=False, timeout=600, cwd=REPO_ROOT, env=env)


def running_nodes(name: str) -> list[str]:
    return [c.name for c in engine.containers(f"io.x-k8s.kind.cluster={name}") if c.state == "running"]


@pytest.fixture(scope="module")
def node_image() -> str:
    try:
        tools.ensure_engine()
    except HarnessError as exc:
        pytest.skip(f"no Docker engine: {exc.cause}")
    pinned = f"{REGISTRY_FREE_REPO}:{tools.versions()['K8S_VERSION']}"
    tags = engine.image_tags()
    if pinned in tags:
        return pinned
    ours = [t for t in tags if t.startswith(f"{REGISTRY_FREE_REPO}:")]
    if not ours:
        pytest.skip(f"no {REGISTRY_FREE_REPO} image: run 'make node-image'")
    return ours[0]


@pytest.fixture(scope="module")
def plain_cluster(node_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kind cluster the harness did not make: `kind create cluster` with the harness's node image."""
    kind = tools.kind_binary()
    kubeconfig = tmp_path_factory.mktemp("plain-kind") / "kubeconfig"
    base = [kind, "--name", PLAIN, "--kubeconfig", str(kubeconfig)]
    try:
        tools.run([kind, "create", "cluster", *base[1:], "--image", node_image], timeout=900)
        yield PLAIN
    finally:
        tools.run([kind, "delete", "cluster", *base[1:]], check=False, timeout=300)
    assert PLAIN not in tools.run([kind, "get", "clusters"], timeout=60).stdout.split()


@pytest.fixture(scope="module")
def foreign_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image of someone else's: neither tagged incident-harness/... nor labelled (FROM scratch, no registry)."""
    context = tmp_path_factory.mktemp("foreign-image")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY note /note\n")
    (context / "note").write_text("not the harness's\n")
    docker = tools.docker_binary()
    tools.run([docker, "build", "-q", "-t", FOREIGN_IMAGE, str(context)], env={"DOCKER_BUILDKIT": "0"}, timeout=300)
    try:
        yield FOREIGN_IMAGE
    finally:
        tools.run([docker, "rmi", FOREIGN_IMAGE], check=False, timeout=120)


def test_the_plain_cluster_is_seen_as_foreign(plain_cluster: str) -> None:
    check = check_ownership(plain_cluster)
    assert check.ownership is Ownership.FOREIGN, check
    assert "lacks the incident-harness.io/managed=true label" in check.reason
    # Its node inherited the node image's container label: that label alone proves nothing.
    (node,) = check.containers
    assert node.labels.get(gc.CONTAINER_LABEL) == "true"


def test_the_shared_cluster_is_seen_as_the_harness_s(harness_cluster: KindCluster) -> None:
    assert check_ownership(harness_cluster.name).ownership is Ownership.MANAGED


def test_cluster_delete_refuses_and_leaves_it_running(plain_cluster: str) -> None:
    result = harness("cluster", "delete", "--name", plain_cluster)
    assert result.returncode == 3, result
    assert result.stderr.splitlines() == [
        f"error: refusing to delete kind cluster '{plain_cluster}': the harness did not make it "
        f"(node {plain_cluster}-control-plane lacks the incident-harness.io/managed=true label)",
        f"  what to do: if it is yours to remove, delete it by hand: kind delete cluster --name {plain_cluster}",
    ]
    assert running_nodes(plain_cluster) == [f"{plain_cluster}-control-plane"]


def test_cluster_create_refuses_to_reuse_it(plain_cluster: str) -> None:
    result = harness("cluster", "create", "--name", plain_cluster)
    assert result.returncode == 3 and f"refusing to reuse kind cluster '{plain_cluster}'" in result.stderr, result
    assert running_nodes(plain_cluster) == [f"{plain_cluster}-control-plane"]


def test_loading_an_image_into_it_is_refused(plain_cluster: str, foreign_image: str) -> None:
    with pytest.raises(NotManaged, match=f"refusing to load an image into kind cluster '{plain_cluster}'"):
        KindCluster(name=plain_cluster).load_image(foreign_image)


def test_gc_lists_neither_the_cluster_nor_the_image(plain_cluster: str, foreign_image: str) -> None:
    """A dry run over everything (it removes nothing): the plain cluster is left with the reason, the image unseen."""
    result = harness("gc")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert f"leaving cluster {plain_cluster}: not made by the harness" in result.stdout, result.stdout
    assert any(f"kind delete cluster --name {plain_cluster}" in line for line in lines)
    assert not [line for line in lines if line.startswith("would remove") and plain_cluster in line], result.stdout
    assert not [line for line in lines if foreign_image in line], result.stdout


def test_gc_yes_for_the_cluster_leaves_it_running(plain_cluster: str) -> None:
    result = harness("gc", "--yes", "--cluster", plain_cluster)
    assert result.returncode == 0, result
    assert f"leaving cluster {plain_cluster}: not made by the harness" in result.stdout, result.stdout
    assert "removing" not in result.stdout, result.stdout
    assert running_nodes(plain_cluster) == [f"{plain_cluster}-control-plane"]


def test_gc_remove_checks_each_item_again(plain_cluster: str, foreign_image: str) -> None:
    """Handed a forged list, the removal refuses every item and removes nothing."""
    forged = [
        Made("cluster", plain_cluster),
        Made("container", f"{plain_cluster}-control-plane"),
        Made("image", foreign_image),
    ]
    refused = gc.remove(forged)
    assert [(r.kind, r.name) for r in refused] == [(m.kind, m.name) for m in forged]
    assert running_nodes(plain_cluster) == [f"{plain_cluster}-control-plane"]
    assert engine.image_labels(foreign_image) is not None


def test_kubectl_writes_its_cache_under_the_harness_cache_not_home(
    harness_cluster: KindCluster, tmp_path: Path
) -> None:
    """Evidence collection (kubectl describe, get, logs) in a process whose HOME is empty."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "HARNESS_CACHE": str(tools.cache_dir())}
    code = (
        "import sys; from pathlib import Path; from harness.cluster import KindCluster; "
        "KindCluster(name=sys.argv[1]).collect_evidence('kube-system', 'component=etcd', Path(sys.argv[2]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, harness_cluster.name, str(tmp_path / "evidence")],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=600,
    )
    assert "etcd" in (tmp_path / "evidence" / "describe-pods.txt").read_text()
    assert not (home / ".kube").exists(), sorted(str(p) for p in home.rglob("*"))
    assert tools.kube_cache_dir().is_dir()


def test_create_refuses_to_delete_it_when_its_node_is_stopped(plain_cluster: str) -> None:
    """Last: stops the plain cluster's node (the test's own), which kind deletes at the end anyway."""
    docker = tools.docker_binary()
    node = f"{plain_cluster}-control-plane"
    tools.run([docker, "stop", "-t", "5", node], timeout=120)
    result = harness("cluster", "create", "--name", plain_cluster)
    assert result.returncode == 3, result
    assert f"kind cluster '{plain_cluster}': the harness did not make it" in result.stderr, result
    assert engine.container(node) is not None  # still there, stopped
