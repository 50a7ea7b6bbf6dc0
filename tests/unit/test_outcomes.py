"""Classification on pod/event/log objects in the API's JSON shape, and the watcher against a fake API."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    BatchV1Api,
    CoreV1Api,
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from harness.errors import ClusterGone, HarnessError, WatchStopped
from harness.outcomes import (
    Evidence,
    HealthGate,
    Outcome,
    ProbeCount,
    ProbeLedger,
    ProbeSpec,
    RolloutStatus,
    Verdict,
    _lacks_resources,
    classify_pod,
    classify_workload,
    created_after,
    current_pods_selector,
    diagnose,
    expected_replicas,
    healthy_gate,
    job_outcome,
    mark_emulated,
    parse_probe_metrics,
    rollout_state,
    selector_string,
    wait_rollout,
    watch_workload,
)

DATA = Path(__file__).parent / "data" / "recorded"


# ---------------------------------------------------------------------------------------------
# Fixtures: recorded (or hand-written, see data/recorded/README.md) API objects


def load(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, str, str], str]]:
    base = DATA / name
    pods = json.loads((base / "pods.json").read_text())["items"]
    events = json.loads((base / "events.json").read_text())["items"]
    logs: dict[tuple[str, str, str], str] = {}
    if (base / "logs").is_dir():
        for path in (base / "logs").rglob("*.log"):
            container, which, _ = path.name.split(".")
            logs[(path.parent.name, container, which)] = path.read_text()
    return pods, events, logs


def previous_log(logs: dict[tuple[str, str, str], str], pod: str, container: str) -> list[str]:
    return logs.get((pod, container, "previous"), "").splitlines()


EXPECTED: dict[str, Outcome | None] = {
    "healthy": Outcome.HEALTHY,
    "crashloop-exec-format": Outcome.CRASH_LOOP,
    "starterror-exec-format": Outcome.CRASH_LOOP,
    "image-pull-never-loaded": Outcome.IMAGE_PULL,
    "unschedulable-node-selector": Outcome.UNSCHEDULABLE,
    "init-crashloop": Outcome.INIT_CRASH_LOOP,
    "create-config-error": Outcome.CREATE_ERROR,
    "not-ready-probe-failing": Outcome.NOT_READY,
    "starterror-missing-entrypoint": Outcome.CRASH_LOOP,
    "create-config-error-missing-key": Outcome.CREATE_ERROR,
    "pod-never-start-error": Outcome.FAILED,
    "liveness-kill": Outcome.CRASH_LOOP,
    "job-failed-exec-format": None,  # the Job's pods failed; only the Job says whether it retries
    "probe-metrics": Outcome.HEALTHY,  # the candidate only: the probe counters keep it from Healthy
}


@pytest.mark.parametrize(("name", "expected"), [(n, EXPECTED[n]) for n in sorted(EXPECTED)])
def test_each_recorded_state_is_classified(name: str, expected: Outcome | None) -> None:
    pods, events, _ = load(name)
    assert classify_workload(pods, events) is expected


def test_every_recording_has_an_expectation() -> None:
    recorded = {p.parent.name for p in DATA.glob("*/pods.json")}
    assert recorded <= set(EXPECTED), f"add an expectation for {sorted(recorded - set(EXPECTED))}"


def test_exec_format_error_is_found_in_the_previous_log() -> None:
    pods, events, logs = load("crashloop-exec-format")
    pod = pods[0]
    cause = diagnose(pod, events, previous_log(logs, pod["metadata"]["name"], "app"))
    assert cause is not None
    assert cause.exec_format_error
    assert cause.reason == "exec format error"
    assert (cause.exit_code, cause.termination_reason) == (1, "Error")
    assert cause.log_lines == ("exec /usr/local/bin/uvicorn: exec format error",)
    assert cause.container == "app"
    assert "exec format error" in cause.message
    # The log line alone does not show a platform difference: the cause says what was seen, no more.
    assert "another CPU architecture" not in cause.describe()
    assert not cause.platform_mismatch
    assert cause.explanation == "exec format error (image and node platform unknown)"
    assert cause.evidence.startswith("log line 'exec /usr/local/bin/uvicorn: exec format error' of pod/")
    assert cause.instance == "df121970a1d5" and "instance df121970a1d5" in cause.describe()


ARM_IMAGE = "incident-harness/laptop-build:linux-arm64-326a6fff261f"  # the recorded pod's spec image


def test_exec_format_error_blames_the_architecture_only_on_a_platform_difference() -> None:
    pods, events, logs = load("crashloop-exec-format")
    pod = pods[0]
    lines = previous_log(logs, pod["metadata"]["name"], "app")
    foreign = diagnose(pod, events, lines, image_platforms={ARM_IMAGE: ("linux/arm64",)}, node_platform="linux/amd64")
    assert foreign is not None and foreign.platform_mismatch
    assert foreign.explanation == (
        "the image's binaries are for another CPU architecture than the node's: "
        "the image is for linux/arm64, the node is linux/amd64"
    )
    assert f"image {ARM_IMAGE} is linux/arm64" in foreign.evidence
    assert "node incident-harness-control-plane is linux/amd64 (status.nodeInfo)" in foreign.evidence

    native = diagnose(pod, events, lines, image_platforms={ARM_IMAGE: ("linux/amd64",)}, node_platform="linux/amd64")
    assert native is not None and not native.platform_mismatch
    assert native.explanation == (
        "exec format error from a linux/amd64 image on a linux/amd64 node: "
        "the entrypoint is not an executable for this CPU"
    )
    assert "another CPU architecture" not in native.describe()

    unknown = diagnose(pod, events, lines, node_platform="linux/amd64")
    assert unknown is not None
    assert unknown.explanation == "exec format error on a linux/amd64 node (image platform unknown)"

    # A multi-platform index: the node picks its own entry, so no difference is seen.
    index = diagnose(
        pod, events, lines, image_platforms={ARM_IMAGE: ("linux/arm64", "linux/amd64")}, node_platform="linux/amd64"
    )
    assert index is not None and not index.platform_mismatch
    only_foreign = diagnose(
        pod,
        events,
        lines,
        image_platforms={ARM_IMAGE: ("linux/arm64/v8", "linux/s390x")},
        node_platform="linux/amd64",
    )
    assert only_foreign is not None and only_foreign.platform_mismatch
    assert "the image's index holds only linux/arm64/v8, linux/s390x" in only_foreign.explanation


def test_exec_format_error_reported_as_start_error_without_a_log_line() -> None:
    pods, events, _ = load("starterror-exec-format")
    cause = diagnose(pods[0], events, [])
    assert cause is not None
    assert cause.exec_format_error
    assert (cause.exit_code, cause.termination_reason) == (128, "StartError")
    assert "exec format error" in cause.message


def test_exec_format_error_found_in_an_event_message_only() -> None:
    pods, events, _ = load("starterror-exec-format")
    pod = copy.deepcopy(pods[0])
    del pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"]
    cause = diagnose(pod, events, [])
    assert cause is not None and cause.exec_format_error


def test_a_crash_without_exec_format_error_is_not_blamed_on_the_architecture() -> None:
    pods, events, logs = load("init-crashloop")
    cause = diagnose(pods[0], events, previous_log(logs, pods[0]["metadata"]["name"], "migrate"))
    assert cause is not None
    assert not cause.exec_format_error
    assert (cause.container, cause.exit_code) == ("migrate", 2)
    assert cause.log_lines[-1].startswith("migrate: cannot connect")


def test_image_pull_cause_names_the_image() -> None:
    pods, events, _ = load("image-pull-never-loaded")
    cause = diagnose(pods[0], events)
    assert cause is not None
    assert cause.reason == "ImagePullBackOff"
    assert "orders-api:never-loaded" in cause.message
    assert any("Failed to pull image" in e for e in cause.events)


def test_unschedulable_cause_is_the_schedulers_message() -> None:
    pods, events, _ = load("unschedulable-node-selector")
    cause = diagnose(pods[0], events)
    assert cause is not None
    assert cause.reason == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in cause.message


def test_not_ready_cause_is_the_failing_probe() -> None:
    pods, events, _ = load("not-ready-probe-failing")
    cause = diagnose(pods[0], events)
    assert cause is not None
    assert cause.reason == "readiness probe failed"
    assert cause.probe == "readiness"
    assert cause.message == "Readiness probe failed: HTTP probe failed with statuscode: 404"
    assert "Running, 0/1 Ready" in cause.explanation and "failureThreshold 3" in cause.explanation
    assert "event Unhealthy on pod/orders-api-59f6cb999d-rtf5t container app (x13" in cause.evidence


def test_healthy_pod_has_no_cause() -> None:
    pods, events, _ = load("healthy")
    assert diagnose(pods[0], events) is None


# ---------------------------------------------------------------------------------------------
# Classification rules


def _crashing() -> dict[str, Any]:
    return load("crashloop-exec-format")[0][0]


def _healthy() -> dict[str, Any]:
    return load("healthy")[0][0]


def test_emulation_never_reports_plain_healthy() -> None:
    assert classify_workload([_healthy()], emulated=True) is Outcome.RAN_EMULATED
    assert classify_workload([_crashing()], emulated=True) is Outcome.CRASH_LOOP


def test_first_exit_before_back_off_decides_nothing_yet() -> None:
    pod = _crashing()
    cs = pod["status"]["containerStatuses"][0]
    cs["state"] = {"terminated": {"exitCode": 1, "reason": "Error", "containerID": "containerd://x"}}
    cs["lastState"] = {}
    cs["restartCount"] = 0
    state = classify_pod(pod)
    assert state.outcome is None
    assert classify_workload([pod]) is None
    assert "Terminated: Error, exit code 1" in state.describe()


def test_one_crashing_pod_among_healthy_ones_fails_the_workload() -> None:
    other = _healthy()
    assert classify_workload([other, _crashing()]) is Outcome.CRASH_LOOP


def test_terminating_pods_of_the_old_revision_are_ignored() -> None:
    old = _crashing()
    old["metadata"]["deletionTimestamp"] = "2025-11-26T08:01:00Z"
    assert classify_workload([old, _healthy()]) is Outcome.HEALTHY


def test_fewer_ready_pods_than_wanted_is_not_healthy_yet() -> None:
    assert classify_workload([_healthy()], min_pods=3) is None
    assert classify_workload([]) is None


def test_unschedulable_because_the_node_is_still_starting_is_only_pending() -> None:
    pods, _, _ = load("unschedulable-node-selector")
    pod = pods[0]
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    cond["message"] = "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    assert classify_workload([pod]) is Outcome.PENDING


def test_failed_scheduling_event_decides_before_the_condition_is_written() -> None:
    pods, events, _ = load("unschedulable-node-selector")
    pod = pods[0]
    pod["status"] = {"phase": "Pending"}
    assert classify_workload([pod]) is Outcome.PENDING
    assert classify_workload([pod], events) is Outcome.UNSCHEDULABLE


def test_err_image_pull_decides_as_soon_as_it_shows() -> None:
    pods, _, _ = load("image-pull-never-loaded")
    pod = pods[0]
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull", "message": "x"}}
    assert classify_workload([pod]) is Outcome.IMAGE_PULL


def test_running_but_a_container_not_ready_is_undecided() -> None:
    pod = _healthy()
    pod["status"]["containerStatuses"][0]["ready"] = False
    assert classify_pod(pod).outcome is None


def test_pod_from_the_kubernetes_client_models_is_classified_too() -> None:
    model = V1Pod(
        metadata=V1ObjectMeta(name="orders-1"),
        status=V1PodStatus(
            phase="Running",
            container_statuses=[
                V1ContainerStatus(
                    name="app",
                    image="orders-api:v1",
                    image_id="",
                    ready=False,
                    restart_count=3,
                    state=V1ContainerState(waiting=V1ContainerStateWaiting(reason="CrashLoopBackOff")),
                )
            ],
        ),
    )
    pod = ApiClient().sanitize_for_serialization(model)
    state = classify_pod(pod)
    assert (state.outcome, state.restarts) == (Outcome.CRASH_LOOP, 3)


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("crash_loop", Outcome.CRASH_LOOP),
        ("CRASH_LOOP", Outcome.CRASH_LOOP),
        ("CrashLoopBackOff", Outcome.CRASH_LOOP),
        ("ErrImagePull", Outcome.IMAGE_PULL),
        ("Init:CrashLoopBackOff", Outcome.INIT_CRASH_LOOP),
        ("healthy", Outcome.HEALTHY),
        ("ran_emulated", Outcome.RAN_EMULATED),
    ],
)
def test_outcome_names_from_scenario_files(text: str, outcome: Outcome) -> None:
    assert Outcome.parse(text) is outcome


def test_unknown_outcome_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="crash_loop"):
        Outcome.parse("exploded")


def test_selector_string() -> None:
    assert selector_string({"matchLabels": {"app": "orders", "tier": "api"}}) == "app=orders,tier=api"
    assert (
        selector_string(
            {
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["b", "a"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ]
            }
        )
        == "env in (a,b),!legacy"
    )


def test_created_after_keeps_only_new_pods() -> None:
    pod = _healthy()
    pod["metadata"]["creationTimestamp"] = "2025-11-26T08:00:00Z"
    assert created_after(datetime(2025, 11, 26, 8, 0, 0, 400000, tzinfo=UTC))(pod)
    assert not created_after(datetime(2025, 11, 26, 8, 0, 1, tzinfo=UTC))(pod)


def test_rollout_state_follows_kubectl_rollout_status() -> None:
    complete = json.loads((DATA / "deployments" / "complete.json").read_text())
    exceeded = json.loads((DATA / "deployments" / "progress-deadline-exceeded.json").read_text())
    assert rollout_state(complete)[0] is RolloutStatus.COMPLETE
    status, message = rollout_state(exceeded)
    assert status is RolloutStatus.PROGRESS_DEADLINE_EXCEEDED
    assert "timed out progressing" in message
    unobserved = copy.deepcopy(complete)
    unobserved["metadata"]["generation"] = 3
    assert rollout_state(unobserved) == (None, "waiting for the deployment's new spec to be observed")
    old_left = copy.deepcopy(complete)
    old_left["status"]["replicas"] = 2
    assert rollout_state(old_left) == (None, "1 old replicas pending termination")


# ---------------------------------------------------------------------------------------------
# A fake API server: list returns a snapshot, watch replays scripted lines then idles


class FakeResponse:
    """What the client returns with _preload_content=False: .data for a list, .stream() for a watch."""

    status = 200

    def __init__(
        self,
        data: bytes = b"",
        lines: list[tuple[float, bytes]] | None = None,
        idle: float = 0.0,
        shutdown: threading.Event | None = None,
    ) -> None:
        self.data = data
        self.lines = lines or []
        self.idle = idle
        self.shutdown = shutdown or threading.Event()
        self.closed = threading.Event()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to seconds; True when the test ended or the response was closed."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.closed.wait(min(left, 0.02)) or self.shutdown.is_set():
                return True
        return self.closed.is_set() or self.shutdown.is_set()

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        opened = time.monotonic()
        for at, line in self.lines:
            delay = opened + at - time.monotonic()
            if delay > 0 and self._wait(delay):
                return
            yield line
        self._wait(self.idle)  # the server keeps the watch open until its timeout

    def close(self) -> None:
        self.closed.set()

    def release_conn(self) -> None:
        pass


class FakeResource:
    """One list/watch endpoint. sessions: per watch call, lines (t, type, object), or an exception."""

    def __init__(self, kind: str, shutdown: threading.Event) -> None:
        self.kind = kind
        self.items: list[dict[str, Any]] = []
        self.resource_version = "1000"
        self.sessions: list[list[tuple[float, str, dict[str, Any]]] | BaseException] = []
        self.list_errors: list[BaseException] = []
        self.list_calls = 0
        self.refuse_after: int | None = None
        self.watch_calls: list[dict[str, Any]] = []
        self.shutdown = shutdown

    def __call__(self, namespace, **kwargs):  # type: ignore[no-untyped-def]  # unannotated like the real client
        if kwargs.get("watch"):
            self.watch_calls.append(kwargs)
            session = self.sessions.pop(0) if self.sessions else []
            if isinstance(session, BaseException):
                raise session
            lines = []
            for at, kind, obj in session:
                event = {"type": kind, "object": obj}
                lines.append((at, (json.dumps(event) + "\n").encode()))
            return FakeResponse(
                lines=lines, idle=min(float(kwargs.get("timeout_seconds", 1)), 30.0), shutdown=self.shutdown
            )
        self.list_calls += 1
        if self.refuse_after is not None and self.list_calls > self.refuse_after:
            raise _refused()
        if self.list_errors:
            raise self.list_errors.pop(0)
        body = {
            "kind": self.kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": self.resource_version},
            "items": self.items,
        }
        return FakeResponse(data=json.dumps(body).encode())


class FakeCore:
    def __init__(self) -> None:
        self.shutdown = threading.Event()
        self.list_namespaced_pod = FakeResource("PodList", self.shutdown)
        self.list_namespaced_event = FakeResource("EventList", self.shutdown)
        self.logs: dict[tuple[str, str, str], str] = {}
        self.log_calls: list[tuple[str, str, bool]] = []
        self.nodes: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, list[str] | BaseException] = {}  # node -> successive /metrics/probes bodies
        self.metrics_calls: list[str] = []
        self.apps = FakeObjects()
        self.batch = FakeObjects()

        class _Conf:
            host = "https://127.0.0.1:6443"

        class _Client:
            configuration = _Conf()

        self.api_client = _Client()

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> FakeResponse:
        previous = bool(kwargs.get("previous"))
        self.log_calls.append((name, kwargs["container"], previous))
        text = self.logs.get((name, kwargs["container"], "previous" if previous else "current"))
        if text is None:
            raise ApiException(status=400, reason="Bad Request")
        return FakeResponse(data=text.encode())

    def read_node(self, name: str, **kwargs: Any) -> FakeResponse:
        if name not in self.nodes:
            raise ApiException(status=404, reason="Not Found")
        return FakeResponse(data=json.dumps(self.nodes[name]).encode())

    def connect_get_node_proxy_with_path(self, name: str, path: str, **kwargs: Any) -> FakeResponse:
        assert path == "metrics/probes"
        self.metrics_calls.append(name)
        bodies = self.metrics.get(name)
        if bodies is None:
            raise ApiException(status=404, reason="Not Found")
        if isinstance(bodies, BaseException):
            raise bodies
        body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
        return FakeResponse(data=body.encode())


class FakeObjects:
    """read_namespaced_<kind>(name, namespace) of the apps and batch groups, from a dict; 404 otherwise."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (method kind, name) -> successive objects
        self.reads: list[tuple[str, str]] = []

    def put(self, kind: str, *objects: dict[str, Any]) -> None:
        self.objects[(kind, objects[0]["metadata"]["name"])] = list(objects)

    def __getattr__(self, method: str) -> Any:
        if not method.startswith("read_namespaced_"):
            raise AttributeError(method)
        kind = method.removeprefix("read_namespaced_")

        def read(name: str, namespace: str, **kwargs: Any) -> FakeResponse:
            self.reads.append((kind, name))
            found = self.objects.get((kind, name))
            if not found:
                raise ApiException(status=404, reason="Not Found")
            obj = found.pop(0) if len(found) > 1 else found[0]
            return FakeResponse(data=json.dumps(obj).encode())

        return read


