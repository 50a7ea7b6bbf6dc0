"""Watch the pods of a workload, classify what they do, and keep the evidence.

Classification is pure: it works on the JSON dicts the API server returns (camelCase keys, as
`kubectl get pod -o json` prints them), so unit tests run on recorded objects. Watching uses the
API's watch on pods and on the namespace's events (one thread each, feeding one queue), so a
verdict is reached as soon as the cluster shows the state, and stops at the first bad state.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Final, Literal, TypeVar

import urllib3
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from harness.errors import ClusterGone, HarnessError

Obj = dict[str, Any]
T = TypeVar("T")


class Outcome(Enum):
    """What a workload's pods ended up doing."""

    HEALTHY = "healthy"
    CRASH_LOOP = "crash_loop"
    INIT_CRASH_LOOP = "init_crash_loop"
    IMAGE_PULL = "image_pull"
    CREATE_ERROR = "create_error"
    PENDING = "pending"
    UNSCHEDULABLE = "unschedulable"
    RAN_EMULATED = "ran_emulated"
    TIMEOUT = "timeout"

    @property
    def label(self) -> str:
        """The name a Kubernetes user knows (what `kubectl get pods` shows)."""
        return _LABELS[self]

    @property
    def is_failure(self) -> bool:
        return self in FAILURES

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """Accept a value (crash_loop), a member name (CRASH_LOOP) or a kubelet reason (CrashLoopBackOff)."""
        key = text.strip()
        for outcome in cls:
            if key.lower() in (outcome.value, outcome.name.lower(), outcome.label.lower()):
                return outcome
        aliases = {r.lower(): o for r, o in _REASON_OUTCOME.items()}
        if key.lower() in aliases:
            return aliases[key.lower()]
        known = ", ".join(o.value for o in cls)
        raise ValueError(f"unknown outcome {text!r}; known outcomes: {known}")


_LABELS: Final[dict[Outcome, str]] = {
    Outcome.HEALTHY: "Healthy",
    Outcome.CRASH_LOOP: "CrashLoopBackOff",
    Outcome.INIT_CRASH_LOOP: "Init:CrashLoopBackOff",
    Outcome.IMAGE_PULL: "ImagePullBackOff",
    Outcome.CREATE_ERROR: "CreateContainerError",
    Outcome.PENDING: "Pending",
    Outcome.UNSCHEDULABLE: "Unschedulable",
    Outcome.RAN_EMULATED: "Ran under emulation",
    Outcome.TIMEOUT: "Timeout",
}

CRASH_LOOP_REASON: Final = "CrashLoopBackOff"
IMAGE_PULL_REASONS: Final = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "RegistryUnavailable"}
)
CREATE_ERROR_REASONS: Final = frozenset(
    {
        "CreateContainerError",
        "CreateContainerConfigError",
        "RunContainerError",
        "StartError",
        "ContainerCannotRun",
        "PreStartHookError",
        "PostStartHookError",
    }
)
_REASON_OUTCOME: Final[dict[str, Outcome]] = {
    CRASH_LOOP_REASON: Outcome.CRASH_LOOP,
    "Init:CrashLoopBackOff": Outcome.INIT_CRASH_LOOP,
    **{r: Outcome.IMAGE_PULL for r in IMAGE_PULL_REASONS},
    **{r: Outcome.CREATE_ERROR for r in CREATE_ERROR_REASONS},
}

