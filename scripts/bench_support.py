"""Shared helpers of scripts/bench.py and scripts/soak.py: measuring the harness, not running it.

Pure parts (unit-tested in tests/unit/test_bench_support.py): plain-text tables, statistics,
targets, the "floor" of a verdict (the first moment the cluster made a state visible, replayed
from recorded pod observations), listings diffs, the runner's step lines, soak checks.

Parts that touch the machine: a pod observer (one watch over all namespaces, every change stamped
with the wall-clock time it arrived), the naive baselines (`kubectl get pods -o json` every 5 s,
`kubectl wait --for=condition=Ready`), a child process whose output is read line by line as it is
printed (to interrupt it in a given step), listings of namespaces, images and containers.

All moments are wall-clock seconds (time.time()): the API server's timestamps (a condition's
lastTransitionTime) come from the same kernel clock, since kind nodes are containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from harness import tools

Obj = Mapping[str, Any]

# ---------------------------------------------------------------------------------------------
# Tables and numbers


def seconds(value: float | None, digits: int = 1) -> str:
    """A duration for a table cell: "12.3" (seconds), or "-" when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\d+(\.\d+)?( ?[a-z%x]+)?", text.strip()))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "") -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned.

    Cells are str()-ed; None prints as "-". A cell may not contain a newline (it is replaced by a space).
    """
    cells = [[("-" if c is None else str(c)).replace("\n", " ") for c in row] for row in rows]
    width = len(headers)
    for row in cells:
        if len(row) != width:
            raise ValueError(f"row {row!r} has {len(row)} cells, the table has {width} columns")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [bool(cells) and all(_numeric(r[i]) or r[i] == "-" for r in cells) for i in range(width)]

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)


@dataclass(frozen=True)
class Stats:
    count: int
    minimum: float
    median: float
    maximum: float

    def brief(self, digits: int = 1) -> str:
        """ "12.3" for one value, "12.3 (11.0-14.2)" for several: median (min-max)."""
        if self.count == 1:
            return seconds(self.median, digits)
        return f"{seconds(self.median, digits)} ({seconds(self.minimum, digits)}-{seconds(self.maximum, digits)})"


def stats(values: Iterable[float | None]) -> Stats | None:
    """Median, min and max of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Stats(len(present), min(present), statistics.median(present), max(present))


def brief(values: Iterable[float | None], digits: int = 1) -> str:
    found = stats(values)
    return "-" if found is None else found.brief(digits)


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Target:
    """A goal with the numbers that decide it; met is None when it could not be measured."""

    name: str
    met: bool | None
    detail: str

    @property
    def word(self) -> str:
        return {True: "met", False: "MISSED", None: "NOT MEASURED"}[self.met]

    def line(self) -> str:
        return f"{self.word:12} {self.name}: {self.detail}"


def within(name: str, measured: Sequence[float | None], limit: float, unit: str = "s") -> Target:
    """Every measurement at most limit (a measurement of None: not measured)."""
    present = [m for m in measured if m is not None]
    if not present or len(present) != len(measured):
        missing = len(measured) - len(present)
        return Target(
            name,
            None if not present else False,
            f"{missing} of {len(measured)} measurements missing; limit {limit:g} {unit}",
        )
    worst = max(present)
    shown = ", ".join(f"{m:.2f}" for m in present)
    return Target(name, worst <= limit, f"worst {worst:.2f} {unit} vs limit {limit:g} {unit} (all: {shown})")


def scale_target(name: str, one: float | None, many: float | None, factor: float) -> Target:
    """The time for many at once under factor times the time for one."""
    if one is None or many is None or one <= 0:
        return Target(name, None, f"one: {seconds(one)} s, many: {seconds(many)} s")
    ratio = many / one
    return Target(name, ratio < factor, f"{many:.1f} s vs {one:.1f} s for one: {ratio:.2f}x (limit {factor:g}x)")


# ---------------------------------------------------------------------------------------------
# Floors: when did the cluster make a state visible?


class VisibleState(Enum):
    """The states the bench times, as a watcher of pods sees them."""

    CRASH_LOOP = "CrashLoopBackOff"
    IMAGE_PULL = "ImagePullBackOff"
    HEALTHY = "Healthy"


# Waiting reasons that show a state. ErrImagePull counts for IMAGE_PULL: the harness classifies
# it as the image-pull failure it is, and `kubectl get pods` prints it in STATUS too.
STATE_REASONS: dict[VisibleState, frozenset[str]] = {
    VisibleState.CRASH_LOOP: frozenset({"CrashLoopBackOff"}),
    VisibleState.IMAGE_PULL: frozenset({"ErrImagePull", "ImagePullBackOff"}),
}


