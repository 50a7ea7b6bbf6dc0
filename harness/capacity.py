"""The capacity gate's arithmetic: what a workload asks of the nodes at its peak, and whether it fits.

- peak_requests(docs): from rendered manifests, the CPU and memory requests each pod makes, and
  how many pods the workload can hold at once (a Deployment's replicas plus its rolling update's
  surge, a Job's parallelism, one pod per node for a DaemonSet).
- free_capacity(core): each schedulable node's allocatable minus the requests of the pods on it.
- fits(demand, nodes): whether every pod finds a node with room, placing the largest first.
- Ledger: demand admitted in this process but perhaps not yet scheduled, per cluster, so that
  concurrent admissions cannot both pass on the same free capacity.

A pod's requests follow the scheduler's rule (k8s.io/component-helpers resource.PodRequests): the
sum of the regular containers and of the restartable init containers ("sidecars",
restartPolicy Always, which keep running), or, if larger, the largest phase of initialisation
(an init container's requests plus those of the sidecars started before it), per resource; plus
the pod's overhead. Pod-level requests (spec.resources) replace the containers' for the
resources they name. A container's missing request defaults to its limit, as the API server
does.

The gate is only as good as the requests: a pod that requests nothing asks nothing of the gate
and is always admitted, however much it then uses. Only cpu and memory are counted.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes import client as k8s

from harness.errors import BadInput
from harness.workload import MANAGED_LABEL

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)


class QuantityError(ValueError):
    """A string that is no Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("100m", "64Mi", "1.5", "2e3", "1G"; an int or float from YAML) as a number."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    text = str(value).strip()
    m = _QUANTITY.match(text)
    if m is None:
        raise QuantityError(f"{value!r} is not a quantity (a number with m, k, M, G, Ki, Mi, Gi ... or e<n>)")
    number, exponent, suffix = m.groups()
    try:
        base = Decimal(number)
        if exponent:
            return base * (Decimal(10) ** int(exponent[1:]))
        if suffix in _BINARY:
            return base * _BINARY[suffix]
        return base * _DECIMAL[suffix or ""]
    except InvalidOperation as exc:
        raise QuantityError(f"{value!r} is not a quantity") from exc


