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


def _outcome_set(expect: Outcome | Iterable[Outcome]) -> frozenset[Outcome]:
    """One outcome or several, as a set."""
    if isinstance(expect, Outcome):
        return frozenset({expect})
    return frozenset(expect)
