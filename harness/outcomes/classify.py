"""Pure classification of pods and workloads from the API's JSON dicts, and causes from evidence."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from harness.outcomes.model import (
    _PRECEDENCE,
    _TRANSIENT_TAINTS,
    CRASH_LOOP_REASON,
    CREATE_ERROR_REASONS,
    EXEC_FORMAT_RE,
    FAILURES,
    IMAGE_PULL_REASONS,
    LOG_TAIL_LINES,
    PROBE_EVENT_RE,
    Cause,
    ContainerState,
    Evidence,
    Outcome,
    PodState,
    ProbeSpec,
    Verdict,
    _get,
    _int,
    _one_line,
    _str,
    short_id,
)

T = TypeVar("T")


_PROBE_FIELDS: Final = (("liveness", "livenessProbe"), ("readiness", "readinessProbe"), ("startup", "startupProbe"))


def _probe_specs(spec_container: Mapping[str, Any] | None) -> tuple[ProbeSpec, ...]:
    """The container's probes from the pod spec, with Kubernetes' defaults for what is not set."""
    found = []
    for kind, key in _PROBE_FIELDS:
        probe = _get(spec_container, key)
        if isinstance(probe, Mapping):
            found.append(
                ProbeSpec(
                    kind=kind,
                    initial_delay=_int(probe.get("initialDelaySeconds")) or 0,
                    period=_int(probe.get("periodSeconds")) or 10,
                    timeout=_int(probe.get("timeoutSeconds")) or 1,
                    failure_threshold=_int(probe.get("failureThreshold")) or 3,
                )
            )
    return tuple(found)


def _container_state(status: Mapping[str, Any], init: bool, spec: Mapping[str, Any] | None = None) -> ContainerState:
    state = _get(status, "state") or {}
    last = _get(status, "lastState", "terminated") or {}
    kind: Literal["waiting", "running", "terminated", "unknown"] = "unknown"
    detail: Mapping[str, Any] = {}
    if isinstance(state.get("waiting"), Mapping):
        kind, detail = "waiting", state["waiting"]
    elif isinstance(state.get("running"), Mapping):
        kind, detail = "running", state["running"]
    elif isinstance(state.get("terminated"), Mapping):
        kind, detail = "terminated", state["terminated"]
    return ContainerState(
        name=_str(status.get("name")),
        init=init,
        image=_str(status.get("image")),
        ready=bool(status.get("ready")),
        restarts=_int(status.get("restartCount")) or 0,
        state=kind,
        reason=_str(detail.get("reason")),
        message=_str(detail.get("message")),
        exit_code=_int(detail.get("exitCode")),
        container_id=_str(detail.get("containerID")) or (_str(status.get("containerID")) if kind != "waiting" else ""),
        last_reason=_str(last.get("reason")),
        last_exit_code=_int(last.get("exitCode")),
        last_message=_str(last.get("message")),
        last_container_id=_str(last.get("containerID")),
        spec_image=_str(_get(spec, "image")),
        image_id=_str(status.get("imageID")),
        started_at=_parse_time(detail.get("startedAt")) if kind in ("running", "terminated") else None,
        probes=() if init else _probe_specs(spec),
        last_started_at=_parse_time(last.get("startedAt")),
    )


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in _get(pod, "status", "conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


RESTART_LOOP = 3  # restarts after failures that make a crash loop, whether or not the API showed the back-off


def _container_outcome(c: ContainerState) -> Outcome | None:
    # The kubelet restarts a failed container after a back-off; with a short maximum back-off
    # (KubeletConfiguration crashLoopBackOff.maxContainerRestartPeriod) the restart may come
    # before any watch sees the Waiting reason. Failing again and again is the crash loop.
    if c.restarts >= RESTART_LOOP and c.failed_last and c.state != "terminated":
        return Outcome.INIT_CRASH_LOOP if c.init else Outcome.CRASH_LOOP
    if c.state != "waiting":
        return None
    if c.reason == CRASH_LOOP_REASON:
        return Outcome.INIT_CRASH_LOOP if c.init else Outcome.CRASH_LOOP
    if c.reason in IMAGE_PULL_REASONS:
        return Outcome.IMAGE_PULL
    if c.reason in CREATE_ERROR_REASONS:
        return Outcome.CREATE_ERROR
    return None


def _failed_container(containers: Sequence[ContainerState]) -> ContainerState | None:
    """The container a Failed pod failed on: the first one that terminated unsuccessfully."""
    ended = [c for c in containers if c.state == "terminated"]
    bad = [c for c in ended if c.failed]
    chosen = bad or ended
    return chosen[0] if chosen else None


def _owner(pod: Mapping[str, Any]) -> tuple[str, str]:
    owners = [o for o in _get(pod, "metadata", "ownerReferences") or [] if isinstance(o, Mapping)]
    chosen = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    return (_str(_get(chosen, "kind")), _str(_get(chosen, "name"))) if chosen else ("", "")


def classify_pod(pod: Mapping[str, Any]) -> PodState:
    """Classify one pod (the API's JSON dict). HEALTHY here means ready now; stability is the watcher's job.

    Terminated states (Error, StartError, OOMKilled) alone decide nothing while the kubelet will
    restart the container: it moves to a waiting reason (CrashLoopBackOff ...) within a second,
    and that reason decides. A pod in phase Failed is FAILED (nothing restarts it: restartPolicy
    Never, or an eviction) and one in phase Succeeded is COMPLETE; for a Job's pods the Job's
    conditions decide instead (see classify_workload).
    """
    status = _get(pod, "status") or {}
    spec = _get(pod, "spec") or {}
    specs = {_str(c.get("name")): c for c in spec.get("containers") or [] if isinstance(c, Mapping)}
    init_specs = {_str(c.get("name")): c for c in spec.get("initContainers") or [] if isinstance(c, Mapping)}
    containers = tuple(
        [
            _container_state(s, True, init_specs.get(_str(s.get("name"))))
            for s in status.get("initContainerStatuses") or []
            if isinstance(s, Mapping)
        ]
        + [
            _container_state(s, False, specs.get(_str(s.get("name"))))
            for s in status.get("containerStatuses") or []
            if isinstance(s, Mapping)
        ]
    )
    phase = _str(status.get("phase"))
    sched = _condition(pod, "PodScheduled")
    scheduled: bool | None = None if sched is None else sched.get("status") == "True"
    unschedulable = ""
    if sched is not None and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
        unschedulable = _str(sched.get("message")) or "no node fits the pod"
    ready_cond = _condition(pod, "Ready")
    ready = ready_cond is not None and ready_cond.get("status") == "True"

    found: list[tuple[Outcome, ContainerState]] = []
    for c in containers:
        outcome = _container_outcome(c)
        if outcome is not None:
            found.append((outcome, c))
    culprit: ContainerState | None = None
    result: Outcome | None
    if found:
        result, culprit = min(found, key=lambda oc: _PRECEDENCE.index(oc[0]))
    elif phase == "Failed":
        result, culprit = Outcome.FAILED, _failed_container(containers)
    elif phase == "Succeeded":
        result = Outcome.COMPLETE
    elif unschedulable and not any(t in unschedulable for t in _TRANSIENT_TAINTS):
        result = Outcome.UNSCHEDULABLE
    elif (
        phase == "Running"
        and ready
        and any(not c.init for c in containers)
        and all(c.ready for c in containers if not c.init)
    ):
        result = Outcome.HEALTHY
    elif phase == "Pending" or not phase:
        result = Outcome.PENDING
    else:
        result = None
    owner_kind, owner_name = _owner(pod)
    labels = _get(pod, "metadata", "labels") or {}
    return PodState(
        name=_str(_get(pod, "metadata", "name")),
        phase=phase,
        node=_str(spec.get("nodeName")),
        ready=ready,
        scheduled=scheduled,
        unschedulable_message=unschedulable,
        terminating=_get(pod, "metadata", "deletionTimestamp") is not None,
        containers=containers,
        outcome=result,
        culprit=culprit,
        uid=_str(_get(pod, "metadata", "uid")),
        namespace=_str(_get(pod, "metadata", "namespace")),
        owner_kind=owner_kind,
        owner_name=owner_name,
        restart_policy=_str(spec.get("restartPolicy")) or "Always",
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())) if isinstance(labels, Mapping) else (),
        reason=_str(status.get("reason")),
        message=_str(status.get("message")),
    )


def _events_for(events: Iterable[Mapping[str, Any]], pod_name: str) -> list[Mapping[str, Any]]:
    return [
        e
        for e in events
        if _get(e, "involvedObject", "kind") == "Pod" and _get(e, "involvedObject", "name") == pod_name
    ]


# ---------------------------------------------------------------------------------------------
# Probes: the kubelet's Unhealthy events and its prober counters


def _event_container(e: Mapping[str, Any]) -> str:
    """spec.containers{httpd} -> httpd; "" when the event names no container."""
    path = _str(_get(e, "involvedObject", "fieldPath"))
    match = re.search(r"\{([^}]*)\}", path)
    return match.group(1) if match else ""


def _event_count(e: Mapping[str, Any]) -> int:
    return _int(_get(e, "series", "count")) or _int(e.get("count")) or 1


def _event_last(e: Mapping[str, Any]) -> datetime | None:
    return (
        _parse_time(_get(e, "series", "lastObservedTime"))
        or _parse_time(e.get("lastTimestamp"))
        or _parse_time(e.get("eventTime"))
        or _parse_time(e.get("firstTimestamp"))
    )


def _event_first(e: Mapping[str, Any]) -> datetime | None:
    return _parse_time(e.get("firstTimestamp")) or _parse_time(e.get("eventTime")) or _event_last(e)


@dataclass(frozen=True)
class ProbeFailures:
    """Failures of one probe of one container seen in the kubelet's Unhealthy events."""

    kind: str
    count: int
    message: str
    event: str  # how the evidence is named: event Unhealthy on pod/x container y (x3, last 08:14:39Z)


def probe_failures(
    events: Iterable[Mapping[str, Any]],
    pod: str,
    container: ContainerState,
    kind: str,
    since: datetime | None = None,
) -> ProbeFailures | None:
    """Unhealthy events for one probe kind of a container, counted from `since` (second resolution)."""
    floor = since.replace(microsecond=0) if since is not None else None
    count, message, stamp = 0, "", None
    for e in _events_for(events, pod):
        if _str(e.get("reason")) != "Unhealthy":
            continue
        text = _str(e.get("message"))
        match = PROBE_EVENT_RE.match(text)
        if match is None or match.group(1).lower() != kind:
            continue
        named = _event_container(e)
        if named and named != container.name:
            continue
        last, first = _event_last(e), _event_first(e)
        if floor is not None and last is not None and last < floor:
            continue
        n = _event_count(e)
        if floor is not None and first is not None and first < floor and (container.restarts or 0) > 0:
            n = 1  # an aggregated event that began with an earlier instance: only its last one is sure
        count += n
        if stamp is None or (last is not None and last >= stamp):
            message, stamp = text.strip(), last
    if count == 0:
        return None
    when = f", last {stamp.strftime('%H:%M:%SZ')}" if stamp else ""
    where = f"pod/{pod} container {container.name}"
    return ProbeFailures(kind, count, message, f"event Unhealthy on {where} (x{count}{when}): {message!r}")


ProbeKey = tuple[str, str, str, str, str]  # namespace, pod, pod uid, container, kind (lowercase)


@dataclass(frozen=True)
class ProbeCount:
    """prober_probe_total of one probe: how often it succeeded, failed, or could not be run."""

    successful: int = 0
    failed: int = 0
    unknown: int = 0


_METRIC_RE: Final = re.compile(r"^prober_probe_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL_RE: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_probe_metrics(text: str) -> dict[ProbeKey, ProbeCount]:
    """The kubelet's /metrics/probes (Prometheus text) as counts per probe of each container."""
    counts: dict[ProbeKey, dict[str, int]] = {}
    for line in text.splitlines():
        match = _METRIC_RE.match(line.strip())
        if match is None:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL_RE.findall(match["labels"])}
        try:
            value = int(float(match["value"]))
        except ValueError:
            continue
        key = (
            labels.get("namespace", ""),
            labels.get("pod", ""),
            labels.get("pod_uid", ""),
            labels.get("container", ""),
            labels.get("probe_type", "").lower(),
        )
        result = labels.get("result", "")
        if result in ("successful", "failed", "unknown"):
            row = counts.setdefault(key, {})
            row[result] = row.get(result, 0) + value
    return {k: ProbeCount(v.get("successful", 0), v.get("failed", 0), v.get("unknown", 0)) for k, v in counts.items()}


@dataclass
class _ProbeTrack:
    last: ProbeCount
    failed_base: int
    success_floor: int


@dataclass
class ProbeLedger:
    """The kubelet's probe counters over time (pure bookkeeping, fed by the watch).

    A liveness probe passes once it has succeeded and no failure is newer than a success seen:
    when the first sample already holds failures, their order is unknown, so a new success must
    follow. A startup probe passes once it has succeeded (the kubelet stops running it then).
    """

    tracks: dict[ProbeKey, _ProbeTrack] = field(default_factory=dict)

    def observe(self, counts: Mapping[ProbeKey, ProbeCount]) -> None:
        for key, count in counts.items():
            track = self.tracks.get(key)
            if track is None:
                floor = 0 if count.failed == 0 else count.successful
                self.tracks[key] = _ProbeTrack(count, count.failed, floor)
                continue
            if count.failed > track.failed_base:
                track.failed_base, track.success_floor = count.failed, count.successful
            track.last = count

    def count(self, key: ProbeKey) -> ProbeCount | None:
        track = self.tracks.get(key)
        return track.last if track else None

    def passed(self, key: ProbeKey) -> bool:
        track = self.tracks.get(key)
        if track is None:
            return False
        if key[4] == "startup":
            return track.last.successful > 0
        return track.last.successful > track.success_floor


def _probe_key(state: PodState, container: ContainerState, kind: str) -> ProbeKey:
    return (state.namespace, state.name, state.uid, container.name, kind)


def _lookup(counts: Mapping[ProbeKey, ProbeCount] | None, key: ProbeKey) -> ProbeCount | None:
    if not counts:
        return None
    found = counts.get(key)
    if found is None and not key[2]:  # a pod without uid (hand-written data): match by name
        found = next(
            (v for k, v in counts.items() if (k[0], k[1], k[3], k[4]) == (key[0], key[1], key[3], key[4])), None
        )
    return found


# ---------------------------------------------------------------------------------------------
# Controllers: expected replicas, Deployment availability, Job conditions

Controllers = Mapping[tuple[str, str], Mapping[str, Any] | None]  # (kind, name) -> object; None: unreadable


def _owner_of(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    return _owner(obj) if obj is not None else ("", "")


def top_controller(state: PodState, controllers: Controllers) -> tuple[str, str]:
    """The controller a pod belongs to: ReplicaSet -> its Deployment; ("Pod", name) for a bare pod."""
    if not state.owner_kind:
        return ("Pod", state.name)
    if state.owner_kind == "ReplicaSet":
        parent = _owner_of(controllers.get(("ReplicaSet", state.owner_name)))
        if parent[0] == "Deployment":
            return parent
    return (state.owner_kind, state.owner_name)


def _conditions(obj: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {
        _str(c.get("type")): c
        for c in _get(obj, "status", "conditions") or []
        if isinstance(c, Mapping) and c.get("status") == "True"
    }


def job_outcome(job: Mapping[str, Any] | None) -> Outcome | None:
    """COMPLETE or FAILED from a Job's conditions; None while the Job controller may still retry."""
    true = _conditions(job)
    if "Failed" in true or "FailureTarget" in true:
        return Outcome.FAILED
    if "Complete" in true or "SuccessCriteriaMet" in true:
        return Outcome.COMPLETE
    return None


def job_condition_text(job: Mapping[str, Any] | None) -> str:
    """The Job's deciding condition, e.g. 'Failed: BackoffLimitExceeded: Job has reached the specified backoff limit'."""
    true = _conditions(job)
    for kind in ("Failed", "FailureTarget", "Complete", "SuccessCriteriaMet"):
        cond = true.get(kind)
        if cond is not None:
            parts = [kind, _str(cond.get("reason")), _str(cond.get("message"))]
            return ": ".join(p for p in parts if p)
    return ""


def expected_replicas(kind: str, obj: Mapping[str, Any] | None) -> int | None:
    """How many pods the controller wants: spec.replicas (default 1), a DaemonSet's desiredNumberScheduled."""
    if obj is None:
        return None
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        replicas = _int(_get(obj, "spec", "replicas"))
        return 1 if replicas is None else replicas
    if kind == "DaemonSet":
        return _int(_get(obj, "status", "desiredNumberScheduled"))
    if kind == "Pod":
        return 1
    return None


def _observed(obj: Mapping[str, Any]) -> bool:
    generation = _int(_get(obj, "metadata", "generation")) or 0
    return (_int(_get(obj, "status", "observedGeneration")) or 0) >= generation


def _revision(obj: Mapping[str, Any] | None) -> str:
    return _str(_get(obj, "metadata", "annotations", "deployment.kubernetes.io/revision"))


def _controller_blockers(
    kind: str, name: str, obj: Mapping[str, Any] | None, pods: Sequence[PodState], controllers: Controllers
) -> list[str]:
    """Why the pods of one controller are not all the healthy replicas it wants (empty: they are)."""
    what = f"{kind.lower()}/{name}"
    if kind == "Job":
        return [f"{what}: a Job's pods are judged by its conditions (Complete or Failed), not by readiness"]
    if kind == "Pod":
        return []
    if obj is None:
        return []  # could not be read: counted by the pods seen (noted by the watch)
    blockers = []
    if not _observed(obj):
        blockers.append(f"{what}: its controller has not observed the latest spec yet")
    want = expected_replicas(kind, obj)
    status = _get(obj, "status") or {}
    if kind == "Deployment":
        revision = _revision(obj)
        old = [
            s.name
            for s in pods
            if s.owner_kind == "ReplicaSet" and _revision(controllers.get(("ReplicaSet", s.owner_name))) != revision
        ]
        if old:
            blockers.append(f"{what}: pod(s) of an older ReplicaSet still serving: {', '.join(old)}")
        current = [s for s in pods if s.name not in old]
        updated = _int(status.get("updatedReplicas")) or 0
        total = _int(status.get("replicas")) or 0
        if want is not None and total > updated:
            blockers.append(f"{what}: {total - updated} pod(s) of an older ReplicaSet still serving")
        available = _conditions(obj).get("Available")
        if available is None:
            blockers.append(f"{what}: condition Available is not True yet")
        if want is not None and len(current) < want:
            blockers.append(f"{what}: {len(current)} of {want} replica(s) of the current revision Ready")
        return blockers
    if kind == "StatefulSet":
        update = _str(status.get("updateRevision"))
        old = [s.name for s in pods if update and s.label("controller-revision-hash") not in ("", update)]
        if old:
            blockers.append(f"{what}: pod(s) of an older revision still serving: {', '.join(old)}")
    if want is None:
        blockers.append(f"{what}: the number of pods it wants is not known yet")
    elif len(pods) < want:
        blockers.append(f"{what}: {len(pods)} of {want} replica(s) Ready")
    return blockers


# ---------------------------------------------------------------------------------------------
# Healthy: every replica Ready, zero restarts, liveness and startup probes passed


@dataclass(frozen=True)
class HealthGate:
    """Whether a workload whose pods are all Ready is Healthy yet, and on what evidence."""

    ok: bool
    waiting: tuple[str, ...]
    source: str
    detail: str
    retry_in: float | None = None  # the probe window passes in this many seconds


METRICS_SOURCE: Final = "kubelet prober metrics"
WINDOW_SOURCE: Final = "probe window from the pod spec"
READY_ONLY_WINDOW: Final = (
    10.0  # seconds a container with no liveness/startup probe must run unrestarted (the kubelet's first back-off)
)
READY_ONLY_SOURCE: Final = (
    f"Ready condition and {READY_ONLY_WINDOW:.0f} s running without a restart (no liveness or startup probe)"
)


def healthy_gate(
    states: Sequence[PodState],
    controllers: Controllers,
    *,
    now: datetime,
    ledger: ProbeLedger | None = None,
    metrics_nodes: Iterable[str] = (),
) -> HealthGate:
    """Decide whether Ready pods are Healthy: replicas, current revision, zero restarts, probe evidence.

    Liveness and startup probes need evidence per container: the kubelet's prober counters where
    its node's metrics could be read (metrics_nodes), else the probe window of the pod spec
    (initialDelaySeconds + periodSeconds x (failureThreshold - 1) + timeoutSeconds) since the
    container started. Readiness needs none beyond the Ready condition. A container with neither a
    liveness nor a startup probe must have run READY_ONLY_WINDOW seconds without a restart.
    """
    live = [s for s in states if s.live]
    waiting: list[str] = []
    groups: dict[tuple[str, str], list[PodState]] = {}
    for s in live:
        groups.setdefault(top_controller(s, controllers), []).append(s)
    for (kind, name), pods in sorted(groups.items()):
        waiting += _controller_blockers(kind, name, controllers.get((kind, name)), pods, controllers)
    for s in live:
        for c in s.containers:
            if c.restarts:
                waiting.append(f"pod/{s.name} container {c.name} restarted {c.restarts} time(s)")
    readable = set(metrics_nodes)
    by_metrics: list[str] = []
    by_window: list[str] = []
    retry: float | None = None
    for s in live:
        for c in s.containers:
            if c.init:
                continue
            for probe in c.probes:
                if probe.kind == "readiness":
                    continue
                where = f"pod/{s.name} container {c.name} {probe.kind}"
                if ledger is not None and s.node in readable:
                    key = _probe_key(s, c, probe.kind)
                    count = ledger.count(key)
                    shown = f"{count.successful} successful, {count.failed} failed" if count else "no runs yet"
                    if ledger.passed(key):
                        by_metrics.append(f"{where}: {shown}")
                    else:
                        waiting.append(
                            f"{where}: no success since its last failure in the kubelet's counters ({shown})"
                        )
                    continue
                if c.started_at is None:
                    waiting.append(f"{where}: the container's start time is not known yet")
                    continue
                left = probe.window - (now - c.started_at).total_seconds()
                if left > 0:
                    waiting.append(f"{where}: probe window {probe.describe_window()} not over ({left:.1f} s left)")
                    retry = left if retry is None else min(retry, left)
                else:
                    started = c.started_at.strftime("%H:%M:%SZ")
                    by_window.append(f"{where}: {probe.describe_window()} since {started}, no restart")
    for s in live:
        for c in s.containers:
            if c.init or any(p.kind != "readiness" for p in c.probes):
                continue
            # No liveness or startup probe: the Ready condition is set the moment the container
            # starts, even one that exits a second later. Only time running without a restart
            # is evidence then.
            where = f"pod/{s.name} container {c.name}"
            if c.started_at is None:
                waiting.append(f"{where}: the container's start time is not known yet")
                continue
            left = READY_ONLY_WINDOW - (now - c.started_at).total_seconds()
            if left > 0:
                waiting.append(
                    f"{where}: running {READY_ONLY_WINDOW:.0f} s without a restart not over ({left:.1f} s left)"
                )
                retry = left if retry is None else min(retry, left)
    if by_metrics and by_window:
        source = f"{METRICS_SOURCE} and {WINDOW_SOURCE}"
    elif by_metrics:
        source = METRICS_SOURCE
    elif by_window:
        source = WINDOW_SOURCE
    else:
        source = READY_ONLY_SOURCE
    ready = f"{len(live)} pod(s) Ready"
    detail = "; ".join([ready, *by_metrics, *by_window])
    return HealthGate(not waiting, tuple(waiting), source, detail, retry)


# ---------------------------------------------------------------------------------------------
# The workload's outcome


def not_ready_failures(
    state: PodState,
    events: Sequence[Mapping[str, Any]],
    probe_counts: Mapping[ProbeKey, ProbeCount] | None = None,
    now: datetime | None = None,
) -> tuple[ContainerState, ProbeSpec, ProbeFailures] | None:
    """A running container that is alive but whose readiness probe failed past its failureThreshold.

    Past the threshold means both: at least failureThreshold failures since the container started
    (Unhealthy events, or the kubelet's counters), and the readiness probe's window
    (initialDelaySeconds + periodSeconds x (failureThreshold - 1) + timeoutSeconds) over since
    then, so an app that is still starting is not judged on the kubelet's first quick tries.
    Alive: a liveness probe, when there is one, has passed (in the counters, or its window is over
    with no failure); while it fails or has not run, the kubelet may yet kill the container, and
    that crash loop is the outcome to report.
    """
    if state.phase != "Running" or state.ready or state.terminating:
        return None
    moment = now or datetime.now(UTC)
    for c in state.containers:
        probe = c.probe("readiness")
        if c.init or c.ready or c.state != "running" or probe is None or c.started_at is None:
            continue
        if (moment - c.started_at).total_seconds() < probe.window:
            continue
        if not _alive(state, c, events, probe_counts, moment):
            continue
        seen = probe_failures(events, state.name, c, "readiness", c.started_at)
        count = _lookup(probe_counts, _probe_key(state, c, "readiness"))
        if count is not None and c.restarts == 0 and count.successful == 0 and count.failed >= probe.failure_threshold:
            metrics = ProbeFailures(
                "readiness",
                count.failed,
                seen.message if seen else "",
                f"kubelet prober metrics: readiness of pod/{state.name} container {c.name} "
                f"{count.failed} failed, {count.successful} successful",
            )
            if seen is None or seen.count < probe.failure_threshold:
                seen = metrics
        if seen is not None and seen.count >= probe.failure_threshold:
            return c, probe, seen
    return None


def _alive(
    state: PodState,
    c: ContainerState,
    events: Sequence[Mapping[str, Any]],
    probe_counts: Mapping[ProbeKey, ProbeCount] | None,
    now: datetime,
) -> bool:
    """The container's liveness probe (if any) has passed: the kubelet will not kill it for now."""
    probe = c.probe("liveness")
    if probe is None:
        return True
    if probe_failures(events, state.name, c, "liveness", c.started_at) is not None:
        return False
    count = _lookup(probe_counts, _probe_key(state, c, "liveness"))
    if count is not None and c.restarts == 0:
        return count.successful > 0 and count.failed == 0
    counted = probe_counts is not None and any(k[:2] == (state.namespace, state.name) for k in probe_counts)
    if counted:
        return False  # the kubelet's counters are read but show no liveness run yet
    return c.started_at is not None and (now - c.started_at).total_seconds() >= probe.window


def _effective(state: PodState) -> Outcome | None:
    """A pod's outcome as it counts for the workload: a Job's finished pods are judged by the Job."""
    if state.owner_kind == "Job" and state.outcome in (Outcome.FAILED, Outcome.COMPLETE):
        return None
    return state.outcome


def _decide(
    states: Sequence[PodState],
    events: Sequence[Mapping[str, Any]],
    emulated: bool,
    min_pods: int,
    controllers: Controllers | None = None,
    probe_counts: Mapping[ProbeKey, ProbeCount] | None = None,
    now: datetime | None = None,
) -> Outcome | None:
    known: Controllers = controllers or {}
    live = [s for s in states if s.live]
    failures: list[Outcome] = []
    for s in live:
        outcome = _effective(s)
        if outcome is not None and outcome in FAILURES:
            failures.append(outcome)
        elif outcome is None and not_ready_failures(s, events, probe_counts, now) is not None:
            failures.append(Outcome.NOT_READY)
        # An event may tell before the status does (the scheduler writes both, in either order).
        if s.scheduled is None and _failed_scheduling(events, s.name):
            failures.append(Outcome.UNSCHEDULABLE)
    jobs = sorted({s.owner_name for s in states if s.owner_kind == "Job"})
    job_results = [job_outcome(known.get(("Job", j))) for j in jobs]
    failures += [o for o in job_results if o is Outcome.FAILED]
    if failures:
        return min(failures, key=_PRECEDENCE.index)
    others = [s for s in live if s.owner_kind != "Job"]
    if jobs and all(o is Outcome.COMPLETE for o in job_results) and all(s.outcome is Outcome.COMPLETE for s in others):
        return Outcome.COMPLETE
    if not jobs and others and all(s.outcome is Outcome.COMPLETE for s in others):
        return Outcome.COMPLETE
    if not jobs and live and len(live) >= min_pods and all(s.outcome is Outcome.HEALTHY for s in live):
        return Outcome.RAN_EMULATED if emulated else Outcome.HEALTHY
    if live and all(s.outcome is Outcome.PENDING for s in live):
        return Outcome.PENDING
    return None


def _failed_scheduling(events: Iterable[Mapping[str, Any]], pod_name: str) -> list[str]:
    """The scheduler's FailedScheduling messages for a pod."""
    return [
        _str(e.get("message")) for e in _events_for(events, pod_name) if _str(e.get("reason")) == "FailedScheduling"
    ]


def classify_workload(
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    emulated: bool = False,
    min_pods: int = 1,
    controllers: Controllers | None = None,
    probe_counts: Mapping[ProbeKey, ProbeCount] | None = None,
    now: datetime | None = None,
) -> Outcome | None:
    """The outcome of a workload's pods right now; None while undecided (starting, running not ready).

    Failure states win over health: one crash-looping pod makes the workload CRASH_LOOP. NOT_READY:
    a running container's readiness probe failed past its failureThreshold. FAILED / COMPLETE:
    a Job's conditions (the Job controller may retry a failed pod until backoffLimit), or a bare
    pod's phase. PENDING means every pod is still waiting to start. With emulated=True a healthy
    workload is RAN_EMULATED, never HEALTHY. HEALTHY here is only the candidate: watch_workload
    confirms it with healthy_gate (replicas, revision, restarts, probe evidence).
    """
    return _decide([classify_pod(p) for p in pods], events, emulated, min_pods, controllers, probe_counts, now)


def has_exec_format_error(texts: Iterable[str]) -> bool:
    return any(EXEC_FORMAT_RE.search(t) for t in texts if t)


# ---------------------------------------------------------------------------------------------
# Causes, from evidence


def _os_arch(platform: str) -> tuple[str, str]:
    parts = platform.strip().lower().split("/")
    return (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0] if parts else "")


def exec_format_explanation(image_platforms: Sequence[str], node_platform: str) -> tuple[str, bool, str]:
    """Honest words for an exec format error: (explanation, platform difference seen, image platform shown).

    "for another CPU architecture" only when a platform the harness knows for the image (or every
    entry of its index) differs from the node's.
    """
    known = [p for p in image_platforms if p]
    node = node_platform.strip()
    if known and node:
        matching = [p for p in known if _os_arch(p) == _os_arch(node)]
        if not matching:
            shown = ", ".join(known)
            what = f"the image is for {shown}" if len(known) == 1 else f"the image's index holds only {shown}"
            return (
                f"the image's binaries are for another CPU architecture than the node's: {what}, the node is {node}",
                True,
                shown,
            )
        image = matching[0]
        return (
            f"exec format error from a {image} image on a {node} node: the entrypoint is not an executable for this CPU",
            False,
            image,
        )
    if known:
        shown = ", ".join(known)
        return f"exec format error from a {shown} image (node platform unknown)", False, shown
    if node:
        return f"exec format error on a {node} node (image platform unknown)", False, ""
    return "exec format error (image and node platform unknown)", False, ""


def diagnose(
    pod: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] = (),
    log_lines: Sequence[str] = (),
    *,
    image_platforms: Mapping[str, Sequence[str]] | None = None,
    node_platform: str = "",
    probe_counts: Mapping[ProbeKey, ProbeCount] | None = None,
) -> Cause | None:
    """The cause of a pod's trouble from its status, its events, its (previous) container log and known platforms."""
    return _cause(
        classify_pod(pod),
        events,
        log_lines,
        image_platforms=image_platforms,
        node_platform=node_platform,
        probe_counts=probe_counts,
    )


def _pick_container(state: PodState) -> ContainerState | None:
    if state.culprit is not None:
        return state.culprit
    troubled = [c for c in state.containers if not c.ready and (c.state != "running" or c.last_reason)]
    if troubled:
        return troubled[0]
    return next((c for c in state.containers if not c.ready and not c.init), None)


def _probe_kill(events: Sequence[Mapping[str, Any]], pod: str, c: ContainerState) -> tuple[str, str] | None:
    """(probe kind, the kubelet's Killing message) when the kubelet killed the container for a failed probe.

    Only a kill of the instance that ended last counts: the Killing event must be no older than
    that instance's start (a kill long ago does not explain a later crash).
    """
    ended_start = c.started_at if c.state == "terminated" else c.last_started_at
    floor = ended_start.replace(microsecond=0) if ended_start is not None else None
    for e in reversed(_events_for(events, pod)):
        if _str(e.get("reason")) != "Killing":
            continue
        last = _event_last(e)
        if floor is not None and last is not None and last < floor:
            continue
        text = _str(e.get("message"))
        named = _event_container(e)
        if named and named != c.name:
            continue
        match = re.search(r"failed (liveness|startup) probe", text, re.IGNORECASE)
        if match:
            return match.group(1).lower(), text.strip()
    return None


def _platforms_for(c: ContainerState, image_platforms: Mapping[str, Sequence[str]] | None) -> tuple[str, ...]:
    if not image_platforms:
        return ()
    digest = c.image_id.rpartition("@")[2] if c.image_id else ""
    for ref in (digest, c.spec_image, c.image):  # the digest that ran first: a tag may have moved
        if ref and ref in image_platforms:
            return tuple(image_platforms[ref])
    return ()


def _cause(
    state: PodState,
    events: Sequence[Mapping[str, Any]],
    log_lines: Sequence[str],
    *,
    image_platforms: Mapping[str, Sequence[str]] | None = None,
    node_platform: str = "",
    probe_counts: Mapping[ProbeKey, ProbeCount] | None = None,
    now: datetime | None = None,
) -> Cause | None:
    pod_events = _events_for(events, state.name)
    warnings: list[str] = []
    for e in pod_events:
        if e.get("type") == "Warning":
            text = f"{_str(e.get('reason'))}: {_one_line(_str(e.get('message')), 300)}"
            if text not in warnings:
                warnings.append(text)
    warnings = warnings[-6:]
    failed_scheduling = any(e.get("reason") == "FailedScheduling" for e in pod_events)
    if (
        state.unschedulable_message
        or state.outcome is Outcome.UNSCHEDULABLE
        or (failed_scheduling and not state.scheduled)  # the event came before the PodScheduled condition
    ):
        message = state.unschedulable_message or next(
            (_str(e.get("message")) for e in reversed(pod_events) if e.get("reason") == "FailedScheduling"), ""
        )
        evidence = (
            f"condition PodScheduled of pod/{state.name}"
            if state.unschedulable_message
            else f"event FailedScheduling on pod/{state.name}"
        )
        return Cause(reason="Unschedulable", message=message, pod=state.name, events=tuple(warnings), evidence=evidence)
    not_ready = not_ready_failures(state, events, probe_counts, now)
    if not_ready is not None:
        ready_c, ready_probe, ready_seen = not_ready
        ready_total = len([x for x in state.containers if not x.init])
        ready_now = len([x for x in state.containers if not x.init and x.ready])
        return Cause(
            reason="readiness probe failed",
            message=ready_seen.message,
            pod=state.name,
            container=ready_c.name,
            image=ready_c.image,
            events=tuple(warnings),
            instance=ready_c.instance,
            probe="readiness",
            explanation=(
                f"Running, {ready_now}/{ready_total} Ready: the readiness probe failed {ready_seen.count} time(s) "
                f"since the container started (failureThreshold {ready_probe.failure_threshold})"
                + (f": {_one_line(ready_seen.message, 200)}" if ready_seen.message else "")
            ),
            evidence=ready_seen.event,
        )
    c = _pick_container(state)
    if c is None:
        if state.phase == "Failed" and (state.reason or state.message):
            return Cause(
                reason=state.reason or "Failed",
                message=state.message,
                pod=state.name,
                events=tuple(warnings),
                evidence=f"status.reason/message of pod/{state.name}",
            )
        if not warnings:
            return None
        return Cause(
            reason="not ready",
            message=warnings[-1],
            pod=state.name,
            events=tuple(warnings),
            evidence=f"event {warnings[-1].split(':', 1)[0]} on pod/{state.name}",
        )
    if c.state == "terminated":
        exit_code, term_reason, term_message, instance = c.exit_code, c.reason, c.message, c.instance
    else:
        exit_code, term_reason, term_message = c.last_exit_code, c.last_reason, c.last_message
        instance = short_id(c.last_container_id) or c.instance
    waiting_message = c.message if c.state == "waiting" else ""
    container_events = [e for e in pod_events if _event_container(e) in ("", c.name)]
    event_messages = [_str(e.get("message")) for e in container_events]
    exec_format = has_exec_format_error([*log_lines, term_message, waiting_message, *event_messages])
    kill = _probe_kill(pod_events, state.name, c) if (c.restarts or c.last_reason or c.state != "running") else None
    where = f"pod/{state.name} container {c.name}" + (f" instance {instance}" if instance else "")
    explanation = ""
    evidence = ""
    probe_kind = ""
    image_platform = ""
    mismatch = False
    log_line = next((t for t in reversed(log_lines) if EXEC_FORMAT_RE.search(t)), "")
    if exec_format:
        reason = "exec format error"
        known = _platforms_for(c, image_platforms)
        explanation, mismatch, image_platform = exec_format_explanation(known, node_platform)
        if log_line:
            evidence = f"log line {log_line.strip()!r} of {where}"
        elif EXEC_FORMAT_RE.search(term_message):
            evidence = f"termination message of {where}: {_one_line(term_message, 200)!r}"
        elif EXEC_FORMAT_RE.search(waiting_message):
            evidence = f"waiting message of {where}: {_one_line(waiting_message, 200)!r}"
        else:
            e = next(e for e in container_events if EXEC_FORMAT_RE.search(_str(e.get("message"))))
            evidence = f"event {_str(e.get('reason'))} on pod/{state.name}: {_one_line(_str(e.get('message')), 200)!r}"
        image = c.spec_image or c.image
        if known:
            evidence += f"; image {image} is {', '.join(known)} (as the harness built and delivered it)"
        if node_platform:
            evidence += f"; node {state.node or '?'} is {node_platform} (status.nodeInfo)"
    elif kill is not None:
        probe_kind, killing = kill
        reason = f"{probe_kind} probe failed"
        kill_seen = probe_failures(events, state.name, c, probe_kind)
        spec = c.probe(probe_kind)
        threshold = f" (failureThreshold {spec.failure_threshold})" if spec else ""
        message = kill_seen.message if kill_seen else killing
        explanation = (
            f"the kubelet killed the container after its {probe_kind} probe failed{threshold}: "
            f"{_one_line(message, 200)}"
        )
        evidence = (kill_seen.event + "; " if kill_seen else "") + f"event Killing on pod/{state.name}: {killing!r}"
    elif c.state == "waiting" and c.reason and c.reason != CRASH_LOOP_REASON:
        reason = c.reason
        evidence = f"waiting reason {c.reason} of pod/{state.name} container {c.name}"
    elif term_reason:
        reason = term_reason
        evidence = f"{'' if c.state == 'terminated' else 'last '}terminated state of {where}"
    elif c.state == "running" and not c.ready:
        reason = "not ready"
    else:
        reason = c.reason or c.state
    probe_warning = next((w for w in reversed(warnings) if w.startswith("Unhealthy:")), "")
    evidence_line = next((t for t in [*reversed(log_lines), *event_messages] if EXEC_FORMAT_RE.search(t)), "")
    if kill is not None and not exec_format:
        seen_kill = probe_failures(events, state.name, c, kill[0])
        message = seen_kill.message if seen_kill else kill[1]
    elif term_message:
        message = term_message
    elif waiting_message and c.reason != CRASH_LOOP_REASON:
        message = waiting_message
    elif exec_format and evidence_line:
        message = evidence_line
    else:
        message = probe_warning or (warnings[-1] if warnings else waiting_message)
    if not evidence and log_lines:
        evidence = f"last log line of {where}: {_one_line(log_lines[-1], 160)!r}"
    elif not evidence and message:
        evidence = f"pod/{state.name}: {_one_line(message, 160)!r}"
    return Cause(
        reason=reason,
        exit_code=exit_code,
        termination_reason=term_reason,
        message=message.strip(),
        log_lines=tuple(log_lines[-LOG_TAIL_LINES:]),
        exec_format_error=exec_format,
        pod=state.name,
        container=c.name,
        image=c.image,
        events=tuple(warnings),
        instance=instance,
        explanation=explanation,
        evidence=evidence,
        probe=probe_kind,
        image_platform=image_platform,
        node_platform=node_platform,
        platform_mismatch=mismatch,
    )


def mark_emulated(verdict: Verdict, explanation: str) -> Verdict:
    """Never let a workload that only ran under emulation pass as plain HEALTHY."""
    note = Evidence(verdict.decided_at, "note", "harness", f"emulation: {explanation}", verdict.seconds)
    timeline = (*verdict.timeline, note)
    if verdict.outcome is Outcome.HEALTHY:
        summary = (
            f"ran under emulation after {verdict.seconds:.1f} s ({explanation}); "
            "the pods became ready only because the host emulates the image's architecture, "
            "so the incident is masked here, not fixed"
        )
        return replace(verdict, outcome=Outcome.RAN_EMULATED, summary=summary, timeline=timeline)
    return replace(verdict, summary=f"{verdict.summary} (note: {explanation})", timeline=timeline)


def created_after(moment: datetime) -> Callable[[Mapping[str, Any]], bool]:
    """A pod filter for watch_workload: pods created at or after moment (second resolution)."""
    floor = moment.replace(microsecond=0)

    def accept(pod: Mapping[str, Any]) -> bool:
        stamp = _parse_time(_get(pod, "metadata", "creationTimestamp"))
        return stamp is None or stamp >= floor

    return accept


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def selector_string(label_selector: Mapping[str, Any]) -> str:
    """A LabelSelector object (matchLabels / matchExpressions) as the string list calls take."""
    parts = [f"{k}={v}" for k, v in sorted((label_selector.get("matchLabels") or {}).items())]
    for expr in label_selector.get("matchExpressions") or []:
        key, op = _str(expr.get("key")), _str(expr.get("operator"))
        values = ",".join(sorted(str(v) for v in expr.get("values") or []))
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