def as_core(fake: FakeCore) -> CoreV1Api:
    return cast(CoreV1Api, fake)


def watch(fake: FakeCore, namespace: str, selector: str, **kwargs: Any) -> Verdict:
    """watch_workload against the fakes (core, apps and batch)."""
    return watch_workload(
        as_core(fake),
        namespace,
        selector,
        apps=cast(AppsV1Api, fake.apps),
        batch=cast(BatchV1Api, fake.batch),
        **kwargs,
    )


def as_apps(fake: FakeApps) -> AppsV1Api:
    return cast(AppsV1Api, fake)


@pytest.fixture
def core() -> Iterator[FakeCore]:
    fake = FakeCore()
    yield fake
    fake.shutdown.set()


def replay(fake: FakeCore, name: str, speed: float = 0.02) -> None:
    """Script the recorded watch stream of a fixture into the fake, time-compressed."""
    _, _, logs = load(name)
    fake.logs = logs
    pods: list[tuple[float, str, dict[str, Any]]] = []
    events: list[tuple[float, str, dict[str, Any]]] = []
    for raw in (DATA / name / "watch.jsonl").read_text().splitlines():
        line = json.loads(raw)
        target = pods if line["stream"] == "pods" else events
        target.append((line["t"] * speed, line["type"], line["object"]))
    fake.list_namespaced_pod.sessions = [pods]
    fake.list_namespaced_event.sessions = [events]


