"""Watching a workload: the tracker of everything seen, the watch loop, and the verdict."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from kubernetes.client import AppsV1Api, BatchV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from harness.errors import ClusterGone, HarnessError, WatchStopped
from harness.outcomes.api import (
    _Api,
    _host,
    _Message,
    _pump,
    _response_bytes,
    _Stream,
)
from harness.outcomes.classify import (
    Controllers,
    HealthGate,
    ProbeCount,
    ProbeKey,
    ProbeLedger,
    _cause,
    _decide,
    _failed_scheduling,
    _pick_container,
    classify_pod,
    healthy_gate,
    job_condition_text,
    job_outcome,
    not_ready_failures,
    parse_probe_metrics,
    top_controller,
)
from harness.outcomes.model import (
    _TIMELINE_LOG_LINES,
    DECISIVE,
    FAILURES,
    LOG_GONE,
    LOG_TAIL_LINES,
    PROBE_EVENT_RE,
    Cause,
    ContainerState,
    Evidence,
    EvidenceKind,
    HealthEvidence,
    ImageRun,
    Obj,
    Outcome,
    PodState,
    Verdict,
    _get,
    _int,
    _one_line,
    _outcome_set,
    _str,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# The tracker: everything seen so far, and the evidence it produced


class _Clock:
    def __init__(self) -> None:
        self.mono0 = time.monotonic()
        self.wall0 = datetime.now(UTC)

    def elapsed(self) -> float:
        return time.monotonic() - self.mono0

    def wall(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.elapsed())


def _subject(pod: str, state: PodState | None, container: ContainerState | None) -> str:
    if container is None or state is None or len(state.containers) <= 1:
        return f"pod/{pod}"
    return f"pod/{pod}/{container.subject_name}"


_CONTROLLER_KINDS: Final = frozenset({"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job"})


class _Tracker:
    def __init__(
        self,
        clock: _Clock,
        on_evidence: Callable[[Evidence], None] | None,
        pod_filter: Callable[[Mapping[str, Any]], bool] | None,
    ) -> None:
        self.clock = clock
        self.on_evidence = on_evidence
        self.pod_filter = pod_filter
        self.pods: dict[str, Obj] = {}
        self.states: dict[str, PodState] = {}
        self.names: list[str] = []
        self.events: dict[str, Obj] = {}
        self.orphan_events: dict[str, Obj] = {}
        self.event_keys: set[tuple[str, ...]] = set()
        self.timeline: list[Evidence] = []
        self.max_restarts = 0
        self.ready_seen = False
        self.phases: set[str] = set()
        self.waiting_reasons: set[str] = set()
        self.terminated_reasons: set[str] = set()
        self.exit_codes: set[int] = set()
        self.probe_failures: set[str] = set()
        self.images: dict[tuple[str, str, str], ImageRun] = {}
        self.logs: dict[str, tuple[str, ...]] = {}  # container ID -> log lines
        self.shown_logs: dict[str, tuple[str, ...]] = {}  # pod/container -> last lines shown
        self.last_note = ""

    def note_once(self, text: str) -> None:
        """A note from the harness, unless the last one said the same."""
        if text != self.last_note:
            self.last_note = text
            self.add("note", "harness", text)

    def add(self, kind: EvidenceKind, subject: str, text: str) -> None:
        evidence = Evidence(self.clock.wall(), kind, subject, text, round(self.clock.elapsed(), 3))
        self.timeline.append(evidence)
        if self.on_evidence is not None:
            self.on_evidence(evidence)

    # pods
    def pod_changed(self, kind: str, raw: Obj) -> None:
        name = _str(_get(raw, "metadata", "name"))
        if not name:
            return
        if self.pod_filter is not None and name not in self.pods and not self.pod_filter(raw):
            return
        if kind == "DELETED":
            if self.pods.pop(name, None) is not None:
                self.states.pop(name, None)
                self.add("state", f"pod/{name}", "Deleted")
            return
        new = classify_pod(raw)
        old = self.states.get(name)
        self.pods[name] = raw
        self.states[name] = new
        if name not in self.names:
            self.names.append(name)
            self._adopt_orphan_events(name)
        self._record_facts(new)
        self._diff(old, new)

    def replace_pods(self, items: Sequence[Obj]) -> None:
        listed = {_str(_get(i, "metadata", "name")) for i in items}
        for gone in [n for n in self.pods if n not in listed]:
            self.pod_changed("DELETED", self.pods[gone])
        for item in items:
            self.pod_changed("MODIFIED", item)

    def _record_facts(self, state: PodState) -> None:
        self.max_restarts = max(self.max_restarts, state.restarts)
        if state.ready:
            self.ready_seen = True
        if state.unschedulable_message:
            self.phases.add("Unschedulable")
        for c in state.containers:
            if c.reason:
                self.phases.add(c.reason)
            if c.state == "running":
                self.phases.add("Running")
            if c.last_reason:
                self.phases.add(c.last_reason)
                self.terminated_reasons.add(c.last_reason)
            if c.state == "waiting" and c.reason:
                self.waiting_reasons.add(c.reason)
            if c.state == "terminated" and c.reason:
                self.terminated_reasons.add(c.reason)
            if c.state == "terminated" and c.exit_code is not None:
                self.exit_codes.add(c.exit_code)
            if c.last_exit_code is not None:
                self.exit_codes.add(c.last_exit_code)
            if c.image_id:
                key = (state.name, c.subject_name, c.image_id)
                self.images.setdefault(
                    key, ImageRun(state.name, c.subject_name, c.spec_image or c.image, c.image_id, state.node)
                )

    def _diff(self, old: PodState | None, new: PodState) -> None:
        name = new.name
        if old is None:
            where = f" on {new.node}" if new.node else ""
            self.add("state", f"pod/{name}", f"seen: {new.phase or 'Unknown'}{where}")
        elif old.phase != new.phase:
            self.add("state", f"pod/{name}", f"phase {new.phase}")
        if new.unschedulable_message and (old is None or old.unschedulable_message != new.unschedulable_message):
            self.add("state", f"pod/{name}", f"Unschedulable: {_one_line(new.unschedulable_message, 240)}")
        if new.terminating and (old is None or not old.terminating):
            self.add("state", f"pod/{name}", "Terminating")
        before = {(c.init, c.name): c for c in (old.containers if old else ())}
        for c in new.containers:
            prev = before.get((c.init, c.name))
            sig = (c.state, c.reason, c.restarts, c.ready, c.exit_code)
            if prev is None or sig != (prev.state, prev.reason, prev.restarts, prev.ready, prev.exit_code):
                if prev is None and c.state == "waiting" and c.reason in ("ContainerCreating", "PodInitializing"):
                    continue
                self.add("state", _subject(name, new, c), c.describe())
        if old is not None and old.ready != new.ready and new.phase == "Running":
            self.add("state", f"pod/{name}", "Ready" if new.ready else "no longer Ready")

    # events
    def _event_key(self, e: Mapping[str, Any]) -> tuple[str, ...]:
        return (
            _str(_get(e, "metadata", "uid")) or _str(_get(e, "metadata", "name")),
            str(e.get("count") or ""),
            str(_get(e, "series", "count") or ""),
            _str(e.get("lastTimestamp")),
        )

    def seed_events(self, items: Sequence[Obj]) -> None:
        """Events listed at the start: only those about the pods we watch (their history)."""
        for e in items:
            if _get(e, "involvedObject", "kind") == "Pod" and _get(e, "involvedObject", "name") in self.pods:
                self._take_event(e)
            else:
                self.event_keys.add(self._event_key(e))

    def event_changed(self, kind: str, raw: Obj) -> None:
        if kind == "DELETED":
            return
        involved = _str(_get(raw, "involvedObject", "kind"))
        name = _str(_get(raw, "involvedObject", "name"))
        if involved == "Pod":
            if name in self.names:
                self._take_event(raw)
            else:
                self.orphan_events[_str(_get(raw, "metadata", "uid")) or str(len(self.orphan_events))] = raw
                if len(self.orphan_events) > 500:
                    self.orphan_events.pop(next(iter(self.orphan_events)))
        elif involved in _CONTROLLER_KINDS and raw.get("type") == "Warning":
            self._take_event(raw)

    def replace_events(self, items: Sequence[Obj]) -> None:
        for e in items:
            self.event_changed("MODIFIED", e)

    def _adopt_orphan_events(self, pod: str) -> None:
        for key, e in list(self.orphan_events.items()):
            if _get(e, "involvedObject", "name") == pod:
                del self.orphan_events[key]
                self._take_event(e)

    def _take_event(self, e: Obj) -> None:
        key = self._event_key(e)
        if key in self.event_keys:
            return
        self.event_keys.add(key)
        self.events[key[0]] = e
        reason, message = _str(e.get("reason")), _str(e.get("message"))
        count = _int(_get(e, "series", "count")) or _int(e.get("count")) or 1
        text = f"{reason}: {_one_line(message, 240)}" + (f" (x{count})" if count > 1 else "")
        if e.get("type") == "Warning" and not text.startswith("Warning"):
            text = "Warning " + text
        is_probe = reason == "Unhealthy" or "probe failed" in message.lower()
        probe_match = PROBE_EVENT_RE.match(message) if reason == "Unhealthy" else None
        if probe_match is not None:
            self.probe_failures.add(probe_match.group(1).lower())
        kind: EvidenceKind = "probe" if is_probe else "event"
        subject = f"{_str(_get(e, 'involvedObject', 'kind')).lower()}/{_str(_get(e, 'involvedObject', 'name'))}"
        self.add(kind, subject, text)

    # logs
    def terminations_without_logs(self) -> list[tuple[str, str, bool, str]]:
        """(pod, container, previous, container ID) for every terminated container not read yet."""
        wanted: list[tuple[str, str, bool, str]] = []
        for state in self.states.values():
            for c in state.containers:
                # Only failures: an init container that completed (exit 0) has nothing to tell.
                if c.state == "terminated" and c.exit_code != 0 and c.container_id and c.container_id not in self.logs:
                    wanted.append((state.name, c.name, False, c.container_id))
                elif (
                    c.state != "terminated"
                    and c.last_exit_code != 0
                    and c.last_container_id
                    and c.last_container_id not in self.logs
                ):
                    wanted.append((state.name, c.name, True, c.last_container_id))
        return wanted

    def log_read(self, pod: str, container: str, container_id: str, lines: tuple[str, ...]) -> None:
        self.logs[container_id] = lines
        key = f"{pod}/{container}"
        tail = lines[-_TIMELINE_LOG_LINES:]
        if not tail or self.shown_logs.get(key) == tail:
            return
        self.shown_logs[key] = tail
        state = self.states.get(pod)
        c = next((x for x in state.containers if x.name == container), None) if state else None
        subject = _subject(pod, state, c)
        if len(lines) > len(tail):
            self.add("log", subject, f"(last {len(tail)} of {len(lines)} lines)")
        for line in tail:
            self.add("log", subject, line)

    def live_states(self) -> list[PodState]:
        return list(self.states.values())

    def event_list(self) -> list[Obj]:
        return list(self.events.values())

    def restart_snapshot(self) -> dict[str, int]:
        return {n: s.restarts for n, s in self.states.items() if s.live}


# ---------------------------------------------------------------------------------------------
# Watching a workload


def _read_log(api: _Api, core: CoreV1Api, namespace: str, pod: str, container: str, previous: bool) -> tuple[str, ...]:
    """The container's log; previous=True reads the last terminated instance. 400/404: no log (yet)."""
    attempts = [previous, False] if previous else [False]
    for prev in attempts:
        try:
            resp = api.call(
                f"reading the log of {pod}/{container}",
                core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                previous=prev,
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=64 * 1024,
                _preload_content=False,
                _request_timeout=(5, 20),
            )
        except HarnessError as exc:
            if isinstance(exc, ClusterGone):
                raise
            cause = exc.__cause__
            if isinstance(cause, ApiException) and cause.status in (400, 404):
                continue
            raise
        text = _response_bytes(resp).decode("utf-8", "replace")
        if text.startswith(LOG_GONE):  # a 200 whose body says the instance was removed: not its log
            continue
        return tuple(line.rstrip("\r") for line in text.splitlines() if line.strip())
    return ()