def waiting_reasons(pod: Obj) -> set[str]:
    """The waiting reasons of every container (init containers too) of a pod."""
    status = pod.get("status") or {}
    found = set()
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            if reason:
                found.add(str(reason))
    return found


def _ready_condition(pod: Obj) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond  # type: ignore[no-any-return]
    return None


def pod_ready(pod: Obj) -> bool:
    cond = _ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def pods_show(pods: Iterable[Obj], state: VisibleState, *, min_pods: int = 1) -> bool:
    """Whether the pods show the state.

    A failure state shows when any pod shows it; HEALTHY when at least min_pods pods exist that
    are not being deleted and every one of them is Ready (what `kubectl wait` waits for).
    """
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if state is VisibleState.HEALTHY:
        return len(live) >= min_pods and all(pod_ready(p) for p in live)
    reasons = STATE_REASONS[state]
    return any(waiting_reasons(p) & reasons for p in live)


@dataclass(frozen=True)
class Observation:
    """One pod as a watcher received it, at wall-clock time `at`."""

    at: float
    kind: str  # ADDED, MODIFIED, DELETED (or LISTED for the initial list)
    pod: Obj

    @property
    def namespace(self) -> str:
        return str((self.pod.get("metadata") or {}).get("namespace", ""))

    @property
    def name(self) -> str:
        return str((self.pod.get("metadata") or {}).get("name", ""))


def first_visible(
    observations: Iterable[Observation], namespace: str, state: VisibleState, *, min_pods: int = 1
) -> float | None:
    """The floor: the arrival time of the first observation after which the namespace's pods show state.

    Observations are replayed in arrival order (a DELETED pod leaves the set).
    """
    for at, pods in _replay(observations, namespace):
        if pods_show(pods.values(), state, min_pods=min_pods):
            return at
    return None


def _replay(observations: Iterable[Observation], namespace: str) -> Iterator[tuple[float, dict[str, Obj]]]:
    """The namespace's pods after each observation, in arrival order (a DELETED pod leaves the set)."""
    pods: dict[str, Obj] = {}
    for obs in sorted((o for o in observations if o.namespace == namespace), key=lambda o: o.at):
        if obs.kind == "DELETED":
            pods.pop(obs.name, None)
        else:
            pods[obs.name] = obs.pod
        yield obs.at, pods


def first_waiting_reason(observations: Iterable[Observation], namespace: str, reason: str) -> float | None:
    """The arrival time of the first observation of a pod of the namespace waiting with this reason."""
    for obs in sorted((o for o in observations if o.namespace == namespace), key=lambda o: o.at):
        if obs.kind != "DELETED" and reason in waiting_reasons(obs.pod):
            return obs.at
    return None


def parse_k8s_time(text: str | None) -> float | None:
    """An API timestamp ("2026-11-26T08:14:07Z", maybe with fractions) as epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def server_ready_time(observations: Iterable[Observation], namespace: str, *, min_pods: int = 1) -> float | None:
    """When the API server says the namespace's pods became Ready: the latest Ready lastTransitionTime
    among the pods at the first moment all were Ready (one-second resolution, truncated)."""
    for _at, pods in _replay(observations, namespace):
        if pods_show(pods.values(), VisibleState.HEALTHY, min_pods=min_pods):
            times = [
                parse_k8s_time(str((_ready_condition(p) or {}).get("lastTransitionTime") or "")) for p in pods.values()
            ]
            known = [t for t in times if t is not None]
            return max(known) if known else None
    return None


def trim_pod(pod: Obj) -> dict[str, Any]:
    """A pod reduced to what floors need (metadata names and deletion, status): for recordings."""
    meta = pod.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "deletionTimestamp", "creationTimestamp") if k in meta}
    status = pod.get("status") or {}
    return {
        "metadata": kept,
        "status": {
            k: status[k] for k in ("phase", "conditions", "containerStatuses", "initContainerStatuses") if k in status
        },
    }


def load_observations(path: Path) -> list[Observation]:
    """Observations saved as JSON lines {"at": ..., "kind": ..., "pod": {...}}."""
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            found.append(Observation(float(raw["at"]), str(raw["kind"]), raw["pod"]))
    return found


def save_observations(observations: Iterable[Observation], path: Path) -> None:
    lines = [
        json.dumps({"at": round(o.at, 3), "kind": o.kind, "pod": trim_pod(o.pod)}, sort_keys=True) for o in observations
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Timing:
    """One verdict (the harness's or a baseline's) against its namespace's floor; seconds from apply."""

    who: str
    applied_at: float
    decided_at: float | None
    floor_at: float | None
    detail: str = ""

    @property
    def to_verdict(self) -> float | None:
        return None if self.decided_at is None else self.decided_at - self.applied_at

    @property
    def floor(self) -> float | None:
        return None if self.floor_at is None else self.floor_at - self.applied_at

    @property
    def lag(self) -> float | None:
        """Verdict minus floor: how long after the cluster showed the state the verdict came."""
        if self.decided_at is None or self.floor_at is None:
            return None
        return self.decided_at - self.floor_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "who": self.who,
            "applied_at": self.applied_at,
            "decided_at": self.decided_at,
            "floor_at": self.floor_at,
            "to_verdict_s": _r(self.to_verdict),
            "floor_s": _r(self.floor),
            "lag_s": _r(self.lag),
            "detail": self.detail,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------------------------------------