def as_session(
    objs: list[dict[str, Any]], start: float = 0.0, step: float = 0.05
) -> list[tuple[float, str, dict[str, Any]]]:
    return [(start + i * step, "MODIFIED" if i else "ADDED", o) for i, o in enumerate(objs)]


# ---------------------------------------------------------------------------------------------
# Watching


def test_watch_fails_fast_on_crash_loop_with_the_cause(core: FakeCore) -> None:
    replay(core, "crashloop-exec-format")
    seen: list[Evidence] = []
    started = time.monotonic()
    verdict = watch(
        core, "incident-orders", "app=orders-api", expect=Outcome.HEALTHY, timeout=30, on_evidence=seen.append
    )
    assert time.monotonic() - started < 5, "must stop at the first CrashLoopBackOff, not run out the clock"
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert not verdict.satisfies(Outcome.HEALTHY)
    assert verdict.cause is not None and verdict.cause.exec_format_error
    assert verdict.cause.exit_code == 1
    assert {"Error", "CrashLoopBackOff"} <= verdict.phases_seen
    assert not verdict.ready_seen
    assert verdict.pods == (_crashing()["metadata"]["name"],)
    assert "exec format error" in verdict.summary
    assert tuple(seen) == verdict.timeline  # every evidence was reported live, in order
    kinds = {e.kind for e in verdict.timeline}
    assert {"state", "event", "log", "note"} <= kinds
    texts = [e.text for e in verdict.timeline]
    assert any("Waiting: CrashLoopBackOff" in t for t in texts)
    assert any(t == "exec /usr/local/bin/uvicorn: exec format error" for t in texts)
    assert [e.elapsed for e in verdict.timeline] == sorted(e.elapsed for e in verdict.timeline)


def test_watch_waits_for_crash_loop_when_expected(core: FakeCore) -> None:
    replay(core, "crashloop-exec-format")
    verdict = watch(core, "incident-orders", "app=orders-api", expect={Outcome.CRASH_LOOP}, timeout=30)
    assert verdict.satisfies(Outcome.CRASH_LOOP)
    assert verdict.restarts >= 1


def test_watch_reports_healthy_after_a_stable_window(core: FakeCore) -> None:
    pod = _healthy()
    starting = copy.deepcopy(pod)
    starting["status"]["phase"] = "Pending"
    starting["status"]["conditions"] = [c for c in starting["status"]["conditions"] if c["type"] == "PodScheduled"]
    starting["status"]["containerStatuses"][0].update(ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    core.list_namespaced_pod.sessions = [as_session([starting, pod])]
    verdict = watch(core, "incident-orders", "app=orders-api", expect=Outcome.HEALTHY, timeout=10, stable_seconds=0.3)
    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.ready_seen and verdict.cause is None
    assert 0.3 <= verdict.seconds < 3


def test_watch_under_emulation_reports_ran_emulated(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_healthy()]
    verdict = watch(core, "ns", "app=orders-api", expect=Outcome.HEALTHY, timeout=10, emulated=True, stable_seconds=0.1)
    assert verdict.outcome is Outcome.RAN_EMULATED
    assert not verdict.satisfies(Outcome.HEALTHY)


def test_a_restarted_container_is_never_healthy(core: FakeCore) -> None:
    """Zero restarts is part of Healthy: a container that restarted once is not called healthy."""
    ready = _healthy()
    restarted = copy.deepcopy(ready)
    restarted["status"]["containerStatuses"][0]["restartCount"] = 1
    core.list_namespaced_pod.items = [ready]
    core.list_namespaced_pod.sessions = [[(0.05, "MODIFIED", restarted)]]
    verdict = watch(core, "ns", "app=orders-api", expect=Outcome.HEALTHY, timeout=1.0, stable_seconds=0.5)
    assert verdict.outcome is Outcome.TIMEOUT
    assert verdict.restarts == 1
    assert "container app restarted 1 time(s)" in verdict.summary


def test_never_ready_pod_is_not_ready_without_waiting_for_the_timeout(core: FakeCore) -> None:
    pods, events, _ = load("not-ready-probe-failing")
    core.list_namespaced_pod.items = pods
    core.list_namespaced_event.sessions = [as_session(events, start=0.05)]
    verdict = watch(core, "ns", "app=orders-api", expect=Outcome.HEALTHY, timeout=30)
    assert verdict.outcome is Outcome.NOT_READY
    assert verdict.seconds < 3
    assert verdict.cause is not None and verdict.cause.probe == "readiness"
    assert verdict.probe_failures_seen == frozenset({"readiness"})
    assert "NotReady after" in verdict.summary
    assert "Running, 0/1 Ready: the readiness probe failed 13 time(s)" in verdict.summary
    assert any(e.kind == "probe" for e in verdict.timeline)


def test_readiness_failures_below_the_threshold_decide_nothing(core: FakeCore) -> None:
    pods, events, _ = load("not-ready-probe-failing")
    unhealthy = next(e for e in events if e["reason"] == "Unhealthy")
    unhealthy["count"] = 2  # failureThreshold is 3
    core.list_namespaced_pod.items = pods
    core.list_namespaced_event.sessions = [as_session(events, start=0.05)]
    verdict = watch(core, "ns", "app=orders-api", expect=Outcome.HEALTHY, timeout=1.0)
    assert verdict.outcome is Outcome.TIMEOUT
    assert 1.0 <= verdict.seconds < 3
    assert "Running, not ready" in verdict.last_state
    assert "Readiness probe failed" in verdict.summary


def test_pending_is_the_outcome_when_expected_and_still_pending(core: FakeCore) -> None:
    pod = _healthy()
    pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
    core.list_namespaced_pod.items = [pod]
    verdict = watch(core, "ns", "", expect={Outcome.PENDING}, timeout=0.5)
    assert verdict.outcome is Outcome.PENDING


def test_no_pods_at_all_says_so(core: FakeCore) -> None:
    verdict = watch(core, "ns", "app=nothing", expect=Outcome.HEALTHY, timeout=0.5)
    assert verdict.outcome is Outcome.TIMEOUT
    assert "no pods matched selector 'app=nothing'" in verdict.summary


def test_fail_on_narrowed_keeps_waiting_past_other_failures(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_crashing()]
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=0.5, fail_on=set(), logs=False)
    assert verdict.outcome is Outcome.TIMEOUT


