"""Pure classification of pods and workloads from the API's JSON dicts, and causes from evidence."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from harness.outcomes.model import (
    _PRECEDENCE,
    _TRANSIENT_TAINTS,
    CRASH_LOOP_REASON,
    CREATE_ERROR_REASONS,
    EXEC_FORMAT_RE,
    FAILURES,
    IMAGE_PULL_REASONS,
    LOG_TAIL_LINES,
    Cause,
    ContainerState,
    Evidence,
    Outcome,
    PodState,
    Verdict,
    _get,
    _int,
    _one_line,
    _str,
)

T = TypeVar("T")


def _container_state(status: Mapping[str, Any], init: bool) -> ContainerState:
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
        container_id=_str(detail.get("containerID")),
        last_reason=_str(last.get("reason")),
        last_exit_code=_int(last.get("exitCode")),
        last_message=_str(last.get("message")),
        last_container_id=_str(last.get("containerID")),
    )


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in _get(pod, "status", "conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def _container_outcome(c: ContainerState) -> Outcome | None:
    if c.state != "waiting":
        return None
    if c.reason == CRASH_LOOP_REASON:
        return Outcome.INIT_CRASH_LOOP if c.init else Outcome.CRASH_LOOP
    if c.reason in IMAGE_PULL_REASONS:
        return Outcome.IMAGE_PULL
    if c.reason in CREATE_ERROR_REASONS:
        return Outcome.CREATE_ERROR
    return None


def classify_pod(pod: Mapping[str, Any]) -> PodState:
    """Classify one pod (the API's JSON dict). HEALTHY here means ready now; stability is the watcher's job.

    Terminated states (Error, StartError, OOMKilled) alone decide nothing: the kubelet moves the
    container to a waiting reason (CrashLoopBackOff ...) within a second, and that reason decides.
    """
    status = _get(pod, "status") or {}
    containers = tuple(
        [_container_state(s, True) for s in status.get("initContainerStatuses") or [] if isinstance(s, Mapping)]
        + [_container_state(s, False) for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
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
    return PodState(
        name=_str(_get(pod, "metadata", "name")),
        phase=phase,
        node=_str(_get(pod, "spec", "nodeName")),
        ready=ready,
        scheduled=scheduled,
        unschedulable_message=unschedulable,
        terminating=_get(pod, "metadata", "deletionTimestamp") is not None,
        containers=containers,
        outcome=result,
        culprit=culprit,
    )


def _events_for(events: Iterable[Mapping[str, Any]], pod_name: str) -> list[Mapping[str, Any]]:
    return [
        e
        for e in events
        if _get(e, "involvedObject", "kind") == "Pod" and _get(e, "involvedObject", "name") == pod_name
    ]


def _decide(
    states: Sequence[PodState], events: Sequence[Mapping[str, Any]], emulated: bool, min_pods: int
) -> Outcome | None:
    live = [s for s in states if s.live]
    failures = [s.outcome for s in live if s.outcome is not None and s.outcome in FAILURES]
    for s in live:
        # An event may tell before the status does (the scheduler writes both, in either order).
        if s.scheduled is None and _failed_scheduling(events, s.name):
            failures.append(Outcome.UNSCHEDULABLE)
    if failures:
        return min(failures, key=_PRECEDENCE.index)
    if live and len(live) >= min_pods and all(s.outcome is Outcome.HEALTHY for s in live):
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
) -> Outcome | None:
    """The outcome of a workload's pods right now; None while undecided (starting, running not ready).

    Failure states win over health: one crash-looping pod makes the workload CRASH_LOOP. PENDING
    means every pod is still waiting to start. With emulated=True a healthy workload is
    RAN_EMULATED, never HEALTHY. Terminating and finished pods are ignored. Restart-count stability
    over time is checked by watch_workload, which sees the pods more than once.
    """
    return _decide([classify_pod(p) for p in pods], events, emulated, min_pods)


def has_exec_format_error(texts: Iterable[str]) -> bool:
    return any(EXEC_FORMAT_RE.search(t) for t in texts if t)


def diagnose(
    pod: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] = (),
    log_lines: Sequence[str] = (),
) -> Cause | None:
    """The cause of a pod's trouble from its status, its events and its (previous) container log."""
    return _cause(classify_pod(pod), events, log_lines)


def _pick_container(state: PodState) -> ContainerState | None:
    if state.culprit is not None:
        return state.culprit
    troubled = [c for c in state.containers if not c.ready and (c.state != "running" or c.last_reason)]
    if troubled:
        return troubled[0]
    return next((c for c in state.containers if not c.ready and not c.init), None)


def _cause(state: PodState, events: Sequence[Mapping[str, Any]], log_lines: Sequence[str]) -> Cause | None:
    pod_events = _events_for(events, state.name)
    warnings: list[str] = []
    for e in pod_events:
        if e.get("type") == "Warning":
            text = f"{_str(e.get('reason'))}: {_one_line(_str(e.get('message')), 300)}"
            if text not in warnings:
                warnings.append(text)
    warnings = warnings[-6:]
    event_messages = [_str(e.get("message")) for e in pod_events]
    failed_scheduling = any(e.get("reason") == "FailedScheduling" for e in pod_events)
    if (
        state.unschedulable_message
        or state.outcome is Outcome.UNSCHEDULABLE
        or (failed_scheduling and not state.scheduled)  # the event came before the PodScheduled condition
    ):
        message = state.unschedulable_message or next(
            (_str(e.get("message")) for e in reversed(pod_events) if e.get("reason") == "FailedScheduling"), ""
        )
        return Cause(reason="Unschedulable", message=message, pod=state.name, events=tuple(warnings))
    c = _pick_container(state)
    if c is None:
        if not warnings:
            return None
        return Cause(reason="not ready", message=warnings[-1], pod=state.name, events=tuple(warnings))
    if c.state == "terminated":
        exit_code, term_reason, term_message = c.exit_code, c.reason, c.message
    else:
        exit_code, term_reason, term_message = c.last_exit_code, c.last_reason, c.last_message
    waiting_message = c.message if c.state == "waiting" else ""
    exec_format = has_exec_format_error([*log_lines, term_message, waiting_message, *event_messages])
    if exec_format:
        reason = "exec format error"
    elif c.state == "waiting" and c.reason and c.reason != CRASH_LOOP_REASON:
        reason = c.reason
    elif term_reason:
        reason = term_reason
    elif c.state == "running" and not c.ready:
        reason = "not ready"
    else:
        reason = c.reason or c.state
    probe = next((w for w in reversed(warnings) if w.startswith("Unhealthy:")), "")
    evidence_line = next((t for t in [*reversed(log_lines), *event_messages] if EXEC_FORMAT_RE.search(t)), "")
    if term_message:
        message = term_message
    elif waiting_message and c.reason != CRASH_LOOP_REASON:
        message = waiting_message
    elif exec_format and evidence_line:
        message = evidence_line
    else:
        message = probe or (warnings[-1] if warnings else waiting_message)
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
