"""Deployments: rollout status, waits for a rollout and for Available."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from kubernetes.client import AppsV1Api, CoreV1Api

from harness.errors import HarnessError
from harness.outcomes.api import (
    _Api,
    _host,
    _Message,
    _pump,
    _response_bytes,
    _Stream,
)
from harness.outcomes.classify import (
    selector_string,
)
from harness.outcomes.model import (
    Evidence,
    Obj,
    Outcome,
    Verdict,
    _get,
    _int,
    _str,
)
from harness.outcomes.watch import (
    _Clock,
    watch_workload,
)

T = TypeVar("T")

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

    The verdict is HEALTHY (RAN_EMULATED when emulated) on watch_workload's rules (the Deployment
    Available, every replica of the current revision Ready, no old-ReplicaSet pod serving, zero
    restarts, probe evidence), or the first failure (CrashLoopBackOff, NotReady ...) with its cause.
    watch_workload alone decides the same; this only narrows the selector to the current revision.
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