# Where a run's time went

STEP_GROUPS = ("cluster", "build", "load", "apply", "watch incident", "fix steps", "watch fix")


def step_group(name: str) -> str:
    """The group of a runner step name: "build laptop-build for linux/arm64" -> "build"."""
    if name.startswith("watch fix"):
        return "watch fix"
    if name.startswith("watch"):
        return "watch incident"
    if name.startswith("fix"):
        return "fix steps"
    first = name.split(" ", 1)[0]
    return first if first in STEP_GROUPS else "other"


def step_groups(steps: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Seconds per step group of one run (several builds or loads add up)."""
    found: dict[str, float] = {}
    for name, took in steps:
        group = step_group(name)
        found[group] = found.get(group, 0.0) + took
    return found


# ---------------------------------------------------------------------------------------------
# CPU requests: will n workloads at once fit the node?


def cpu_millis(quantity: str | int | float | None) -> int:
    """A Kubernetes CPU quantity in millicores: "50m" -> 50, "2" -> 2000, "0.5" -> 500, None -> 0."""
    if quantity is None or quantity == "":
        return 0
    text = str(quantity).strip()
    if text.endswith("m"):
        return int(float(text[:-1]))
    return round(float(text) * 1000)


def _surge(deployment: Obj, replicas: int) -> int:
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return -(-replicas * int(value[:-1]) // 100)  # rounded up, as the controller does
    return int(value)


def peak_cpu_request(objects: Iterable[Obj]) -> int:
    """Millicores one workload requests at its peak: (replicas + maxSurge) pods of each Deployment."""
    total = 0
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        spec = obj.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        pod = (spec.get("template") or {}).get("spec") or {}
        per_pod = sum(
            cpu_millis(((c.get("resources") or {}).get("requests") or {}).get("cpu"))
            for c in pod.get("containers") or []
        )
        total += (replicas + _surge(obj, replicas)) * per_pod
    return total


def free_cpu(allocatable: str, pods: Iterable[Obj]) -> int:
    """Millicores of a node not yet requested by its pods that have not finished."""
    used = 0
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            used += cpu_millis(((c.get("resources") or {}).get("requests") or {}).get("cpu"))
    return cpu_millis(allocatable) - used


def node_free_cpu(core: k8s.CoreV1Api, node_name: str | None = None) -> int:
    """Millicores of a node (default: the first) that no pod requests yet."""
    serialize = core.api_client.sanitize_for_serialization
    node: dict[str, Any] = serialize(core.read_node(node_name) if node_name else core.list_node().items[0])
    name = node["metadata"]["name"]
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items
    return free_cpu(
        str((node.get("status") or {}).get("allocatable", {}).get("cpu", "0")), [serialize(p) for p in pods]
    )


# ---------------------------------------------------------------------------------------------
# Listings (before/after) and soak checks


@dataclass(frozen=True)
class Diff:
    created: tuple[str, ...]
    removed: tuple[str, ...]

    def describe(self, what: str) -> str:
        def names(items: tuple[str, ...]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

        parts = [
            f"{what}: {len(self.created)} created" + (f" [{names(self.created)}]" if self.created else ""),
            f"{len(self.removed)} removed" + (f" [{names(self.removed)}]" if self.removed else ""),
        ]
        return ", ".join(parts)


def diff(before: Iterable[str], after: Iterable[str]) -> Diff:
    b, a = set(before), set(after)
    return Diff(tuple(sorted(a - b)), tuple(sorted(b - a)))


class Status(Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    seconds: float | None = None

    @classmethod
    def of(cls, name: str, passed: bool, detail: str, seconds: float | None = None) -> Check:
        return cls(name, Status.PASS if passed else Status.FAIL, detail, seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "seconds": _r(self.seconds)}


def render_checks(checks: Sequence[Check], *, title: str = "") -> str:
    rows = [(c.status.value, c.name, seconds(c.seconds), c.detail) for c in checks]
    table = format_table(["result", "check", "s", "details"], rows, title=title)
    failed = sum(c.status is Status.FAIL for c in checks)
    passed = sum(c.status is Status.PASS for c in checks)
    skipped = sum(c.status is Status.SKIP for c in checks)
    return f"{table}\n{passed} passed, {failed} failed, {skipped} skipped"


STEP_LINE = re.compile(r"^==> ([A-Za-z][A-Za-z-]*)")
NAMESPACE_LINE = re.compile(r"^\s+namespace (\S+), watching ")


def step_of(line: str) -> str | None:
    """The first word of a runner step line, else None.

    "==> build laptop-build for ..." -> "build"; "==> watch: expect X" and "==> watch fix: ..." -> "watch".
    """
    match = STEP_LINE.match(line)
    return match.group(1) if match else None


def namespace_of(line: str) -> str | None:
    """The namespace named by the runner's apply step ("    namespace X, watching ..."), else None."""
    match = NAMESPACE_LINE.match(line)
    return match.group(1) if match else None


def last_step(lines: Iterable[str]) -> str | None:
    found = None
    for line in lines:
        found = step_of(line) or found
    return found


def parse_gc_output(out: str) -> set[tuple[str, str]]:
    """(kind, name) of each "would remove KIND NAME" / "removing KIND NAME" line of `python -m harness gc`."""
    found = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) == 4 and words[:2] == ["would", "remove"]:
            found.add((words[2], words[3]))
        elif len(words) == 3 and words[0] == "removing":
            found.add((words[1], words[2]))
    return found