def cpu_millis(value: object) -> int:
    """CPU in millicores, rounded up as Kubernetes does (MilliValue)."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_bytes(value: object) -> int:
    """Memory in bytes, rounded up as Kubernetes does (Value)."""
    return math.ceil(parse_quantity(value))


@dataclass(frozen=True, order=True)
class Resources:
    """CPU (millicores) and memory (bytes)."""

    cpu: int = 0
    memory: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def times(self, n: int) -> Resources:
        return Resources(self.cpu * n, self.memory * n)

    def max(self, other: Resources) -> Resources:
        """Per resource, the larger."""
        return Resources(max(self.cpu, other.cpu), max(self.memory, other.memory))

    def covers(self, other: Resources) -> bool:
        """Room for other: at least as much of every resource other asks for."""
        return (other.cpu <= 0 or self.cpu >= other.cpu) and (other.memory <= 0 or self.memory >= other.memory)

    @property
    def empty(self) -> bool:
        return self.cpu <= 0 and self.memory <= 0

    def describe(self) -> str:
        return f"cpu {format_cpu(self.cpu)}, memory {format_memory(self.memory)}"


def format_cpu(millis: int) -> str:
    return f"{millis}m" if millis % 1000 else f"{millis // 1000}"


def format_memory(count: int) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(count) >= size:
            shown = count / size
            return f"{shown:.0f}{unit}" if shown == int(shown) else f"{shown:.1f}{unit}"
    return str(count)


def _short(need: Resources, have: Resources) -> str:
    """'cpu 300m, free 120m' for each resource need has more of than have."""
    parts = []
    if need.cpu > 0 and need.cpu > have.cpu:
        parts.append(f"cpu {format_cpu(need.cpu)}, free {format_cpu(max(have.cpu, 0))}")
    if need.memory > 0 and need.memory > have.memory:
        parts.append(f"memory {format_memory(need.memory)}, free {format_memory(max(have.memory, 0))}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# What a workload asks


@dataclass(frozen=True)
class PodDemand:
    """The pods of one object: each requests `requests`; `count` of them at the workload's peak.

    per_node: a DaemonSet, whose `count` pods are on every schedulable node. steady: the pods
    once no rollout is under way (a Deployment's replicas without its surge).
    """

    workload: str  # "Deployment orders-api"
    origin: str  # the manifest file (or what the objects came from)
    requests: Resources
    count: int
    per_node: bool = False
    steady: int | None = None  # None: the same as count

    def describe(self) -> str:
        many = f"{self.count} pod(s) per node" if self.per_node else f"{self.count} pod(s) at its peak"
        return f"{self.workload} ({self.origin}): {many}, each requesting {self.requests.describe()}"


@dataclass(frozen=True)
class Demand:
    """What a workload asks of the nodes at its peak."""

    pods: tuple[PodDemand, ...] = ()

    @property
    def total(self) -> Resources:
        """The requests of every pod at the peak (a DaemonSet's counted once per node: not included)."""
        total = Resources()
        for p in self.pods:
            if not p.per_node:
                total = total + p.requests.times(p.count)
        return total

    @property
    def empty(self) -> bool:
        """Nothing requested: the gate has nothing to check."""
        return all(p.requests.empty or p.count <= 0 for p in self.pods)

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.pods + other.pods)

    def steady(self) -> Demand:
        """The demand once no rollout is under way: without a rolling update's surge."""
        return Demand(
            tuple(replace(p, count=p.count if p.steady is None else p.steady, steady=None) for p in self.pods)
        )

    def describe(self) -> str:
        return f"needs {self.total.describe()}" if self.pods else "requests nothing"


def container_requests(container: Mapping[str, Any], where: str) -> Resources:
    """One container's requests; a resource with a limit and no request is requested at its limit."""
    resources = container.get("resources") or {}
    requests = dict(resources.get("limits") or {})
    requests.update(resources.get("requests") or {})
    return _resources(requests, f"{where} container {container.get('name', '?')}")


def _resources(values: Mapping[str, Any], where: str) -> Resources:
    try:
        cpu = cpu_millis(values["cpu"]) if "cpu" in values else 0
        memory = memory_bytes(values["memory"]) if "memory" in values else 0
    except QuantityError as exc:
        raise BadInput(
            f"{where}: resources: {exc}", "write it as Kubernetes does, e.g. cpu: 100m, memory: 64Mi"
        ) from exc
    return Resources(cpu, memory)


def pod_requests(spec: Mapping[str, Any], where: str = "pod") -> Resources:
    """A pod's effective requests, as the scheduler computes them (see the module's docstring)."""
    regular = Resources()
    for c in spec.get("containers") or []:
        regular = regular + container_requests(c, where)
    sidecars = Resources()
    init_peak = Resources()
    for c in spec.get("initContainers") or []:
        own = container_requests(c, where)
        if c.get("restartPolicy") == "Always":
            regular = regular + own
            sidecars = sidecars + own
            phase = sidecars
        else:
            phase = own + sidecars
        init_peak = init_peak.max(phase)
    total = regular.max(init_peak)
    pod_level = (spec.get("resources") or {}).get("requests") or {}
    if pod_level:
        given = _resources(pod_level, f"{where} spec.resources")
        total = Resources(
            given.cpu if "cpu" in pod_level else total.cpu,
            given.memory if "memory" in pod_level else total.memory,
        )
    overhead = spec.get("overhead") or {}
    if overhead:
        total = total + _resources(overhead, f"{where} spec.overhead")
    return total


def surge(value: object, replicas: int, where: str) -> int:
    """A rolling update's maxSurge as a pod count: an int, or a percentage of replicas rounded up."""
    if value is None:
        value = "25%"
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    text = str(value).strip()
    if text.endswith("%") and text[:-1].isdigit():
        return math.ceil(replicas * int(text[:-1]) / 100)
    if text.isdigit():
        return int(text)
    raise BadInput(f"{where}: maxSurge {value!r} is neither a count nor a percentage", "write e.g. 1 or 25%")


def _int(value: object, default: int) -> int:
    if value is None:
        return default
    try:
        return int(str(value))
    except ValueError:
        return default


def _pods_of(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], int, bool, int] | None:
    """(pod spec, pods at the peak, per node, pods at rest) of an object that makes pods; None for others."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec, 1, False, 1
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        kind = "Job"
    template = ((spec.get("template") or {}).get("spec")) or {}
    name = (obj.get("metadata") or {}).get("name", "?")
    if kind == "Deployment":
        replicas = _int(spec.get("replicas"), 1)
        strategy = spec.get("strategy") or {}
        extra = 0
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
            rolling = strategy.get("rollingUpdate") or {}
            extra = surge(rolling.get("maxSurge"), replicas, f"Deployment {name}")
        return template, replicas + extra, False, replicas
    if kind in ("StatefulSet", "ReplicaSet", "ReplicationController"):
        replicas = _int(spec.get("replicas"), 1)
        return template, replicas, False, replicas
    if kind == "Job":
        parallelism = _int(spec.get("parallelism"), 1)
        completions = spec.get("completions")
        count = min(parallelism, _int(completions, parallelism)) if completions is not None else parallelism
        return template, count, False, count
    if kind == "DaemonSet":
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        surging = surge(rolling.get("maxSurge", 0), 1, f"DaemonSet {name}") > 0
        return template, 2 if surging else 1, True, 1
    return None


def peak_requests(docs: Sequence[Mapping[str, Any]], origins: Sequence[str] | None = None) -> Demand:
    """The peak requests of rendered manifests; origins[i] names the file of docs[i]."""
    pods = []
    for i, obj in enumerate(docs):
        origin = origins[i] if origins is not None and i < len(origins) else "the manifests"
        found = _pods_of(obj)
        if found is None:
            continue
        spec, count, per_node, steady = found
        what = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name', '?')}"
        requests = pod_requests(spec, f"{origin}: {what}")
        pods.append(PodDemand(what, origin, requests, max(count, 0), per_node, max(steady, 0)))
    return Demand(tuple(pods))


# ---------------------------------------------------------------------------------------------
# What the nodes have


@dataclass(frozen=True)
class NodeFree:
    """One schedulable node: allocatable, the requests of its non-terminated pods, and of those that stay.

    resident: the pods in namespaces the harness did not make (the cluster's own, kube-system's):
    what the node keeps using when no workload of the harness runs.
    """

    name: str
    allocatable: Resources
    requested: Resources
    resident: Resources = Resources()

    @property
    def free(self) -> Resources:
        return self.allocatable - self.requested

    @property
    def baseline(self) -> NodeFree:
        """This node with only its resident pods: the most it can ever offer the harness."""
        return NodeFree(self.name, self.allocatable, self.resident, self.resident)


def _schedulable(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def nodes_free(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    harness_namespaces: Iterable[str] = (),
    exclude_namespaces: Iterable[str] = (),
) -> list[NodeFree]:
    """The free capacity of API objects (the pure part of free_capacity).

    Nodes that are cordoned, not Ready or tainted NoSchedule/NoExecute take no workload of ours.
    Pods not yet bound to a node are placed where they fit best (they will take room); pods in
    exclude_namespaces are left out (their demand is held in the ledger instead).
    """
    ours = set(harness_namespaces)
    excluded = set(exclude_namespaces)
    alloc: dict[str, Resources] = {}
    for node in nodes:
        if _schedulable(node):
            a = (node.get("status") or {}).get("allocatable") or {}
            alloc[str((node.get("metadata") or {}).get("name"))] = _resources(a, "node allocatable")
    requested = dict.fromkeys(alloc, Resources())
    resident = dict.fromkeys(alloc, Resources())
    pending: list[Resources] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "")
        if namespace in excluded or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        spec = pod.get("spec") or {}
        try:
            r = pod_requests(spec, f"pod {namespace}/{meta.get('name')}")
        except BadInput:
            continue  # the API server accepted it; what it holds is not ours to judge
        bound = str(spec.get("nodeName") or "")
        if not bound:
            pending.append(r)
        elif bound in requested:
            requested[bound] = requested[bound] + r
            if namespace not in ours:
                resident[bound] = resident[bound] + r
    room = {n: alloc[n] - requested[n] for n in alloc}
    for r in sorted(pending, reverse=True):
        best = _roomiest(room, r)
        if best is not None:
            room[best] = room[best] - r
            requested[best] = requested[best] + r
    return [NodeFree(n, alloc[n], requested[n], resident[n]) for n in sorted(alloc)]


def free_capacity(core: k8s.CoreV1Api, exclude_namespaces: Iterable[str] = ()) -> list[NodeFree]:
    """Each schedulable node's allocatable minus the requests of the non-terminated pods on it."""
    api = core.api_client
    nodes = [api.sanitize_for_serialization(n) for n in core.list_node().items]
    pods = [
        api.sanitize_for_serialization(p)
        for p in core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items
    ]
    managed = [
        str(ns.metadata.name)
        for ns in core.list_namespace(label_selector=f"{MANAGED_LABEL}=true").items
        if ns.metadata is not None
    ]
    return nodes_free(nodes, pods, managed, exclude_namespaces)