def _read_new_logs(api: _Api, core: CoreV1Api, namespace: str, tracker: _Tracker) -> None:
    """Read the log of every container that exited since the last look; a failed read is only noted."""
    for pod, container, previous, cid in tracker.terminations_without_logs():
        try:
            lines = _read_log(api, core, namespace, pod, container, previous)
        except ClusterGone:
            raise
        except HarnessError as exc:
            tracker.add("note", f"pod/{pod}", f"could not read the log of {container}: {exc.cause}")
            lines = ()
        tracker.log_read(pod, container, cid, lines)


def watch_workload(
    core: CoreV1Api,
    namespace: str,
    selector: str,
    *,
    expect: Outcome | Collection[Outcome],
    timeout: float,
    fail_on: Collection[Outcome] | None = None,
    on_evidence: Callable[[Evidence], None] | None = None,
    logs: bool = True,
    emulated: bool = False,
    min_pods: int = 1,
    stable_seconds: float = 1.5,
    pod_filter: Callable[[Mapping[str, Any]], bool] | None = None,
    min_restarts: int = 0,
    gone_after: float = 8.0,
    image_platforms: Mapping[str, tuple[str, ...]] | None = None,
    stop: threading.Event | None = None,
    apps: AppsV1Api | None = None,
    batch: BatchV1Api | None = None,
    probe_poll: float = 1.0,
) -> Verdict:
    """Watch the pods matching selector until an expected outcome, a failure, or the deadline.

    Stops at the first outcome in expect; also stops at any other decisive outcome (failures,
    healthy, complete, ran-emulated) unless fail_on narrows that set: pass fail_on=set() to wait
    for expect until the deadline whatever happens.

    HEALTHY is what an SRE means by it: every replica the pods' controller wants is Ready (its
    spec.replicas, a DaemonSet's desiredNumberScheduled), a Deployment is Available with no pod of
    an older ReplicaSet serving, no container restarted, and each liveness and startup probe has
    passed: in the kubelet's prober counters (read through the API server's node proxy every
    probe_poll seconds while Healthy is pending) or, where those cannot be read, once the probe's
    window from the pod spec has passed since the container started. All of that held for
    stable_seconds. Verdict.health says which evidence decided.

    NOT_READY: a running container's readiness probe failed past its failureThreshold. A Job is
    COMPLETE or FAILED by its conditions (never while the Job controller may still retry); a bare
    pod by its phase. PENDING in expect is reported instead of TIMEOUT when the pods are still
    pending at the deadline. pod_filter (e.g. created_after(t)) ignores pods a rollout is
    replacing. min_restarts: a crash loop is decided only once a container has restarted that
    often; at the deadline it is still reported as the crash loop it is.

    image_platforms maps an image reference as written in the pod spec to the platform(s) the
    harness knows it holds; an exec format error is blamed on another CPU architecture only
    when those differ from the node's. stop, when set by another thread, closes the watch's
    HTTP responses and raises WatchStopped. apps/batch default to clients on core's connection.
    Raises ClusterGone when the API server stops answering.
    """
    expected = _outcome_set(expect)
    stop_on = set(DECISIVE if fail_on is None else fail_on) | (expected - {Outcome.PENDING, Outcome.TIMEOUT})
    clock = _Clock()
    deadline = clock.mono0 + timeout
    api = _Api(_host(core), gone_after)
    tracker = _Tracker(clock, on_evidence, pod_filter)
    tracker.add(
        "note",
        "harness",
        f"watching pods {selector or '(all)'} in namespace {namespace}, expecting "
        f"{' or '.join(sorted(o.label for o in expected))} within {timeout:.0f} s",
    )
    if stop is not None and stop.is_set():
        raise WatchStopped(f"the watch of {namespace} was stopped before it began", "")

    pod_items, pod_rv = api.list(
        f"listing pods in {namespace}", core.list_namespaced_pod, namespace, label_selector=selector
    )
    event_items, event_rv = api.list(f"listing events in {namespace}", core.list_namespaced_event, namespace)
    tracker.replace_pods(pod_items)
    tracker.seed_events(event_items)

    inbox: queue.Queue[_Message] = queue.Queue()
    closing = threading.Event()
    streams = [
        _Stream(
            api,
            f"watching pods in {namespace}",
            core.list_namespaced_pod,
            namespace,
            pod_rv,
            deadline,
            closing,
            label_selector=selector,
        ),
        _Stream(
            api, f"watching events in {namespace}", core.list_namespaced_event, namespace, event_rv, deadline, closing
        ),
    ]
    threads = [threading.Thread(target=_pump, args=(s, inbox), name=s.what, daemon=True) for s in streams]
    for t in threads:
        t.start()

    owners = _Owners(api, apps or AppsV1Api(core.api_client), batch or BatchV1Api(core.api_client), namespace, tracker)
    nodes = _Nodes(api, core, tracker, probe_poll)
    decided: Outcome
    healthy_since: float | None = None
    healthy_restarts: dict[str, int] = {}
    gate: HealthGate | None = None
    health: HealthEvidence | None = None
    freeing = _Freeing(api, core)
    try:
        while True:
            if stop is not None and stop.is_set():
                raise WatchStopped(
                    f"the watch of pods {selector or '(all)'} in {namespace} was stopped on request "
                    f"after {clock.elapsed():.1f} s",
                    "",
                )
            if logs:
                _read_new_logs(api, core, namespace, tracker)
            now = time.monotonic()
            states = tracker.live_states()
            owners.update(states, now, refresh=False)
            wait = deadline - now
            if _readiness_pending(states):
                # Running but not Ready: whether it is alive (NotReady) or dying (a crash loop) is in the
                # kubelet's counters and the probe windows; look again every probe_poll.
                nodes.refresh({s.node for s in states if s.live and s.node}, now)
                wait = min(wait, probe_poll)
            if _job_pending(states, owners.objects):
                owners.update(states, now, refresh=True, kinds=("Job",))
                wait = min(wait, probe_poll)
            current = _decide(
                states, tracker.event_list(), emulated, min_pods, owners.objects, nodes.latest(), clock.wall()
            )
            if current is Outcome.UNSCHEDULABLE and wait > 0 and _short_of_resources(tracker):
                # A rollout on a full node: the pods being replaced still hold the CPU and memory.
                holders = freeing.holders(now)
                if holders:
                    tracker.note_once(
                        f"not enough CPU or memory yet: {len(holders)} pod(s) being deleted still hold theirs "
                        f"({', '.join(holders[:3])}{' ...' if len(holders) > 3 else ''}); waiting for them to go"
                    )
                    current = Outcome.PENDING
                    wait = min(wait, freeing.every)
            if current in (Outcome.HEALTHY, Outcome.RAN_EMULATED):
                snapshot = tracker.restart_snapshot()
                if healthy_since is None or snapshot != healthy_restarts:
                    healthy_since, healthy_restarts = now, snapshot
                if current in stop_on:
                    owners.update(states, now, refresh=True)
                    nodes.refresh({s.node for s in states if s.live and s.node}, now)
                    gate = healthy_gate(
                        states, owners.objects, now=clock.wall(), ledger=nodes.ledger, metrics_nodes=nodes.readable
                    )
                    if gate.ok and now - healthy_since >= stable_seconds:
                        decided = current
                        health = HealthEvidence(gate.source, gate.detail, round(clock.elapsed(), 3))
                        break
                    if not gate.ok:
                        tracker.note_once(f"not Healthy yet: {_steady(gate.waiting[0])}")
                        wait = min(wait, probe_poll, gate.retry_in if gate.retry_in is not None else probe_poll)
                    else:
                        wait = min(wait, healthy_since + stable_seconds - now)
            else:
                healthy_since, gate = None, None
                looping = current in (Outcome.CRASH_LOOP, Outcome.INIT_CRASH_LOOP)
                enough = not looping or tracker.max_restarts >= min_restarts
                if current is not None and current in stop_on and enough:
                    decided = current
                    break
            if now >= deadline:
                if current in (Outcome.CRASH_LOOP, Outcome.INIT_CRASH_LOOP) and current in stop_on:
                    decided = current  # still too few restarts, but a crash loop all the same
                elif current is Outcome.PENDING and Outcome.PENDING in expected:
                    decided = Outcome.PENDING
                elif current is Outcome.NOT_READY:
                    decided = current  # not decided early (fail_on), and still not ready at the deadline
                else:
                    decided = Outcome.TIMEOUT
                break
            if stop is not None:
                wait = min(wait, _STOP_POLL)
            try:
                message = inbox.get(timeout=max(0.0, wait))
            except queue.Empty:
                continue
            batch_ = [message]
            while True:
                try:
                    batch_.append(inbox.get_nowait())
                except queue.Empty:
                    break
            for m in batch_:
                _apply(tracker, m)
    finally:
        for s in streams:
            s.close()
        for t in threads:
            t.join(timeout=2.0)

    return _verdict(
        api,
        core,
        namespace,
        selector,
        tracker,
        clock,
        decided,
        timeout,
        logs,
        owners=owners,
        nodes=nodes,
        image_platforms=image_platforms,
        health=health,
        gate=gate,
    )