def test_unschedulable_and_image_pull_stop_a_healthy_wait(core: FakeCore) -> None:
    for name, outcome in (
        ("unschedulable-node-selector", Outcome.UNSCHEDULABLE),
        ("image-pull-never-loaded", Outcome.IMAGE_PULL),
    ):
        fake = FakeCore()
        pods, events, _ = load(name)
        fake.list_namespaced_pod.items = pods
        fake.list_namespaced_event.items = events
        try:
            verdict = watch(fake, "ns", "", expect=Outcome.HEALTHY, timeout=60)
        finally:
            fake.shutdown.set()
        assert verdict.outcome is outcome
        assert verdict.seconds < 20, "it waited for the timeout instead of stopping at the first sight"
        assert verdict.cause is not None and verdict.cause.message


def test_previous_log_missing_falls_back_to_the_current_one(core: FakeCore) -> None:
    pods, _, logs = load("crashloop-exec-format")
    core.list_namespaced_pod.items = pods
    name = pods[0]["metadata"]["name"]
    core.logs = {(name, "app", "current"): logs[(name, "app", "current")]}  # previous answers 400
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=10)
    assert verdict.cause is not None and verdict.cause.exec_format_error
    assert (name, "app", True) in core.log_calls and (name, "app", False) in core.log_calls


def test_410_gone_relists_and_goes_on(core: FakeCore) -> None:
    crashing = _crashing()
    gone = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Expired",
        "code": 410,
        "message": "too old resource version: 1000 (3000)",
    }
    core.list_namespaced_pod.sessions = [[(0.05, "ERROR", gone)]]
    core.list_namespaced_pod.items = []

    def after_first_list() -> None:
        core.list_namespaced_pod.items = [crashing]

    threading.Timer(0.02, after_first_list).start()
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=10, logs=False)
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert core.list_namespaced_pod.list_calls >= 2


def test_flaky_list_is_retried(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_crashing()]
    core.list_namespaced_pod.list_errors = [
        ApiException(status=503, reason="Service Unavailable"),
        ApiException(status=429, reason="Too Many Requests"),
    ]
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=10, logs=False)
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert core.list_namespaced_pod.list_calls == 3


def _refused() -> urllib3.exceptions.MaxRetryError:
    conn: Any = None
    reason = urllib3.exceptions.NewConnectionError(
        conn, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    return urllib3.exceptions.MaxRetryError(conn, "/api/v1/namespaces/ns/pods", reason)


def test_cluster_gone_is_a_one_line_error_with_a_remedy(core: FakeCore) -> None:
    core.list_namespaced_pod.list_errors = [_refused() for _ in range(50)]
    started = time.monotonic()
    with pytest.raises(ClusterGone) as caught:
        watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=60, gone_after=0.6)
    assert time.monotonic() - started < 5
    assert "connection refused" in caught.value.cause
    assert "https://127.0.0.1:6443" in caught.value.cause
    assert "docker ps" in caught.value.remedy


def test_cluster_lost_mid_watch_raises_cluster_gone(core: FakeCore) -> None:
    pod = _healthy()
    pod["status"]["containerStatuses"][0]["ready"] = False
    core.list_namespaced_pod.items = [pod]
    # The first list answers; then the watch connection is reset and every re-list is refused.
    core.list_namespaced_pod.sessions = [urllib3.exceptions.ProtocolError("Connection reset by peer")]
    core.list_namespaced_pod.refuse_after = 1
    started = time.monotonic()
    with pytest.raises(ClusterGone):
        watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=30, gone_after=0.6)
    assert time.monotonic() - started < 5


def test_a_forbidden_list_is_a_harness_error_not_a_traceback(core: FakeCore) -> None:
    core.list_namespaced_pod.list_errors = [ApiException(status=403, reason="Forbidden")]
    with pytest.raises(HarnessError, match="403") as caught:
        watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=5)
    assert not isinstance(caught.value, ClusterGone)


def test_pod_filter_ignores_the_old_revision(core: FakeCore) -> None:
    old = _crashing()
    old["metadata"]["creationTimestamp"] = "2025-11-26T08:00:00Z"
    new = _healthy()
    new["metadata"]["creationTimestamp"] = "2025-11-26T08:05:00Z"
    core.list_namespaced_pod.items = [old, new]
    verdict = watch(
        core,
        "ns",
        "",
        expect=Outcome.HEALTHY,
        timeout=10,
        stable_seconds=0.1,
        pod_filter=created_after(datetime(2025, 11, 26, 8, 5, tzinfo=UTC)),
    )
    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.pods == (new["metadata"]["name"],)


def test_mark_emulated_turns_healthy_into_ran_emulated(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_healthy()]
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=10, stable_seconds=0.1)
    marked = mark_emulated(verdict, "qemu-aarch64 is registered in binfmt_misc")
    assert marked.outcome is Outcome.RAN_EMULATED
    assert "masked" in marked.summary
    assert marked.timeline[-1].kind == "note"


# ---------------------------------------------------------------------------------------------
# Deployments


class FakeApps:
    def __init__(self, shutdown: threading.Event) -> None:
        self.list_namespaced_deployment = FakeResource("DeploymentList", shutdown)
        self.list_namespaced_replica_set = FakeResource("ReplicaSetList", shutdown)
        self.api_client = FakeCore().api_client

    def read_namespaced_deployment(self, name: str, namespace: str, **kwargs: Any) -> FakeResponse:
        return FakeResponse(data=json.dumps(self.list_namespaced_deployment.items[0]).encode())


def test_wait_rollout_sees_progress_deadline_exceeded() -> None:
    shutdown = threading.Event()
    apps = FakeApps(shutdown)
    exceeded = json.loads((DATA / "deployments" / "progress-deadline-exceeded.json").read_text())
    progressing = copy.deepcopy(exceeded)
    progressing["status"]["conditions"][1].update(status="True", reason="ReplicaSetUpdated")
    apps.list_namespaced_deployment.items = [progressing]
    apps.list_namespaced_deployment.sessions = [[(0.05, "MODIFIED", exceeded)]]
    try:
        result = wait_rollout(as_apps(apps), "incident-orders", "orders-api", timeout=10)
    finally:
        shutdown.set()
    assert result.status is RolloutStatus.PROGRESS_DEADLINE_EXCEEDED
    assert not result.ok
    assert result.seconds < 2
    assert "timed out progressing" in result.message
    call = apps.list_namespaced_deployment.watch_calls[0]
    assert call["field_selector"] == "metadata.name=orders-api"


def test_wait_rollout_complete_and_timeout() -> None:
    shutdown = threading.Event()
    apps = FakeApps(shutdown)
    complete = json.loads((DATA / "deployments" / "complete.json").read_text())
    apps.list_namespaced_deployment.items = [complete]
    try:
        assert wait_rollout(as_apps(apps), "ns", "orders-api", timeout=5).ok
        pending = copy.deepcopy(complete)
        pending["status"]["availableReplicas"] = 0
        apps.list_namespaced_deployment.items = [pending]
        result = wait_rollout(as_apps(apps), "ns", "orders-api", timeout=0.5)
    finally:
        shutdown.set()
    assert result.status is RolloutStatus.TIMEOUT
    assert result.message == "0 of 1 updated replicas available"


def test_wait_rollout_of_a_missing_deployment_says_what_to_do() -> None:
    apps = FakeApps(threading.Event())
    with pytest.raises(HarnessError, match="does not exist") as caught:
        wait_rollout(as_apps(apps), "ns", "orders-api", timeout=5)
    assert "apply the workload first" in caught.value.remedy