# ---------------------------------------------------------------------------------------------
# Does it fit


@dataclass(frozen=True)
class Fit:
    """Whether a demand fits; when not, why, in one phrase ('needs cpu 300m, free 120m')."""

    ok: bool
    reason: str = ""
    free: Resources = Resources()  # across the nodes, before the demand


def _roomiest(room: Mapping[str, Resources], r: Resources) -> str | None:
    """The node with room for r that has the most left (the scheduler spreads by least allocated)."""
    candidates = [n for n in sorted(room) if room[n].covers(r)]
    return max(candidates, key=lambda n: (room[n].cpu, room[n].memory)) if candidates else None


def place(demand: Demand, room: dict[str, Resources]) -> str | None:
    """Place every pod of demand into room (mutated), largest first; None, or why one found no node."""
    for p in demand.pods:
        if not p.per_node or p.requests.empty:
            continue
        for n in sorted(room):
            for _ in range(p.count):
                if not room[n].covers(p.requests):
                    return f"a pod of {p.workload} needs {_short(p.requests, room[n])} on node {n}"
                room[n] = room[n] - p.requests
    singles = [p for p in demand.pods if not p.per_node and not p.requests.empty for _ in range(p.count)]
    for p in sorted(singles, key=lambda p: p.requests, reverse=True):
        best = _roomiest(room, p.requests)
        if best is None:
            roomiest = max(room.values(), default=Resources(), key=lambda r: (r.cpu, r.memory))
            return f"a pod of {p.workload} needs {_short(p.requests, roomiest)} on the roomiest node"
        room[best] = room[best] - p.requests
    return None