_STOP_POLL: Final = 0.2


def _steady(text: str) -> str:
    """A waiting reason without its changing figures, so a repeated note is not added again."""
    return re.sub(r"\s*\([^)]*\)$", "", text)


def _readiness_pending(states: Sequence[PodState]) -> bool:
    """A running container with a readiness probe is not Ready (it may become NotReady)."""
    return any(
        s.live
        and s.phase == "Running"
        and not s.ready
        and any(c.probe("readiness") and not c.ready for c in s.containers)
        for s in states
    )


def _job_pending(states: Sequence[PodState], controllers: Controllers) -> bool:
    """A Job's pod has finished but the Job has not decided yet: read the Job again soon."""
    return any(
        s.owner_kind == "Job" and s.finished and job_outcome(controllers.get(("Job", s.owner_name))) is None
        for s in states
    )


_READERS: Final = {
    "ReplicaSet": ("apps", "read_namespaced_replica_set"),
    "Deployment": ("apps", "read_namespaced_deployment"),
    "StatefulSet": ("apps", "read_namespaced_stateful_set"),
    "DaemonSet": ("apps", "read_namespaced_daemon_set"),
    "Job": ("batch", "read_namespaced_job"),
}


class _Owners:
    """The controllers of the watched pods (ReplicaSet, Deployment, StatefulSet, DaemonSet, Job), read by name.

    Read when a pod names them, again at most once every `every` seconds while a decision waits
    on them; None for one that cannot be read (noted once).
    """

    def __init__(
        self, api: _Api, apps: AppsV1Api, batch: BatchV1Api, namespace: str, tracker: _Tracker, every: float = 1.0
    ) -> None:
        self.api, self.apps, self.batch, self.namespace, self.tracker = api, apps, batch, namespace, tracker
        self.every = every
        self.objects: dict[tuple[str, str], Obj | None] = {}
        self.read_at: dict[tuple[str, str], float] = {}

    def update(
        self, states: Sequence[PodState], now: float, *, refresh: bool, kinds: Collection[str] | None = None
    ) -> None:
        for s in states:
            if not s.owner_kind or s.owner_kind not in _READERS:
                continue
            keys = [(s.owner_kind, s.owner_name)]
            first = self._get(keys[0], now, refresh, kinds)
            if s.owner_kind == "ReplicaSet" and first is not None:
                top = top_controller(s, self.objects)
                if top[0] == "Deployment":
                    self._get(top, now, refresh, kinds)

    def _get(self, key: tuple[str, str], now: float, refresh: bool, kinds: Collection[str] | None) -> Obj | None:
        if key in self.objects:
            stale = refresh and now - self.read_at[key] >= self.every and (kinds is None or key[0] in kinds)
            if not stale or self.objects[key] is None:
                return self.objects[key]
        self.objects[key] = self._read(*key)
        self.read_at[key] = now
        return self.objects[key]

    def _read(self, kind: str, name: str) -> Obj | None:
        client_name, method = _READERS[kind]
        fn = getattr(self.apps if client_name == "apps" else self.batch, method)
        try:
            resp = self.api.call(
                f"reading {kind.lower()} {self.namespace}/{name}",
                fn,
                name,
                self.namespace,
                _preload_content=False,
                _request_timeout=(5, 20),
            )
        except ClusterGone:
            raise
        except HarnessError as exc:
            self.tracker.add(
                "note",
                f"{kind.lower()}/{name}",
                f"could not read the {kind}: {exc.cause}; counting the pods seen instead",
            )
            return None
        loaded = json.loads(_response_bytes(resp) or b"{}")
        return loaded if isinstance(loaded, dict) else None