def test_current_pods_selector_adds_the_pod_template_hash() -> None:
    shutdown = threading.Event()
    apps = FakeApps(shutdown)
    complete = json.loads((DATA / "deployments" / "complete.json").read_text())
    apps.list_namespaced_deployment.items = [complete]

    def rs(name: str, revision: str, owner: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": f"orders-api-{name}",
                "labels": {"app": "orders-api", "pod-template-hash": name},
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"kind": "Deployment", "uid": owner}],
            }
        }

    uid = complete["metadata"]["uid"]
    apps.list_namespaced_replica_set.items = [
        rs("7d9c8b6f5", "1", uid),
        rs("5c6d7e8f9", "2", uid),
        rs("x", "2", "other"),
    ]
    try:
        selector = current_pods_selector(as_apps(apps), "ns", "orders-api", timeout=5)
    finally:
        shutdown.set()
    assert selector == "app=orders-api,pod-template-hash=5c6d7e8f9"


def test_waiting_past_a_healthy_workload_does_not_spin(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_healthy()]
    cpu = time.process_time()
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=1.0, fail_on=set(), stable_seconds=0.1)
    assert verdict.outcome is Outcome.TIMEOUT
    assert time.process_time() - cpu < 0.5


def test_a_log_that_cannot_be_read_is_noted_not_fatal(core: FakeCore) -> None:
    pods, _, _ = load("crashloop-exec-format")
    core.list_namespaced_pod.items = pods

    def failing(name: str, namespace: str, **kwargs: Any) -> FakeResponse:
        raise ApiException(status=403, reason="Forbidden")

    core.read_namespaced_pod_log = failing  # type: ignore[method-assign]
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=10)
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert any("could not read the log of app" in e.text for e in verdict.timeline)


def test_min_restarts_keeps_watching_the_crash_loop(core: FakeCore) -> None:
    replay(core, "crashloop-exec-format", speed=0.05)  # restarts reach 2 at t=21 s (1 s here)
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=10, min_restarts=2)
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert verdict.restarts == 2
    assert verdict.seconds >= 0.6


def test_min_restarts_not_reached_by_the_deadline_is_still_a_crash_loop(core: FakeCore) -> None:
    core.list_namespaced_pod.items = [_crashing()]  # restarts 2
    verdict = watch(core, "ns", "", expect=Outcome.CRASH_LOOP, timeout=0.5, min_restarts=5, logs=False)
    assert verdict.outcome is Outcome.CRASH_LOOP
    assert 0.5 <= verdict.seconds < 2


@pytest.mark.parametrize(
    ("message", "short"),
    [
        (
            "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, preemption: "
            "0/1 nodes are available: 1 No preemption victims found for incoming pod.",
            True,
        ),
        (
            "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint "
            "{node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: "
            "1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.",
            True,
        ),
        (
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: "
            "0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            False,
        ),
        ("0/1 nodes are available: 1 node(s) had untolerated taint {x: }. Insufficient cpu elsewhere", False),
        ("", False),
    ],
)
def test_short_of_resources_reads_only_the_nodes_reasons(message: str, short: bool) -> None:
    assert _lacks_resources(message) is short


def test_a_log_the_kubelet_removed_is_no_log_line() -> None:
    """The kubelet answers 200 "unable to retrieve container logs ..." for a removed instance."""
    from harness.outcomes import LOG_GONE, _Api, _read_log

    fake = FakeCore()
    fake.logs[("p", "c", "previous")] = f"{LOG_GONE} for containerd://abc"
    fake.logs[("p", "c", "current")] = "exec /usr/local/bin/uvicorn: exec format error\n"
    api = _Api("https://127.0.0.1:6443", 1.0)
    assert _read_log(api, as_core(fake), "ns", "p", "c", previous=True) == (
        "exec /usr/local/bin/uvicorn: exec format error",
    )
    fake.logs[("p", "c", "current")] = f"{LOG_GONE} for containerd://abc"
    assert _read_log(api, as_core(fake), "ns", "p", "c", previous=True) == ()


# ---------------------------------------------------------------------------------------------
# Healthy as an SRE means it: replicas, revision, restarts, probe evidence

NODE = "incident-harness-control-plane"  # the node of the recorded pods


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_of(
    name: str,
    owner: tuple[str, str] | None = ("ReplicaSet", "web-1"),
    *,
    uid: str = "",
    started: datetime | None = None,
    labels: dict[str, str] | None = None,
    restarts: int = 0,
) -> dict[str, Any]:
    """The recorded healthy pod, renamed, owned by `owner` (None: a bare pod), started at `started`."""
    pod = _healthy()
    pod["metadata"].update(name=name, uid=uid or f"uid-{name}", labels=labels or {"app": "web"}, namespace="ns")
    pod["metadata"]["ownerReferences"] = (
        [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "x", "controller": True}] if owner else []
    )
    status = pod["status"]["containerStatuses"][0]
    status["restartCount"] = restarts
    if started is not None:
        status["state"] = {"running": {"startedAt": _iso(started)}}
    return pod


def deployment(name: str = "web", replicas: int = 2, revision: str = "1", **status: Any) -> dict[str, Any]:
    base = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
    }
    base.update(status)
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "generation": 1, "annotations": {"deployment.kubernetes.io/revision": revision}},
        "spec": {"replicas": replicas},
        "status": base,
    }


def replica_set(name: str, revision: str, owner: str = "web") -> dict[str, Any]:
    return {
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [{"kind": "Deployment", "name": owner, "uid": "d", "controller": True}],
        },
        "spec": {"replicas": 2},
    }


LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)


def gate_of(pods: list[dict[str, Any]], controllers: dict[tuple[str, str], Any], **kwargs: Any) -> HealthGate:
    return healthy_gate([classify_pod(p) for p in pods], controllers, now=kwargs.pop("now", NOW), **kwargs)


def test_probe_window_follows_the_pod_spec_with_kubernetes_defaults() -> None:
    assert ProbeSpec("liveness").window == 0 + 10 * (3 - 1) + 1
    spec = ProbeSpec("liveness", initial_delay=2, period=2, timeout=1, failure_threshold=3)
    assert spec.window == 7
    assert spec.describe_window() == (
        "initialDelaySeconds 2 + periodSeconds 2 x (failureThreshold 3 - 1) + timeoutSeconds 1 = 7 s"
    )
    pod = _healthy()
    pod["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}  # nothing set: defaults
    probe = classify_pod(pod).containers[0].probe("liveness")
    assert probe == ProbeSpec("liveness", 0, 10, 1, 3)
    recorded = classify_pod(_healthy()).containers[0].probe("liveness")
    assert recorded is not None and recorded.window == 0 + 5 * 2 + 1


def test_two_replicas_are_not_healthy_on_the_first_ready_pod() -> None:
    controllers = {("ReplicaSet", "web-1"): replica_set("web-1", "1"), ("Deployment", "web"): deployment()}
    one = gate_of([pod_of("web-1-a", started=LONG_AGO)], controllers)
    assert not one.ok
    assert "deployment/web: 1 of 2 replica(s) of the current revision Ready" in one.waiting
    both = gate_of([pod_of("web-1-a", started=LONG_AGO), pod_of("web-1-b", started=LONG_AGO)], controllers)
    assert both.ok, both.waiting
    assert both.source == "probe window from the pod spec"
    assert "2 pod(s) Ready" in both.detail and "no restart" in both.detail


def test_expected_replicas_of_each_controller() -> None:
    assert expected_replicas("Deployment", deployment(replicas=3)) == 3
    assert expected_replicas("StatefulSet", {"spec": {}}) == 1  # spec.replicas defaults to 1
    assert expected_replicas("DaemonSet", {"status": {"desiredNumberScheduled": 2}}) == 2
    assert expected_replicas("Pod", {}) == 1
    assert expected_replicas("Deployment", None) is None


def test_a_pod_of_an_older_replica_set_still_serving_is_not_healthy() -> None:
    controllers = {
        ("ReplicaSet", "web-1"): replica_set("web-1", "1"),
        ("ReplicaSet", "web-2"): replica_set("web-2", "2"),
        ("Deployment", "web"): deployment(replicas=1, revision="2"),
    }
    old = pod_of("web-1-a", ("ReplicaSet", "web-1"), started=LONG_AGO)
    new = pod_of("web-2-a", ("ReplicaSet", "web-2"), started=LONG_AGO)
    gate = gate_of([old, new], controllers)
    assert not gate.ok
    assert "deployment/web: pod(s) of an older ReplicaSet still serving: web-1-a" in gate.waiting
    old["metadata"]["deletionTimestamp"] = "2026-11-26T08:59:00Z"  # terminating: it no longer serves
    assert gate_of([old, new], controllers).ok
    # Pods the watch does not see (a pod filter): the Deployment's own counts tell.
    controllers[("Deployment", "web")] = deployment(replicas=1, revision="2", replicas_total=2)
    controllers[("Deployment", "web")]["status"]["replicas"] = 2
    hidden = gate_of([new], controllers)
    assert "deployment/web: 1 pod(s) of an older ReplicaSet still serving" in hidden.waiting


def test_a_deployment_not_available_or_not_observed_is_not_healthy() -> None:
    unavailable = deployment(replicas=1, conditions=[{"type": "Available", "status": "False"}])
    controllers = {("ReplicaSet", "web-1"): replica_set("web-1", "1"), ("Deployment", "web"): unavailable}
    gate = gate_of([pod_of("web-1-a", started=LONG_AGO)], controllers)
    assert "deployment/web: condition Available is not True yet" in gate.waiting
    unobserved = deployment(replicas=1, observedGeneration=0)
    controllers[("Deployment", "web")] = unobserved
    gate = gate_of([pod_of("web-1-a", started=LONG_AGO)], controllers)
    assert "deployment/web: its controller has not observed the latest spec yet" in gate.waiting


def test_statefulset_and_daemonset_replicas() -> None:
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 1},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "updateRevision": "db-abc", "currentRevision": "db-abc"},
    }
    labels = {"app": "db", "controller-revision-hash": "db-abc"}
    first = pod_of("db-0", ("StatefulSet", "db"), started=LONG_AGO, labels=labels)
    second = pod_of("db-1", ("StatefulSet", "db"), started=LONG_AGO, labels=labels)
    controllers: dict[tuple[str, str], Any] = {("StatefulSet", "db"): sts}
    assert "statefulset/db: 1 of 2 replica(s) Ready" in gate_of([first], controllers).waiting
    assert gate_of([first, second], controllers).ok
    stale = pod_of("db-1", ("StatefulSet", "db"), started=LONG_AGO, labels={**labels, "controller-revision-hash": "x"})
    assert (
        "statefulset/db: pod(s) of an older revision still serving: db-1"
        in gate_of([first, stale], controllers).waiting
    )
    ds = {"kind": "DaemonSet", "metadata": {"name": "agent", "generation": 2}, "status": {"observedGeneration": 2}}
    agent = pod_of("agent-x", ("DaemonSet", "agent"), started=LONG_AGO)
    assert not gate_of([agent], {("DaemonSet", "agent"): ds}).ok  # desiredNumberScheduled not known yet
    ds["status"]["desiredNumberScheduled"] = 1
    assert gate_of([agent], {("DaemonSet", "agent"): ds}).ok