def write_text_atomic(path: Path, text: str) -> None:
    """Write path through a temporary sibling and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# ---------------------------------------------------------------------------------------------
# Touching the machine


class PodObserver:
    """Records every change of the pods matching label_selector in all namespaces, stamped on arrival.

    The floor of a verdict: no client can know a state before a watch delivers it.
    """

    def __init__(self, core: k8s.CoreV1Api, label_selector: str, *, limit: float = 900) -> None:
        self.core = core
        self.label_selector = label_selector
        self.deadline = time.monotonic() + limit
        self._observations: list[Observation] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: Any = None
        self.error: str | None = None

    def start(self) -> PodObserver:
        listed: Any = self.core.list_pod_for_all_namespaces(
            label_selector=self.label_selector, _preload_content=False, _request_timeout=(5, 30)
        )
        body = json.loads(listed.data)
        now = time.time()
        with self._lock:
            self._observations += [Observation(now, "LISTED", item) for item in body.get("items") or []]
        rv = str((body.get("metadata") or {}).get("resourceVersion", ""))
        threading.Thread(target=self._run, args=(rv,), name="bench: pod observer", daemon=True).start()
        return self

    def _run(self, resource_version: str) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            factory: Any = k8s_watch.Watch
            self._watch = w = factory()
            try:
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=self.label_selector,
                    resource_version=resource_version or None,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                    _request_timeout=(5, 90),
                ):
                    at = time.time()
                    raw = event.get("raw_object")
                    if not isinstance(raw, dict):
                        continue
                    resource_version = str((raw.get("metadata") or {}).get("resourceVersion", resource_version))
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        with self._lock:
                            self._observations.append(Observation(at, str(event["type"]), raw))
                    if self._stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - recorded; the bench reports a missing floor
                if self._stop.is_set():
                    return
                self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._stop.wait(1.0)

    def observations(self) -> list[Observation]:
        with self._lock:
            return list(self._observations)

    def stop(self) -> list[Observation]:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        return self.observations()


def kubectl(kubeconfig: Path) -> list[str]:
    """The kubectl of the node image's version (harness.tools), on a cluster's kubeconfig, its cache in the harness's."""
    return tools.kubectl_command(kubeconfig)