def fits(demand: Demand, nodes: Sequence[NodeFree]) -> Fit:
    """Whether every pod of demand finds a node with room (and so the total fits across the nodes)."""
    free = Resources()
    for n in nodes:
        free = free + n.free
    if demand.empty:
        return Fit(True, free=free)
    if not nodes:
        return Fit(False, "no schedulable node (cordoned, tainted or not Ready)", free)
    short = _short(demand.total, free)
    if short:
        return Fit(False, f"needs {short}", free)
    why = place(demand, {n.name: n.free for n in nodes})
    return Fit(why is None, why or "", free)


def gated(demand: Demand, nodes: Sequence[NodeFree]) -> Demand:
    """What the gate waits for: the peak, or the steady state where the peak can never fit these nodes.

    A rollout whose surge cannot fit beside the old pods is a workload that runs (its new pods
    wait Pending for room, or the rollout stalls: an incident of its own), not bad input.
    """
    if demand.empty or fits(demand, [n.baseline for n in nodes]).ok:
        return demand
    return demand.steady()


def refuse_impossible(demand: Demand, nodes: Sequence[NodeFree], what: str) -> None:
    """BadInput when demand, without its surge, cannot fit even on nodes with nothing of the harness on them."""
    if demand.empty:
        return
    steady = demand.steady()
    fit = fits(steady, [n.baseline for n in nodes])
    if not fit.ok:
        _refuse(steady, nodes, fit, what)


