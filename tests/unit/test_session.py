"""The session's rules without a cluster: supervision, the emulation check, apply errors, evidence, clean-up.

The API server, the watch and the engine are replaced by fakes; what is tested is the session's
own logic (when it gives up, what it asks the watch for, what it refuses to run).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from harness import session as session_module
from harness import workload as workload_module
from harness.cluster import KindCluster
from harness.errors import ClusterGone, HarnessError
from harness.outcomes import Outcome, Verdict
from harness.platforms import BinfmtHandler, EmulationState, Platform
from harness.session import BadInput, ManifestRejected, Session
from harness.workload import Workload

NOW = datetime(2026, 1, 2, tzinfo=UTC)
AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")
NO_EMULATION = EmulationState(mounted=True, enabled=True)
QEMU_ARM64 = EmulationState(
    mounted=True,
    enabled=True,
    handlers=(BinfmtHandler("qemu-aarch64", True, "/usr/bin/qemu-aarch64-static", "F", architecture="arm64"),),
)


def a_verdict(outcome: Outcome) -> Verdict:
    return Verdict(outcome, ("web-1",), None, 0, True, frozenset(), NOW, NOW, 1.0, (), f"{outcome.label}")


class FakeSession(Session):
    """A session whose API server answers (or not) as told, on a cluster that is never asked."""

    def __init__(self, tmp_path: Path, *, answering: bool = True) -> None:
        self.said_lines: list[str] = []
        super().__init__(KindCluster(name="unit", kubeconfig=tmp_path / "kubeconfig"), say=self.said_lines.append)
        self.answering_now = answering
        self._node_platform = AMD64
        self._emulation = NO_EMULATION

    @property
    def core(self) -> Any:
        return object()

    @property
    def api(self) -> Any:
        return object()

    def api_problem(self) -> str | None:
        return None if self.answering_now else "no answer within 5 s"


WORK = Workload(
    "ns",
    (
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "app:arm64"}]}}},
        },
    ),
    None,
    "app=web",
)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "API_PROBE_INTERVAL", 0.05)


# -- the watch: emulation check and keywords ------------------------------------------------------


def test_an_image_that_runs_emulated_is_never_plain_healthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    def watch_workload(core: Any, namespace: str, selector: str, **kwargs: Any) -> Verdict:
        asked.update(kwargs)
        return a_verdict(Outcome.HEALTHY)

    monkeypatch.setattr(session_module.outcomes, "watch_workload", watch_workload)
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: QEMU_ARM64)
    s = FakeSession(tmp_path)
    s.note_image("app:arm64", [ARM64])

    watched = s.watch(WORK, expect=Outcome.CRASH_LOOP, timeout=30)

    assert asked["emulated"] is True
    assert asked["expect"] == {Outcome.CRASH_LOOP, Outcome.RAN_EMULATED}
    assert watched.verdict.outcome is Outcome.RAN_EMULATED and watched.masked
    assert watched.emulation and "app:arm64" in watched.emulation
    assert Outcome.NOT_READY not in asked["fail_on"], "an emulated app starting slowly is no early NotReady"
    assert Outcome.CRASH_LOOP in asked["fail_on"] and Outcome.HEALTHY in asked["fail_on"]


def test_not_ready_is_decided_early_only_when_it_is_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod whose readiness probe failed its threshold while starting may still become Ready (a busy node)."""
    asked: list[dict[str, Any]] = []

    def watch_workload(core: Any, namespace: str, selector: str, **kwargs: Any) -> Verdict:
        asked.append(kwargs)
        return a_verdict(Outcome.NOT_READY)

    monkeypatch.setattr(session_module.outcomes, "watch_workload", watch_workload)
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: NO_EMULATION)
    s = FakeSession(tmp_path)
    s.note_image("app:arm64", [ARM64])
    s.watch(WORK, expect=Outcome.HEALTHY, timeout=30)
    assert Outcome.NOT_READY not in asked[0]["fail_on"] and Outcome.CRASH_LOOP in asked[0]["fail_on"]
    s.watch(WORK, expect=Outcome.NOT_READY, timeout=30)
    assert "fail_on" not in asked[1]  # the watch's default: NotReady is decisive when expected