def poll_baseline(
    kubectl_cmd: list[str],
    namespace: str,
    selector: str,
    state: VisibleState,
    *,
    timeout: float,
    interval: float = 5.0,
    stop: threading.Event | None = None,
) -> tuple[float | None, int]:
    """Naive baseline (a): `kubectl get pods -o json` every `interval` s until the state shows.

    Deliberately a fixed-interval poll, as a shell loop with `sleep 5` does. Returns the moment
    it saw the state (None at the timeout) and the number of polls.
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout
    polls = 0
    while not stop.is_set():
        polls += 1
        result = tools.run(
            [*kubectl_cmd, "get", "pods", "-n", namespace, "-l", selector, "-o", "json"], check=False, timeout=30
        )
        if result.returncode == 0 and pods_show(json.loads(result.stdout).get("items") or [], state):
            return time.time(), polls
        if time.monotonic() + interval > deadline:
            return None, polls
        stop.wait(interval)
    return None, polls


def kubectl_wait_baseline(
    kubectl_cmd: list[str], namespace: str, selector: str, *, timeout: float
) -> tuple[float | None, int]:
    """Naive baseline (b): `kubectl wait --for=condition=Ready pod -l ... --timeout=...`.

    kubectl wait fails at once ("no matching resources found") while the Deployment has no pods
    yet; like a script would, it is started again after a second. Returns the moment it returned
    successfully (None at the timeout) and how many times it was started.
    """
    deadline = time.monotonic() + timeout
    starts = 0
    pause = threading.Event()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            return None, starts
        starts += 1
        result = tools.run(
            [
                *kubectl_cmd,
                "wait",
                "--for=condition=Ready",
                "pod",
                "-l",
                selector,
                "-n",
                namespace,
                f"--timeout={int(remaining)}s",
            ],
            check=False,
            timeout=remaining + 15,
        )
        if result.returncode == 0:
            return time.time(), starts
        if "no matching resources" not in result.stderr:
            return None, starts
        pause.wait(1.0)


class LiveProcess:
    """A child process in its own process group whose output lines are read as they are printed.

    (harness.tools.run waits for the end; this one is for interrupting a run in a given step.)
    SIGINT goes to the whole group, as Ctrl-C in a terminal does.
    """

    def __init__(self, cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.cmd = list(cmd)
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        threading.Thread(target=self._read, name="bench: output reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append((time.monotonic() - self.started, line))
            self._queue.put(line)
        self._queue.put(None)

    def expect(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The next output line that satisfies predicate; None at the timeout or at the end of output."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                self._queue.put(None)
                return None
            if predicate(line):
                return line

    def signal(self, signum: int = signal.SIGINT) -> float:
        """Send signum to the process group; returns the monotonic moment it was sent.

        A child inherits an ignored SIGINT (e.g. from `nohup cmd &` without job control): the caller
        must not ignore SIGINT when it means to interrupt children.
        """
        sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)
        return sent

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    @property
    def output(self) -> list[str]:
        return [line for _, line in self.lines]

    def save(self, path: Path) -> Path:
        """The output so far, each line stamped with seconds since the start, into path."""
        write_text_atomic(path, "".join(f"{t:8.1f}  {line}\n" for t, line in self.lines))
        return path


def docker_images() -> set[str]:
    """Every tagged image of the local engine as repository:tag."""
    out = tools.run([tools.docker_binary(), "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60).stdout
    return {line for line in out.split() if not line.endswith(":<none>") and not line.startswith("<none>")}


def docker_containers() -> dict[str, str]:
    """Every container of the local engine (running or not): name -> its labels."""
    out = tools.run([tools.docker_binary(), "ps", "-a", "--format", "{{.Names}}\t{{.Labels}}"], timeout=60).stdout
    found = {}
    for line in out.splitlines():
        name, _, labels = line.partition("\t")
        if name:
            found[name] = labels
    return found


def namespaces(core: k8s.CoreV1Api) -> dict[str, str]:
    """Namespace name -> phase (Active or Terminating)."""
    found: dict[str, str] = {}
    for ns in core.list_namespace(_request_timeout=(5, 30)).items:
        if ns.metadata is not None and ns.metadata.name:
            found[ns.metadata.name] = str(ns.status.phase if ns.status is not None else "")
    return found


def node_images(node_exec: Callable[..., tools.Result], nodes: Iterable[str]) -> set[str]:
    """The tags the CRI of each node holds, as node/tag."""
    found: set[str] = set()
    for node in nodes:
        out = node_exec(node, ["crictl", "images", "-o", "json"]).stdout
        for image in json.loads(out).get("images", []):
            found.update(f"{node}/{tag}" for tag in image.get("repoTags") or [])
    return found


@dataclass
class Section:
    """What a bench section measured: a table for people, raw data for the JSON."""

    name: str
    table: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    error: str | None = None