class _Nodes:
    """Per node: its platform (status.nodeInfo, read once) and the kubelet's probe counters (/metrics/probes)."""

    def __init__(self, api: _Api, core: CoreV1Api, tracker: _Tracker, every: float) -> None:
        self.api, self.core, self.tracker, self.every = api, core, tracker, every
        self.platforms: dict[str, str] = {}
        self.readable: set[str] = set()
        self.unreadable: set[str] = set()
        self.read_at: dict[str, float] = {}
        self.counts: dict[str, dict[ProbeKey, ProbeCount]] = {}
        self.ledger = ProbeLedger()

    def latest(self) -> dict[ProbeKey, ProbeCount]:
        merged: dict[ProbeKey, ProbeCount] = {}
        for rows in self.counts.values():
            merged.update(rows)
        return merged

    def platform(self, node: str) -> str:
        if not node:
            return ""
        if node not in self.platforms:
            try:
                resp = self.api.call(
                    f"reading node {node}", self.core.read_node, node, _preload_content=False, _request_timeout=(5, 20)
                )
                info = _get(json.loads(_response_bytes(resp) or b"{}"), "status", "nodeInfo") or {}
                os_, arch = _str(info.get("operatingSystem")), _str(info.get("architecture"))
                self.platforms[node] = f"{os_}/{arch}" if os_ and arch else ""
            except ClusterGone:
                raise
            except HarnessError as exc:
                self.tracker.add("note", f"node/{node}", f"could not read the node's platform: {exc.cause}")
                self.platforms[node] = ""
        return self.platforms[node]

    def refresh(self, nodes: Collection[str], now: float) -> None:
        """Read each node's probe counters, at most once every `every` seconds; once unreadable, never again."""
        for node in sorted(nodes):
            if node in self.unreadable or now - self.read_at.get(node, -1e9) < self.every:
                continue
            self.read_at[node] = now
            try:
                resp = self.api.call(
                    f"reading the kubelet's probe metrics of node {node}",
                    self.core.connect_get_node_proxy_with_path,
                    node,
                    "metrics/probes",
                    _preload_content=False,
                    _request_timeout=(5, 10),
                )
            except ClusterGone:
                raise
            except HarnessError as exc:
                self.unreadable.add(node)
                self.tracker.add(
                    "note",
                    f"node/{node}",
                    f"the kubelet's probe metrics cannot be read ({exc.cause}); "
                    "waiting out each probe's window from the pod spec instead",
                )
                continue
            rows = parse_probe_metrics(_response_bytes(resp).decode("utf-8", "replace"))
            self.counts[node] = rows
            self.ledger.observe(rows)
            if node not in self.readable:
                self.readable.add(node)
                self.tracker.add("note", f"node/{node}", "reading the kubelet's probe counters (prober_probe_total)")


