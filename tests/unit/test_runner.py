"""run_scenario's decisions, with a fake session and fake verdicts (no cluster, no Docker engine).

Every exit status (0, 1, 2, 3, 4, 129, 130, 143) and every symptom kind; the regressions of
"verdicts a user can trust": a symptom satisfied only by the harness's own note, or by a reason
of the wrong kind, must not count.
"""

from __future__ import annotations

import dataclasses
import signal
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import capacity, images, scenario, workload
from harness.errors import BadInput, ClusterGone, HarnessError, Interrupted
from harness.outcomes import Cause, Evidence, ImageRun, Outcome, Verdict
from harness.platforms import EmulationState, Platform, resolve_platform_word
from harness.registry import RegistryGone
from harness.runner import ExitStatus, RunOptions, RunResult, check_symptom, run_scenario
from harness.scenario import Symptom
from harness.session import Admission, ManifestRejected, Watched

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
AMD64 = Platform("linux", "amd64")


@dataclasses.dataclass(frozen=True)
class FakeVerdict(Verdict):
    """A Verdict with the fields of the verdict contract (present in Verdict itself once it has them)."""

    waiting_reasons_seen: frozenset[str] = frozenset()
    terminated_reasons_seen: frozenset[str] = frozenset()
    exit_codes_seen: frozenset[int] = frozenset()
    probe_failures_seen: frozenset[str] = frozenset()
    images_ran: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class FakeImageRun:
    pod: str
    container: str
    image: str
    image_id: str = ""
    node: str = "node"


def verdict(outcome: Outcome = Outcome.CRASH_LOOP, **fields: Any) -> FakeVerdict:
    values: dict[str, Any] = {
        "outcome": outcome,
        "pods": ("web-1",),
        "cause": None,
        "restarts": 0,
        "ready_seen": False,
        "phases_seen": frozenset(),
        "started_at": NOW,
        "decided_at": NOW,
        "seconds": 1.0,
        "timeline": (),
        "summary": f"{outcome.label} after 1.0 s",
    }
    values.update(fields)
    values["phases_seen"] = frozenset(
        values["phases_seen"]
        | values.get("waiting_reasons_seen", frozenset())
        | values.get("terminated_reasons_seen", frozenset())
    )
    return FakeVerdict(**values)


def evidence(kind: Any, text: str, subject: str = "pod/web-1") -> Evidence:
    return Evidence(NOW, kind, subject, text)


CRASH = verdict(
    Outcome.CRASH_LOOP,
    restarts=3,
    waiting_reasons_seen=frozenset({"CrashLoopBackOff"}),
    terminated_reasons_seen=frozenset({"Error"}),
    exit_codes_seen=frozenset({1}),
    cause=Cause("CrashLoopBackOff", 1, "Error", log_lines=("exec /usr/local/bin/uvicorn: exec format error",)),
    timeline=(evidence("event", "Warning BackOff: Back-off restarting failed container"),),
)
HEALTHY_AFTER_FIX = verdict(Outcome.HEALTHY, pods=("web-2",), ready_seen=True)


# -- the fake session ------------------------------------------------------------------------


@dataclasses.dataclass
class FakeCluster:
    name: str = "fake"
    node_image: str | None = "incident-harness/node:v1.34.0"
    reused: bool = True
    kubeconfig: Path = Path("fake-kubeconfig")


@dataclass(frozen=True)
class FakeRegistry:
    host: str = "localhost:5001"
    managed: bool = True