FAILURES: Final = frozenset(
    {Outcome.CRASH_LOOP, Outcome.INIT_CRASH_LOOP, Outcome.IMAGE_PULL, Outcome.CREATE_ERROR, Outcome.UNSCHEDULABLE}
)
# Outcomes that end a watch early unless the caller narrows them with fail_on.
DECISIVE: Final = FAILURES | {Outcome.HEALTHY, Outcome.RAN_EMULATED}
# When pods of one workload disagree, the first of these wins.
_PRECEDENCE: Final = (
    Outcome.CRASH_LOOP,
    Outcome.INIT_CRASH_LOOP,
    Outcome.CREATE_ERROR,
    Outcome.IMAGE_PULL,
    Outcome.UNSCHEDULABLE,
)
# Taints that only mean "the node is still coming up": the scheduler retries by itself.
_TRANSIENT_TAINTS: Final = (
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/network-unavailable",
    "node.cloudprovider.kubernetes.io/uninitialized",
)
# The kubelet's answer (HTTP 200) for a container instance it has removed; it is no log line.
LOG_GONE: Final = "unable to retrieve container logs"
EXEC_FORMAT_RE: Final = re.compile(r"exec format error", re.IGNORECASE)
LOG_TAIL_LINES: Final = 50
_TIMELINE_LOG_LINES: Final = 8

EvidenceKind = Literal["state", "event", "log", "probe", "note"]


@dataclass(frozen=True)
class Evidence:
    """One observation, in the order the harness saw it; elapsed counts from the start of the watch."""

    timestamp: datetime
    kind: EvidenceKind
    subject: str
    text: str
    elapsed: float = 0.0


@dataclass(frozen=True)
class Cause:
    """Why a pod failed, as far as status, events and the previous container's log tell."""

    reason: str
    exit_code: int | None = None
    termination_reason: str = ""
    message: str = ""
    log_lines: tuple[str, ...] = ()
    exec_format_error: bool = False
    pod: str = ""
    container: str = ""
    image: str = ""
    events: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for humans."""
        where = f"pod {self.pod}" + (f" container {self.container}" if self.container else "")
        parts = [f"{where}: {self.reason}"]
        if self.exit_code is not None:
            parts.append(
                f"exit code {self.exit_code}" + (f" ({self.termination_reason})" if self.termination_reason else "")
            )
        if self.exec_format_error:
            parts.append("the image's binaries are for another CPU architecture than the node's")
        elif self.message:
            parts.append(_one_line(self.message, 200))
        return "; ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """The result of watching one workload."""

    outcome: Outcome
    pods: tuple[str, ...]
    cause: Cause | None
    restarts: int
    ready_seen: bool
    phases_seen: frozenset[str]
    started_at: datetime
    decided_at: datetime
    seconds: float
    timeline: tuple[Evidence, ...]
    summary: str
    namespace: str = ""
    selector: str = ""
    last_state: str = ""

    def satisfies(self, expect: Outcome | Iterable[Outcome]) -> bool:
        return self.outcome in _outcome_set(expect)


@dataclass(frozen=True)
class ContainerState:
    """One container's status, flattened."""

    name: str
    init: bool
    image: str
    ready: bool
    restarts: int
    state: Literal["waiting", "running", "terminated", "unknown"]
    reason: str
    message: str
    exit_code: int | None
    container_id: str
    last_reason: str
    last_exit_code: int | None
    last_message: str
    last_container_id: str

    @property
    def subject_name(self) -> str:
        return f"init:{self.name}" if self.init else self.name

    def describe(self) -> str:
        if self.state == "waiting":
            text = f"Waiting: {self.reason or 'unknown reason'}"
        elif self.state == "running":
            text = "Running, ready" if self.ready else "Running, not ready"
        elif self.state == "terminated":
            text = f"Terminated: {self.reason or 'unknown reason'}"
            if self.exit_code is not None:
                text += f", exit code {self.exit_code}"
        else:
            text = "no state reported yet"
        extras = [f"restarts {self.restarts}"]
        if self.state == "waiting" and self.reason == CRASH_LOOP_REASON and self.last_reason:
            code = f" {self.last_exit_code}" if self.last_exit_code is not None else ""
            extras.append(f"last exit{code} {self.last_reason}")
        text += f" ({'; '.join(extras)})"
        if self.state == "waiting" and self.message and self.reason != CRASH_LOOP_REASON:
            text += f": {_one_line(self.message, 160)}"
        return text