def test_probe_window_fallback_waits_from_the_containers_start() -> None:
    started = NOW - timedelta(seconds=4)  # the recorded liveness probe: 0 + 5 x 2 + 1 = 11 s
    pod = pod_of("solo", None, started=started)
    gate = gate_of([pod], {})
    assert not gate.ok
    assert gate.retry_in == pytest.approx(7.0)
    assert gate.waiting[0].startswith("pod/solo container app liveness: probe window initialDelaySeconds 0 + ")
    later = gate_of([pod], {}, now=started + timedelta(seconds=11))
    assert later.ok and later.source == "probe window from the pod spec"


def test_zero_restarts_is_part_of_healthy() -> None:
    gate = gate_of([pod_of("solo", None, started=LONG_AGO, restarts=2)], {})
    assert "pod/solo container app restarted 2 time(s)" in gate.waiting


def test_a_job_is_judged_by_its_conditions_not_by_readiness() -> None:
    gate = gate_of([pod_of("batch-x", ("Job", "batch"), started=LONG_AGO)], {("Job", "batch"): {"status": {}}})
    assert not gate.ok


METRICS = """# HELP prober_probe_total [ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.
# TYPE prober_probe_total counter
prober_probe_total{container="app",namespace="ns",pod="solo",pod_uid="uid-solo",probe_type="Liveness",result="failed"} {lf}
prober_probe_total{container="app",namespace="ns",pod="solo",pod_uid="uid-solo",probe_type="Liveness",result="successful"} {ls}
prober_probe_total{container="app",namespace="ns",pod="solo",pod_uid="uid-solo",probe_type="Readiness",result="successful"} 12
prober_probe_total{container="coredns",namespace="kube-system",pod="coredns-x",pod_uid="u2",probe_type="Readiness",result="successful"} 3e+02
prober_probe_duration_seconds_bucket{container="app",le="0.005"} 4
"""


def metrics(ls: int, lf: int = 0) -> str:
    return METRICS.replace("{ls}", str(ls)).replace("{lf}", str(lf))


def test_probe_metrics_are_parsed_per_container_and_probe() -> None:
    rows = parse_probe_metrics(metrics(ls=4, lf=1))
    assert rows[("ns", "solo", "uid-solo", "app", "liveness")] == ProbeCount(successful=4, failed=1)
    assert rows[("ns", "solo", "uid-solo", "app", "readiness")] == ProbeCount(successful=12)
    assert rows[("kube-system", "coredns-x", "u2", "coredns", "readiness")].successful == 300
    assert len(rows) == 3


def test_probe_ledger_wants_a_success_newer_than_any_failure() -> None:
    key = ("ns", "solo", "uid-solo", "app", "liveness")
    ledger = ProbeLedger()
    ledger.observe({key: ProbeCount(successful=0, failed=0)})
    assert not ledger.passed(key)
    ledger.observe({key: ProbeCount(successful=1, failed=0)})
    assert ledger.passed(key)
    ledger.observe({key: ProbeCount(successful=1, failed=1)})  # a failure after the success
    assert not ledger.passed(key)
    ledger.observe({key: ProbeCount(successful=2, failed=1)})  # and a success after that
    assert ledger.passed(key)
    first_seen_with_failures = ProbeLedger()
    first_seen_with_failures.observe({key: ProbeCount(successful=3, failed=2)})  # order unknown
    assert not first_seen_with_failures.passed(key)
    startup = ("ns", "solo", "uid-solo", "app", "startup")
    first_seen_with_failures.observe({startup: ProbeCount(successful=1, failed=5)})  # failing until the app is up
    assert first_seen_with_failures.passed(startup)


def test_healthy_gate_on_the_kubelets_counters() -> None:
    pod = pod_of("solo", None, started=NOW - timedelta(seconds=2))  # the window (11 s) is not over
    ledger = ProbeLedger()
    ledger.observe(parse_probe_metrics(metrics(ls=0, lf=2)))
    failing = gate_of([pod], {}, ledger=ledger, metrics_nodes={NODE})
    assert not failing.ok
    assert "0 successful, 2 failed" in failing.waiting[0]
    ledger.observe(parse_probe_metrics(metrics(ls=1, lf=2)))
    passing = gate_of([pod], {}, ledger=ledger, metrics_nodes={NODE})
    assert passing.ok, passing.waiting
    assert passing.source == "kubelet prober metrics"
    assert "pod/solo container app liveness: 1 successful, 2 failed" in passing.detail


# ---------------------------------------------------------------------------------------------
# The watch with controllers and probe counters


def test_two_replica_deployment_decides_only_when_both_are_ready(core: FakeCore) -> None:
    core.apps.put("replica_set", replica_set("web-1", "1"))
    core.apps.put("deployment", deployment(replicas=2))
    first = pod_of("web-1-a", started=LONG_AGO)
    second = pod_of("web-1-b", started=LONG_AGO)
    core.list_namespaced_pod.items = [first]
    core.list_namespaced_pod.sessions = [[(0.6, "ADDED", second)]]
    verdict = watch(core, "ns", "app=web", expect=Outcome.HEALTHY, timeout=10, stable_seconds=0.1)
    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.seconds >= 0.6
    assert verdict.pods == ("web-1-a", "web-1-b")
    assert verdict.health is not None and verdict.health.source == "probe window from the pod spec"
    assert any("not Healthy yet: deployment/web: 1 of 2 replica(s)" in e.text for e in verdict.timeline)
    assert "evidence: probe window from the pod spec" in verdict.summary


def test_healthy_waits_for_a_liveness_success_in_the_kubelets_counters(core: FakeCore) -> None:
    pod = pod_of("solo", None, started=datetime.now(UTC))
    core.list_namespaced_pod.items = [pod]
    core.metrics[NODE] = [metrics(ls=0), metrics(ls=0), metrics(ls=1)]
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=10, stable_seconds=0.1, probe_poll=0.2)
    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.health is not None and verdict.health.source == "kubelet prober metrics"
    assert verdict.seconds < 3  # did not wait out the 11 s window: the counters showed the success
    assert 3 <= len(core.metrics_calls) <= 6  # polled, bounded by probe_poll