class FakeSession:
    """What the runner asks of a session, recorded; watch() hands out the queued results in order."""

    def __init__(self, *watches: Watched | BaseException, apply_error: BaseException | None = None) -> None:
        self.cluster = FakeCluster()
        self.node_platform = AMD64
        self.emulation = EmulationState(mounted=True, enabled=True)
        self.watches = list(watches)
        self.apply_error = apply_error
        self.calls: list[str] = []
        self.watch_args: list[dict[str, Any]] = []
        self.namespaces: dict[str, str] = {}  # name -> "live" | "deleted" | "kept"
        self.capacity_error: BaseException | None = None
        self.capacity_wait = ""  # admit() says it waited for this reason
        self.registry_gone = False

    def platform(self, word: str) -> Platform:
        return resolve_platform_word(word, self.node_platform)

    def profile_facts(self) -> dict[str, str]:
        return {"cluster profile": "fast", "kubelet maxContainerRestartPeriod": "1s"}

    def build_image(self, context: Path, platform: Platform, *, repository: str, **kwargs: Any) -> images.BuiltImage:
        self.calls.append(f"build {repository} {platform}")
        ref = f"{repository}:{platform.architecture}"
        return images.BuiltImage(ref, "sha256:0", platform, images.Builder.BUILDX, 0.1)

    def load_image(self, ref: str, held: Any = None) -> None:
        self.calls.append(f"load {ref}")

    def load_index(self, built: Any, name: str) -> str:
        return f"incident-harness/{name}:multi"

    def create_namespace(self, prefix: str) -> str:
        name = f"{prefix}-abc123"
        self.namespaces[name] = "live"
        self.calls.append(f"namespace {name}")
        return name

    def delete_namespace(self, name: str) -> bool:
        self.namespaces[name] = "deleted"
        return True

    def keep_namespace(self, name: str) -> None:
        self.namespaces[name] = "kept"

    def check_capacity(self, docs: list[dict[str, Any]], what: str, *, origins: Any = None) -> capacity.Demand:
        self.calls.append("check capacity")
        if self.capacity_error is not None:
            raise self.capacity_error
        return capacity.peak_requests(docs, origins)

    def admit(self, docs: list[dict[str, Any]], what: str, *, origins: Any = None, on_wait: Any = None) -> Admission:
        self.calls.append("admit")
        demand = capacity.peak_requests(docs, origins)
        if self.capacity_wait and on_wait is not None:
            on_wait(f"waiting for capacity: {self.capacity_wait}")
            return Admission(docs[0]["metadata"]["namespace"], demand, 1.5, self.capacity_wait)
        return Admission(docs[0]["metadata"]["namespace"], demand)

    def apply(self, docs: list[dict[str, Any]], *, deployment: str | None = None, origins: Any = None) -> Any:
        self.calls.append("apply")
        self.origins = list(origins or [])
        self.applied = list(docs)
        if self.apply_error is not None:
            raise self.apply_error
        name, selector = workload.selector_of(docs, deployment)
        return workload.Workload(docs[0]["metadata"]["namespace"], tuple(docs), name, selector)

    def workload_images(self, work: Any) -> list[str]:
        return ["incident-harness/app:arm64"]

    def emulated(self, refs: Any) -> str | None:
        pending = next((w for w in self.watches if isinstance(w, Watched)), None)
        return pending.emulation if pending is not None else None

    def watch(self, work: Any, *, expect: Any, timeout: float, **kwargs: Any) -> Watched:
        self.calls.append(f"watch {sorted(o.label for o in ({expect} if isinstance(expect, Outcome) else expect))}")
        self.watch_args.append(kwargs)
        result = self.watches.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def set_image(self, namespace: str, deployment: str, ref: str, **kwargs: Any) -> None:
        self.calls.append(f"set image {deployment} {ref}")

    def rollout_restart(self, namespace: str, deployment: str) -> None:
        self.calls.append(f"restart {deployment}")

    def rollback(self, namespace: str, deployment: str) -> None:
        self.calls.append(f"rollback {deployment}")

    def collect_evidence(self, artifacts_dir: Path, label: str, namespace: str, selector: str = "") -> Path:
        self.calls.append("evidence")
        directory = artifacts_dir / label
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def unanswered(self, what: str, exc: BaseException) -> HarnessError:
        return ClusterGone(f"cluster 'fake' stopped answering during '{what}'")

    def close(self) -> list[str]:
        self.calls.append("close")
        return []

    def images_that_ran(self, ran: Any) -> tuple[Any, ...]:
        return tuple(ran)

    # -- registry delivery -------------------------------------------------------------------------

    def registry(self) -> Any:
        self.calls.append("registry")
        return FakeRegistry()

    def check_registry(self) -> None:
        if self.registry_gone:
            raise RegistryGone("container incident-harness-registry does not answer GET /v2/")

    def push_image(self, context: Path, platform: Platform, *, repository: str, tag: str, **kwargs: Any) -> Any:
        self.calls.append(f"push {repository}:{tag} {platform}")
        digest = f"sha256:{platform.architecture}{tag}"
        return images.PushedImage(
            f"localhost:5001/{repository}:{tag}", repository, tag, digest, images.OCI_MANIFEST, 1, (platform,), 0.1
        )

    def push_index(self, repository: str, tag: str, members: Any) -> Any:
        self.calls.append(f"index {repository}:{tag}")
        return images.PushedImage(
            f"localhost:5001/{repository}:{tag}",
            repository,
            tag,
            f"sha256:index{tag}",
            images.OCI_INDEX,
            1,
            tuple(m.platforms[0] for m in members),
            0.1,
        )

    def image_ids(self, digest: str) -> set[str]:
        return {f"config-{digest.removeprefix('sha256:')[:5]}"}  # config-amd64 / config-arm64


