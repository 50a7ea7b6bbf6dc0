"""The data model: outcomes, evidence, causes, verdicts, pod and container states (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal, TypeVar

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
    NOT_READY = "not_ready"
    COMPLETE = "complete"
    FAILED = "failed"

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
    Outcome.NOT_READY: "NotReady",
    Outcome.COMPLETE: "Complete",
    Outcome.FAILED: "Failed",
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
    {
        Outcome.CRASH_LOOP,
        Outcome.INIT_CRASH_LOOP,
        Outcome.IMAGE_PULL,
        Outcome.CREATE_ERROR,
        Outcome.UNSCHEDULABLE,
        Outcome.NOT_READY,
        Outcome.FAILED,
    }
)
# Outcomes that end a watch early unless the caller narrows them with fail_on.
DECISIVE: Final = FAILURES | {Outcome.HEALTHY, Outcome.RAN_EMULATED, Outcome.COMPLETE}
# When pods of one workload disagree, the first of these wins.
_PRECEDENCE: Final = (
    Outcome.CRASH_LOOP,
    Outcome.INIT_CRASH_LOOP,
    Outcome.FAILED,
    Outcome.CREATE_ERROR,
    Outcome.IMAGE_PULL,
    Outcome.UNSCHEDULABLE,
    Outcome.NOT_READY,
)
# Controllers that replace a finished pod with a new one: their finished pods do not count.
REPLACING_CONTROLLERS: Final = frozenset({"ReplicaSet", "StatefulSet", "DaemonSet"})
PROBE_KINDS: Final = ("liveness", "readiness", "startup")
# The kubelet's Unhealthy event: "Liveness probe failed: ..." / "Readiness probe errored: ...".
PROBE_EVENT_RE: Final = re.compile(r"^\s*(Liveness|Readiness|Startup) probe (failed|errored)", re.IGNORECASE)
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
    """Why a pod failed, as far as status, events, logs and known platforms tell; it names its evidence.

    explanation is what the evidence supports, in words (for an exec format error it says
    whether a platform difference was seen); evidence names where it was seen (pod, container,
    instance, log line, event or image field).
    """

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
    instance: str = ""
    explanation: str = ""
    evidence: str = ""
    probe: str = ""
    image_platform: str = ""
    node_platform: str = ""
    platform_mismatch: bool = False

    def describe(self) -> str:
        """One line for humans."""
        where = f"pod {self.pod}" + (f" container {self.container}" if self.container else "")
        if self.instance:
            where += f" (instance {self.instance})"
        parts = [f"{where}: {self.reason}"]
        if self.exit_code is not None:
            parts.append(
                f"exit code {self.exit_code}" + (f" ({self.termination_reason})" if self.termination_reason else "")
            )
        if self.explanation:
            parts.append(self.explanation)
        elif self.message:
            parts.append(_one_line(self.message, 200))
        if self.evidence:
            parts.append(f"evidence: {_one_line(self.evidence, 400)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class HealthEvidence:
    """What decided Healthy: the kubelet's probe counters, or the probe window of the pod spec, and when."""

    source: str
    detail: str
    seconds: float


@dataclass(frozen=True)
class ImageRun:
    """One container that ran: its image as the pod spec names it, the runtime's image ID, the node.

    config: the image ID the node's containerd knows it by (the config digest; filled after the
    watch from the node): what really ran, since a container's imageID names only one repo digest
    of it. platform: that image's platform, where the harness knows it (it pushed or loaded it).
    """

    pod: str
    container: str
    image: str
    image_id: str
    node: str
    platform: str = ""
    config: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a container, with the Kubernetes defaults filled in."""

    kind: str  # liveness | readiness | startup
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    failure_threshold: int = 3

    @property
    def window(self) -> int:
        """Seconds after the container starts by which a failing probe has made the kubelet act."""
        return self.initial_delay + self.period * (self.failure_threshold - 1) + self.timeout

    def describe_window(self) -> str:
        return (
            f"initialDelaySeconds {self.initial_delay} + periodSeconds {self.period} x "
            f"(failureThreshold {self.failure_threshold} - 1) + timeoutSeconds {self.timeout} = {self.window} s"
        )


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
    waiting_reasons_seen: frozenset[str] = frozenset()
    terminated_reasons_seen: frozenset[str] = frozenset()
    exit_codes_seen: frozenset[int] = frozenset()
    probe_failures_seen: frozenset[str] = frozenset()
    health: HealthEvidence | None = None
    images_ran: tuple[ImageRun, ...] = ()

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
    spec_image: str = ""
    image_id: str = ""
    started_at: datetime | None = None
    probes: tuple[ProbeSpec, ...] = ()
    last_started_at: datetime | None = None  # of the instance in lastState.terminated

    @property
    def failed(self) -> bool:
        """The current state is a termination other than success (a non-zero exit, or a reason such as OOMKilled)."""
        return self.state == "terminated" and (self.exit_code not in (0, None) or self.reason not in ("", "Completed"))

    @property
    def failed_last(self) -> bool:
        """The instance before (lastState.terminated) ended other than in success."""
        return self.last_exit_code not in (0, None) or self.last_reason not in ("", "Completed")

    @property
    def instance(self) -> str:
        """The short ID (12 hex digits) of the container instance the current state is about."""
        return short_id(self.container_id)

    def probe(self, kind: str) -> ProbeSpec | None:
        return next((p for p in self.probes if p.kind == kind), None)

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
    uid: str = ""
    namespace: str = ""
    owner_kind: str = ""
    owner_name: str = ""
    restart_policy: str = "Always"
    labels: tuple[tuple[str, str], ...] = ()
    reason: str = ""  # status.reason of the pod (Evicted, DeadlineExceeded ...)
    message: str = ""

    def label(self, key: str) -> str:
        return next((v for k, v in self.labels if k == key), "")

    @property
    def restarts(self) -> int:
        return max((c.restarts for c in self.containers), default=0)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def live(self) -> bool:
        """Counts for the workload: not being deleted, and not a finished pod its controller replaces.

        A finished pod of a Job or a bare pod is the workload's result, so it counts.
        """
        if self.terminating:
            return False
        return not (self.finished and self.owner_kind in REPLACING_CONTROLLERS)

    def describe(self) -> str:
        if self.unschedulable_message:
            return f"{self.name}: Pending, unschedulable: {_one_line(self.unschedulable_message, 160)}"
        shown = self.culprit or next((c for c in self.containers if not c.ready), None)
        detail = f" [{shown.subject_name}] {shown.describe()}" if shown else ""
        ready = "ready" if self.ready else "not ready"
        gone = ", terminating" if self.terminating else ""
        return f"{self.name}: {self.phase or 'Unknown'}, {ready}{gone}{detail}"


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


def short_id(container_id: str) -> str:
    """containerd://a9c2b491c0a2... -> a9c2b491c0a2 (what crictl ps shows)."""
    return container_id.rpartition("://")[2][:12]


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _outcome_set(expect: Outcome | Iterable[Outcome]) -> frozenset[Outcome]:
    """One outcome or several, as a set."""
    if isinstance(expect, Outcome):
        return frozenset({expect})
    return frozenset(expect)