def test_a_failing_liveness_probe_keeps_a_ready_pod_from_healthy(core: FakeCore) -> None:
    pod = pod_of("solo", None, started=datetime.now(UTC))
    core.list_namespaced_pod.items = [pod]
    core.metrics[NODE] = [metrics(ls=0, lf=1), metrics(ls=0, lf=2)]
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=1.0, stable_seconds=0.1, probe_poll=0.2)
    assert verdict.outcome is Outcome.TIMEOUT
    assert "no success since its last failure in the kubelet's counters (0 successful, 2 failed)" in verdict.summary


def test_unreadable_counters_fall_back_to_the_probe_window(core: FakeCore) -> None:
    pod = pod_of("solo", None, started=datetime.now(UTC) - timedelta(seconds=9))  # 11 s window: 1 to 2 s left
    pod["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 2
    core.list_namespaced_pod.items = [pod]
    core.metrics[NODE] = ApiException(status=403, reason="Forbidden")
    verdict = watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=10, stable_seconds=0.1)
    assert verdict.outcome is Outcome.HEALTHY
    assert verdict.health is not None and verdict.health.source == "probe window from the pod spec"
    assert 0.3 <= verdict.seconds < 4
    assert len(core.metrics_calls) == 1  # unreadable once: not asked again
    assert any("probe metrics cannot be read" in e.text for e in verdict.timeline)


def test_stop_closes_the_streams_and_raises_watch_stopped(core: FakeCore) -> None:
    pod = _healthy()
    pod["status"]["containerStatuses"][0]["ready"] = False
    core.list_namespaced_pod.items = [pod]
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(WatchStopped):
        watch(core, "ns", "", expect=Outcome.HEALTHY, timeout=60, stop=stop)
    assert time.monotonic() - started < 1.5
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("watching ")]
    assert not left, f"threads still running: {left}"


# ---------------------------------------------------------------------------------------------
# Jobs and bare pods


def finished(pod: dict[str, Any], phase: str, exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    pod["spec"]["restartPolicy"] = "Never"
    pod["status"]["phase"] = phase
    for cond in pod["status"]["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["status"] = "False"
    cs = pod["status"]["containerStatuses"][0]
    cs.update(ready=False, started=False)
    cs["state"] = {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "message": message,
            "containerID": "containerd://0123456789abcdef",
        }
    }
    return pod


def job(conditions: list[dict[str, Any]], backoff_limit: int = 1) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {"backoffLimit": backoff_limit},
        "status": {"conditions": conditions, "failed": 1},
    }


FAILED_JOB = [
    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
    {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    },
]


def test_a_failed_job_pod_is_not_a_failed_job_while_it_will_retry() -> None:
    pod = finished(pod_of("batch-a", ("Job", "batch")), "Failed", 1, "Error")
    assert classify_pod(pod).outcome is Outcome.FAILED
    assert classify_workload([pod], controllers={("Job", "batch"): job([])}) is None  # backoffLimit not reached
    assert classify_workload([pod], controllers={("Job", "batch"): job(FAILED_JOB)}) is Outcome.FAILED
    done = finished(pod_of("batch-b", ("Job", "batch")), "Succeeded", 0, "Completed")
    complete = job([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}])
    assert classify_workload([pod, done], controllers={("Job", "batch"): complete}) is Outcome.COMPLETE
    assert job_outcome(job([])) is None


def test_a_bare_pod_that_failed_or_succeeded_is_decided_by_its_phase() -> None:
    failed = finished(pod_of("once", None), "Failed", 3, "Error")
    assert classify_workload([failed]) is Outcome.FAILED
    cause = diagnose(failed, [], ["fatal: config file missing"])
    assert cause is not None
    assert (cause.exit_code, cause.termination_reason, cause.instance) == (3, "Error", "0123456789ab")
    assert cause.log_lines == ("fatal: config file missing",)
    assert classify_workload([finished(pod_of("once", None), "Succeeded", 0, "Completed")]) is Outcome.COMPLETE
    # A Deployment's pod that ended (an eviction) is replaced by its ReplicaSet: it does not count.
    evicted = finished(pod_of("web-1-x"), "Failed", 137, "Error")
    assert not classify_pod(evicted).live


def test_start_error_with_restart_policy_never_is_failed_with_the_exec_format_error() -> None:
    message = (
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create "
        'failed: unable to start container process: exec: "/entrypoint.sh": exec format error: unknown'
    )
    pod = finished(pod_of("once", None), "Failed", 128, "StartError", message)
    assert classify_workload([pod]) is Outcome.FAILED
    cause = diagnose(pod, [], [], node_platform="linux/amd64")
    assert cause is not None and cause.exec_format_error
    assert cause.explanation == "exec format error on a linux/amd64 node (image platform unknown)"
    assert cause.evidence.startswith("termination message of pod/once container app instance 0123456789ab")


def test_watch_job_failed_only_when_the_job_says_so(core: FakeCore) -> None:
    attempt = finished(pod_of("batch-a", ("Job", "batch")), "Failed", 1, "Error")
    core.list_namespaced_pod.items = [attempt]
    core.logs = {("batch-a", "app", "current"): "exec /bin/busybox: exec format error\n"}
    core.batch.put("job", job([]), job([]), job([]), job(FAILED_JOB))
    verdict = watch(core, "ns", "", expect=Outcome.FAILED, timeout=10, probe_poll=0.1)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.seconds >= 0.2  # read the Job more than once: it was still retrying at first
    assert verdict.cause is not None and verdict.cause.exec_format_error
    assert "job/batch Failed: BackoffLimitExceeded: Job has reached the specified backoff limit" in verdict.summary
    assert verdict.terminated_reasons_seen == frozenset({"Error"})
    assert verdict.exit_codes_seen == frozenset({1})


# ---------------------------------------------------------------------------------------------
# Probe kills and what a verdict records


LIVENESS_MESSAGE = (
    'Liveness probe failed: Get "http://10.244.0.7:9999/healthz": dial tcp 10.244.0.7:9999: connect: connection refused'
)


def liveness_killed() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = _crashing()
    name = pod["metadata"]["name"]
    cs = pod["status"]["containerStatuses"][0]
    cs["lastState"]["terminated"].update(exitCode=2, reason="Error", message="", startedAt="2026-11-26T08:00:30Z")

    def event(reason: str, message: str, count: int) -> dict[str, Any]:
        return {
            "metadata": {"name": f"{name}.{reason}", "uid": f"e-{reason}"},
            "involvedObject": {"kind": "Pod", "name": name, "fieldPath": "spec.containers{app}"},
            "reason": reason,
            "message": message,
            "type": "Warning" if reason == "Unhealthy" else "Normal",
            "count": count,
            "firstTimestamp": "2026-11-26T08:00:05Z",
            "lastTimestamp": "2026-11-26T08:00:40Z",
        }

    events = [
        event("Unhealthy", LIVENESS_MESSAGE, 6),
        event("Killing", "Container app failed liveness probe, will be restarted", 2),
    ]
    return pod, events


def test_a_liveness_kill_is_a_crash_loop_with_the_probes_message() -> None:
    pod, events = liveness_killed()
    assert classify_workload([pod], events) is Outcome.CRASH_LOOP
    cause = diagnose(pod, events, [])
    assert cause is not None
    assert cause.reason == "liveness probe failed" and cause.probe == "liveness"
    assert cause.message == LIVENESS_MESSAGE
    assert cause.explanation.startswith("the kubelet killed the container after its liveness probe failed")
    assert "event Killing on pod/" in cause.evidence and "event Unhealthy on pod/" in cause.evidence
    assert not cause.exec_format_error


def test_a_verdict_keeps_waiting_and_terminated_reasons_apart(core: FakeCore) -> None:
    replay(core, "crashloop-exec-format")
    verdict = watch(core, "incident-orders", "app=orders-api", expect={Outcome.CRASH_LOOP}, timeout=30)
    assert "CrashLoopBackOff" in verdict.waiting_reasons_seen
    assert "CrashLoopBackOff" not in verdict.terminated_reasons_seen
    assert "Error" in verdict.terminated_reasons_seen and "Error" not in verdict.waiting_reasons_seen
    assert verdict.exit_codes_seen == frozenset({1})
    assert verdict.phases_seen >= verdict.waiting_reasons_seen | verdict.terminated_reasons_seen
    assert verdict.images_ran and verdict.images_ran[0].image == ARM_IMAGE
    assert verdict.images_ran[0].image_id.startswith("docker.io/") and verdict.images_ran[0].node == NODE