# -- scenarios ---------------------------------------------------------------------------------

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: set-by-harness}]}
"""

SCENARIO = """
apiVersion: incident-harness/v1
kind: Scenario
name: fake-incident
title: A fake incident
images:
  app: {context: app, platform: foreign}
  fixed: {context: app, platform: native}
workload:
  manifests: [manifests/web.yaml]
  image: app
  deployment: web
  delivery: load
expect:
  outcome: CrashLoopBackOff
  symptoms:
    - waitingReason: CrashLoopBackOff
    - previousLogContains: exec format error
  timeout: 60
fix:
  steps:
    - setImage: fixed
  expect:
    outcome: Healthy
    deploymentAvailable: true
    timeout: 60
"""


@pytest.fixture
def seed(tmp_path: Path) -> scenario.Scenario:
    """A scenario in a throwaway project: scenarios/fake.yaml, app/, manifests/web.yaml."""
    (tmp_path / "pyproject.toml").write_text("[tool.incident-harness]\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "web.yaml").write_text(MANIFEST)
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / "fake.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    return scenario.load(path)


def _no_images(target: str, uses: Any) -> Any:
    """The image reader for fake sessions: there is no engine, so every prediction is "unknown"."""
    raise HarnessError(f"no image {target} (unit test)", "none")


def run(s: scenario.Scenario, session: FakeSession, tmp_path: Path) -> RunResult:
    said: list[str] = []
    result = run_scenario(
        s,
        RunOptions(
            session=session,  # type: ignore[arg-type]
            inspect_images=_no_images,
            report_dir=tmp_path / "reports",
            artifacts_dir=tmp_path / "artifacts",
            say=said.append,
        ),
    )
    result.said = said  # type: ignore[attr-defined]
    return result


def with_expect(s: scenario.Scenario, **changes: Any) -> scenario.Scenario:
    return dataclasses.replace(s, expect=dataclasses.replace(s.expect, **changes))


# -- exit statuses -----------------------------------------------------------------------------


def test_0_incident_reproduced_and_fix_verified_on_pods_made_after_the_fix(
    seed: scenario.Scenario, tmp_path: Path
) -> None:
    session = FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX))
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.OK, result.report.error
    assert result.report.fix_verified is True
    assert result.report.symptoms_reproduced == result.report.symptoms_total == 2
    assert "set image web incident-harness/fixed:amd64" in session.calls
    fix_watch = session.watch_args[1]
    assert "pod_filter" in fix_watch, "the fix must be judged on pods created after it"
    assert "watch ['Healthy']" in session.calls, "deploymentAvailable is judged by the Healthy watch"
    assert session.namespaces == {"fake-incident-abc123": "deleted"}
    assert "evidence" not in session.calls
    assert "close" not in session.calls, "a session handed in belongs to the caller"
    assert session.origins == [str(seed.workload.manifests[0])]
    assert [p.suffix for p in result.report_paths] == [".md", ".json"]


def test_1_when_the_incident_does_not_reproduce(seed: scenario.Scenario, tmp_path: Path) -> None:
    healthy = verdict(Outcome.HEALTHY, ready_seen=True)
    session = FakeSession(Watched(healthy))
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert not result.verdicts[0].passed
    assert "evidence" in session.calls and result.report.artifacts


def test_1_when_a_symptom_does_not_show(seed: scenario.Scenario, tmp_path: Path) -> None:
    no_log = dataclasses.replace(CRASH, cause=Cause("CrashLoopBackOff", 1, "Error", log_lines=("boom",)))
    result = run(seed, FakeSession(Watched(no_log), Watched(HEALTHY_AFTER_FIX)), tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert [c.seen for c in result.symptoms] == [True, False]


def test_1_when_no_pod_created_after_the_fix_was_seen(seed: scenario.Scenario, tmp_path: Path) -> None:
    nobody = verdict(Outcome.HEALTHY, pods=(), ready_seen=True)
    result = run(seed, FakeSession(Watched(CRASH), Watched(nobody)), tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert result.report.fix_verified is False
    assert any(c.symptom.kind == "podsCreatedAfterFix" and not c.seen for c in result.fix_checks)


def test_1_when_pods_after_the_fix_run_another_image(seed: scenario.Scenario, tmp_path: Path) -> None:
    old = verdict(
        Outcome.HEALTHY,
        pods=("web-2",),
        ready_seen=True,
        images_ran=(FakeImageRun("web-2", "web", "incident-harness/app:arm64"),),
    )
    result = run(seed, FakeSession(Watched(CRASH), Watched(old)), tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert any(c.symptom.kind == "runsFixImage" and not c.seen for c in result.fix_checks)


def test_1_when_the_fix_does_not_hold(seed: scenario.Scenario, tmp_path: Path) -> None:
    result = run(seed, FakeSession(Watched(CRASH), Watched(CRASH)), tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert result.report.fix_verified is False
    assert [v.passed for v in result.verdicts] == [True, False]


def test_2_a_manifest_the_api_server_rejects_names_file_and_object(seed: scenario.Scenario, tmp_path: Path) -> None:
    rejected = ManifestRejected(
        f"{seed.workload.manifests[0]}: Deployment/web: rejected by the API server (HTTP 422 Unprocessable Entity)",
        "fix the manifest",
    )
    session = FakeSession(apply_error=rejected)
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.BAD_INPUT
    assert "web.yaml: Deployment/web" in (result.report.error or "")
    assert "evidence" not in session.calls, "nothing ran: there is nothing to collect"
    assert session.namespaces == {"fake-incident-abc123": "deleted"}


def test_2_a_fix_without_steps(seed: scenario.Scenario, tmp_path: Path) -> None:
    empty = dataclasses.replace(seed, fix_steps=())
    session = FakeSession(Watched(CRASH))
    result = run(empty, session, tmp_path)

    assert result.exit_status is ExitStatus.BAD_INPUT
    assert "fix.steps" in (result.report.error or "")
    assert session.calls == [], "nothing is deployed for a scenario the runner cannot run"


def test_2_a_deployment_step_without_a_deployment(seed: scenario.Scenario, tmp_path: Path) -> None:
    bare = dataclasses.replace(seed, workload=dataclasses.replace(seed.workload, deployment=None))
    session = FakeSession(Watched(CRASH))
    session.apply = lambda docs, **kw: workload.Workload("ns", tuple(docs), None, "app=web")  # type: ignore[method-assign]
    result = run(bare, session, tmp_path)

    assert result.exit_status is ExitStatus.BAD_INPUT
    assert "needs a Deployment" in (result.report.error or "")


def test_3_when_the_cluster_stops_answering_mid_watch(seed: scenario.Scenario, tmp_path: Path) -> None:
    gone = ClusterGone("cluster 'fake' stopped answering while watching (no answer within 5 s): no verdict")
    session = FakeSession(gone)
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.ENVIRONMENT
    assert not result.verdicts, "a cluster that is gone gives no verdict"
    assert "evidence" in session.calls
    failed = [s.name for s in result.report.steps if s.status.value == "failed"]
    assert failed == ["watch: expect CrashLoopBackOff"]


def test_4_when_the_foreign_image_ran_under_emulation(seed: scenario.Scenario, tmp_path: Path) -> None:
    ran = verdict(Outcome.RAN_EMULATED, ready_seen=True, summary="ran under emulation; masked")
    session = FakeSession(Watched(ran, "incident-harness/app:arm64: qemu-aarch64 (F) runs it"))
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.MASKED_BY_EMULATION
    assert result.report.emulation and "qemu-aarch64" in result.report.emulation
    assert result.symptoms == [] and result.report.fix_verified is None, "no symptom or fix is judged when masked"
    assert "MASKED BY EMULATION" in result.report.headline()
    assert len(session.watch_args) == 1, "no fix runs on a masked incident"


@pytest.mark.parametrize(
    ("interrupt", "status", "name"),
    [
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED, "SIGINT"),
        (Interrupted(signal.SIGTERM), ExitStatus.TERMINATED, "SIGTERM"),
        (Interrupted(signal.SIGHUP), ExitStatus.HANGUP, "SIGHUP"),
    ],
    ids=["130-ctrl-c", "143-sigterm", "129-sighup"],
)
def test_interrupts_clean_up_and_say_where_the_run_stopped(
    seed: scenario.Scenario, tmp_path: Path, interrupt: BaseException, status: ExitStatus, name: str
) -> None:
    session = FakeSession(interrupt)
    result = run(seed, session, tmp_path)

    assert result.exit_status is status
    assert result.report.error == f"interrupted by {name} during step 'watch: expect CrashLoopBackOff'"
    assert session.namespaces == {"fake-incident-abc123": "deleted"}, "clean-up runs on every exit path"
    assert "evidence" not in session.calls
    assert result.report_paths, "the report is written"


def test_keep_namespace_leaves_it(seed: scenario.Scenario, tmp_path: Path) -> None:
    session = FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX))
    run_scenario(
        seed,
        RunOptions(session=session, keep_namespace=True, report_dir=None, say=lambda _l: None),  # type: ignore[arg-type]
    )
    assert session.namespaces == {"fake-incident-abc123": "kept"}


def test_an_owned_session_is_closed(seed: scenario.Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX))
    from harness import runner

    monkeypatch.setattr(runner.Session, "open", classmethod(lambda cls, **kw: session))
    result = run_scenario(seed, RunOptions(report_dir=None, say=lambda _l: None))
    assert result.exit_status is ExitStatus.OK
    assert session.calls[-1] == "close"


# -- symptoms: each looks only where its name says ------------------------------------------------


def _check(kind: str, value: Any, v: Verdict) -> bool:
    return check_symptom(Symptom(kind, value), v).seen


def test_event_contains_searches_kubernetes_events_not_the_harness_notes() -> None:
    noted = verdict(timeline=(evidence("note", "watching pods app=web, expecting CrashLoopBackOff", "harness"),))
    assert not _check("eventContains", "expecting CrashLoopBackOff", noted)
    evented = verdict(timeline=(evidence("event", "Warning BackOff: Back-off restarting failed container"),))
    assert _check("eventContains", "Back-off restarting", evented)
    probed = verdict(timeline=(evidence("probe", "Warning Unhealthy: Liveness probe failed: connection refused"),))
    assert _check("eventContains", "Liveness probe failed", probed)
    logged = verdict(timeline=(evidence("log", "Back-off restarting"),))
    assert not _check("eventContains", "Back-off restarting", logged)


def test_terminated_reason_is_not_satisfied_by_a_waiting_reason() -> None:
    assert not _check("terminatedReason", "CrashLoopBackOff", CRASH)
    assert _check("terminatedReason", "Error", CRASH)
    assert _check("waitingReason", "CrashLoopBackOff", CRASH)
    assert not _check("waitingReason", "Error", CRASH)


def test_exit_code_and_probe_failed() -> None:
    assert _check("exitCode", 1, CRASH) and not _check("exitCode", 137, CRASH)
    killed = verdict(probe_failures_seen=frozenset({"liveness"}))
    assert _check("probeFailed", "liveness", killed)
    assert not _check("probeFailed", "readiness", killed)


def test_restarts_never_ready_and_previous_log() -> None:
    assert _check("restartsAtLeast", 3, CRASH) and not _check("restartsAtLeast", 4, CRASH)
    assert _check("neverReady", True, CRASH)
    assert not _check("neverReady", True, verdict(ready_seen=True))
    assert _check("previousLogContains", "exec format error", CRASH)
    assert not _check("previousLogContains", "exec format error", verdict())


def test_empty_values_match_nothing() -> None:
    for kind in ("eventContains", "waitingReason", "terminatedReason", "previousLogContains"):
        assert not _check(kind, "", CRASH), kind


def test_deployment_available_is_the_healthy_verdict() -> None:
    assert _check("deploymentAvailable", True, HEALTHY_AFTER_FIX)
    assert not _check("deploymentAvailable", True, CRASH)


def test_every_symptom_of_the_schema_is_checked() -> None:
    samples = {str: "x", int: 1, bool: True}
    for kind, kind_type in scenario.SYMPTOMS.items():
        check_symptom(Symptom(kind, samples[kind_type]), CRASH)  # an unknown kind raises AssertionError
    for kind, value in (("exitCode", 1), ("probeFailed", "liveness")):
        check_symptom(Symptom(kind, value), CRASH)


def test_symptoms_of_the_new_kinds_decide_the_exit_status(seed: scenario.Scenario, tmp_path: Path) -> None:
    s = with_expect(seed, symptoms=(Symptom("exitCode", 137), Symptom("probeFailed", "liveness")))
    result = run(s, FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX)), tmp_path)
    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    assert [c.seen for c in result.symptoms] == [False, False]


# -- the capacity gate ---------------------------------------------------------------------------


def test_a_workload_that_can_never_fit_is_bad_input_before_any_namespace(
    seed: scenario.Scenario, tmp_path: Path
) -> None:
    session = FakeSession(Watched(CRASH))
    session.capacity_error = BadInput("manifests/web.yaml: Deployment web can never fit these nodes", "lower it")
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.BAD_INPUT
    assert "can never fit" in (result.report.error or "")
    assert session.namespaces == {}, "nothing is made for a workload that can never fit"
    assert "apply" not in session.calls


def test_the_gate_admits_before_apply_and_a_wait_is_a_step_and_a_line(seed: scenario.Scenario, tmp_path: Path) -> None:
    session = FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX))
    session.capacity_wait = "needs cpu 300m, free 120m"
    result = run(seed, session, tmp_path)

    assert result.exit_status is ExitStatus.OK, result.report.error
    assert session.calls.index("check capacity") < session.calls.index("namespace fake-incident-abc123")
    assert session.calls.index("admit") < session.calls.index("apply")
    waits = [st for st in result.report.steps if st.name == "wait for capacity"]
    assert waits and waits[0].detail == "needs cpu 300m, free 120m"
    assert "    waiting for capacity: needs cpu 300m, free 120m" in result.said  # type: ignore[attr-defined]
    assert "waited 1.5 s" in result.report.facts["capacity"]


# -- registry delivery -------------------------------------------------------------------------


def registry_scenario(s: scenario.Scenario, **workload_changes: Any) -> scenario.Scenario:
    changes: dict[str, Any] = {"delivery": "registry", "pull_policy": None, **workload_changes}
    return dataclasses.replace(s, workload=dataclasses.replace(s.workload, **changes))


def ran(config: str, image: str = "localhost:5001/set-by-harness:x") -> tuple[ImageRun, ...]:
    return (ImageRun("web-2", "web", image, f"{image.rpartition(':')[0]}@sha256:feed", "node-1", "", config),)


def test_registry_delivery_pushes_content_tags_and_applies_the_manifests_pull_policy(
    seed: scenario.Scenario, tmp_path: Path
) -> None:
    s = registry_scenario(seed)
    session = FakeSession(Watched(CRASH), Watched(HEALTHY_AFTER_FIX))
    result = run(s, session, tmp_path)

    pushes = [c for c in session.calls if c.startswith("push ")]
    assert [c.split()[-1] for c in pushes] == ["linux/arm64", "linux/amd64"], session.calls
    # The repository is the one the manifest's container names; the tags name each build's inputs.
    assert all(c.split()[1].startswith("set-by-harness:linux-") for c in pushes)
    assert "load" not in " ".join(session.calls)
    assert result.exit_status is ExitStatus.OK, result.report.error
    container = session_rendered(session)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("localhost:5001/set-by-harness:linux-arm64-")
    assert "imagePullPolicy" not in container, "with registry delivery the manifests' pull policy stands"
    assert result.report.facts["delivery"].startswith("registry localhost:5001")


def session_rendered(session: FakeSession) -> dict[str, Any]:
    return session.applied[0]


def test_a_fix_counts_only_when_the_new_pods_run_the_fixed_image(seed: scenario.Scenario, tmp_path: Path) -> None:
    """Same tag, IfNotPresent: the node kept the broken build; Healthy or not, the fix is not verified."""
    s = registry_scenario(seed)
    stale = dataclasses.replace(HEALTHY_AFTER_FIX, images_ran=ran("config-arm64"))
    session = FakeSession(Watched(CRASH), Watched(stale))
    result = run(s, session, tmp_path)

    assert result.exit_status is ExitStatus.EXPECTATION_FAILED
    check = next(c for c in result.fix_checks if c.symptom.kind == "runsFixImage")
    assert not check.seen and "ran other builds" in check.detail


def test_the_fixed_image_running_verifies_the_fix(seed: scenario.Scenario, tmp_path: Path) -> None:
    s = registry_scenario(seed)
    good = dataclasses.replace(HEALTHY_AFTER_FIX, images_ran=ran("config-amd64"))
    result = run(s, FakeSession(Watched(CRASH), Watched(good)), tmp_path)

    assert result.exit_status is ExitStatus.OK, [c.detail for c in result.fix_checks]
    check = next(c for c in result.fix_checks if c.symptom.kind == "runsFixImage")
    assert check.seen


def test_ran_image_names_the_build_that_ran(seed: scenario.Scenario, tmp_path: Path) -> None:
    delivered = {"app": {"sha256:aaa"}, "fixed": {"sha256:bbb"}}
    v = dataclasses.replace(CRASH, images_ran=ran("sha256:aaa"))
    assert check_symptom(Symptom("ranImage", "app"), v, delivered).seen
    miss = check_symptom(Symptom("ranImage", "fixed"), v, delivered)
    assert not miss.seen and "sha256:aaa" in miss.detail
    none = check_symptom(Symptom("ranImage", "app"), dataclasses.replace(CRASH, images_ran=()), delivered)
    assert not none.seen and "none started" in none.detail


def test_a_registry_that_stops_answering_is_an_environment_failure_not_a_verdict(
    seed: scenario.Scenario, tmp_path: Path
) -> None:
    s = registry_scenario(seed)
    pull = verdict(Outcome.IMAGE_PULL, waiting_reasons_seen=frozenset({"ImagePullBackOff"}))
    session = FakeSession(Watched(pull))
    session.registry_gone = True
    result = run(s, session, tmp_path)

    assert result.exit_status is ExitStatus.ENVIRONMENT
    assert "does not answer" in (result.report.error or "")


def test_delivery_load_refuses_a_pull_policy_of_always(seed: scenario.Scenario, tmp_path: Path) -> None:
    s = registry_scenario(seed, pull_policy="Always")
    result = run_scenario(
        s,
        RunOptions(session=FakeSession(), delivery="load", report_dir=None, say=lambda _l: None),  # type: ignore[arg-type]
    )
    assert result.exit_status is ExitStatus.BAD_INPUT
    assert "workload.pullPolicy" in (result.report.error or "")