class _Freeing:
    """The pods being deleted in the whole cluster (namespace/name), asked at most once every `every` seconds."""

    def __init__(self, api: _Api, core: CoreV1Api, every: float = 2.0) -> None:
        self.api, self.core, self.every = api, core, every
        self.asked_at: float | None = None
        self.last: list[str] = []

    def holders(self, now: float) -> list[str]:
        if self.asked_at is None or now - self.asked_at >= self.every:
            resp = self.api.call(
                "listing pods being deleted",
                self.core.list_pod_for_all_namespaces,
                _preload_content=False,
                _request_timeout=(5, 20),
            )
            items = json.loads(_response_bytes(resp) or b"{}").get("items") or []
            self.last = sorted(
                f"{_str(_get(i, 'metadata', 'namespace'))}/{_str(_get(i, 'metadata', 'name'))}"
                for i in items
                if isinstance(i, dict) and _get(i, "metadata", "deletionTimestamp") is not None
            )
            self.asked_at = now
        return self.last


def _short_of_resources(tracker: _Tracker) -> bool:
    """Every reason the watched pods are not scheduled includes a node that lacks only resources."""
    messages = []
    for state in tracker.live_states():
        if state.unschedulable_message:
            messages.append(state.unschedulable_message)
        elif state.scheduled is None:
            messages += _failed_scheduling(tracker.event_list(), state.name)
    return bool(messages) and all(_lacks_resources(m) for m in messages)