def test_an_emulator_registered_during_the_watch_masks_a_healthy_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter([NO_EMULATION, QEMU_ARM64])
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: next(states))
    monkeypatch.setattr(session_module.outcomes, "watch_workload", lambda *a, **k: a_verdict(Outcome.HEALTHY))
    s = FakeSession(tmp_path)
    s.note_image("app:arm64", [ARM64])

    watched = s.watch(WORK, expect=Outcome.CRASH_LOOP, timeout=30)

    assert watched.verdict.outcome is Outcome.RAN_EMULATED
    assert watched.emulation and "during the watch" in watched.emulation


def test_a_multi_platform_index_is_not_emulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: QEMU_ARM64)
    monkeypatch.setattr(session_module.outcomes, "watch_workload", lambda *a, **k: a_verdict(Outcome.HEALTHY))
    s = FakeSession(tmp_path)
    s.note_image("app:arm64", [AMD64, ARM64])

    watched = s.watch(WORK, expect=Outcome.HEALTHY, timeout=30)
    assert watched.verdict.outcome is Outcome.HEALTHY and watched.emulation is None


def test_the_watch_gets_the_one_gone_rule_image_platforms_and_a_stop_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: dict[str, Any] = {}

    def watch_workload(
        core: Any,
        namespace: str,
        selector: str,
        *,
        expect: Any,
        timeout: float,
        gone_after: float = 8.0,
        image_platforms: Any = None,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> Verdict:
        asked.update(gone_after=gone_after, image_platforms=image_platforms, stop=stop)
        return a_verdict(Outcome.CRASH_LOOP)

    monkeypatch.setattr(session_module.outcomes, "watch_workload", watch_workload)
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: NO_EMULATION)
    s = FakeSession(tmp_path)
    s.note_image("app:arm64", [ARM64])

    s.watch(WORK, expect=Outcome.CRASH_LOOP, timeout=30)

    assert asked["gone_after"] == session_module.CLUSTER_GONE_AFTER
    assert asked["image_platforms"] == {"app:arm64": ("linux/arm64",)}
    assert isinstance(asked["stop"], threading.Event)


def test_a_watch_without_the_newer_keywords_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def narrow(
        core: Any, namespace: str, selector: str, *, expect: Any, timeout: float, emulated: bool = False,
        on_evidence: Any = None, gone_after: float = 8.0,
    ) -> Verdict:  # fmt: skip
        return a_verdict(Outcome.CRASH_LOOP)

    monkeypatch.setattr(session_module.outcomes, "watch_workload", narrow)
    monkeypatch.setattr(session_module.platforms, "read_binfmt", lambda: NO_EMULATION)
    watched = FakeSession(tmp_path).watch(WORK, expect=Outcome.CRASH_LOOP, timeout=30)
    assert watched.verdict.outcome is Outcome.CRASH_LOOP


# -- supervision ---------------------------------------------------------------------------------


def test_a_cluster_that_stops_answering_ends_the_call_with_cluster_gone_and_stops_it(
    tmp_path: Path, fast: None
) -> None:
    s = FakeSession(tmp_path, answering=False)
    s.gone_after = 0.2
    stop = threading.Event()
    ended = threading.Event()

    def hanging_watch() -> None:
        stop.wait(30)
        ended.set()

    began = time.monotonic()
    with pytest.raises(ClusterGone) as gone:
        s.supervised("watching the workload", hanging_watch, stop=stop)
    assert time.monotonic() - began < 5
    assert "cluster 'unit' stopped answering while watching the workload" in str(gone.value)
    assert "no verdict" in str(gone.value) and gone.value.remedy
    assert stop.is_set() and ended.wait(2), "the abandoned watch was told to stop, and it ended"