@dataclass(frozen=True)
class PodState:
    """One pod's classification and the facts it rests on."""

    name: str
    phase: str
    node: str
    ready: bool
    scheduled: bool | None
    unschedulable_message: str
    terminating: bool
    containers: tuple[ContainerState, ...]
    outcome: Outcome | None
    culprit: ContainerState | None

    @property
    def restarts(self) -> int:
        return max((c.restarts for c in self.containers), default=0)

    @property
    def live(self) -> bool:
        """Counts for the workload: not being deleted, not finished."""
        return not self.terminating and self.phase not in ("Succeeded", "Failed")

    def describe(self) -> str:
        if self.unschedulable_message:
            return f"{self.name}: Pending, unschedulable: {_one_line(self.unschedulable_message, 160)}"
        shown = self.culprit or next((c for c in self.containers if not c.ready), None)
        detail = f" [{shown.subject_name}] {shown.describe()}" if shown else ""
        ready = "ready" if self.ready else "not ready"
        gone = ", terminating" if self.terminating else ""
        return f"{self.name}: {self.phase or 'Unknown'}, {ready}{gone}{detail}"


# ---------------------------------------------------------------------------------------------
# Pure classification


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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


def _outcome_set(expect: Outcome | Iterable[Outcome]) -> frozenset[Outcome]:
    """One outcome or several, as a set."""
    if isinstance(expect, Outcome):
        return frozenset({expect})
    return frozenset(expect)


# ---------------------------------------------------------------------------------------------
# API access: bounded retries, and a clear error when the cluster is gone

_CONNECTION_ERRORS: Final = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return bool(exc.status == 0)
    return isinstance(exc, _CONNECTION_ERRORS)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status == 0 or status == 429 or status >= 500
    return isinstance(exc, _CONNECTION_ERRORS)


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    root: BaseException = exc
    while True:
        nxt = getattr(root, "reason", None)
        if isinstance(nxt, BaseException) and nxt is not root:
            root = nxt
            continue
        if root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__
            continue
        break
    text = str(root) or type(root).__name__
    if "Connection refused" in text or isinstance(root, ConnectionRefusedError):
        return "connection refused"
    return _one_line(text, 120)