def _lacks_resources(message: str) -> bool:
    """Some node would take the pod but for resources (Insufficient cpu, memory, pods ...).

    The scheduler's message: "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had
    untolerated taint {...}. no new claims to deallocate, preemption: ..."; only the first
    sentence, the nodes' reasons, counts.
    """
    _, _, rest = message.partition("are available:")
    reasons = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    return any(re.match(r"\s*\d+ Insufficient ", reason) for reason in reasons.split(","))


def _apply(tracker: _Tracker, m: _Message) -> None:
    if m.kind == "FAILED":
        error = m.payload
        if isinstance(error, BaseException):
            raise error
        raise HarnessError(f"{m.source} failed", "run again; report a bug if it repeats")
    is_pods = m.source.startswith("watching pods")
    if m.kind == "RELIST":
        (tracker.replace_pods if is_pods else tracker.replace_events)(m.payload)
    elif is_pods:
        tracker.pod_changed(m.kind, m.payload)
    else:
        tracker.event_changed(m.kind, m.payload)


def _culprit_state(
    states: Sequence[PodState],
    outcome: Outcome,
    events: Sequence[Obj],
    probe_counts: Mapping[ProbeKey, ProbeCount],
    now: datetime,
) -> PodState | None:
    live = [s for s in states if s.live] or list(states)
    if outcome is Outcome.NOT_READY:
        for s in live:
            if not_ready_failures(s, events, probe_counts, now) is not None:
                return s
    for s in live:
        if s.outcome is outcome:
            return s
    for s in live:
        if s.outcome in FAILURES:
            return s
    return next((s for s in live if s.outcome not in (Outcome.HEALTHY, Outcome.COMPLETE)), None)