def test_ctrl_c_during_a_supervised_call_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FakeSession(tmp_path)
    stop = threading.Event()

    def interrupted(self: Any, done: threading.Event) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(session_module._Supervisor, "_supervise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.supervised("watching", lambda: stop.wait(30), stop=stop)
    assert stop.is_set()


def test_a_supervised_call_that_answers_returns_its_result_and_errors(tmp_path: Path, fast: None) -> None:
    s = FakeSession(tmp_path)
    assert s.supervised("quick", lambda: 42) == 42

    def fails() -> None:
        raise HarnessError("boom")

    with pytest.raises(HarnessError, match="boom"):
        s.supervised("failing", fails)


# -- apply ---------------------------------------------------------------------------------------


class _Resource:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def server_side_apply(self, **kwargs: Any) -> None:
        if self.error is not None:
            raise self.error


class _Resources:
    def __init__(self, unknown: bool, error: BaseException | None) -> None:
        self.unknown, self.error = unknown, error

    def get(self, api_version: str, kind: str) -> _Resource:
        if self.unknown:
            raise ResourceNotFoundError(f"No matches found for {{'api_version': {api_version!r}, 'kind': {kind!r}}}")
        return _Resource(self.error)


def _dynamic(unknown: bool = False, error: BaseException | None = None) -> Any:
    class Dynamic:
        def __init__(self, api: Any) -> None:
            self.resources = _Resources(unknown, error)

    return Dynamic


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "ns"},
    "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": []}}},
}


def _api_error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"message": message})
    return exc


@pytest.mark.parametrize(
    ("status", "reason"), [(422, "Unprocessable Entity"), (400, "Bad Request")], ids=["422", "400"]
)
def test_a_manifest_the_api_server_rejects_is_bad_input_naming_file_and_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, reason: str
) -> None:
    message = 'Deployment.apps "web" is invalid: spec.template.spec.containers: Required value'
    monkeypatch.setattr(workload_module, "DynamicClient", _dynamic(error=_api_error(status, reason, message)))
    with pytest.raises(ManifestRejected) as rejected:
        FakeSession(tmp_path).apply([DEPLOYMENT], origins=["k8s/web.yaml"])
    text = str(rejected.value)
    assert text.startswith(f"k8s/web.yaml: Deployment/web: rejected by the API server (HTTP {status}"), text
    assert "Required value" in text and rejected.value.remedy
    assert isinstance(rejected.value, BadInput)


def test_an_unknown_kind_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload_module, "DynamicClient", _dynamic(unknown=True))
    crd = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}}
    with pytest.raises(ManifestRejected, match=r"k8s/widget.yaml: Widget/w: the API server knows no kind 'Widget'"):
        FakeSession(tmp_path).apply([crd], origins=["k8s/widget.yaml"])


def test_a_server_error_on_apply_is_not_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload_module, "DynamicClient", _dynamic(error=_api_error(500, "Internal", "etcd")))
    with pytest.raises(HarnessError) as failed:
        FakeSession(tmp_path).apply([DEPLOYMENT], origins=["k8s/web.yaml"])
    assert not isinstance(failed.value, BadInput)


def test_apply_returns_the_workload_to_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload_module, "DynamicClient", _dynamic())
    work = FakeSession(tmp_path).apply([DEPLOYMENT])
    assert (work.namespace, work.deployment, work.selector) == ("ns", "web", "app=web")


# -- evidence ------------------------------------------------------------------------------------


def test_evidence_on_a_paused_node_never_runs_kind_export_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FakeSession(tmp_path, answering=False)
    exported: list[Path] = []
    monkeypatch.setattr(session_module, "paused_nodes", lambda name: [f"{name}-control-plane"])
    monkeypatch.setattr(KindCluster, "export_logs", lambda self, d: exported.append(d) or d)
    monkeypatch.setattr(KindCluster, "collect_evidence", lambda *a: pytest.fail("kubectl against a paused node"))

    directory = s.collect_evidence(tmp_path / "artifacts", "test one/two", "ns", "app=web")

    assert directory.parent == tmp_path / "artifacts" and directory.name.startswith("test_one_two-")
    missing = (directory / "evidence-missing.txt").read_text()
    assert "did not answer (no answer within 5 s)" in missing and "unit-control-plane" in missing
    assert "paused" in missing and exported == []


