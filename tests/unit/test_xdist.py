"""pytest-xdist on one shared cluster: the same name on every worker, the use lock, who may delete."""

from __future__ import annotations

import fcntl
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import plugin
from harness.cluster import default_name


def test_every_worker_gets_the_same_cluster_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CLUSTER", raising=False)
    names = set()
    for worker in ("gw0", "gw1", "gw7"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        names.add(default_name("fast"))
    assert names == {"incident-harness-fast"}


def test_workers_and_the_controller_are_told_apart() -> None:
    worker = SimpleNamespace(workerinput={"workerid": "gw0"}, option=SimpleNamespace(dist="load"))
    controller = SimpleNamespace(option=SimpleNamespace(dist="load"))
    serial = SimpleNamespace(option=SimpleNamespace(dist="no"))
    assert plugin.is_xdist_worker(worker) and not plugin.is_xdist_controller(worker)  # type: ignore[arg-type]
    assert plugin.is_xdist_controller(controller) and not plugin.is_xdist_worker(controller)  # type: ignore[arg-type]
    assert not plugin.is_xdist_controller(serial) and not plugin.is_xdist_worker(serial)  # type: ignore[arg-type]


def _try(path: Path, mode: int) -> bool:
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_the_use_lock_is_shared_by_ordinary_tests_and_exclusive_for_a_disturbing_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    path = tmp_path / "locks" / "cluster-c.use"
    with plugin.cluster_use_lock("c", exclusive=False):
        assert _try(path, fcntl.LOCK_SH), "another ordinary test may run beside it"
        assert not _try(path, fcntl.LOCK_EX), "a disturbing test waits for it"
    with plugin.cluster_use_lock("c", exclusive=True):
        assert not _try(path, fcntl.LOCK_SH), "no test runs beside a disturbing one"
    assert _try(path, fcntl.LOCK_EX)
    assert set(plugin.EXCLUSIVE_MARKERS) == {"exclusive_cluster", "emulation"}