def _verdict(
    api: _Api,
    core: CoreV1Api,
    namespace: str,
    selector: str,
    tracker: _Tracker,
    clock: _Clock,
    outcome: Outcome,
    timeout: float,
    logs: bool,
    *,
    owners: _Owners,
    nodes: _Nodes,
    image_platforms: Mapping[str, tuple[str, ...]] | None,
    health: HealthEvidence | None,
    gate: HealthGate | None,
) -> Verdict:
    states = tracker.live_states()
    cause: Cause | None = None
    events = tracker.event_list()
    counts = nodes.latest()
    if outcome not in (Outcome.HEALTHY, Outcome.RAN_EMULATED, Outcome.COMPLETE):
        culprit = _culprit_state(states, outcome, events, counts, clock.wall())
        if culprit is not None:
            container = _pick_container(culprit)
            lines: tuple[str, ...] = ()
            if container is not None and logs:
                cid = container.container_id if container.state == "terminated" else container.last_container_id
                if cid and cid in tracker.logs:
                    lines = tracker.logs[cid]
                elif cid:
                    try:
                        lines = _read_log(
                            api, core, namespace, culprit.name, container.name, container.state != "terminated"
                        )
                    except HarnessError:
                        lines = ()
                    tracker.log_read(culprit.name, container.name, cid, lines)
            try:
                node_platform = nodes.platform(culprit.node)
            except ClusterGone:
                node_platform = ""
            cause = _cause(
                culprit,
                events,
                lines,
                image_platforms=image_platforms,
                node_platform=node_platform,
                probe_counts=counts,
                now=clock.wall(),
            )
    jobs = sorted({s.owner_name for s in states if s.owner_kind == "Job"})
    job_text = "; ".join(
        f"job/{j} {text}" for j in jobs if (text := job_condition_text(owners.objects.get(("Job", j))))
    )
    seconds = round(clock.elapsed(), 3)
    last_state = "; ".join(s.describe() for s in states) or f"no pods matched selector {selector!r}"
    summary = _summary(
        outcome, cause, states, seconds, timeout, last_state, tracker.max_restarts, health, gate, job_text
    )
    tracker.add("note", "harness", f"decided: {outcome.label} — {summary}")
    return Verdict(
        outcome=outcome,
        pods=tuple(tracker.names),
        cause=cause,
        restarts=tracker.max_restarts,
        ready_seen=tracker.ready_seen,
        phases_seen=frozenset(tracker.phases | tracker.waiting_reasons | tracker.terminated_reasons),
        started_at=clock.wall0,
        decided_at=clock.wall(),
        seconds=seconds,
        timeline=tuple(tracker.timeline),
        summary=summary,
        namespace=namespace,
        selector=selector,
        last_state=last_state,
        waiting_reasons_seen=frozenset(tracker.waiting_reasons),
        terminated_reasons_seen=frozenset(tracker.terminated_reasons),
        exit_codes_seen=frozenset(tracker.exit_codes),
        probe_failures_seen=frozenset(tracker.probe_failures),
        health=health,
        images_ran=tuple(tracker.images.values()),
    )


