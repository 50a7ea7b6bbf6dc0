"""The seed incident's facts on a real cluster (tests/e2e/test_scenarios.py only checks the verdict).

An image built on an Apple Silicon laptop (linux/arm64) was deployed to amd64 nodes: every pod went
Error <-> CrashLoopBackOff, probes never passed, and `kubectl logs --previous` showed
`exec /usr/local/bin/uvicorn: exec format error`. The fix: rebuild for the nodes' platform and roll
out again. Here "foreign" is the platform the nodes are not, so the tests mean the same on any host.

- test_incident_reproduces / test_fix_holds: one run of scenarios/arm64-on-amd64.yaml, the facts a
  user saw in the incident and after the fix.
- test_rolling_update_keeps_old_pods_serving: why the Deployment's RollingUpdate with
  maxUnavailable 0 matters. A broken v2 never replaces a healthy v1: v1 keeps serving behind the
  Service, the rollout fails by its progress deadline, and a rollback restores v1.

When the host emulates the foreign platform (a QEMU binfmt_misc handler with the F flag, which
another test may register kernel-wide) the foreign image runs, and none of this can be observed:
the run must then say masked by emulation, and the tests skip after checking that.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from harness import images, outcomes, platforms, workload
from harness.cluster import KindCluster
from harness.outcomes import Outcome, RolloutStatus
from harness.report import render_terminal
from harness.runner import ExitStatus, RunOptions, RunResult, run_scenario
from harness.scenario import SCENARIO_DIR, load
from harness.tools import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.seed]

SEED = SCENARIO_DIR / "arm64-on-amd64.yaml"
EXEC_FORMAT_LINE = "exec /usr/local/bin/uvicorn: exec format error"
DEPLOYMENT = "orders-api"
SERVICE = "orders-api"
MANIFEST = REPO_ROOT / "k8s" / "deployment.yaml"
PROGRESS_DEADLINE = 20  # seconds: short, so the failed rollout is reported quickly


# ---------------------------------------------------------------------------------------------
# Helpers


def emulation_note(foreign: platforms.Platform, node: platforms.Platform) -> str | None:
    """Why a foreign image would run on these nodes right now, or None when it fails as in the incident."""
    state = platforms.read_binfmt()
    if platforms.expected_outcome(foreign, node, state) is platforms.Expectation.EMULATED:
        return platforms.explain(foreign, node, state)
    return None


def http_get(cluster: KindCluster, node: str, address: str, port: int, path: str = "/") -> tuple[str, str]:
    """GET over the cluster network from a node (bash's /dev/tcp: no HTTP client needed there)."""
    script = (
        f"exec 3<>/dev/tcp/{address}/{port}; printf 'GET {path} HTTP/1.0\\r\\nHost: {address}\\r\\n\\r\\n' >&3; "
        "timeout 5 cat <&3"
    )
    answer = cluster.node_exec(node, ["bash", "-c", script], timeout=30).stdout.replace("\r\n", "\n")
    head, _, body = answer.partition("\n\n")
    return head.splitlines()[0] if head else "", body


def as_json(api: k8s.ApiClient, obj: object) -> dict[str, Any]:
    """An API object as the server sends it (camelCase keys), as `kubectl get -o json` prints it."""
    data = api.sanitize_for_serialization(obj)
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Pod:
    """What the tests need of a pod, read from its JSON."""

    name: str
    node: str
    ip: str
    images: tuple[str, ...]
    ready: bool  # the Ready condition: every readiness probe passes
    running: bool  # every container is running
    restarts: int
    states: str  # for messages

    @classmethod
    def of(cls, pod: dict[str, Any]) -> Pod:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        conditions = status.get("conditions") or []
        return cls(
            name=pod["metadata"]["name"],
            node=spec.get("nodeName") or "",
            ip=status.get("podIP") or "",
            images=tuple(c["image"] for c in spec.get("containers") or []),
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
            running=bool(statuses) and all("running" in (c.get("state") or {}) for c in statuses),
            restarts=max((c.get("restartCount", 0) for c in statuses), default=0),
            states=json.dumps([c.get("state") for c in statuses]),
        )


def live_pods(cluster: KindCluster, namespace: str) -> list[Pod]:
    """The Deployment's pods that are not being deleted."""
    selector = f"app.kubernetes.io/name={DEPLOYMENT}"
    listed = as_json(cluster.core.api_client, cluster.core.list_namespaced_pod(namespace, label_selector=selector))
    return [Pod.of(p) for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def read_deployment(cluster: KindCluster, namespace: str) -> dict[str, Any]:
    return as_json(cluster.apps.api_client, cluster.apps.read_namespaced_deployment(DEPLOYMENT, namespace))


def condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    """The Deployment's condition of that type ({} when it has none)."""
    found = (c for c in deployment.get("status", {}).get("conditions") or [] if c.get("type") == kind)
    return next(found, {})


def template_images(deployment: dict[str, Any]) -> list[str]:
    return [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]


# ---------------------------------------------------------------------------------------------
# The incident and its fix: one run of the seed scenario


@dataclass(frozen=True)
class SeedRun:
    result: RunResult
    namespace: str
    said: tuple[str, ...]
    emulated: str | None  # why the foreign image ran under emulation, if it did

    def shown(self) -> str:
        return render_terminal(self.result.report) + "\n\nrun log (last lines):\n" + "\n".join(self.said[-30:])

    def skip_if_masked(self) -> None:
        """Under emulation the incident cannot be seen: check the run says masked, then skip.

        The host may emulate from the start (self.emulated), or a handler registered by another
        test during the run may have been seen by the runner (its report's emulation verdict).
        """
        seen_by_runner = self.result.report.facts.get("emulation verdict")
        if self.emulated is None and not (seen_by_runner and self.result.exit_status is ExitStatus.MASKED_BY_EMULATION):
            return
        assert self.result.exit_status is ExitStatus.MASKED_BY_EMULATION, self.shown()
        why = self.emulated or seen_by_runner
        pytest.skip(f"the host emulates the foreign platform, the run was masked by emulation: {why}")


@pytest.fixture(scope="module")
def seed_run(
    harness_cluster: KindCluster,
    node_arch: platforms.Platform,
    foreign: platforms.Platform,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SeedRun]:
    """scenarios/arm64-on-amd64.yaml run once; its namespace is kept for the tests, then deleted."""
    emulated = emulation_note(foreign, node_arch)
    said: list[str] = []
    out = tmp_path_factory.mktemp("seed-run")
    result = run_scenario(
        load(SEED),
        RunOptions(
            cluster=harness_cluster,
            report_dir=out / "reports",
            artifacts_dir=out / "artifacts",
            keep_namespace=True,
            say=said.append,
        ),
    )
    found = (re.search(r"namespace (\S+), watching", line) for line in said)
    namespace = next((m.group(1) for m in found if m), "")
    try:
        yield SeedRun(result, namespace, tuple(said), emulated)
    finally:
        if namespace:
            workload.delete_namespace(harness_cluster.core, namespace)


def test_incident_reproduces(seed_run: SeedRun) -> None:
    seed_run.skip_if_masked()
    result, shown = seed_run.result, seed_run.shown()
    assert result.verdicts, f"the run never watched the workload:\n{shown}"
    incident = result.verdicts[0].verdict
    assert incident.outcome is Outcome.CRASH_LOOP, shown
    assert "CrashLoopBackOff" in incident.phases_seen, incident.phases_seen
    assert incident.restarts >= 2, f"restarts did not grow to 2: {incident.restarts}\n{shown}"
    assert not incident.ready_seen, f"a pod became ready:\n{shown}"

    # Error between back-offs: a container terminated with Error after it had waited in
    # CrashLoopBackOff, i.e. the kubelet restarted it after the back-off and it failed again.
    states: dict[str, list[str]] = {}
    for e in incident.timeline:
        if e.kind == "state":
            states.setdefault(e.subject, []).append(e.text)
    assert not any("Running, ready" in text for texts in states.values() for text in texts), states

    def restarts(text: str) -> int:
        found = re.search(r"restarts (\d+)", text)
        return int(found.group(1)) if found else -1

    def error_after_back_off(texts: list[str]) -> bool:
        """Terminated: Error after the back-off, or (with a short back-off, where the watch may end
        before the next failure) the restart that followed it."""
        back_off = next((i for i, t in enumerate(texts) if "CrashLoopBackOff" in t), None)
        if back_off is None:
            return False
        later = texts[back_off + 1 :]
        return any(t.startswith("Terminated: Error") or restarts(t) > restarts(texts[back_off]) for t in later)

    assert any(error_after_back_off(texts) for texts in states.values()), (
        f"no container was restarted after a CrashLoopBackOff:\n{json.dumps(states, indent=1)}"
    )
    crashed = {subject.split("/")[1] for subject, texts in states.items() if any("Error" in t for t in texts)}
    assert crashed == set(incident.pods), f"not every pod crashed: {sorted(crashed)} of {incident.pods}"

    # The exact line of the previous container's log.
    assert incident.cause is not None, shown
    assert incident.cause.exec_format_error, incident.cause
    assert EXEC_FORMAT_LINE in [line.strip() for line in incident.cause.log_lines], incident.cause.log_lines
    assert incident.cause.exit_code == 1 and incident.cause.termination_reason == "Error", incident.cause
    assert all(check.seen for check in result.symptoms), shown


def test_fix_holds(seed_run: SeedRun, harness_cluster: KindCluster, node_arch: platforms.Platform) -> None:
    seed_run.skip_if_masked()
    result, shown, namespace = seed_run.result, seed_run.shown(), seed_run.namespace
    assert result.exit_status is ExitStatus.OK, shown
    assert len(result.verdicts) == 2, shown
    fix = result.verdicts[1].verdict
    assert fix.outcome is Outcome.HEALTHY and result.report.fix_verified is True, shown

    fixed_image = result.images["ci-build"]
    dep = read_deployment(harness_cluster, namespace)
    status = dep["status"]
    assert condition(dep, "Available").get("status") == "True", status
    assert condition(dep, "Progressing").get("reason") == "NewReplicaSetAvailable", status
    replicas = dep["spec"]["replicas"]
    counts = [status.get(k) for k in ("updatedReplicas", "readyReplicas", "availableReplicas")]
    assert counts == [replicas] * 3, status
    assert template_images(dep) == [fixed_image]

    pods = live_pods(harness_cluster, namespace)
    assert len(pods) == replicas, pods
    for pod in pods:
        assert pod.images == (fixed_image,), pod
        assert pod.ready, f"{pod.name}: the readiness probe does not pass: {pod.states}"
        assert pod.running, f"{pod.name}: {pod.states}"
        assert pod.restarts == 0, f"{pod.name}: the liveness probe or the process restarted it: {pod.states}"

    # The fixed build answers, on the nodes' own CPU.
    pod = pods[0]
    status_line, body = http_get(harness_cluster, pod.node, pod.ip, 8000, "/")
    assert " 200 " in status_line, (status_line, body)
    info = json.loads(body)
    assert info["version"] == "fixed", info
    assert info["platform"] == platforms.qemu_name(node_arch), info  # x86_64 on amd64, aarch64 on arm64


# ---------------------------------------------------------------------------------------------
# Why rolling updates matter


Snapshot = tuple[float, frozenset[str], frozenset[str]]  # seconds, ready addresses, not-ready addresses


class EndpointRecorder:
    """Records a Service's EndpointSlice addresses (ready and not ready) at every change.

    A thread lists the slices, then watches them in short server-side windows until stopped, so
    every change is seen; each distinct state is kept with its time.
    """

    def __init__(self, api: k8s.ApiClient, namespace: str, service: str, limit: float = 240) -> None:
        self.discovery = k8s.DiscoveryV1Api(api)
        self.namespace = namespace
        self.selector = f"kubernetes.io/service-name={service}"
        self.limit = limit
        self.snapshots: list[Snapshot] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"endpointslices {namespace}/{service}", daemon=True)
        self._thread.start()

    def _json(self, obj: object) -> dict[str, Any]:
        return as_json(self.discovery.api_client, obj)

    def _record(self, slices: dict[str, dict[str, Any]]) -> None:
        ready: set[str] = set()
        not_ready: set[str] = set()
        for item in slices.values():
            for endpoint in item.get("endpoints") or []:
                # The API says an unknown (absent) ready condition is to be read as ready.
                is_ready = (endpoint.get("conditions") or {}).get("ready") is not False
                (ready if is_ready else not_ready).update(endpoint.get("addresses") or [])
        snapshot = (round(time.monotonic() - self._started, 2), frozenset(ready), frozenset(not_ready))
        with self._changed:
            if not self.snapshots or self.snapshots[-1][1:] != snapshot[1:]:
                self.snapshots.append(snapshot)
            self._changed.notify_all()

    def _run(self) -> None:
        deadline = self._started + self.limit
        lister = self.discovery.list_namespaced_endpoint_slice
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                listed = self._json(lister(self.namespace, label_selector=self.selector, _request_timeout=(5, 20)))
                slices = {s["metadata"]["name"]: s for s in listed["items"]}
                self._record(slices)
                stream = watch.Watch()
                for event in stream.stream(
                    lister,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=2,
                ):
                    if event["type"] == "ERROR":
                        break
                    obj = self._json(event["object"])
                    if event["type"] == "DELETED":
                        slices.pop(obj["metadata"]["name"], None)
                    else:
                        slices[obj["metadata"]["name"]] = obj
                    self._record(slices)
                    if self._stop.is_set():
                        stream.stop()
        except BaseException as exc:  # noqa: BLE001 - handed to the test by stop()
            self._error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout: float) -> Snapshot:
        """Wait until the latest snapshot satisfies predicate; return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self.snapshots and predicate(self.snapshots[-1]):
                    return self.snapshots[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    pytest.fail(f"EndpointSlices never reached the expected state: {self.snapshots}", pytrace=False)
                self._changed.wait(remaining)

    def stop(self) -> list[Snapshot]:
        self._stop.set()
        self._thread.join(timeout=15)
        if self._error is not None:
            raise self._error
        assert not self._thread.is_alive(), "the EndpointSlice watch did not stop"
        return list(self.snapshots)


def build_service_image(platform: platforms.Platform, version: str, builder: Callable[..., str]) -> str:
    """The service image for platform (built as the scenarios build it), loaded into the nodes."""
    return builder(
        images.stage_service_context(),
        platform,
        repository="incident-harness/orders-api",
        dockerfile=REPO_ROOT / "docker" / "Dockerfile",
        build_args={"PYTHON_BASE": images.ensure_python_base(platform), "APP_VERSION": version},
    )


def test_rolling_update_keeps_old_pods_serving(
    harness_cluster: KindCluster,
    node_arch: platforms.Platform,
    foreign: platforms.Platform,
    image_builder: Callable[..., str],
    deploy: Callable[..., workload.Workload],
) -> None:
    note = emulation_note(foreign, node_arch)
    if note is not None:
        pytest.skip(f"the host emulates the foreign platform, a foreign v2 would run: {note}")
    v1 = build_service_image(node_arch, "v1", image_builder)
    v2 = build_service_image(foreign, "v2", image_builder)
    apps, core = harness_cluster.apps, harness_cluster.core

    # v1 (native) serving behind the Service.
    applied = deploy([MANIFEST], image=v1)
    ns = applied.namespace
    healthy = outcomes.wait_deployment_available(apps, core, ns, DEPLOYMENT, 120)
    assert healthy.outcome is Outcome.HEALTHY, healthy.summary
    v1_pods = live_pods(harness_cluster, ns)
    v1_addresses = frozenset(p.ip for p in v1_pods)
    replicas = read_deployment(harness_cluster, ns)["spec"]["replicas"]
    assert len(v1_addresses) == replicas, v1_addresses

    recorder = EndpointRecorder(harness_cluster.api_client(), ns, SERVICE)
    try:
        recorder.wait_for(lambda s: s[1] == v1_addresses, timeout=30)
        watched_from = len(recorder.snapshots) - 1

        # v2, built for the foreign platform, rolled out with a short progress deadline.
        patch = {
            "spec": {
                "progressDeadlineSeconds": PROGRESS_DEADLINE,
                "template": {"spec": {"containers": [{"name": DEPLOYMENT, "image": v2}]}},
            }
        }
        apps.patch_namespaced_deployment(DEPLOYMENT, ns, patch)
        rollout = outcomes.wait_rollout(apps, ns, DEPLOYMENT, timeout=PROGRESS_DEADLINE + 60)
        assert rollout.status is RolloutStatus.PROGRESS_DEADLINE_EXCEEDED, (
            f"{rollout.status.value}: {rollout.message}; {rollout.conditions}; "
            f"emulation now: {platforms.read_binfmt().describe()}"
        )
        assert "ProgressDeadlineExceeded" in " ".join(rollout.conditions), rollout.conditions

        # The old pods still serve, directly and through the Service; the new one never got ready.
        for pod in v1_pods:
            status_line, body = http_get(harness_cluster, pod.node, pod.ip, 8000, "/")
            assert " 200 " in status_line and json.loads(body)["version"] == "v1", (pod.name, body)
        service = as_json(core.api_client, core.read_namespaced_service(SERVICE, ns))
        status_line, body = http_get(harness_cluster, v1_pods[0].node, service["spec"]["clusterIP"], 80, "/")
        assert " 200 " in status_line and json.loads(body)["version"] == "v1", body
        v2_pods = [p for p in live_pods(harness_cluster, ns) if p.images == (v2,)]
        assert v2_pods, "the rollout created no v2 pod"
        for pod in v2_pods:
            assert not pod.ready and pod.restarts >= 1, f"{pod.name}: {pod.states}"

        # Roll back: v1's pod template again, the rollout completes, only v1 pods remain.
        revision = workload.rollback(apps, ns, DEPLOYMENT)
        assert revision == 1, f"rolled back to revision {revision}, v1 was revision 1"
        back = outcomes.wait_rollout(apps, ns, DEPLOYMENT, timeout=60)
        assert back.status is RolloutStatus.COMPLETE, f"{back.status.value}: {back.message}; {back.conditions}"
    finally:
        snapshots = recorder.stop()

    during = snapshots[watched_from:]
    assert all(ready == v1_addresses for _, ready, _ in during), (
        "the Service lost a ready v1 address (or gained a v2 one) during the rollout:\n"
        + "\n".join(f"+{t:.1f}s ready={sorted(r)} not-ready={sorted(n)}" for t, r, n in during)
    )
    assert any(not_ready for _, _, not_ready in during), f"the v2 pod never appeared behind the Service: {during}"
    assert template_images(read_deployment(harness_cluster, ns)) == [v1]
    pods = live_pods(harness_cluster, ns)
    assert len(pods) == replicas and all(p.images == (v1,) for p in pods), pods
    assert all(p.ready for p in pods), pods
