"""Which outcomes and symptoms a workload can reach, from its kinds and pod specs (Kubernetes semantics).

A scenario is checked against this before anything is deployed: an expectation the watch can
never see (a Deployment that "completes", a crash loop of pods that are never restarted, a
readiness failure without a readiness probe) is bad input, not a Timeout after minutes.

The rules follow the API's own validation and the kubelet's behaviour:

- Deployment, ReplicaSet, StatefulSet and DaemonSet pods must have ``restartPolicy: Always``:
  an exited container is restarted (exit 0 included), so their pods never complete, and a
  failed pod is replaced by the controller, so the workload never ends Failed.
- A Job's pods must have ``restartPolicy: OnFailure`` or ``Never``; a Job ends Complete or,
  past ``backoffLimit`` or ``activeDeadlineSeconds``, Failed. Its success is completing, so it
  is not judged Healthy.
- A bare Pod defaults to ``restartPolicy: Always``; with ``Never`` its containers are never
  restarted (no crash loop, no restarts; the pod ends Succeeded or Failed); with ``OnFailure``
  only a failed container is restarted. ``activeDeadlineSeconds`` can fail any pod.
- An init container that fails is restarted unless the pod's policy is ``Never`` (then the pod
  fails). A sidecar (an init container with ``restartPolicy: Always``) is restarted whatever
  the pod's policy.
- A pod is kept not Ready only by a readiness probe (or a readiness gate); a probe of a type
  the spec does not define can never fail.

scenarios/README.md shows the same rules as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ALWAYS_CONTROLLERS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
POD_KINDS = (*ALWAYS_CONTROLLERS, "Job", "Pod")
PROBE_TYPES = ("liveness", "readiness", "startup")
RESERVED_OUTCOMES = {"RanEmulated": "the harness reports it when the host emulates a foreign image; never expect it"}


class ShapeError(Exception):
    """A pod-making object the API server would refuse, or that the scenario cannot use (one line)."""


@dataclass(frozen=True)
class PodTemplate:
    """What the pods of one object in the manifests will be, as far as outcomes go."""

    kind: str
    name: str
    where: str  # "k8s/deployment.yaml: Deployment/orders-api"
    restart_policy: str
    containers: tuple[str, ...]
    init_containers: tuple[str, ...]  # regular init containers: run to completion before the others
    sidecars: tuple[str, ...]  # init containers with restartPolicy Always: restarted whatever the pod's policy
    probes: frozenset[str]  # probe types (PROBE_TYPES) defined on any container or sidecar
    readiness_gates: bool = False
    active_deadline: bool = False

    @property
    def restarts(self) -> bool:
        """Whether any container of these pods can be restarted in place (restart counts, back-off)."""
        return self.restart_policy != "Never" or bool(self.sidecars)

    @property
    def label(self) -> str:
        policy = f"restartPolicy {self.restart_policy}"
        return f"a {self.kind}" if self.kind in ALWAYS_CONTROLLERS else f"a {self.kind} with {policy}"


def template_of(obj: Mapping[str, Any], where: str) -> PodTemplate | None:
    """The pod template of a pod-making object (None for other kinds); ShapeError if the API would refuse it."""
    kind = obj.get("kind")
    if kind not in POD_KINDS:
        return None
    name = str(_map(obj.get("metadata")).get("name", "?"))
    at = f"{where}: {kind}/{name}"
    spec = _map(obj.get("spec"))
    if kind != "Pod":
        spec = _map(_map(spec.get("template")).get("spec"))
    policy = spec.get("restartPolicy")
    if kind in ALWAYS_CONTROLLERS and policy not in (None, "Always"):
        raise ShapeError(f"{at}: restartPolicy Always (the only one a {kind} allows), got {policy!r}")
    if kind == "Job" and policy not in ("OnFailure", "Never"):
        raise ShapeError(
            f"{at}: restartPolicy OnFailure or Never in the pod template (a Job needs one), got {policy!r}"
        )
    if kind == "Pod" and policy not in (None, "Always", "OnFailure", "Never"):
        raise ShapeError(f"{at}: restartPolicy Always, OnFailure or Never, got {policy!r}")
    containers = _list(spec.get("containers"))
    inits = _list(spec.get("initContainers"))
    if not containers:
        raise ShapeError(f"{at}: at least one container in the pod spec")
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    probes = frozenset(
        probe for c in (*containers, *sidecars) for probe in PROBE_TYPES if isinstance(c.get(f"{probe}Probe"), dict)
    )
    return PodTemplate(
        kind=str(kind),
        name=name,
        where=at,
        restart_policy=str(policy or "Always"),
        containers=tuple(str(c.get("name", "")) for c in containers),
        init_containers=tuple(str(c.get("name", "")) for c in inits if c not in sidecars),
        sidecars=tuple(str(c.get("name", "")) for c in sidecars),
        probes=probes,
        readiness_gates=bool(spec.get("readinessGates")),
        active_deadline=spec.get("activeDeadlineSeconds") is not None,
    )


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def watched(templates: Iterable[PodTemplate], deployment: str | None) -> PodTemplate:
    """The object whose pods are watched: the named (or first) Deployment, else the first other
    pod controller, else the first bare Pod. ShapeError if there is none (or no such Deployment)."""
    found = list(templates)
    deployments = [t for t in found if t.kind == "Deployment"]
    if deployment is not None:
        named = [t for t in deployments if t.name == deployment]
        if not named:
            names = [t.name for t in deployments]
            raise ShapeError(
                f"the name of a Deployment in the manifests ({names or 'there is none'}), got {deployment!r}"
            )
        return named[0]
    for group in (deployments, [t for t in found if t.kind not in ("Deployment", "Pod")], found):
        if group:
            return group[0]
    raise ShapeError(f"manifests with a pod-making object (one of {', '.join(POD_KINDS)})")


# --------------------------------------------------------------------------------------------
# Outcomes: None when the watch can reach it for these pods, else why not (one clause).

_Rule = Callable[[PodTemplate], str | None]


def _not_for_jobs(t: PodTemplate) -> str | None:
    return "a Job is judged by how it ends (Complete or Failed), not Healthy" if t.kind == "Job" else None


def _not_ready(t: PodTemplate) -> str | None:
    if "readiness" in t.probes or t.readiness_gates:
        return None
    return "no container has a readinessProbe (nor the pod a readiness gate), so a running pod is Ready at once"


def _crash_loop(t: PodTemplate) -> str | None:
    return None if t.restarts else f"{t.label} never restarts a container, so there is no back-off"


def _init_crash_loop(t: PodTemplate) -> str | None:
    if t.sidecars or (t.init_containers and t.restart_policy != "Never"):
        return None
    if not t.init_containers:
        return "the pod spec has no initContainers"
    return f"{t.label} fails the pod when an init container fails instead of restarting it"


def _complete(t: PodTemplate) -> str | None:
    if t.kind == "Job" or (t.kind == "Pod" and t.restart_policy != "Always"):
        return None
    return f"{t.label} restarts every container that exits, even with exit code 0, so it never completes"


def _failed(t: PodTemplate) -> str | None:
    if t.kind == "Job" or (t.kind == "Pod" and (t.restart_policy == "Never" or t.active_deadline)):
        return None
    if t.kind == "Pod":
        return f"{t.label} restarts failed containers and has no activeDeadlineSeconds, so the pod never fails"
    return f"{t.label} replaces failed pods, so the workload never ends Failed"


def _always(t: PodTemplate) -> str | None:
    return None


OUTCOME_RULES: dict[str, _Rule] = {
    "Healthy": _not_for_jobs,
    "NotReady": _not_ready,
    "CrashLoopBackOff": _crash_loop,
    "Init:CrashLoopBackOff": _init_crash_loop,
    "ImagePullBackOff": _always,
    "CreateContainerError": _always,
    "Pending": _always,
    "Unschedulable": _always,
    "Complete": _complete,
    "Failed": _failed,
    "Timeout": _always,
}


def outcome_problem(name: str, t: PodTemplate) -> str | None:
    """Why the watch cannot end in outcome `name` for these pods, or None when it can."""
    if name in RESERVED_OUTCOMES:
        return f"{name} is reserved: {RESERVED_OUTCOMES[name]}"
    rule = OUTCOME_RULES.get(name)
    return rule(t) if rule is not None else f"{name} is not an outcome"


def reachable_outcomes(t: PodTemplate, names: Iterable[str] | None = None) -> list[str]:
    """The outcome names (of names, default all) these pods can reach, in table order."""
    offered = list(OUTCOME_RULES) if names is None else [n for n in OUTCOME_RULES if n in set(names)]
    return [n for n in offered if outcome_problem(n, t) is None]


# --------------------------------------------------------------------------------------------
# Symptoms: None when it can show with this outcome and these pods, else why not.


def symptom_problem(kind: str, value: Any, outcome: str, t: PodTemplate) -> str | None:
    """Why symptom {kind: value} can never be seen together with outcome for these pods, or None."""
    if kind == "restartsAtLeast":
        if not t.restarts:
            return f"{t.label} never restarts a container, so its restart count stays 0"
        if outcome == "Healthy":
            return "Healthy means zero restarts"
    if kind == "waitingReason" and value == "CrashLoopBackOff" and not t.restarts:
        return f"{t.label} never restarts a container, so no container waits in CrashLoopBackOff"
    if kind == "probeFailed" and value not in t.probes:
        return f"no container defines a {value}Probe, so it cannot fail"
    if kind == "neverReady" and value is True and outcome == "Healthy":
        return "Healthy means every replica became Ready"
    if kind == "neverReady" and value is False and outcome == "NotReady":
        return "NotReady means the pods never became Ready"
    return None