def _summary(
    outcome: Outcome,
    cause: Cause | None,
    states: Sequence[PodState],
    seconds: float,
    timeout: float,
    last_state: str,
    restarts: int,
    health: HealthEvidence | None = None,
    gate: HealthGate | None = None,
    job_text: str = "",
) -> str:
    after = f"after {seconds:.1f} s"
    live = [s for s in states if s.live]
    evidence = f"; evidence: {health.source} ({health.detail})" if health is not None else ""
    if outcome is Outcome.HEALTHY:
        return f"healthy {after}: {len(live)} pod(s) ready, restarts {restarts}{evidence}"
    if outcome is Outcome.RAN_EMULATED:
        return (
            f"ran under emulation {after}: {len(live)} pod(s) ready although the image's platform differs "
            f"from the node's; the incident is masked here, not fixed{evidence}"
        )
    if outcome is Outcome.TIMEOUT:
        text = f"no decision within {timeout:.0f} s; last state: {last_state}"
        if gate is not None and gate.waiting:
            text += f"; not Healthy because: {'; '.join(gate.waiting[:3])}"
        if cause is not None and cause.message:
            text += f"; {_one_line(cause.message, 200)}"
        return text
    if outcome is Outcome.PENDING:
        return f"still pending {after}: {last_state}"
    if outcome is Outcome.COMPLETE:
        done = job_text or f"{len(live)} pod(s) Succeeded"
        return f"Complete {after}: {done}"
    text = f"{outcome.label} {after}"
    if job_text:
        text += f": {job_text}"
    if cause is not None:
        text += f"{';' if job_text else ':'} {cause.describe()}"
        if outcome in (Outcome.CRASH_LOOP, Outcome.INIT_CRASH_LOOP):
            text += f"; restarts {restarts}"
        if cause.log_lines and not cause.exec_format_error:
            text += f"; last log line: {_one_line(cause.log_lines[-1], 160)}"
    if outcome is Outcome.IMAGE_PULL and cause is not None and "no match for platform" in (cause.message or ""):
        # containerd's words when an index has no entry for the node's platform (a single manifest is not filtered).
        text += "; the image is an index with no manifest for the node's platform"
    return text
