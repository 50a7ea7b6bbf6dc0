"""The capacity gate on the real cluster: refused before deploy, waiting for room, concurrent admissions serialised.

The requests are fractions of what the nodes can allocate now (read from the API), so the tests
mean the same on any cluster; other work on a shared cluster changes the free room, which the
margins allow for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from harness import workload
from harness.errors import BadInput
from harness.outcomes import Outcome, Verdict
from harness.session import Admission, Session
from harness.workload import Workload

pytestmark = pytest.mark.e2e

Deploy = Callable[..., Workload]
ExpectOutcome = Callable[..., Verdict]


def free_cpu(session: Session) -> int:
    return max(n.free.cpu for n in session.free_capacity())


def asking(docs: list[dict[str, Any]], cpu: int) -> list[dict[str, Any]]:
    """The Deployment of docs with one replica asking cpu millicores, replaced in place (no surge)."""
    spec = docs[0]["spec"]
    spec["strategy"] = {"type": "Recreate"}
    spec["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": f"{cpu}m", "memory": "16Mi"}}
    return docs


def test_a_workload_bigger_than_the_nodes_is_refused_before_anything_is_made(
    harness_session: Session,
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    harness_namespace: str,
    deploy: Deploy,
) -> None:
    biggest = max(n.allocatable.cpu for n in harness_session.free_capacity())
    docs = asking(httpd_deployment("too-big"), biggest + 1000)

    with pytest.raises(BadInput) as caught:
        deploy(docs, image=httpd_images["native"])

    text = str(caught.value)
    assert "can never fit these nodes" in text and "Deployment too-big" in text
    assert "allocatable" in text and "cpu" in text
    made = harness_session.apps.list_namespaced_deployment(harness_namespace).items
    assert made == [], "nothing is applied for a workload that can never fit"
    assert harness_session.core.list_namespaced_pod(harness_namespace).items == []


@pytest.mark.exclusive_cluster  # fills the node: under xdist, alone on the shared cluster
def test_a_workload_that_fits_only_once_another_is_gone_waits_then_applies(
    harness_session: Session,
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    httpd_images: dict[str, str],
    harness_namespace: str,
    deploy: Deploy,
    expect_outcome: ExpectOutcome,
) -> None:
    share = int(free_cpu(harness_session) * 0.6)
    first = deploy(asking(httpd_deployment("first"), share), image=httpd_images["native"])
    expect_outcome(first, Outcome.HEALTHY, timeout=90)

    second_ns = harness_session.create_namespace("capacity-second")
    rendered = workload.render(
        asking(httpd_deployment("second"), share),
        namespace=second_ns,
        image=httpd_images["native"],
        pull_policy="IfNotPresent",
    )
    lines: list[str] = []
    admitted: list[Admission] = []
    errors: list[BaseException] = []

    def admit() -> None:
        try:
            admitted.append(harness_session.admit(rendered, "second", on_wait=lines.append, timeout=120))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    waiter = threading.Thread(target=admit, daemon=True)
    waiter.start()
    waiter.join(10)
    assert waiter.is_alive(), f"admitted while the first workload holds the room: {lines} {admitted} {errors}"
    assert any(line.startswith("waiting for capacity: ") for line in lines), lines

    harness_session.delete_namespace(harness_namespace)  # the first workload goes; its pods end
    waiter.join(120)
    assert not errors, errors
    assert admitted and admitted[0].waited > 0, lines
    assert lines[-1].startswith("admitted after"), lines
    second = harness_session.apply(rendered)
    try:
        verdict = harness_session.watch(second, expect=Outcome.HEALTHY, timeout=90).verdict
        assert verdict.outcome is Outcome.HEALTHY, verdict.summary
    finally:
        harness_session.delete_namespace(second_ns)


@pytest.mark.exclusive_cluster  # fills the node: under xdist, alone on the shared cluster
def test_concurrent_admissions_that_together_exceed_the_free_room_are_serialised(
    harness_session: Session, httpd_deployment: Callable[..., list[dict[str, Any]]]
) -> None:
    share = int(free_cpu(harness_session) * 0.4)  # two fit, three do not
    namespaces = [harness_session.create_namespace(f"capacity-{i}") for i in range(3)]
    admitted: list[str] = []
    waited: dict[str, list[str]] = {ns: [] for ns in namespaces}
    lock = threading.Lock()
    two_in = threading.Event()

    errors: list[BaseException] = []

    one_waits = threading.Event()

    def said(ns: str, line: str) -> None:
        waited[ns].append(line)
        one_waits.set()

    def admit(ns: str) -> None:
        docs = workload.render(asking(httpd_deployment("held"), share), namespace=ns, image="unused")
        try:
            harness_session.admit(docs, ns, on_wait=lambda line: said(ns, line), timeout=120)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)
            return
        with lock:
            admitted.append(ns)
            if len(admitted) == 2:
                two_in.set()

    threads = [threading.Thread(target=admit, args=(ns,), daemon=True) for ns in namespaces]
    try:
        for t in threads:
            t.start()
        assert two_in.wait(60), f"fewer than two admitted: {admitted} {waited} {errors}"
        assert one_waits.wait(60), f"nobody waits: {admitted} {waited} {errors}"
        assert not errors, errors
        with lock:
            assert len(admitted) == 2, f"three admitted on the room of two: {admitted}"
        (third,) = set(namespaces) - set(admitted)
        assert any(line.startswith("waiting for capacity") for line in waited[third]), waited
        harness_session.release(admitted[0])  # nothing was applied: releasing the room is enough
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert third in admitted and len(admitted) == 3
    finally:
        for ns in namespaces:
            harness_session.delete_namespace(ns)