# ---------------------------------------------------------------------------------------------
# Recorded from the real cluster (2026-12-01): StartError, CreateContainerConfigError, a bare pod
# that failed, a liveness kill, a Job past its backoffLimit, the kubelet's probe counters


def test_recorded_start_error_of_a_missing_entrypoint_is_no_exec_format_error() -> None:
    pods, events, _ = load("starterror-missing-entrypoint")
    cause = diagnose(pods[0], events, [], node_platform="linux/amd64")
    assert cause is not None
    assert (cause.reason, cause.exit_code, cause.termination_reason) == ("StartError", 128, "StartError")
    assert not cause.exec_format_error
    assert "stat /no/such/entrypoint: no such file or directory" in cause.message
    assert cause.evidence.startswith("last terminated state of pod/missing-entrypoint-")
    assert "another CPU architecture" not in cause.describe()


def test_recorded_create_container_config_error_names_the_missing_key() -> None:
    pods, events, _ = load("create-config-error-missing-key")
    cause = diagnose(pods[0], events)
    assert cause is not None
    assert cause.reason == "CreateContainerConfigError"
    assert cause.message == "couldn't find key absent in ConfigMap rec-cfgkey/app-config"
    assert (
        cause.evidence
        == f"waiting reason CreateContainerConfigError of pod/{pods[0]['metadata']['name']} container app"
    )


def test_recorded_bare_pod_that_never_started_is_failed_with_its_exit_code() -> None:
    pods, events, _ = load("pod-never-start-error")
    state = classify_pod(pods[0])
    assert (state.phase, state.restart_policy, state.owner_kind, state.live) == ("Failed", "Never", "", True)
    cause = diagnose(pods[0], events)
    assert cause is not None and (cause.exit_code, cause.reason) == (128, "StartError")
    assert cause.instance == "3db1eceb1c74"


def test_recorded_liveness_kill_is_a_crash_loop_caused_by_the_probe() -> None:
    pods, events, _ = load("liveness-kill")
    cause = diagnose(pods[0], events)
    assert cause is not None
    assert cause.reason == "liveness probe failed" and cause.probe == "liveness"
    assert cause.message.startswith('Liveness probe failed: Get "http://10.244.0.46:9999/healthz"')
    assert (cause.exit_code, cause.termination_reason) == (137, "Error")
    assert "failureThreshold 3" in cause.explanation
    assert "(x9, last " in cause.evidence
    assert "'Container httpd failed liveness probe, will be restarted'" in cause.evidence


def test_recorded_job_is_failed_only_by_its_conditions() -> None:
    pods, events, _ = load("job-failed-exec-format")
    job_obj = json.loads((DATA / "job-failed-exec-format" / "jobs.json").read_text())["items"][0]
    assert [classify_pod(p).outcome for p in pods] == [Outcome.FAILED, Outcome.FAILED]
    assert classify_workload(pods, events) is None
    assert classify_workload(pods, events, controllers={("Job", "task"): job_obj}) is Outcome.FAILED
    retrying = copy.deepcopy(job_obj)
    retrying["status"]["conditions"] = []
    assert classify_workload(pods, events, controllers={("Job", "task"): retrying}) is None
    _, _, logs = load("job-failed-exec-format")
    name = pods[0]["metadata"]["name"]
    lines = logs.get((name, "task", "current"), "").splitlines()
    image = pods[0]["spec"]["containers"][0]["image"]
    cause = diagnose(pods[0], events, lines, image_platforms={image: ("linux/arm64",)}, node_platform="linux/amd64")
    assert cause is not None and cause.exec_format_error and cause.platform_mismatch


def test_recorded_probe_counters_keep_a_ready_pod_with_a_failing_liveness_probe_from_healthy() -> None:
    text = (DATA / "probe-metrics" / "probes.txt").read_text()
    rows = parse_probe_metrics(text)
    pods, _, _ = load("probe-metrics")
    pod = pods[0]
    key = ("rec-metrics", pod["metadata"]["name"], pod["metadata"]["uid"], "httpd", "liveness")
    assert rows[key] == ProbeCount(successful=0, failed=1)
    assert any(k[0] == "kube-system" and k[4] == "liveness" for k in rows)  # coredns's, on the same node
    ledger = ProbeLedger()
    ledger.observe(rows)
    state = classify_pod(pod)
    assert state.outcome is Outcome.HEALTHY  # Ready: the candidate
    gate = healthy_gate([state], {}, now=NOW, ledger=ledger, metrics_nodes={state.node})
    assert not gate.ok
    assert (
        "liveness: no success since its last failure in the kubelet's counters (0 successful, 1 failed)"
        in gate.waiting[-1]
    )


def test_a_pod_whose_liveness_probe_fails_too_is_left_to_become_a_crash_loop() -> None:
    """Nothing listens: readiness and liveness both fail. The kubelet will kill it; NotReady would hide that."""
    pods, events, _ = load("not-ready-probe-failing")
    pod = pods[0]
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    liveness = copy.deepcopy(next(e for e in events if e["reason"] == "Unhealthy"))
    liveness["metadata"]["uid"] = "liveness-event"
    liveness.update(message="Liveness probe failed: HTTP probe failed with statuscode: 404", count=2)
    liveness["firstTimestamp"] = liveness["lastTimestamp"] = started
    assert classify_workload(pods, events) is Outcome.NOT_READY
    assert classify_workload(pods, [*events, liveness]) is None


def test_not_ready_waits_for_the_readiness_window_and_a_live_container() -> None:
    """An app still starting fails its first quick readiness tries; NotReady needs it alive and the window over."""
    pods, events, _ = load("not-ready-probe-failing")
    pod = pods[0]
    started = classify_pod(pod).containers[0].started_at
    assert started is not None
    # Readiness: 0 + 2 x (3 - 1) + 1 = 5 s; liveness: 0 + 5 x (3 - 1) + 1 = 11 s (no counters: its window).
    assert classify_workload(pods, events, now=started + timedelta(seconds=4)) is None
    assert classify_workload(pods, events, now=started + timedelta(seconds=6)) is None  # liveness not shown yet
    assert classify_workload(pods, events, now=started + timedelta(seconds=11)) is Outcome.NOT_READY
    key = ("rec-outcomes-notready", pod["metadata"]["name"], pod["metadata"]["uid"], "app", "liveness")
    alive = {key: ProbeCount(successful=1)}
    assert classify_workload(pods, events, probe_counts=alive, now=started + timedelta(seconds=6)) is Outcome.NOT_READY
    not_run = {(*key[:4], "readiness"): ProbeCount(failed=3)}
    assert classify_workload(pods, events, probe_counts=not_run, now=started + timedelta(seconds=30)) is None
    dying = {key: ProbeCount(failed=1)}
    assert classify_workload(pods, events, probe_counts=dying, now=started + timedelta(seconds=30)) is None


def test_a_liveness_kill_long_ago_does_not_explain_a_later_crash() -> None:
    pod, events = liveness_killed()
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    last.update(startedAt="2026-11-26T08:05:00Z", exitCode=1)  # this instance started after the last Killing
    cause = diagnose(pod, events, ["panic: no database"])
    assert cause is not None
    assert cause.reason == "Error" and cause.probe == ""
    assert cause.log_lines == ("panic: no database",)


def test_a_startup_probe_kill_is_named_as_such() -> None:
    pod, events = liveness_killed()
    events[0]["message"] = 'Startup probe failed: Get "http://10.244.0.7:9999/healthz": connect: connection refused'
    events[1]["message"] = "Container app failed startup probe, will be restarted"
    cause = diagnose(pod, events, [])
    assert cause is not None
    assert (cause.reason, cause.probe) == ("startup probe failed", "startup")
    assert cause.message.startswith("Startup probe failed:")
    assert "after its startup probe failed" in cause.explanation


def test_a_container_with_no_liveness_probe_is_healthy_only_after_running_a_while_unrestarted() -> None:
    """The Ready condition of a probe-less container is set when it starts, even if it exits a second later."""
    from harness.outcomes.classify import READY_ONLY_WINDOW

    def probe_less(started: datetime) -> dict[str, Any]:
        pod = pod_of("web-1-a", None, started=started)
        for c in pod["spec"]["containers"]:
            c.pop("livenessProbe", None)
            c.pop("startupProbe", None)
        return pod

    just = gate_of([probe_less(NOW - timedelta(seconds=1))], {})
    assert not just.ok and just.retry_in is not None and just.retry_in <= READY_ONLY_WINDOW
    assert any("without a restart not over" in w for w in just.waiting), just.waiting
    later = gate_of([probe_less(NOW - timedelta(seconds=READY_ONLY_WINDOW + 1))], {})
    assert later.ok, later.waiting
    assert later.source.startswith("Ready condition and 10 s running without a restart")
