"""The capacity gate's arithmetic: quantities, pod requests (init containers, sidecars), peaks, fits, the ledger.

The objects are written by hand after the Kubernetes API's shapes (no cluster).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from harness import capacity
from harness.capacity import Demand, Ledger, NodeFree, PodDemand, Resources
from harness.errors import BadInput

MI = 2**20


def c(name: str, cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": name, "resources": {"requests": requests}, **extra}


def deployment(replicas: Any = 2, strategy: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"replicas": replicas, "template": {"spec": spec or {"containers": [c("a", "100m")]}}}
    if strategy is not None:
        body["strategy"] = strategy
    return {"kind": "Deployment", "metadata": {"name": "web"}, "spec": body}


# -- quantities ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("64Mi", Decimal(64 * MI)),
        ("1Gi", Decimal(2**30)),
        ("1Ki", Decimal(1024)),
        ("1k", Decimal(1000)),
        ("128M", Decimal(128_000_000)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("2E-3", Decimal("0.002")),
        ("500u", Decimal("0.0005")),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities_parse_as_kubernetes_writes_them(text: object, value: Decimal) -> None:
    assert capacity.parse_quantity(text) == value


def test_cpu_and_memory_round_up_as_kubernetes_does() -> None:
    assert capacity.cpu_millis("0.0001") == 1
    assert capacity.cpu_millis("250m") == 250
    assert capacity.cpu_millis(1) == 1000
    assert capacity.memory_bytes("0.5") == 1
    assert capacity.memory_bytes("1.5Ki") == 1536


@pytest.mark.parametrize("text", ["", "abc", "1Mb", "1 Gi", "--1", "1e", True])
def test_what_is_no_quantity_is_said(text: object) -> None:
    with pytest.raises(capacity.QuantityError):
        capacity.parse_quantity(text)


def test_a_bad_quantity_in_a_manifest_is_bad_input_naming_the_file_and_container() -> None:
    doc = deployment(containers=[c("api", "lots")])
    with pytest.raises(BadInput, match=r"k8s/web.yaml: Deployment web container api: resources"):
        capacity.peak_requests([doc], ["k8s/web.yaml"])


# -- one pod's requests ----------------------------------------------------------------------------


def test_regular_containers_add_up() -> None:
    spec = {"containers": [c("a", "100m", "64Mi"), c("b", "50m", "32Mi")]}
    assert capacity.pod_requests(spec) == Resources(150, 96 * MI)


def test_a_larger_init_container_sets_the_pod_request_per_resource() -> None:
    spec = {"initContainers": [c("migrate", "500m", "16Mi")], "containers": [c("a", "100m", "64Mi")]}
    assert capacity.pod_requests(spec) == Resources(500, 64 * MI)


def test_init_containers_run_one_at_a_time_so_the_largest_counts() -> None:
    spec = {"initContainers": [c("i1", "300m"), c("i2", "400m")], "containers": [c("a", "100m")]}
    assert capacity.pod_requests(spec).cpu == 400


def test_sidecars_keep_running_beside_the_containers_and_the_later_init_containers() -> None:
    sidecar = c("proxy", "200m", restartPolicy="Always")
    spec = {
        "initContainers": [c("before", "250m"), sidecar, c("after", "300m")],
        "containers": [c("a", "100m")],
    }
    # regular: 100m + 200m (sidecar) = 300m; init phases: 250m, 200m, 300m + 200m = 500m
    assert capacity.pod_requests(spec).cpu == 500
    spec = {"initContainers": [sidecar], "containers": [c("a", "100m")]}
    assert capacity.pod_requests(spec).cpu == 300


def test_a_limit_without_a_request_is_the_request_and_overhead_adds() -> None:
    container = {"name": "a", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}, "requests": {"cpu": "50m"}}}
    spec = {"containers": [container], "overhead": {"cpu": "10m"}}
    assert capacity.pod_requests(spec) == Resources(60, 64 * MI)


def test_pod_level_requests_replace_the_containers_for_what_they_name() -> None:
    spec = {"resources": {"requests": {"cpu": "1"}}, "containers": [c("a", "100m", "64Mi")]}
    assert capacity.pod_requests(spec) == Resources(1000, 64 * MI)


def test_a_pod_that_requests_nothing_asks_nothing() -> None:
    demand = capacity.peak_requests([deployment(containers=[{"name": "a"}])])
    assert demand.empty
    assert capacity.fits(demand, []).ok


# -- peaks -------------------------------------------------------------------------------------------


def test_the_seeds_deployment_peaks_at_replicas_plus_its_absolute_surge() -> None:
    doc = deployment(2, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    (pods,) = capacity.peak_requests([doc]).pods
    assert pods.count == 3
    assert capacity.peak_requests([doc]).total.cpu == 300


@pytest.mark.parametrize(
    ("replicas", "max_surge", "peak"),
    [(4, None, 5), (2, None, 3), (10, "25%", 13), (10, "50%", 15), (3, "0%", 3), (3, "2", 5), (None, None, 2)],
)
def test_surge_is_a_percentage_of_replicas_rounded_up_by_default_25(replicas: Any, max_surge: Any, peak: int) -> None:
    strategy = {"rollingUpdate": {"maxSurge": max_surge}} if max_surge is not None else None
    (pods,) = capacity.peak_requests([deployment(replicas, strategy)]).pods
    assert pods.count == peak


def test_a_recreate_deployment_never_surges() -> None:
    (pods,) = capacity.peak_requests([deployment(3, {"type": "Recreate"})]).pods
    assert pods.count == 3


def test_jobs_run_parallelism_pods_at_once_at_most_their_completions() -> None:
    def job(**spec: Any) -> dict[str, Any]:
        return {
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {**spec, "template": {"spec": {"containers": [c("a", "1")]}}},
        }

    assert capacity.peak_requests([job()]).pods[0].count == 1
    assert capacity.peak_requests([job(parallelism=4)]).pods[0].count == 4
    assert capacity.peak_requests([job(parallelism=4, completions=2)]).pods[0].count == 2


def test_other_kinds_statefulsets_daemonsets_pods_and_objects_without_pods() -> None:
    template = {"template": {"spec": {"containers": [c("a", "100m")]}}}
    docs = [
        {"kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {"replicas": 3, **template}},
        {"kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": template},
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [c("a", "100m")]}},
        {"kind": "Service", "metadata": {"name": "svc"}, "spec": {}},
    ]
    pods = capacity.peak_requests(docs, ["db.yaml", "agent.yaml", "p.yaml", "svc.yaml"]).pods
    assert [(p.workload, p.count, p.per_node, p.origin) for p in pods] == [
        ("StatefulSet db", 3, False, "db.yaml"),
        ("DaemonSet agent", 1, True, "agent.yaml"),
        ("Pod p", 1, False, "p.yaml"),
    ]


# -- free capacity and fits ---------------------------------------------------------------------------


def node(name: str, cpu: str = "2", memory: str = "4Gi", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": memory}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(namespace: str, node_name: str | None, cpu: str, phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [c("a", cpu)]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"namespace": namespace, "name": "p"}, "spec": spec, "status": {"phase": phase}}


def test_free_is_allocatable_minus_the_requests_of_non_terminated_pods() -> None:
    nodes = [node("n1"), node("cordoned", unschedulable=True), node("tainted", taints=[{"effect": "NoSchedule"}])]
    pods = [
        pod("kube-system", "n1", "860m"),
        pod("harness-1", "n1", "100m"),
        pod("harness-1", "n1", "500m", phase="Succeeded"),
        pod("harness-2", None, "200m"),  # pending: it will take room
    ]
    (n1,) = capacity.nodes_free(nodes, pods, harness_namespaces=["harness-1", "harness-2"])
    assert n1.name == "n1"
    assert n1.free.cpu == 2000 - 860 - 100 - 200
    assert n1.resident.cpu == 860
    assert n1.baseline.free.cpu == 1140
    (left,) = capacity.nodes_free(nodes, pods, ["harness-1", "harness-2"], exclude_namespaces=["harness-1"])
    assert left.free.cpu == 2000 - 860 - 200


def free(*cpus: int, memory: int = 4096 * MI) -> list[NodeFree]:
    return [NodeFree(f"n{i}", Resources(2000, memory), Resources(2000 - cpu, 0)) for i, cpu in enumerate(cpus)]


def demand(cpu: int, count: int, per_node: bool = False) -> Demand:
    return Demand((PodDemand("Deployment web", "web.yaml", Resources(cpu, 64 * MI), count, per_node),))


def test_fits_when_every_pod_finds_a_node_and_says_what_is_short_when_not() -> None:
    assert capacity.fits(demand(100, 3), free(300)).ok
    short = capacity.fits(demand(100, 3), free(120))
    assert not short.ok
    assert short.reason == "needs cpu 300m, free 120m"
    # enough in total, but no one node has room for a pod
    split = capacity.fits(demand(600, 1), free(400, 400))
    assert not split.ok and "a pod of Deployment web needs cpu 600m" in split.reason
    assert capacity.fits(demand(300, 2), free(400, 400)).ok


def test_a_daemonset_needs_room_on_every_node() -> None:
    assert capacity.fits(demand(100, 1, per_node=True), free(100, 100)).ok
    assert not capacity.fits(demand(100, 1, per_node=True), free(500, 50)).ok


def test_a_workload_that_can_never_fit_is_bad_input_naming_file_resource_ask_and_nodes() -> None:
    nodes = [NodeFree("n1", Resources(2000, 4096 * MI), Resources(1500, 0), resident=Resources(860, 0))]
    capacity.refuse_impossible(demand(300, 3), nodes, "scenario s.yaml")  # fits once the others are gone
    with pytest.raises(BadInput) as caught:
        capacity.refuse_impossible(demand(3000, 1), nodes, "scenario s.yaml")
    text = str(caught.value)
    assert "scenario s.yaml: web.yaml: Deployment web can never fit" in text
    assert "cpu 3" in text and "cpu 2, memory 4Gi allocatable" in text and "cpu 1140m" in text


# -- the ledger --------------------------------------------------------------------------------------


def test_the_ledger_holds_admitted_demand_until_released() -> None:
    ledger = Ledger()
    nodes = free(400)

    def read(excluded: frozenset[str]) -> list[NodeFree]:
        return nodes

    assert ledger.try_admit("a", demand(100, 3), read).ok
    second = ledger.try_admit("b", demand(100, 3), read)
    assert not second.ok and second.reason == "needs cpu 300m, free 100m"
    ledger.release("a")
    assert ledger.try_admit("b", demand(100, 3), read).ok


def test_concurrent_admissions_never_pass_on_the_same_free_capacity() -> None:
    ledger = Ledger()
    excluded_seen: list[frozenset[str]] = []
    barrier = threading.Barrier(8)

    def read(excluded: frozenset[str]) -> list[NodeFree]:
        excluded_seen.append(excluded)
        return free(1140)  # the pods of held namespaces are left out: the node shows only the others

    admitted: list[bool] = []

    def one(i: int) -> None:
        barrier.wait()
        admitted.append(ledger.try_admit(f"ns-{i}", demand(50, 3), read).ok)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(admitted) == [False] + [True] * 7  # 7 x 150m = 1050m fit in 1140m, the eighth waits
    assert len(ledger.held) == 7
    assert max(len(e) for e in excluded_seen) == 7  # the eighth was judged beside the seven held


def test_a_release_wakes_a_waiter_at_once() -> None:
    ledger = Ledger()
    ledger.held["a"] = demand(100, 1)
    woke = threading.Event()

    def wait() -> None:
        ledger.wait_changed(30)
        woke.set()

    t = threading.Thread(target=wait)
    t.start()
    threading.Timer(0.3, ledger.release, args=("a",)).start()
    assert woke.wait(10)
    t.join(1)


def test_a_surge_that_can_never_fit_is_no_bad_input_the_gate_waits_for_the_steady_state() -> None:
    doc = deployment(1, {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}, containers=[c("a", "700m")])
    peak = capacity.peak_requests([doc], ["full.yaml"])
    nodes = [NodeFree("n1", Resources(2000, 4096 * MI), Resources(860, 0), resident=Resources(860, 0))]
    capacity.refuse_impossible(peak, nodes, "test")  # one pod fits: it runs, its rollouts wait for room
    assert peak.total.cpu == 1400
    assert capacity.gated(peak, nodes).total.cpu == 700
    small = capacity.peak_requests([deployment(1, containers=[c("a", "100m")])])
    assert capacity.gated(small, nodes) == small
    with pytest.raises(BadInput, match="can never fit"):
        capacity.refuse_impossible(capacity.peak_requests([deployment(2, containers=[c("a", "700m")])]), nodes, "t")
