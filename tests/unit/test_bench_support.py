"""The bench's and soak's pure logic: tables, statistics, targets, floors from recorded pods, parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scripts.bench_support import (
    Check,
    Observation,
    Status,
    Target,
    Timing,
    VisibleState,
    brief,
    cpu_millis,
    diff,
    first_visible,
    first_waiting_reason,
    format_table,
    free_cpu,
    last_step,
    load_observations,
    namespace_of,
    parse_gc_output,
    parse_k8s_time,
    peak_cpu_request,
    pods_show,
    render_checks,
    save_observations,
    scale_target,
    server_ready_time,
    stats,
    step_groups,
    step_of,
    trim_pod,
    waiting_reasons,
    within,
    write_json_atomic,
)

DATA = Path(__file__).parent / "data" / "bench"


def recorded(name: str) -> list[Observation]:
    return load_observations(DATA / f"{name}.jsonl")


def namespace(observations: list[Observation], role: str) -> str:
    return next(o.namespace for o in observations if f"-{role}-" in o.namespace)


def pod(
    name: str, *, reasons: tuple[str, ...] = (), ready: bool | None = None, deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T08:00:00Z"
    status: dict[str, Any] = {
        "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": r}}} for r in reasons]
        or [{"name": "c", "state": {"running": {}}}]
    }
    if ready is not None:
        status["conditions"] = [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-11-26T08:00:05Z"}
        ]
    return {"metadata": meta, "status": status}


# -- floors, on recorded observations ------------------------------------------------------------


def test_crash_loop_floor_is_the_first_event_with_the_waiting_reason() -> None:
    obs = recorded("crash_loop")
    harness, poll = namespace(obs, "harness"), namespace(obs, "poll")
    # Before it the container was terminated (Error) and restarted: those events decide nothing.
    assert first_visible(obs, harness, VisibleState.CRASH_LOOP) == pytest.approx(1795683393.775)
    assert first_visible(obs, poll, VisibleState.CRASH_LOOP) == pytest.approx(1795683393.718)
    assert first_visible(obs, harness, VisibleState.HEALTHY) is None
    assert first_visible(obs, harness, VisibleState.IMAGE_PULL) is None


def test_healthy_floor_is_when_the_pod_became_ready_and_the_server_time_is_its_transition() -> None:
    obs = recorded("healthy")
    harness = namespace(obs, "harness")
    assert first_visible(obs, harness, VisibleState.HEALTHY) == pytest.approx(1795683401.859)
    assert server_ready_time(obs, harness) == datetime(2026, 11, 26, 8, 56, 41, tzinfo=UTC).timestamp()
    # The API's second-resolution timestamp is never after the watch event that carried it.
    assert server_ready_time(obs, harness) <= first_visible(obs, harness, VisibleState.HEALTHY)  # type: ignore[operator]
    assert first_visible(obs, namespace(obs, "wait"), VisibleState.HEALTHY) == pytest.approx(1795683401.813)


def test_image_pull_floor_counts_err_image_pull() -> None:
    obs = recorded("image_pull")
    harness = namespace(obs, "harness")
    assert first_visible(obs, harness, VisibleState.IMAGE_PULL) == pytest.approx(1795683404.882)
    assert first_waiting_reason(obs, harness, "ErrImagePull") == pytest.approx(1795683404.882)
    assert first_waiting_reason(obs, harness, "ImagePullBackOff") is None  # the trial ended before the back-off


def test_a_namespace_never_seen_has_no_floor() -> None:
    assert first_visible(recorded("healthy"), "elsewhere", VisibleState.HEALTHY) is None


def test_deleted_and_terminating_pods_do_not_count() -> None:
    crashing = pod("a", reasons=("CrashLoopBackOff",))
    replay = [
        Observation(1.0, "ADDED", crashing),
        Observation(2.0, "DELETED", crashing),
        Observation(3.0, "ADDED", pod("b", ready=True)),
    ]
    assert first_visible(replay, "ns", VisibleState.HEALTHY) == 3.0
    assert first_visible(replay, "ns", VisibleState.CRASH_LOOP) == 1.0
    assert not pods_show([pod("a", reasons=("CrashLoopBackOff",), deleting=True)], VisibleState.CRASH_LOOP)


def test_healthy_needs_every_live_pod_ready_and_enough_pods() -> None:
    assert pods_show([pod("a", ready=True), pod("b", ready=True)], VisibleState.HEALTHY)
    assert not pods_show([pod("a", ready=True), pod("b", ready=False)], VisibleState.HEALTHY)
    assert not pods_show([], VisibleState.HEALTHY)
    assert not pods_show([pod("a", ready=True)], VisibleState.HEALTHY, min_pods=2)
    assert pods_show([pod("a", ready=True), pod("old", ready=False, deleting=True)], VisibleState.HEALTHY)


def test_waiting_reasons_include_init_containers() -> None:
    p = {
        "status": {
            "initContainerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
            "containerStatuses": [{"state": {"waiting": {"reason": "PodInitializing"}}}],
        }
    }
    assert waiting_reasons(p) == {"CrashLoopBackOff", "PodInitializing"}
    assert pods_show([p], VisibleState.CRASH_LOOP)


def test_timing_measures_from_apply_and_against_the_floor() -> None:
    t = Timing("harness", applied_at=100.0, decided_at=104.5, floor_at=103.0)
    assert (t.to_verdict, t.floor, t.lag) == (4.5, 3.0, 1.5)
    missing = Timing("poll", applied_at=100.0, decided_at=None, floor_at=103.0)
    assert missing.lag is None and missing.to_verdict is None
    assert missing.to_dict()["lag_s"] is None


def test_observations_survive_a_save_and_load(tmp_path: Path) -> None:
    obs = recorded("crash_loop")[:3]
    save_observations(obs, tmp_path / "o.jsonl")
    again = load_observations(tmp_path / "o.jsonl")
    assert [(o.at, o.kind, o.name, o.namespace) for o in again] == [(o.at, o.kind, o.name, o.namespace) for o in obs]


def test_trim_pod_keeps_names_and_status_only() -> None:
    full = {
        "metadata": {"name": "p", "namespace": "n", "uid": "x", "labels": {"a": "b"}},
        "spec": {"containers": []},
        "status": {"phase": "Running", "hostIP": "1.2.3.4"},
    }
    assert trim_pod(full) == {"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T08:56:41Z", datetime(2026, 11, 26, 8, 56, 41, tzinfo=UTC).timestamp()),
        ("2026-11-26T08:56:41.250000Z", datetime(2026, 11, 26, 8, 56, 41, 250000, tzinfo=UTC).timestamp()),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_k8s_time(text: str | None, expected: float | None) -> None:
    assert parse_k8s_time(text) == expected


# -- tables, statistics, targets -----------------------------------------------------------------


def test_table_pads_columns_and_right_aligns_numbers() -> None:
    table = format_table(
        ["state", "s"], [("Healthy", "7.5"), ("CrashLoopBackOff", "12.25"), ("ImagePull", None)], title="verdicts"
    )
    assert table.splitlines() == [
        "verdicts",
        "state                 s",
        "----------------  -----",
        "Healthy             7.5",
        "CrashLoopBackOff  12.25",
        "ImagePull             -",
    ]


def test_table_keeps_text_columns_left_aligned_and_rejects_ragged_rows() -> None:
    table = format_table(["a", "b"], [("1", "x"), ("22", "yy")])
    assert table.splitlines()[2:] == [" 1  x", "22  yy"]
    with pytest.raises(ValueError, match="2 columns"):
        format_table(["a", "b"], [("1",)])


def test_stats_and_brief() -> None:
    found = stats([3.0, None, 1.0, 2.0])
    assert found is not None and (found.count, found.minimum, found.median, found.maximum) == (3, 1.0, 2.0, 3.0)
    assert stats([None]) is None
    assert brief([2.0]) == "2.0"
    assert brief([1.0, 2.0, 4.0]) == "2.0 (1.0-4.0)"
    assert brief([]) == "-"


def test_within_target_uses_the_worst_measurement_and_says_missed() -> None:
    met = within("verdict", [0.4, 1.9], 2.0)
    assert met.met is True and met.word == "met"
    missed = within("verdict", [0.4, 2.3], 2.0)
    assert missed.met is False and missed.line().startswith("MISSED") and "worst 2.30 s" in missed.detail
    assert within("verdict", [0.4, None], 2.0).met is False
    assert within("verdict", [None], 2.0).met is None


def test_scale_target() -> None:
    assert scale_target("8 at once", 40.0, 90.0, 2.5).met is True
    missed = scale_target("8 at once", 40.0, 120.0, 2.5)
    assert missed.met is False and "3.00x" in missed.detail and missed.word == "MISSED"
    assert scale_target("8 at once", None, 120.0, 2.5).met is None
    assert Target("x", None, "").word == "NOT MEASURED"


# -- soak: listings, runner output, gc output, checks ----------------------------------------------


def test_diff_of_listings() -> None:
    d = diff(["a", "b", "c"], ["b", "c", "d", "e"])
    assert (d.created, d.removed) == (("d", "e"), ("a",))
    assert d.describe("images") == "images: 2 created [d, e], 1 removed [a]"
    assert diff([], []).describe("x") == "x: 0 created, 0 removed"


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("==> build laptop-build for linux/arm64", "build"),
        ("==> load laptop-build into the nodes", "load"),
        ("==> apply workload", "apply"),
        ("==> watch: expect CrashLoopBackOff", "watch"),
        ("==> watch fix: expect Healthy", "watch"),
        ("==> fix: rollout restart", "fix"),
        ("    built incident-harness/x (linux/arm64)", None),
        ("+0.0s   harness note   watching pods", None),
    ],
)
def test_step_of_runner_lines(line: str, step: str | None) -> None:
    assert step_of(line) == step


def test_namespace_and_last_step_from_runner_output() -> None:
    out = [
        "scenario arm64-on-amd64: ...",
        "==> apply workload",
        "    namespace arm64-on-amd64-ab12cd, watching app.kubernetes.io/name=orders-api",
        "==> watch: expect CrashLoopBackOff",
        "+0.0s   harness note   watching",
    ]
    assert [n for n in map(namespace_of, out) if n] == ["arm64-on-amd64-ab12cd"]
    assert last_step(out) == "watch"
    assert last_step(["no steps"]) is None


def test_gc_output_parsing() -> None:
    dry = (
        "would remove cluster soak-faults\nwould remove container soak-faults-control-plane\n"
        "would remove image incident-harness/x:1\n(dry run: add --yes to remove)\n"
    )
    assert parse_gc_output(dry) == {
        ("cluster", "soak-faults"),
        ("container", "soak-faults-control-plane"),
        ("image", "incident-harness/x:1"),
    }
    assert parse_gc_output("removing cluster soak-faults\n") == {("cluster", "soak-faults")}
    assert parse_gc_output("would remove cache /somewhere/else\n") == {("cache", "/somewhere/else")}


def test_render_checks_counts_results() -> None:
    text = render_checks(
        [Check.of("a", True, "fine", 1.25), Check.of("b", False, "broken"), Check("c", Status.SKIP, "not asked")]
    )
    assert text.splitlines()[-1] == "1 passed, 1 failed, 1 skipped"
    assert "FAIL    b" in text and "1.2" in text


def test_json_is_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "bench.json"
    write_json_atomic(target, {"b": 1, "a": [1.5, None]})
    assert json.loads(target.read_text()) == {"a": [1.5, None], "b": 1}
    assert [p.name for p in target.parent.iterdir()] == ["bench.json"]


# -- CPU requests: will n workloads fit the node? ----------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "millis"), [("50m", 50), ("2", 2000), ("0.5", 500), ("1500m", 1500), (None, 0), (1, 1000)]
)
def test_cpu_millis(quantity: str | int | None, millis: int) -> None:
    assert cpu_millis(quantity) == millis


def deployment(replicas: int, cpu: str, strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}},
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {"kind": "Deployment", "spec": spec}


def test_peak_cpu_request_counts_the_rollout_surge() -> None:
    seed_like = deployment(2, "50m", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    assert peak_cpu_request([seed_like, {"kind": "Service"}]) == 150  # 2 replicas + 1 surge
    assert peak_cpu_request([deployment(4, "100m")]) == 500  # default maxSurge 25% of 4 = 1
    assert peak_cpu_request([deployment(3, "100m", {"type": "Recreate"})]) == 300
    assert peak_cpu_request([deployment(2, "50m", {"rollingUpdate": {"maxSurge": "50%"}})]) == 150


def test_free_cpu_leaves_out_finished_pods() -> None:
    def p(cpu: str, phase: str = "Running") -> dict[str, Any]:
        return {
            "spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}, {"resources": {}}]},
            "status": {"phase": phase},
        }

    assert free_cpu("2", [p("250m"), p("100m"), p("500m", "Succeeded"), p("1", "Failed")]) == 1650


def test_step_groups_add_up_a_runs_steps() -> None:
    steps = [
        ("cluster", 0.5),
        ("build laptop-build for linux/arm64", 1.0),
        ("load laptop-build into the nodes", 2.0),
        ("apply workload", 0.25),
        ("watch: expect CrashLoopBackOff", 24.0),
        ("build ci-build for linux/amd64", 1.0),
        ("load ci-build into the nodes", 2.0),
        ("fix: set image ci-build", 0.125),
        ("fix: rollout restart", 0.125),
        ("watch fix: expect Healthy", 7.0),
        ("something new", 1.0),
    ]
    assert step_groups(steps) == {
        "cluster": 0.5,
        "build": 2.0,
        "load": 4.0,
        "apply": 0.25,
        "watch incident": 24.0,
        "fix steps": 0.25,
        "watch fix": 7.0,
        "other": 1.0,
    }