def _refuse(demand: Demand, nodes: Sequence[NodeFree], fit: Fit, what: str) -> None:
    biggest = max((p for p in demand.pods if not p.requests.empty), key=lambda p: p.requests.times(p.count))
    allocatable = Resources()
    for n in nodes:
        allocatable = allocatable + n.allocatable
    raise BadInput(
        f"{what + ': ' if what else ''}{biggest.origin}: {biggest.workload} can never fit these nodes: it asks "
        f"{demand.total.describe()} ({biggest.count} pod(s) of {biggest.requests.describe()}), "
        f"the nodes have {allocatable.describe()} allocatable, {fit.free.describe()} of it when no workload "
        f"of the harness runs ({fit.reason})",
        "lower the pods' resources.requests, the replicas or the rolling update's maxSurge, "
        "or use a cluster with more nodes (scenario field 'workers')",
    )


# ---------------------------------------------------------------------------------------------
# The ledger


@dataclass
class Ledger:
    """Demand admitted in this process, per namespace, held until released.

    The pods of a held namespace are left out of the nodes' requests (read_free is told which
    namespaces to leave out) and its whole demand is placed instead: whether its pods are
    scheduled yet or not, the room is taken once. One lock serialises the admissions of a
    cluster, so two of them never pass on the same free capacity.
    """

    held: dict[str, Demand] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def try_admit(
        self, namespace: str, demand: Demand, read_free: Callable[[frozenset[str]], Sequence[NodeFree]]
    ) -> Fit:
        """Admit demand for namespace if it fits beside what is held (held then); the Fit either way."""
        with self.changed:
            nodes = read_free(frozenset(self.held))
            room = {n.name: n.free for n in nodes}
            for other in self.held.values():
                place(other, room)  # what does not fit is still pending: it leaves nothing
            left = [NodeFree(n.name, n.allocatable, n.allocatable - room[n.name], n.resident) for n in nodes]
            fit = fits(demand, left)
            if fit.ok:
                self.held[namespace] = self.held.get(namespace, Demand()) + demand
            return fit

    def release(self, namespace: str) -> None:
        with self.changed:
            if self.held.pop(namespace, None) is not None:
                self.changed.notify_all()

    def wait_changed(self, seconds: float) -> None:
        """Wait until a release, at most seconds (the cluster's own changes are seen on the next read)."""
        with self.changed:
            self.changed.wait(seconds)


_LEDGERS: dict[str, Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def ledger(cluster: str) -> Ledger:
    """The one ledger of a cluster in this process."""
    with _LEDGERS_LOCK:
        return _LEDGERS.setdefault(cluster, Ledger())


__all__ = [
    "Demand",
    "Fit",
    "Ledger",
    "NodeFree",
    "PodDemand",
    "QuantityError",
    "Resources",
    "container_requests",
    "cpu_millis",
    "fits",
    "free_capacity",
    "gated",
    "ledger",
    "memory_bytes",
    "nodes_free",
    "parse_quantity",
    "peak_requests",
    "place",
    "pod_requests",
    "refuse_impossible",
    "surge",
]
