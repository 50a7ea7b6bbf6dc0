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

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from harness.errors import ClusterGone, HarnessError
from harness.outcomes.api import (
    _Api,
    _host,
    _Message,
    _pump,
    _response_bytes,
    _Stream,
)
from harness.outcomes.classify import (
    _cause,
    _decide,
    _failed_scheduling,
    _pick_container,
    classify_pod,
)
from harness.outcomes.model import (
    _TIMELINE_LOG_LINES,
    DECISIVE,
    EXEC_FORMAT_RE,
    FAILURES,
    LOG_GONE,
    LOG_TAIL_LINES,
    Cause,
    ContainerState,
    Evidence,
    EvidenceKind,
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
) -> Verdict:
    """Watch the pods matching selector until an expected outcome, a failure, or the deadline.

    Stops at the first outcome in expect; also stops at any other decisive outcome (failures,
    healthy, ran-emulated) unless fail_on narrows that set: pass fail_on=set() to wait for expect
    until the deadline whatever happens. HEALTHY is confirmed once every pod stayed ready with
    unchanged restart counts for stable_seconds. PENDING in expect is reported instead of TIMEOUT
    when the pods are still pending at the deadline. pod_filter (e.g. created_after(t)) ignores
    pods a rollout is replacing. min_restarts: a crash loop is decided only once a container has
    restarted that often (to observe the loop, not just its start); at the deadline it is still
    reported as the crash loop it is. Raises ClusterGone when the API server stops answering.
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

    pod_items, pod_rv = api.list(
        f"listing pods in {namespace}", core.list_namespaced_pod, namespace, label_selector=selector
    )
    event_items, event_rv = api.list(f"listing events in {namespace}", core.list_namespaced_event, namespace)
    tracker.replace_pods(pod_items)
    tracker.seed_events(event_items)

    inbox: queue.Queue[_Message] = queue.Queue()
    stop = threading.Event()
    streams = [
        _Stream(
            api,
            f"watching pods in {namespace}",
            core.list_namespaced_pod,
            namespace,
            pod_rv,
            deadline,
            stop,
            label_selector=selector,
        ),
        _Stream(
            api, f"watching events in {namespace}", core.list_namespaced_event, namespace, event_rv, deadline, stop
        ),
    ]
    threads = [threading.Thread(target=_pump, args=(s, inbox), name=s.what, daemon=True) for s in streams]
    for t in threads:
        t.start()

    decided: Outcome
    healthy_since: float | None = None
    healthy_restarts: dict[str, int] = {}
    freeing = _Freeing(api, core)
    try:
        while True:
            if logs:
                _read_new_logs(api, core, namespace, tracker)
            current = _decide(tracker.live_states(), tracker.event_list(), emulated, min_pods)
            now = time.monotonic()
            wait = deadline - now
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
                    if now - healthy_since >= stable_seconds:
                        decided = current
                        break
                    wait = min(wait, healthy_since + stable_seconds - now)
            else:
                healthy_since = None
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
                else:
                    decided = Outcome.TIMEOUT
                break
            try:
                message = inbox.get(timeout=max(0.0, wait))
            except queue.Empty:
                continue
            batch = [message]
            while True:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            for m in batch:
                _apply(tracker, m)
    finally:
        for s in streams:
            s.close()

    return _verdict(api, core, namespace, selector, tracker, clock, decided, timeout, logs)


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


def _culprit_state(states: Sequence[PodState], outcome: Outcome) -> PodState | None:
    live = [s for s in states if s.live] or list(states)
    for s in live:
        if s.outcome is outcome:
            return s
    for s in live:
        if s.outcome in FAILURES:
            return s
    return next((s for s in live if s.outcome is not Outcome.HEALTHY), None)


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
) -> Verdict:
    states = tracker.live_states()
    cause: Cause | None = None
    if outcome not in (Outcome.HEALTHY, Outcome.RAN_EMULATED):
        culprit = _culprit_state(states, outcome)
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
            cause = _cause(culprit, tracker.event_list(), lines)
    seconds = round(clock.elapsed(), 3)
    last_state = "; ".join(s.describe() for s in states) or f"no pods matched selector {selector!r}"
    summary = _summary(outcome, cause, states, seconds, timeout, last_state, tracker.max_restarts)
    tracker.add("note", "harness", f"decided: {outcome.label} — {summary}")
    return Verdict(
        outcome=outcome,
        pods=tuple(tracker.names),
        cause=cause,
        restarts=tracker.max_restarts,
        ready_seen=tracker.ready_seen,
        phases_seen=frozenset(tracker.phases),
        started_at=clock.wall0,
        decided_at=clock.wall(),
        seconds=seconds,
        timeline=tuple(tracker.timeline),
        summary=summary,
        namespace=namespace,
        selector=selector,
        last_state=last_state,
    )


def _summary(
    outcome: Outcome,
    cause: Cause | None,
    states: Sequence[PodState],
    seconds: float,
    timeout: float,
    last_state: str,
    restarts: int,
) -> str:
    after = f"after {seconds:.1f} s"
    live = [s for s in states if s.live]
    if outcome is Outcome.HEALTHY:
        return f"healthy {after}: {len(live)} pod(s) ready, restarts {restarts}"
    if outcome is Outcome.RAN_EMULATED:
        return (
            f"ran under emulation {after}: {len(live)} pod(s) ready although the image's platform differs "
            "from the node's; the incident is masked here, not fixed"
        )
    if outcome is Outcome.TIMEOUT:
        text = f"no decision within {timeout:.0f} s; last state: {last_state}"
        if cause is not None and cause.message:
            text += f"; {_one_line(cause.message, 200)}"
        return text
    if outcome is Outcome.PENDING:
        return f"still pending {after}: {last_state}"
    text = f"{outcome.label} {after}"
    if cause is not None:
        text += f": {cause.describe()}"
        if outcome in (Outcome.CRASH_LOOP, Outcome.INIT_CRASH_LOOP):
            text += f"; restarts {restarts}"
        if cause.log_lines and not cause.exec_format_error:
            text += f"; last log line: {_one_line(cause.log_lines[-1], 160)}"
        elif cause.exec_format_error:
            shown = next((line for line in reversed(cause.log_lines) if EXEC_FORMAT_RE.search(line)), "")
            if shown:
                text += f"; log: {_one_line(shown, 160)}"
    if outcome is Outcome.IMAGE_PULL:
        text += "; with no registry every image must be loaded into the nodes first (kind load)"
    return text