class _Api:
    """Calls with bounded retries of flaky failures; ClusterGone when the server stops answering."""

    def __init__(self, host: str, gone_after: float, attempts: int = 6) -> None:
        self.host = host
        self.gone_after = gone_after
        self.attempts = attempts

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def give_up(state: RetryCallState) -> bool:
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            if exc is not None and _is_connection_error(exc):
                return stop_after_delay(self.gone_after)(state)
            return stop_after_attempt(self.attempts)(state)

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=give_up,
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except ApiException as exc:
            if _is_connection_error(exc):
                raise self._gone(what, exc) from exc
            raise HarnessError(
                f"{what} failed: {_short_error(exc)}",
                "check the cluster with 'kubectl get --raw /readyz' using the harness kubeconfig, then run again",
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise self._gone(what, exc) from exc

    def _gone(self, what: str, exc: BaseException) -> ClusterGone:
        return ClusterGone(
            f"the Kubernetes API server at {self.host} stopped answering ({_short_error(exc)}, "
            f"for more than {self.gone_after:.0f} s) while {what}",
            "check the kind node container with 'docker ps -a --filter label=io.x-k8s.kind.cluster'; "
            "if it stopped, delete the cluster with 'kind delete cluster --name <name>' and run again",
        )

    def list(self, what: str, fn: Callable[..., Any], namespace: str, **kwargs: Any) -> tuple[list[Obj], str]:
        """List as raw JSON (no model round trip); returns the items and the list's resourceVersion."""
        resp = self.call(what, fn, namespace, _preload_content=False, _request_timeout=(5, 20), **kwargs)
        body = json.loads(_response_bytes(resp) or b"{}")
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, _str(_get(body, "metadata", "resourceVersion"))


def _response_bytes(resp: Any) -> bytes:
    data = getattr(resp, "data", b"")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else b""


def _host(api: Any) -> str:
    """The server URL of a CoreV1Api/AppsV1Api, for error messages."""
    configuration = getattr(getattr(api, "api_client", None), "configuration", None)
    host = getattr(configuration, "host", "")
    return host if isinstance(host, str) and host else "the kubeconfig's server"


def _new_watch() -> Any:
    """kubernetes.watch.Watch, typed loosely: its methods carry no annotations in any client version."""
    factory: Any = Watch
    return factory()


class _Stream:
    """A resumable watch: yields (type, object) and ("RELIST", items) after a 410 Gone or a lost connection."""

    def __init__(
        self,
        api: _Api,
        what: str,
        list_fn: Callable[..., Any],
        namespace: str,
        resource_version: str,
        deadline: float,
        stop: threading.Event,
        **selectors: str,
    ) -> None:
        self.api = api
        self.what = what
        self.list_fn = list_fn
        self.namespace = namespace
        self.resource_version = resource_version
        self.deadline = deadline
        self.stop = stop
        self.selectors = selectors
        self._watch: Any = None

    def close(self) -> None:
        self.stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _relist(self) -> tuple[str, Any]:
        items, rv = self.api.list(self.what, self.list_fn, self.namespace, **self.selectors)
        self.resource_version = rv
        return "RELIST", items

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while not self.stop.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return
            server_timeout = max(1, min(int(remaining) + 1, 300))
            self._watch = watch = _new_watch()
            opened, received = time.monotonic(), 0
            try:
                stream = watch.stream(
                    self.list_fn,
                    self.namespace,
                    resource_version=self.resource_version or None,
                    timeout_seconds=server_timeout,
                    allow_watch_bookmarks=True,
                    _request_timeout=(10, server_timeout + 15),
                    **self.selectors,
                )
                for event in stream:
                    if self.stop.is_set():
                        return
                    kind = _str(event.get("type"))
                    raw = event.get("raw_object")
                    if isinstance(raw, dict):
                        rv = _str(_get(raw, "metadata", "resourceVersion"))
                        if rv:
                            self.resource_version = rv
                    if kind == "BOOKMARK" or not isinstance(raw, dict):
                        continue
                    received += 1
                    yield kind, raw
            except ApiException as exc:
                if self.stop.is_set():
                    return
                if exc.status != 410 and not _is_transient(exc):
                    raise HarnessError(
                        f"{self.what} failed: {_short_error(exc)}",
                        "check that the kubeconfig's user may list and watch this resource",
                    ) from exc
                yield self._relist()
                continue
            except (*_CONNECTION_ERRORS, OSError, ValueError):
                # ValueError: reading a socket that stop() shut down; OSError: connection reset.
                if self.stop.is_set():
                    return
                yield self._relist()
                continue
            if received == 0 and time.monotonic() - opened < 1.0:
                # The server closed the watch at once: pause a little (bounded) instead of spinning.
                self.stop.wait(min(1.0, max(0.0, self.deadline - time.monotonic())))


@dataclass(frozen=True)
class _Message:
    source: str
    kind: str
    payload: Any


def _pump(stream: _Stream, out: queue.Queue[_Message]) -> None:
    try:
        for kind, payload in stream:
            out.put(_Message(stream.what, kind, payload))
    except Exception as exc:  # noqa: BLE001 - HarnessError, or a bug: either way the caller must see it
        out.put(_Message(stream.what, "FAILED", exc))


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


# ---------------------------------------------------------------------------------------------
# Deployments


class RolloutStatus(Enum):
    COMPLETE = "complete"
    PROGRESS_DEADLINE_EXCEEDED = "progress_deadline_exceeded"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class RolloutResult:
    status: RolloutStatus
    namespace: str
    deployment: str
    revision: str
    replicas: int
    updated: int
    available: int
    message: str
    seconds: float
    conditions: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status is RolloutStatus.COMPLETE


def rollout_state(deployment: Mapping[str, Any]) -> tuple[RolloutStatus | None, str]:
    """Where a Deployment's rollout stands (the rules of `kubectl rollout status`); None while in progress."""
    spec_replicas = _int(_get(deployment, "spec", "replicas"))
    replicas = 1 if spec_replicas is None else spec_replicas
    status = _get(deployment, "status") or {}
    generation = _int(_get(deployment, "metadata", "generation")) or 0
    observed = _int(status.get("observedGeneration")) or 0
    if observed < generation:
        return None, "waiting for the deployment's new spec to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutStatus.PROGRESS_DEADLINE_EXCEEDED, _str(cond.get("message")) or "progress deadline exceeded"
    updated = _int(status.get("updatedReplicas")) or 0
    total = _int(status.get("replicas")) or 0
    available = _int(status.get("availableReplicas")) or 0
    if updated < replicas:
        return None, f"{updated} of {replicas} new replicas updated"
    if total > updated:
        return None, f"{total - updated} old replicas pending termination"
    if available < updated:
        return None, f"{available} of {updated} updated replicas available"
    return RolloutStatus.COMPLETE, "successfully rolled out"


def _until_deadline(stream: _Stream, deadline: float) -> Iterator[tuple[str, Any]]:
    """The stream's items, read in a thread so that the deadline is kept to the millisecond."""
    inbox: queue.Queue[_Message] = queue.Queue()
    threading.Thread(target=_pump, args=(stream, inbox), name=stream.what, daemon=True).start()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = inbox.get(timeout=remaining)
            except queue.Empty:
                return
            if message.kind == "FAILED":
                error = message.payload
                raise error if isinstance(error, BaseException) else HarnessError(f"{stream.what} failed")
            yield message.kind, message.payload
    finally:
        stream.close()


def _watch_deployment(
    api: _Api,
    apps: AppsV1Api,
    namespace: str,
    name: str,
    deadline: float,
    check: Callable[[Obj], T | None],
) -> tuple[T | None, Obj | None]:
    what = f"watching deployment {namespace}/{name}"
    selector = {"field_selector": f"metadata.name={name}"}
    items, rv = api.list(what, apps.list_namespaced_deployment, namespace, **selector)
    if not items:
        raise HarnessError(
            f"deployment {name!r} does not exist in namespace {namespace!r}",
            "apply the workload first, and check the deployment name in the scenario file",
        )
    last: Obj | None = items[0]
    found = check(items[0])
    if found is not None:
        return found, last
    stream = _Stream(api, what, apps.list_namespaced_deployment, namespace, rv, deadline, threading.Event(), **selector)
    for kind, payload in _until_deadline(stream, deadline):
        if kind == "DELETED":
            last = None
            continue
        for obj in payload if kind == "RELIST" else [payload]:
            last = obj
            found = check(obj)
            if found is not None:
                return found, last
    return None, last


def wait_rollout(
    apps: AppsV1Api, namespace: str, name: str, timeout: float, *, gone_after: float = 8.0
) -> RolloutResult:
    """Watch a Deployment until its rollout completes, exceeds its progress deadline, or timeout passes."""
    clock = _Clock()
    api = _Api(_host(apps), gone_after)
    messages: list[str] = []

    def check(obj: Obj) -> RolloutStatus | None:
        status, message = rollout_state(obj)
        messages.append(message)
        return status

    status, last = _watch_deployment(api, apps, namespace, name, clock.mono0 + timeout, check)
    st = _get(last, "status") or {}
    conditions = tuple(
        f"{c.get('type')}={c.get('status')} {c.get('reason') or ''}: {c.get('message') or ''}".strip()
        for c in st.get("conditions") or []
    )
    return RolloutResult(
        status=status or RolloutStatus.TIMEOUT,
        namespace=namespace,
        deployment=name,
        revision=_str(_get(last, "metadata", "annotations", "deployment.kubernetes.io/revision")),
        replicas=_int(_get(last, "spec", "replicas")) or 0,
        updated=_int(st.get("updatedReplicas")) or 0,
        available=_int(st.get("availableReplicas")) or 0,
        message=messages[-1] if messages else "",
        seconds=round(clock.elapsed(), 3),
        conditions=conditions,
    )


def current_pods_selector(
    apps: AppsV1Api, namespace: str, name: str, timeout: float, *, gone_after: float = 8.0
) -> str:
    """The label selector of the pods of the Deployment's current revision (adds pod-template-hash).

    Waits (by watch) until the controller has observed the latest spec; falls back to the
    Deployment's own selector if the current ReplicaSet cannot be found in time.
    """
    clock = _Clock()
    api = _Api(_host(apps), gone_after)

    def observed(obj: Obj) -> Obj | None:
        generation = _int(_get(obj, "metadata", "generation")) or 0
        seen = _int(_get(obj, "status", "observedGeneration")) or 0
        revision = _get(obj, "metadata", "annotations", "deployment.kubernetes.io/revision")
        return obj if seen >= generation and revision else None

    deployment, _ = _watch_deployment(api, apps, namespace, name, clock.mono0 + timeout, observed)
    if deployment is None:
        deployment = api.call(f"reading deployment {namespace}/{name}", _read_raw_deployment, apps, namespace, name)
    base = selector_string(_get(deployment, "spec", "selector") or {})
    revision = _get(deployment, "metadata", "annotations", "deployment.kubernetes.io/revision")
    uid = _get(deployment, "metadata", "uid")
    sets, _ = api.list(
        f"listing replica sets in {namespace}", apps.list_namespaced_replica_set, namespace, label_selector=base
    )
    for rs in sets:
        owners = _get(rs, "metadata", "ownerReferences") or []
        owned = any(o.get("uid") == uid for o in owners if isinstance(o, Mapping))
        rs_revision = _get(rs, "metadata", "annotations", "deployment.kubernetes.io/revision")
        template_hash = _get(rs, "metadata", "labels", "pod-template-hash")
        if owned and rs_revision == revision and template_hash:
            return f"{base},pod-template-hash={template_hash}" if base else f"pod-template-hash={template_hash}"
    return base


def _read_raw_deployment(apps: AppsV1Api, namespace: str, name: str) -> Obj:
    resp = apps.read_namespaced_deployment(name, namespace, _preload_content=False, _request_timeout=(5, 20))
    loaded = json.loads(_response_bytes(resp) or b"{}")
    return loaded if isinstance(loaded, dict) else {}


def wait_deployment_available(
    apps: AppsV1Api,
    core: CoreV1Api,
    namespace: str,
    name: str,
    timeout: float,
    *,
    on_evidence: Callable[[Evidence], None] | None = None,
    emulated: bool = False,
    logs: bool = True,
) -> Verdict:
    """Watch the pods of the Deployment's current revision until all replicas are healthy (fail fast).

    The verdict is HEALTHY (RAN_EMULATED when emulated) once every replica of the current revision
    is ready and stable, or the first failure (CrashLoopBackOff, ImagePullBackOff ...) with its cause.
    """
    clock = _Clock()
    selector = current_pods_selector(apps, namespace, name, timeout)
    api = _Api(_host(apps), 8.0)
    deployment = api.call(f"reading deployment {namespace}/{name}", _read_raw_deployment, apps, namespace, name)
    replicas = _int(_get(deployment, "spec", "replicas"))
    remaining = max(1.0, timeout - clock.elapsed())
    return watch_workload(
        core,
        namespace,
        selector,
        expect=Outcome.RAN_EMULATED if emulated else Outcome.HEALTHY,
        timeout=remaining,
        on_evidence=on_evidence,
        emulated=emulated,
        logs=logs,
        min_pods=max(1, 1 if replicas is None else replicas),
    )
