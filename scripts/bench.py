#!/usr/bin/env python3
"""make bench: how fast the harness gets to a verdict, each figure measured in this run on this machine.

Sections (each prints a table; all of them go to reports/bench-<time>.json, written atomically):
  cluster   create cold (node image present) a cluster of its own (bench-cold, deleted after);
            reuse of the shared cluster (KindCluster.create on it)
  image     build + load per platform (native, foreign): cold (a new APP_VERSION build arg, so a
            new tag) and cached (the same inputs again)
  verdict   time to verdict from `apply` for exec format error CrashLoopBackOff, Healthy and
            ImagePullBackOff: the harness against the floor (the first moment a watch of the pods
            received the state) and naive baselines on identical deployments applied at the same
            time in namespaces of their own: (a) `kubectl get pods -o json` every 5 s, (b)
            `kubectl wait --for=condition=Ready` (Healthy). Target: verdict within 2 s of visible.
  seed      the seed scenario end to end, the `fast` cluster profile against `faithful` (the
            kubelet's crash-loop back-off; where the harness has no profiles, faithful only).
            Target: under 12 s with fast
  scale     1, 4 and 8 seed scenarios at once (two replicas each: a patched copy of the seed) on
            the shared cluster, in threads, through the capacity gate. Targets: 8 of 8 correct,
            8 in under 2.5x the time of 1
  suite     `make test` serial against `make test` with xdist (-n N) on one shared cluster
            (select it alone with --only suite; skip it with --skip-suite). Target: under 180 s

A missed target is printed as MISSED with its numbers. Other work on the machine (load average is
recorded per section) slows every figure alike; compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform as host_os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import capacity, images, outcomes, platforms, scenario, tools, workload  # noqa: E402
from harness.cluster import KindCluster, default_name  # noqa: E402
from harness.outcomes import Outcome  # noqa: E402
from harness.platforms import Platform  # noqa: E402
from harness.runner import ExitStatus, RunOptions, RunResult, run_scenario  # noqa: E402
from scripts.bench_support import (  # noqa: E402
    STEP_GROUPS,
    Observation,
    PodObserver,
    Section,
    Target,
    Timing,
    VisibleState,
    brief,
    first_visible,
    first_waiting_reason,
    format_table,
    kubectl,
    kubectl_wait_baseline,
    poll_baseline,
    save_observations,
    scale_target,
    seconds,
    server_ready_time,
    step_groups,
    within,
    write_json_atomic,
)

SEED = "arm64-on-amd64"
COLD_CLUSTER = "bench-cold"
BENCH_REPOSITORY = "incident-harness/bench-orders-api"
BENCH_LABEL = "incident-harness.io/bench"
VERDICT_TIMEOUT = 120.0
VISIBLE_WITHIN = 2.0
SCALE_SIZES = (1, 4, 8)
SCALE_FACTOR = 2.5
STATE_OUTCOME = {
    VisibleState.CRASH_LOOP: Outcome.CRASH_LOOP,
    VisibleState.HEALTHY: Outcome.HEALTHY,
    VisibleState.IMAGE_PULL: Outcome.IMAGE_PULL,
}


def say(text: str) -> None:
    print(text, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.monotonic()
    value = action()
    return time.monotonic() - began, value


def node_platform(cluster: KindCluster) -> Platform:
    node = cluster.core.list_node().items[0]
    return platforms.node_platform(cluster.core.api_client.sanitize_for_serialization(node))


def foreign_of(native: Platform) -> Platform:
    return platforms.foreign_of(native)


# ---------------------------------------------------------------------------------------------
# cluster


def bench_cluster(shared: KindCluster, reps: int, skip_cold: bool) -> Section:
    section = Section("cluster")
    rows: list[tuple[object, ...]] = []
    if skip_cold:
        rows.append(("create cold (node image present)", "skipped", "--skip-cold"))
    else:
        cold = KindCluster(name=COLD_CLUSTER)
        try:
            if cold.exists():  # left by an interrupted bench
                cold.delete()
            created, _ = timed(cold.create)
            deleted, _ = timed(cold.delete)
        finally:
            KindCluster(name=COLD_CLUSTER).delete()
        section.data["cold_create_s"] = round(created, 2)
        section.data["cold_delete_s"] = round(deleted, 2)
        section.data["node_image"] = cold.node_image
        rows.append(("create cold (node image present)", seconds(created), f"{COLD_CLUSTER}, {cold.node_image}"))
        rows.append(("delete it", seconds(deleted), ""))
    reuse: list[float] = []
    for _ in range(reps):
        again = KindCluster(name=shared.name)
        took, _ = timed(again.create)
        if not again.reused:
            raise RuntimeError(f"KindCluster.create did not reuse {shared.name}")
        reuse.append(took)
    section.data["reuse_s"] = [round(t, 2) for t in reuse]
    rows.append(("reuse shared (KindCluster.create)", brief(reuse, 2), f"{shared.name}, {reps}x, median (min-max)"))
    section.table = format_table(["what", "s", "notes"], rows, title="cluster")
    return section


# ---------------------------------------------------------------------------------------------
# image


def bench_images(shared: KindCluster, reps: int, work: Path) -> Section:
    """Cold: a new APP_VERSION build arg and a changed file under app/ (new tag, a new app layer, as
    after a code change); cached: the same inputs again."""
    section = Section("image")
    native = node_platform(shared)
    context = images.stage_service_context()
    dockerfile = ROOT / "docker" / "Dockerfile"
    made: list[str] = []
    rows: list[tuple[object, ...]] = []
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        for word, target in (("native", native), ("foreign", foreign_of(native))):
            base = images.ensure_python_base(target)
            got: dict[str, list[float]] = {k: [] for k in ("cold_build", "cold_load", "cached_build", "cached_load")}
            for _ in range(reps):
                nonce = secrets.token_hex(4)
                args = {"PYTHON_BASE": base, "APP_VERSION": f"bench-{nonce}"}
                changed = work / f"context-{nonce}"
                shutil.copytree(context, changed, symlinks=True)
                (changed / "app" / "bench_nonce.txt").write_text(f"{nonce}\n")

                def build(
                    build_args: dict[str, str] = args, platform: Platform = target, where: Path = changed
                ) -> images.BuiltImage:
                    return images.build_image(
                        where, platform, dockerfile=dockerfile, build_args=build_args, repository=BENCH_REPOSITORY
                    )

                took, cold = timed(build)
                made.append(cold.ref)
                got["cold_build"].append(took)
                got["cold_load"].append(timed(partial(shared.load_image, cold.ref))[0])
                took, cached = timed(build)
                if cached.ref != cold.ref:
                    raise RuntimeError(f"the same inputs gave another tag: {cold.ref} then {cached.ref}")
                got["cached_build"].append(took)
                got["cached_load"].append(timed(partial(shared.load_image, cached.ref))[0])
                shutil.rmtree(changed, ignore_errors=True)
            samples[f"{word} {target}"] = got
            rows.append(
                (
                    f"{word} ({target})",
                    brief(got["cold_build"]),
                    brief(got["cold_load"]),
                    brief(a + b for a, b in zip(got["cold_build"], got["cold_load"], strict=True)),
                    brief(got["cached_build"]),
                    brief(got["cached_load"]),
                    brief(a + b for a, b in zip(got["cached_build"], got["cached_load"], strict=True)),
                )
            )
    finally:
        remove_images(shared, made)
    section.data = {
        "samples_s": {k: {n: [round(x, 2) for x in v] for n, v in got.items()} for k, got in samples.items()},
        "reps": reps,
        "removed_after": made,
    }
    section.table = format_table(
        ["platform", "cold build", "cold load", "cold total", "cached build", "cached load", "cached total"],
        rows,
        title=f"image: build + load of the service image, seconds, median (min-max) of {reps}; cold = new "
        "APP_VERSION and a changed file in app/ (new tag, new layer), cached = the same inputs again",
    )
    return section


def remove_images(cluster: KindCluster, refs: list[str]) -> None:
    """The bench's own cold images: from the engine and from the nodes."""
    if not refs:
        return
    tools.run([tools.docker_binary(), "rmi", *refs], check=False, timeout=300)
    for node in cluster.nodes():
        cluster.node_exec(node, ["crictl", "rmi", *refs], check=False)