def test_evidence_when_the_api_is_down_but_no_node_paused_still_has_node_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FakeSession(tmp_path, answering=False)
    exported: list[Path] = []
    monkeypatch.setattr(session_module, "paused_nodes", lambda name: [])
    monkeypatch.setattr(KindCluster, "export_logs", lambda self, d: exported.append(d) or d)
    directory = s.collect_evidence(tmp_path, "t", "ns")
    assert exported == [directory / "kind-logs"]


def test_evidence_when_the_api_answers_is_the_clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[tuple[str, str]] = []
    monkeypatch.setattr(KindCluster, "collect_evidence", lambda self, ns, sel, d: got.append((ns, sel)) or d)
    FakeSession(tmp_path).collect_evidence(tmp_path, "t", "ns", "app=web")
    assert got == [("ns", "app=web")]


# -- clean-up ------------------------------------------------------------------------------------


def test_clean_up_runs_in_reverse_order_and_goes_on_after_a_failure(tmp_path: Path) -> None:
    s = FakeSession(tmp_path)
    done: list[str] = []

    def broken() -> None:
        raise HarnessError("cannot")

    s.defer("first", lambda: done.append("first"))
    s.defer("broken", broken)
    s.defer("last", lambda: done.append("last"))

    failures = s.close()

    assert done == ["last", "first"]
    assert failures == ["clean-up 'broken' failed: cannot"]
    assert s.close() == [], "each clean-up runs once"


def test_clean_up_that_needs_the_api_is_skipped_with_a_remedy_when_it_does_not_answer(tmp_path: Path) -> None:
    s = FakeSession(tmp_path, answering=False)
    ran: list[str] = []
    s.defer("delete namespace ns", lambda: ran.append("ns"), remedy="remove it later: kubectl delete namespace ns")
    s.defer("delete cluster", lambda: ran.append("cluster"), needs_api=False)

    failures = s.close()

    assert ran == ["cluster"]
    assert failures and "does not answer" in failures[0]
    assert any(line.strip() == "remove it later: kubectl delete namespace ns" for line in s.said_lines)


def test_a_clean_up_that_hangs_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "CLEANUP_SECONDS", 0.2)
    s = FakeSession(tmp_path)
    release = threading.Event()
    s.defer("hang", lambda: release.wait(30), needs_api=False)
    began = time.monotonic()
    failures = s.close()
    release.set()
    assert time.monotonic() - began < 5
    assert failures and "did not finish within" in failures[0]


def test_namespaces_are_deleted_once_or_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    deleted: list[str] = []
    monkeypatch.setattr(
        session_module.workload, "create_namespace", lambda core, prefix: made.append(prefix) or f"{prefix}-1"
    )
    monkeypatch.setattr(session_module.workload, "delete_namespace", lambda core, name: deleted.append(name))
    s = FakeSession(tmp_path)

    one = s.create_namespace("Test_One[param]")
    two = s.create_namespace("two")
    assert made == ["test-one-param", "two"]
    assert s.delete_namespace(one) and deleted == [one]
    s.keep_namespace(two)
    s.close()
    assert deleted == [one], "a kept namespace stays; a deleted one is not deleted again"


def test_native_and_foreign_are_computed_in_one_place(tmp_path: Path) -> None:
    from harness.platforms import foreign_of, resolve_platform_word

    assert foreign_of(AMD64) == ARM64 and foreign_of(ARM64) == AMD64
    assert foreign_of(Platform("linux", "arm", "v7")) == AMD64
    assert resolve_platform_word("native", ARM64) == ARM64
    assert resolve_platform_word("foreign", AMD64) == ARM64
    assert resolve_platform_word("linux/arm/v6", AMD64) == Platform("linux", "arm", "v6")
    s = FakeSession(tmp_path)
    assert (s.platform("native"), s.platform("foreign"), s.foreign) == (AMD64, ARM64, ARM64)