# ---------------------------------------------------------------------------------------------
# verdict


def seed_images(shared: KindCluster) -> dict[str, str]:
    """The seed scenario's laptop-build (foreign) and ci-build (native), built (cached) and loaded."""
    seed = scenario.load(SEED)
    native = node_platform(shared)
    refs = {}
    for name in ("laptop-build", "ci-build"):
        spec = seed.images[name]
        target = native if spec.platform == "native" else foreign_of(native)
        args = {k: v.replace("{python-base}", images.ensure_python_base(target)) for k, v in spec.build_args.items()}
        context = images.prepare_context(spec.prepare) if spec.prepare is not None else spec.context
        built = images.build_image(
            context, target, dockerfile=spec.dockerfile, build_args=args, repository=f"incident-harness/{spec.name}"
        )
        shared.load_image(built.ref)
        refs[name] = built.ref
    return refs


def trial(shared: KindCluster, state: VisibleState, image: str, observations: list[Observation]) -> list[Timing]:
    """One deployment per role, applied one right after the other; each role's verdict against its floor."""
    core = shared.core
    api = shared.api_client()
    run_id = secrets.token_hex(4)
    roles = ["harness", "poll"] + (["wait"] if state is VisibleState.HEALTHY else [])
    slug = {VisibleState.CRASH_LOOP: "crash", VisibleState.HEALTHY: "healthy", VisibleState.IMAGE_PULL: "pull"}[state]
    manifests = workload.load_manifests([ROOT / "k8s" / "deployment.yaml"])
    observer = PodObserver(core, f"{BENCH_LABEL}={run_id}").start()
    made: dict[str, str] = {}
    applied: dict[str, float] = {}
    decided: dict[str, float | None] = {}
    details: dict[str, str] = {}
    threads: list[threading.Thread] = []
    kube = kubectl(shared.kubeconfig)
    try:
        for role in roles:
            made[role] = workload.create_namespace(core, f"bench-{slug}-{role}")
        for role in roles:
            docs = workload.render(
                manifests,
                namespace=made[role],
                image=image,
                pull_policy="IfNotPresent",
                patches={"replicas": 1, "template": {"metadata": {"labels": {BENCH_LABEL: run_id}}}},
            )
            applied[role] = time.time()
            selector = workload.apply(api, docs, "orders-api").selector
            thread = threading.Thread(
                target=_role,
                args=(role, core, kube, made[role], selector, state, decided, details),
                name=f"bench {role}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(VERDICT_TIMEOUT + 60)
        if state is VisibleState.IMAGE_PULL:  # the harness decides at ErrImagePull; when does the back-off show?
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and all(
                first_waiting_reason(observer.observations(), ns, "ImagePullBackOff") is None for ns in made.values()
            ):
                threading.Event().wait(0.5)
        found = observer.stop()
        observations.extend(found)
        timings = []
        for role in roles:
            floor = first_visible(found, made[role], state)
            detail = details.get(role, "no result")
            if role == "harness" and state is VisibleState.HEALTHY:
                server = server_ready_time(found, made[role])
                if server is not None:
                    detail += f"; Ready lastTransitionTime at +{server - applied[role]:.1f} s"
            if role == "harness" and state is VisibleState.IMAGE_PULL:
                backoff = first_waiting_reason(found, made[role], "ImagePullBackOff")
                if backoff is not None:
                    detail += f"; ImagePullBackOff itself showed at +{backoff - applied[role]:.1f} s"
            if observer.error:
                detail += f"; observer: {observer.error}"
            timings.append(Timing(role, applied[role], decided.get(role), floor, detail))
        return timings
    finally:
        observer.stop()
        for ns in made.values():
            workload.delete_namespace(core, ns)


def _role(
    role: str,
    core: Any,
    kube: list[str],
    namespace: str,
    selector: str,
    state: VisibleState,
    decided: dict[str, float | None],
    details: dict[str, str],
) -> None:
    try:
        if role == "harness":
            verdict = outcomes.watch_workload(
                core, namespace, selector, expect=STATE_OUTCOME[state], timeout=VERDICT_TIMEOUT
            )
            at = time.time()
            right = verdict.outcome is STATE_OUTCOME[state]
            decided[role] = at if right else None
            cause = verdict.cause
            details[role] = (
                f"{verdict.outcome.label}"
                + ("" if right else " (WRONG)")
                + ("; exec format error named" if cause is not None and cause.exec_format_error else "")
            )
        elif role == "poll":
            at_poll, polls = poll_baseline(kube, namespace, selector, state, timeout=VERDICT_TIMEOUT)
            decided[role] = at_poll
            details[role] = f"{polls} polls"
        else:
            at_wait, starts = kubectl_wait_baseline(kube, namespace, selector, timeout=VERDICT_TIMEOUT)
            decided[role] = at_wait
            details[role] = f"kubectl wait started {starts}x (fails while no pod exists)"
    except Exception as exc:  # noqa: BLE001 - recorded as a missing verdict with its reason
        decided[role] = None
        details[role] = f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def bench_verdicts(shared: KindCluster, reps: int, save_dir: Path | None) -> Section:
    section = Section("verdict")
    refs = seed_images(shared)
    native = node_platform(shared)
    cases = [
        (VisibleState.CRASH_LOOP, refs["laptop-build"], "exec format error (seed laptop-build, foreign)"),
        (VisibleState.HEALTHY, refs["ci-build"], "seed ci-build, native"),
        (
            VisibleState.IMAGE_PULL,
            f"incident-harness/bench-absent:never-loaded-{secrets.token_hex(4)}",
            "an image never loaded, no registry",
        ),
    ]
    rows: list[tuple[object, ...]] = []
    data: dict[str, Any] = {}
    for state, image, what in cases:
        expectation = platforms.expected_outcome(foreign_of(native), native, platforms.read_binfmt())
        if state is VisibleState.CRASH_LOOP and expectation is platforms.Expectation.EMULATED:
            rows.append((state.value, 0, "-", "-", "-", "-", "-", "-", "-", "SKIPPED: emulation registered now"))
            section.targets.append(
                Target(
                    f"{state.value} verdict within {VISIBLE_WITHIN:g} s of visible",
                    None,
                    "an emulator for the foreign platform is registered (kernel-wide)",
                )
            )
            continue
        all_timings: list[list[Timing]] = []
        observations: list[Observation] = []
        for _ in range(reps):
            all_timings.append(trial(shared, state, image, observations))
        if save_dir is not None:
            save_observations(observations, save_dir / f"{state.name.lower()}.jsonl")

        def pick(role: str, attr: str, timings: list[list[Timing]] = all_timings) -> list[float | None]:
            return [getattr(t, attr) for trial_ in timings for t in trial_ if t.who == role]

        has_wait = state is VisibleState.HEALTHY
        harness_lag = pick("harness", "lag")
        rows.append(
            (
                state.value,
                reps,
                brief(pick("harness", "floor")),
                brief(pick("harness", "to_verdict")),
                brief(harness_lag, 2),
                brief(pick("poll", "to_verdict")),
                brief(pick("poll", "lag"), 2),
                brief(pick("wait", "to_verdict")) if has_wait else "n/a",
                brief(pick("wait", "lag"), 2) if has_wait else "n/a",
                what,
            )
        )
        data[state.value] = {"image": image, "trials": [[t.to_dict() for t in tr] for tr in all_timings]}
        section.targets.append(
            within(f"{state.value} verdict within {VISIBLE_WITHIN:g} s of visible", harness_lag, VISIBLE_WITHIN)
        )
    section.data = data
    section.table = format_table(
        ["state", "n", "floor", "harness", "h-floor", "poll 5s", "p-floor", "kubectl wait", "w-floor", "workload"],
        rows,
        title="verdict: seconds from apply, median (min-max); floor = first watch event showing the state "
        "in that namespace (ImagePullBackOff: ErrImagePull or ImagePullBackOff, whichever is first); "
        "x-floor = verdict minus floor",
    )
    return section


# ---------------------------------------------------------------------------------------------
# seed and scale


def failure_of(result: RunResult | None, error: str = "") -> str:
    """Why a run did not end OK, in one line ("" when it did)."""
    if result is None:
        return error or "no result"
    if result.exit_status is ExitStatus.OK:
        return ""
    if result.report.error:
        return result.report.error.splitlines()[0]
    parts = [
        f"{v.label}: observed {v.verdict.outcome.label}: {v.verdict.summary}" for v in result.verdicts if not v.passed
    ]
    parts += [f"symptom {c.symptom.describe()} not seen {c.detail}" for c in result.symptoms if not c.seen]
    if result.report.fix_verified is False and not parts:
        parts.append("fix not verified")
    return "; ".join(parts) or result.exit_status.name


def quiet_options(shared: KindCluster, work: Path, lines: list[str]) -> RunOptions:
    return RunOptions(cluster=shared, report_dir=work / "reports", artifacts_dir=work / "artifacts", say=lines.append)


SEED_FAST_SECONDS = 12.0  # target: the seed scenario end to end with the fast profile
PROFILES = ("faithful", "fast")


def profile_options(options: RunOptions, profile: str, cluster_name: str) -> RunOptions | None:
    """options on the cluster of a profile; None where this harness has no cluster profiles."""
    if not hasattr(options, "profile"):
        return None if profile != "faithful" else options
    return dataclasses.replace(options, cluster=None, cluster_name=cluster_name, **{"profile": profile})


def bench_seed(shared: KindCluster, reps: int, work: Path, fast_cluster: str) -> Section:
    section = Section("seed")
    seed = scenario.load(SEED)
    rows: list[tuple[object, ...]] = []
    runs: list[dict[str, Any]] = []
    statuses: list[ExitStatus] = []
    best: dict[str, float] = {}
    for profile in PROFILES:
        for index in range(reps):
            lines: list[str] = []
            name = shared.name if profile == "faithful" else fast_cluster
            options = profile_options(quiet_options(shared, work / f"seed-{profile}-{index}", lines), profile, name)
            if options is None:
                rows.append((profile, index + 1, "skipped", "-", "-", "-", "-"))
                runs.append(
                    {"profile": profile, "skipped": "this harness has no cluster profiles (RunOptions.profile)"}
                )
                break
            took, result = timed(partial(run_scenario, seed, options))
            steps = {s.name: s.seconds for s in result.report.steps}
            statuses.append(result.exit_status)
            if result.exit_status is ExitStatus.OK:
                best[profile] = min(best.get(profile, took), took)
            runs.append(
                {
                    "profile": profile,
                    "seconds": round(took, 2),
                    "exit_status": int(result.exit_status),
                    "steps": steps,
                    "failure": failure_of(result),
                    "facts": {k: v for k, v in result.report.facts.items() if "profile" in k or "kubelet" in k},
                }
            )
            incident = next((v for k, v in steps.items() if k.startswith("watch: ")), None)
            fix = next((v for k, v in steps.items() if k.startswith("watch fix")), None)
            other = took - (incident or 0) - (fix or 0)
            rows.append(
                (
                    profile,
                    index + 1,
                    result.exit_status.name,
                    seconds(took),
                    seconds(incident),
                    seconds(fix),
                    seconds(other),
                )
            )
    section.data = {"runs": runs, "best_s": {k: round(v, 2) for k, v in best.items()}}
    section.table = format_table(
        ["profile", "run", "status", "total", "watch incident", "watch fix", "everything else"],
        rows,
        title="seed scenario end to end (run_scenario), fast against faithful, seconds",
    )
    ok = bool(statuses) and all(status is ExitStatus.OK for status in statuses)
    failures = "; ".join(r["failure"] for r in runs if r.get("failure"))
    section.targets.append(
        Target(
            "seed scenario verdict correct",
            ok,
            ", ".join(s.name for s in statuses) + (f" ({failures})" if failures else ""),
        )
    )
    fast = best.get("fast")
    section.targets.append(
        Target(
            f"seed scenario under {SEED_FAST_SECONDS:g} s with the fast profile",
            None if fast is None else fast < SEED_FAST_SECONDS,
            f"fast {seconds(fast)} s, faithful {seconds(best.get('faithful'))} s",
        )
    )
    return section


def run_many(
    shared: KindCluster, seed: scenario.Scenario, count: int, work: Path
) -> tuple[float, list[tuple[float, RunResult | None, str]]]:
    results: list[tuple[float, RunResult | None, str]] = [(0.0, None, "")] * count

    def one(index: int) -> None:
        lines: list[str] = []
        began = time.monotonic()
        try:
            result = run_scenario(seed, quiet_options(shared, work / f"scale-{count}-{index}", lines))
            results[index] = (time.monotonic() - began, result, "")
        except Exception as exc:  # noqa: BLE001 - recorded with the run
            results[index] = (time.monotonic() - began, None, str(exc).splitlines()[0] if str(exc) else repr(exc))

    threads = [threading.Thread(target=one, args=(i,), name=f"scale {count}/{i}", daemon=True) for i in range(count)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)
    return time.monotonic() - began, results


def peak_request(seed: scenario.Scenario) -> int:
    docs = workload.render(workload.load_manifests(seed.workload.manifests), namespace="x", patches=seed.workload.patch)
    return capacity.peak_requests(docs).total.cpu


def with_replicas(seed: scenario.Scenario, replicas: int) -> scenario.Scenario:
    return dataclasses.replace(
        seed, workload=dataclasses.replace(seed.workload, patch={**seed.workload.patch, "replicas": replicas})
    )


def wait_gone(shared: KindCluster, names: list[str], limit: float) -> list[str]:
    """Wait (bounded) until none of the namespaces exists; the ones still there at the end."""
    deadline = time.monotonic() + limit
    while True:
        existing = {ns.metadata.name for ns in shared.core.list_namespace().items if ns.metadata is not None}
        left = sorted(set(names) & existing)
        if not left or time.monotonic() >= deadline:
            return left
        threading.Event().wait(2.0)


SCALE_REPLICAS = 2


def capacity_waits(result: RunResult | None) -> float:
    """Seconds a run waited at the capacity gate (0 when it was admitted at once)."""
    if result is None:
        return 0.0
    return sum(st.seconds for st in result.report.steps if st.name == "wait for capacity")


def bench_scale(shared: KindCluster, work: Path, sizes: tuple[int, ...] = SCALE_SIZES) -> Section:
    """n seed scenarios with two replicas each at once, admitted by the capacity gate (threads, one cluster)."""
    section = Section("scale")
    rows: list[tuple[object, ...]] = []
    totals: dict[int, float] = {}
    data: dict[str, Any] = {}
    variant = with_replicas(scenario.load(SEED), SCALE_REPLICAS)
    ours: list[str] = []
    groups: dict[str, dict[str, str]] = {}
    for count in sizes:
        # Every row starts on an equal footing: the namespaces of the row before are gone.
        left = wait_gone(shared, ours, 120)
        before = load()
        free = sum(n.free.cpu for n in capacity.free_capacity(shared.core))
        need = count * peak_request(variant)
        total, results = run_many(shared, variant, count, work)
        totals[count] = total
        ok = sum(1 for _, r, _ in results if r is not None and r.exit_status is ExitStatus.OK)
        statuses = [r.exit_status.name if r is not None else f"error: {e}" for _, r, e in results]
        per = [t for t, _, _ in results]
        waits = [capacity_waits(r) for _, r, _ in results]
        failures = [failure_of(r, e) for _, r, e in results]
        ours += [
            str(r.report.facts.get("namespace"))
            for _, r, _ in results
            if r is not None and r.report.facts.get("namespace")
        ]
        by_run = [step_groups((st.name, st.seconds) for st in r.report.steps) for _, r, _ in results if r is not None]
        label = str(count)
        groups[label] = {g: brief(run.get(g) for run in by_run) for g in STEP_GROUPS}
        rows.append(
            (
                count,
                seconds(total),
                brief(per),
                seconds(total / count),
                f"{ok}/{count}",
                f"{need}/{free}",
                f"{sum(1 for w in waits if w)} ({brief([w for w in waits if w] or [0.0])})",
                f"{before:.1f}",
            )
        )
        data[label] = {
            "replicas": SCALE_REPLICAS,
            "cpu_request_peak_m": need,
            "cpu_free_m": free,
            "total_s": round(total, 2),
            "per_scenario_s": [round(p, 2) for p in per],
            "capacity_wait_s": [round(w, 2) for w in waits],
            "statuses": statuses,
            "failures": [f for f in failures if f],
            "load_before": before,
            "load_after": load(),
            "steps_median_s": groups[label],
            "namespaces_of_previous_row_left": left,
        }
        for failure in sorted({f for f in failures if f}):
            say(f"    not OK: {failure[:300]}")
        say(f"  scale {label}: {total:.1f} s, {ok}/{count} OK (CPU requests at peak {need}m, free {free}m)")
    section.data = data
    section.table = format_table(
        ["at once", "total", "per scenario", "total / n", "correct", "CPU need/free m", "waited (s)", "load before"],
        rows,
        title=f"scale: seed scenarios ({SCALE_REPLICAS} replicas each) at once on the shared cluster (threads), "
        "admitted by the capacity gate, seconds; CPU need = requests of all their pods at the rollout's peak, "
        "free = what the nodes could still allocate before the row",
    )
    section.table += "\n\n" + format_table(
        ["step", *groups],
        [(g, *(groups[label][g] for label in groups)) for g in STEP_GROUPS],
        title="scale: where the time went, seconds per scenario, median (min-max) over the scenarios of a row",
    )
    biggest = max(sizes)
    if biggest > 1:
        section.targets.append(
            scale_target(
                f"{biggest} at once under {SCALE_FACTOR:g}x the time of 1",
                totals.get(1),
                totals.get(biggest),
                SCALE_FACTOR,
            )
        )
    correct = {k: sum(1 for st in d["statuses"] if st == "OK") for k, d in data.items()}
    section.targets.append(
        Target(
            f"{biggest} of {biggest} correct at once" if str(biggest) in data else "every scaled scenario correct",
            all(correct[k] == int(k) for k in correct),
            "; ".join(
                f"{k} at once: {correct[k]}/{k} ({', '.join(sorted(set(d['statuses'])))})" for k, d in data.items()
            ),
        )
    )
    return section


# ---------------------------------------------------------------------------------------------
# suite


SUITE_SECONDS = 180.0  # target: the whole `make test` on a warm cluster


def bench_suite(workers: int) -> Section:
    """`make test` serial (JOBS=0: no xdist), then with xdist (JOBS=workers) sharing the one cluster of the
    suite's profile (fast), warm: the same command the README and CI give, only the worker count differs."""
    section = Section("suite")
    rows = []
    for label, jobs in (("serial", 0), (f"xdist -n {workers}", workers)):
        cmd = ["make", "-s", "test", f"JOBS={jobs}", "PYTEST_ARGS=-q -p no:cacheprovider"]
        took, result = timed(partial(tools.run, cmd, cwd=ROOT, check=False, timeout=3600))
        lines = (result.stdout + result.stderr).splitlines()
        summary = next(
            (line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)),
            (lines or ["(no output)"])[-1],
        )
        section.data[label] = {
            "cmd": cmd,
            "seconds": round(took, 1),
            "returncode": result.returncode,
            "summary": summary,
            "tail": lines[-15:],
            "load_after": load(),
        }
        rows.append((label, " ".join(cmd[:4]), seconds(took), result.returncode, summary))
        section.targets.append(
            Target(
                f"make test ({label}) under {SUITE_SECONDS:g} s",
                result.returncode == 0 and took < SUITE_SECONDS,
                f"{took:.1f} s, exit {result.returncode}: {summary}",
            )
        )
    section.table = format_table(
        ["run", "command", "s", "exit", "pytest says"],
        rows,
        title="suite: make test serial against xdist on one shared cluster (warm)",
    )
    return section


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition of everything (default: 3, seed 2)")
    parser.add_argument("--json", default=None, help="where the JSON goes (default reports/bench-<time>.json)")
    parser.add_argument("--skip-suite", action="store_true", help="do not time `make test` (serial and xdist)")
    parser.add_argument(
        "--suite-workers", type=int, default=4, help="xdist workers of the suite section (make test JOBS=N)"
    )
    parser.add_argument(
        "--scale-sizes",
        default=",".join(str(n) for n in SCALE_SIZES),
        help="how many seed scenarios at once, per row of the scale section (default 1,4,8)",
    )
    parser.add_argument(
        "--fast-cluster",
        default=None,
        help="the cluster of the fast profile in the seed section (default: <cluster>-fast)",
    )
    parser.add_argument("--skip-cold", action="store_true", help="do not create a cold cluster (bench-cold)")
    parser.add_argument(
        "--only",
        default="cluster,image,verdict,seed,scale,suite",
        help="comma-separated sections to run (default: all)",
    )
    parser.add_argument("--cluster-name", default=None, help="the shared cluster (default: incident-harness)")
    parser.add_argument(
        "--save-observations",
        default=None,
        metavar="DIR",
        help="save the pod observations of the verdict section as JSON lines (test data)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # 8 runs share one client pool
    reps = 1 if args.quick else 3
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    sizes = tuple(int(n) for n in args.scale_sizes.split(",") if n.strip())
    started = datetime.now(UTC)
    shared = KindCluster(name=args.cluster_name or default_name())
    shared.create()
    native = node_platform(shared)
    machine = {
        "host": host_os.node(),
        "cores": os.cpu_count(),
        "kernel": host_os.release(),
        "host_platform": str(platforms.host_platform()),
        "node_platform": str(native),
        "emulation": platforms.read_binfmt().describe(),
        "cluster": shared.name,
        "versions": dict(tools.versions()),
        "load_at_start": load(),
    }
    say(
        f"bench on {machine['host']} ({machine['cores']} cores, load {machine['load_at_start']}), "
        f"cluster {shared.name}, nodes {native}, emulation: {machine['emulation']}"
    )
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        plan: list[tuple[str, Callable[[], Section]]] = [
            ("cluster", lambda: bench_cluster(shared, reps, args.skip_cold)),
            ("image", lambda: bench_images(shared, max(1, reps - 1), work)),
            (
                "verdict",
                lambda: bench_verdicts(shared, reps, Path(args.save_observations) if args.save_observations else None),
            ),
            (
                "seed",
                lambda: bench_seed(shared, 1 if args.quick else 2, work, args.fast_cluster or f"{shared.name}-fast"),
            ),
            ("scale", lambda: bench_scale(shared, work, sizes)),
            (
                "suite",
                lambda: (
                    Section("suite", table="suite: skipped (--skip-suite)")
                    if args.skip_suite
                    else bench_suite(args.suite_workers)
                ),
            ),
        ]
        for name, run in plan:
            if name not in only:
                continue
            say(f"== {name} (load {load():.1f})")
            began, load_before = time.monotonic(), load()
            try:
                section = run()
            except Exception as exc:  # noqa: BLE001 - the other sections still run
                section = Section(name, table=f"{name}: FAILED: {exc}", error=str(exc))
            section.data["section_s"] = round(time.monotonic() - began, 1)
            section.data["load_before"], section.data["load_after"] = load_before, load()
            sections.append(section)
            say(section.table)
            for target in section.targets:
                say(target.line())

    machine["load_at_end"] = load()
    targets = [t for s in sections for t in s.targets]
    print()
    print(
        f"== summary (load {machine['load_at_start']} at start, {machine['load_at_end']} at end; other work on "
        "this machine slows every figure)"
    )
    for section in sections:
        print()
        print(section.table)
    print()
    for target in targets:
        print(target.line())
    path = Path(args.json) if args.json else ROOT / "reports" / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    write_json_atomic(
        path,
        {
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "quick": args.quick,
            "machine": machine,
            "sections": {s.name: {"data": s.data, "error": s.error, "table": s.table} for s in sections},
            "targets": [{"name": t.name, "met": t.met, "detail": t.detail} for t in targets],
        },
    )
    print(f"json: {path}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
