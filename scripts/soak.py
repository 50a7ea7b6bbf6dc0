#!/usr/bin/env python3
"""make soak: is the harness reliable? A table of checks, each PASS or FAIL with its numbers.

  runs        the seed scenario N times in a row on the shared cluster (--runs, default 20): N
              correct verdicts, and no namespace, image or container left behind by the runs
  interrupts  `python3 -m harness reproduce` interrupted (SIGINT to its process group, as Ctrl-C)
              during build, apply and watch (and watch with --keep-namespace): exit 130 within
              5 s, its namespace gone (or kept), and the next run works
  faults      on a cluster of its own (soak-faults): the node container paused during the watch,
              then the cluster deleted during the watch (by `harness gc --yes --cluster
              soak-faults`): exit 3 (ENVIRONMENT) with a one-line cause within the scenario's
              timeout, never a hang or a verdict
  gc          `harness gc` lists what the harness made and not the decoys (a plain image and
              container named soak-decoy); it removes only the soak's own cluster
  --engine-fault  stops the Docker engine during a watch (for EVERYONE on this machine), then
              restarts it with hermetic/setup-host.sh engine; never part of the default set

Usage: python3 scripts/soak.py [--runs N] [--only runs,interrupts,faults] [--engine-fault] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import scenario, tools  # noqa: E402
from harness.cluster import KindCluster, default_name  # noqa: E402
from harness.errors import HarnessError, ToolError  # noqa: E402
from harness.runner import ExitStatus, RunOptions, run_scenario  # noqa: E402
from scripts.bench_support import (  # noqa: E402
    Check,
    LiveProcess,
    Status,
    brief,
    diff,
    docker_containers,
    docker_images,
    kubectl,
    last_step,
    namespace_of,
    namespaces,
    node_images,
    parse_gc_output,
    render_checks,
    step_of,
    write_json_atomic,
)

SEED = "arm64-on-amd64"
FAULT_CLUSTER = "soak-faults"
DECOY = "soak-decoy"
INTERRUPT_EXIT_WITHIN = 5.0
CREATE_INTERRUPT_EXIT_WITHIN = 60.0  # includes deleting the half-made cluster
INTERRUPT_CLUSTER = "soak-interrupt"
NAMESPACE_GONE_WITHIN = 120.0
PARTS = ("runs", "interrupts", "faults")


def say(text: str) -> None:
    print(text, flush=True)


def pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def wait_for(what: Callable[[], bool], limit: float, every: float = 1.0) -> float | None:
    """Seconds until what() held (bounded by limit), None if it never did."""
    began = time.monotonic()
    while True:
        if what():
            return time.monotonic() - began
        if time.monotonic() - began >= limit:
            return None
        pause(every)


def reproduce_cmd(cluster: str, work: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        "reproduce",
        SEED,
        "--cluster-name",
        cluster,
        "--report-dir",
        str(work / "reports"),
        "--artifacts-dir",
        str(work / "artifacts"),
        *extra,
    ]


def newest_report(directory: Path) -> dict[str, object]:
    found = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else {}


def failed(name: str, exc: BaseException) -> Check:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    shown = lines[0] if lines else ""
    if isinstance(exc, ToolError) and len(lines) > 1:
        shown += f" | {lines[-1]}"
    return Check(name, Status.FAIL, f"{type(exc).__name__}: {shown}")


# ---------------------------------------------------------------------------------------------
# N runs in a row


def check_runs(shared: KindCluster, count: int, work: Path) -> list[Check]:
    core = shared.core
    before_ns, before_images = namespaces(core), docker_images()
    before_containers, before_node = docker_containers(), node_images(shared.node_exec, shared.nodes())
    seed = scenario.load(SEED)
    rows: list[tuple[int, float, str]] = []
    created_ns: list[str] = []
    used: set[str] = set()
    for index in range(count):
        began = time.monotonic()
        result = run_scenario(
            seed,
            RunOptions(cluster=shared, report_dir=work / "runs", artifacts_dir=work / "art", say=lambda _line: None),
        )
        took = time.monotonic() - began
        status = result.exit_status
        rows.append((int(status), took, result.report.error or ""))
        ns = result.report.facts.get("namespace")
        if ns:
            created_ns.append(ns)
        used.update(result.images.values())
        say(
            f"  run {index + 1}/{count}: {status.name} in {took:.1f} s"
            + (f" ({(result.report.error or '').splitlines()[0]})" if result.report.error else "")
        )
    ok = sum(1 for status, _, _ in rows if status == ExitStatus.OK)
    checks = [
        Check.of(
            f"seed x{count}: correct verdicts",
            ok == count,
            f"{ok}/{count} exit 0 (incident reproduced, fix verified); seconds per run: {brief(t for _, t, _ in rows)}",
            sum(t for _, t, _ in rows),
        )
    ]

    def ours_left() -> list[str]:
        return sorted(set(created_ns) & set(namespaces(core)))

    gone_in = wait_for(lambda: not ours_left(), NAMESPACE_GONE_WITHIN, every=2.0)
    left = ours_left()
    others = diff(before_ns, namespaces(core))
    checks.append(
        Check.of(
            "runs: no namespace left",
            not left and len(created_ns) == count,
            f"{len(created_ns)} created by the runs, {len(created_ns) - len(left)} gone"
            + (f" (last within {gone_in:.0f} s of the end)" if gone_in is not None else "")
            + (f"; LEFT: {', '.join(left)}" if left else "")
            + f"; cluster-wide before/after: {others.describe('namespaces')}",
        )
    )
    images = diff(before_images, docker_images())
    stray = [i for i in images.created if i not in used]
    checks.append(
        Check.of(
            "runs: images reused by tag",
            len(used) <= 2 and not stray,
            f"{len(used)} tags used by all {count} runs ({', '.join(sorted(used))}); engine "
            + images.describe("images")
            + (f"; not the runs': {', '.join(stray)}" if stray else ""),
        )
    )
    node = diff(before_node, node_images(shared.node_exec, shared.nodes()))
    stray_node = [i for i in node.created if i.split("/", 1)[1] not in used and not any(i.endswith(u) for u in used)]
    checks.append(
        Check.of(
            "runs: node images reused",
            not stray_node,
            node.describe("node tags") + (f"; not the runs': {', '.join(stray_node)}" if stray_node else ""),
        )
    )
    containers = diff(before_containers, docker_containers())
    after = docker_containers()
    # The runs start no container; a new one carrying a kind cluster label is another cluster's node.
    unexplained = [c for c in containers.created if "io.x-k8s.kind.cluster=" not in after.get(c, "")]
    checks.append(
        Check.of(
            "runs: no container left",
            not unexplained,
            containers.describe("containers") + (f"; unexplained: {', '.join(unexplained)}" if unexplained else ""),
        )
    )
    return checks


# ---------------------------------------------------------------------------------------------
# Interrupts


def check_interrupt(shared: KindCluster, work: Path, label: str, step: str, delay: float, keep: bool) -> Check:
    name = f"interrupt during {label}"
    core = shared.core
    extra = ("--keep-namespace",) if keep else ()
    own = work / label.replace(" ", "-")
    proc = LiveProcess(reproduce_cmd(shared.name, own, *extra), cwd=ROOT)
    try:
        if proc.expect(lambda line: step_of(line) == step, timeout=600) is None:
            proc.kill()
            return Check.of(name, False, f"the run never reached '==> {step}' (last lines: {proc.output[-3:]})")
        if delay:
            pause(delay)
        running = last_step(proc.output)
        sent = proc.signal(signal.SIGINT)
        rc = proc.wait(INTERRUPT_EXIT_WITHIN)
        took = time.monotonic() - sent
        hung = rc is None
        if hung:
            rc = proc.wait(60)
            took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.save(own / "output.log")
    # The report (written on interrupt too) names the namespace as soon as it exists, printed or not.
    facts = newest_report(own / "reports").get("facts") or {}
    printed = next((n for n in map(namespace_of, proc.output) if n), None)
    ns = (str(facts.get("namespace") or "") if isinstance(facts, dict) else "") or printed
    mine = [ns] if ns else []
    if keep:
        kept = bool(mine) and all(n in namespaces(core) for n in mine)
        ns_ok, ns_text = kept, f"namespace {', '.join(mine) or '(none)'} kept as asked"
        for n in mine:
            tools.run([*kubectl(shared.kubeconfig), "delete", "namespace", n, "--wait=false"], check=False, timeout=60)
    elif mine:
        gone = wait_for(lambda: not set(mine) & set(namespaces(core)), NAMESPACE_GONE_WITHIN, every=1.0)
        ns_ok = gone is not None
        ns_text = f"namespace {', '.join(mine)} " + (f"gone {gone:.0f} s after exit" if ns_ok else "LEFT BEHIND")
    else:
        ns_ok, ns_text = True, "no namespace created yet"
    if not (own / "reports").is_dir() or not list((own / "reports").glob("*.json")):
        ns_ok, ns_text = False, "no report written"
    passed = rc == ExitStatus.INTERRUPTED and not hung and ns_ok
    return Check.of(
        name,
        passed,
        f"SIGINT in step '{running}': exit {rc} after {took:.1f} s"
        + (" (HUNG past 5 s)" if hung else "")
        + f"; {ns_text}",
        took,
    )


def check_interrupts(shared: KindCluster, work: Path) -> list[Check]:
    cases = [
        ("build", "build", 0.0, False),
        ("apply", "apply", 0.0, False),
        ("watch", "watch", 3.0, False),
        ("watch --keep-namespace", "watch", 3.0, True),
    ]
    checks = []
    for label, step, delay, keep in cases:
        try:
            checks.append(check_interrupt(shared, work, label, step, delay, keep))
        except Exception as exc:  # noqa: BLE001 - one failed check must not end the soak
            checks.append(failed(f"interrupt during {label}", exc))
        say(f"  {checks[-1].status.value} {checks[-1].name}: {checks[-1].detail}")
    try:
        checks.append(check_interrupt_create(work / "cluster-create"))
    except Exception as exc:  # noqa: BLE001 - one failed check must not end the soak
        checks.append(failed("interrupt during cluster create", exc))
    say(f"  {checks[-1].status.value} {checks[-1].name}: {checks[-1].detail}")
    checks.append(check_full_run("next run after the interrupts", shared.name, work / "after-interrupts"))
    return checks


def check_interrupt_create(work: Path) -> Check:
    """SIGINT while `kind create cluster` runs for a new cluster: the half-made cluster must go."""
    name = "interrupt during cluster create"
    gone = KindCluster(name=INTERRUPT_CLUSTER)
    if gone.exists():
        gone.delete()
    proc = LiveProcess(reproduce_cmd(INTERRUPT_CLUSTER, work), cwd=ROOT)
    node = f"{INTERRUPT_CLUSTER}-control-plane"
    try:
        if proc.expect(lambda line: step_of(line) == "cluster", timeout=120) is None:
            return Check.of(name, False, f"the run never reached '==> cluster' (last lines: {proc.output[-3:]})")
        # Interrupt once kind has started the node container (kubeadm still running).
        started = wait_for(lambda: node in docker_containers(), 120, every=0.5)
        pause(3.0)
        sent = proc.signal(signal.SIGINT)
        rc = proc.wait(CREATE_INTERRUPT_EXIT_WITHIN)
        took = time.monotonic() - sent
        hung = rc is None
    finally:
        proc.kill()
        proc.save(work / "output.log")
    clusters = set(tools.run([tools.kind_binary(), "get", "clusters"], timeout=60).stdout.split())
    left = [
        x
        for x in (
            INTERRUPT_CLUSTER in clusters and f"cluster {INTERRUPT_CLUSTER}",
            node in docker_containers() and f"container {node}",
        )
        if x
    ]
    if left:
        KindCluster(name=INTERRUPT_CLUSTER).delete()
    passed = rc == ExitStatus.INTERRUPTED and not hung and not left
    return Check.of(
        name,
        passed,
        f"node container up after {started if started is not None else float('nan'):.0f} s, SIGINT 3 s later: "
        f"exit {rc} after {took:.1f} s"
        + (f" (HUNG past {CREATE_INTERRUPT_EXIT_WITHIN:.0f} s)" if hung else "")
        + (f"; LEFT: {', '.join(left)} (removed now)" if left else "; no cluster or node container left"),
        took,
    )


def check_full_run(name: str, cluster: str, work: Path) -> Check:
    began = time.monotonic()
    proc = LiveProcess(reproduce_cmd(cluster, work), cwd=ROOT)
    rc = proc.wait(900)
    proc.kill()
    proc.save(work / "output.log")
    took = time.monotonic() - began
    return Check.of(name, rc == ExitStatus.OK, f"exit {rc} in {took:.1f} s", took)


# ---------------------------------------------------------------------------------------------
# Faults


def fault_run(
    name: str, cluster: KindCluster, work: Path, fault: Callable[[], str], undo: Callable[[], None] | None = None
) -> Check:
    """Run the seed on cluster in a child; during the watch apply fault; expect exit 3 with a one-line cause."""
    limit = float(scenario.load(SEED).expect.timeout)
    report_dir = work / "reports"
    proc = LiveProcess(reproduce_cmd(cluster.name, work), cwd=ROOT)
    fault_note = ""
    try:
        if proc.expect(lambda line: line.startswith("==> watch:"), timeout=600) is None:
            return Check.of(name, False, f"the run never reached '==> watch' (last lines: {proc.output[-3:]})")
        pause(3.0)  # let the watch see the pods first
        began = time.monotonic()
        fault_note = fault()
        rc = proc.wait(limit)
        took = time.monotonic() - began
        hung = rc is None
    finally:
        if undo is not None:
            undo()
        proc.kill()
        proc.save(work / "output.log")
    report = newest_report(report_dir)
    error = str(report.get("error") or "")
    cause = error.splitlines()[0] if error else ""
    remedy = next((line.strip() for line in error.splitlines()[1:] if "what to do" in line), "")
    passed = rc == ExitStatus.ENVIRONMENT and not hung and bool(cause)
    detail = (
        f"{fault_note}; exit {rc} {took:.1f} s after the fault"
        + (f" (HUNG past {limit:.0f} s)" if hung else "")
        + f"; cause: {cause or '(none)'}"
        + (f"; {remedy}" if remedy else "")
    )
    return Check.of(name, passed, detail, took)


def make_decoys() -> None:
    """A plain image and container that the harness did not make: gc must not list them."""
    docker = tools.docker_binary()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("decoy.txt")
        payload = b"not made by the harness\n"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    tools.run([docker, "import", "--change", 'CMD ["/decoy"]', "-", f"{DECOY}:1"], input=buffer.getvalue(), timeout=120)
    tools.run([docker, "create", "--name", DECOY, f"{DECOY}:1"], timeout=120)


def remove_decoys() -> None:
    docker = tools.docker_binary()
    tools.run([docker, "rm", "-f", DECOY], check=False, timeout=120)
    tools.run([docker, "rmi", f"{DECOY}:1"], check=False, timeout=120)


def gc_listing(*extra: str) -> set[tuple[str, str]]:
    return parse_gc_output(tools.run([sys.executable, "-m", "harness", "gc", *extra], cwd=ROOT, timeout=300).stdout)


def check_gc_lists(shared: KindCluster) -> list[Check]:
    listed = gc_listing()
    decoys = {(k, n) for k, n in listed if n.startswith(DECOY)}
    node = f"{FAULT_CLUSTER}-control-plane"
    images = {n for k, n in listed if k == "image"}
    wrong_images = sorted(i for i in images if not i.startswith("incident-harness/"))
    wanted = {("cluster", FAULT_CLUSTER), ("container", node), ("cluster", shared.name)}
    missing = sorted(f"{k} {n}" for k, n in wanted - listed)
    checks = [
        Check.of(
            "gc lists the harness's things, not decoys",
            not decoys and not missing and not wrong_images,
            f"{len(listed)} listed ({sum(k == 'cluster' for k, _ in listed)} clusters, "
            f"{sum(k == 'container' for k, _ in listed)} containers, {len(images)} images)"
            + (f"; DECOYS LISTED: {sorted(decoys)}" if decoys else f"; decoys {DECOY}:1 and {DECOY} not listed")
            + (f"; missing: {missing}" if missing else "")
            + (f"; not harness images: {wrong_images}" if wrong_images else ""),
        )
    ]
    subset = gc_listing("--cluster", FAULT_CLUSTER)
    expected = {("cluster", FAULT_CLUSTER), ("container", node)}
    checks.append(
        Check.of(
            f"gc --cluster {FAULT_CLUSTER} lists only it",
            subset == expected,
            f"listed: {sorted(f'{k} {n}' for k, n in subset)}",
        )
    )
    return checks


def check_faults(shared: KindCluster, work: Path) -> list[Check]:
    checks: list[Check] = []
    docker = tools.docker_binary()
    began = time.monotonic()
    fault = KindCluster(name=FAULT_CLUSTER)
    fault.create()
    checks.append(
        Check.of(f"{FAULT_CLUSTER} cluster", True, "reused" if fault.reused else "created", time.monotonic() - began)
    )
    say(f"  {FAULT_CLUSTER}: {'reused' if fault.reused else 'created'} in {time.monotonic() - began:.0f} s")
    node = f"{FAULT_CLUSTER}-control-plane"

    def pause_node() -> str:
        tools.run([docker, "pause", node], timeout=60)
        return f"docker pause {node}"

    def unpause_node() -> None:
        tools.run([docker, "unpause", node], check=False, timeout=60)

    before = set(namespaces(fault.core))
    try:
        checks.append(fault_run("fault: node paused during watch", fault, work / "paused", pause_node, unpause_node))
    except Exception as exc:  # noqa: BLE001 - one failed check must not end the soak
        unpause_node()
        checks.append(failed("fault: node paused during watch", exc))
    say(f"  {checks[-1].status.value} {checks[-1].name}: {checks[-1].detail}")
    try:
        fault.wait_ready(timeout=180)
        left = sorted(n for n in set(namespaces(fault.core)) - before if n.startswith(f"{SEED}-"))
        for n in left:  # its clean-up could not reach the paused API server
            tools.run([*kubectl(fault.kubeconfig), "delete", "namespace", n, "--wait=false"], check=False, timeout=60)
        checks.append(
            Check.of(
                "cluster answers again after unpause",
                True,
                f"ready; namespace left by the paused run (its clean-up could not reach the API): "
                f"{', '.join(left) or 'none'}" + (" - removed now" if left else ""),
            )
        )
    except HarnessError as exc:
        checks.append(failed("cluster answers again after unpause", exc))

    shared_images = docker_images()
    removed: set[tuple[str, str]] = set()
    try:
        make_decoys()
        checks += check_gc_lists(shared)

        def delete_by_gc() -> str:
            result = tools.run(
                [sys.executable, "-m", "harness", "gc", "--yes", "--cluster", FAULT_CLUSTER],
                cwd=ROOT,
                check=False,
                timeout=300,
            )
            removed.update(parse_gc_output(result.stdout))
            return f"harness gc --yes --cluster {FAULT_CLUSTER} (exit {result.returncode})"

        checks.append(fault_run("fault: cluster deleted during watch", fault, work / "deleted", delete_by_gc))
        say(f"  {checks[-1].status.value} {checks[-1].name}: {checks[-1].detail}")
        clusters = set(tools.run([tools.kind_binary(), "get", "clusters"], timeout=60).stdout.split())
        containers = docker_containers()
        after_images = docker_images()
        problems = []
        if FAULT_CLUSTER in clusters or node in containers:
            problems.append(f"{FAULT_CLUSTER} still there")
        if fault.kubeconfig.parent.exists():
            problems.append(f"{fault.kubeconfig.parent} still there")
        if shared.name not in clusters or f"{shared.name}-control-plane" not in containers:
            problems.append(f"shared cluster {shared.name} GONE")
        if DECOY not in containers or f"{DECOY}:1" not in after_images:
            problems.append("a decoy was removed")
        expected = {("cluster", FAULT_CLUSTER), ("container", node)}
        if removed != expected:
            problems.append(f"gc said it removed {sorted(removed)}, expected {sorted(expected)}")
        # Images vanishing meanwhile are other helpers' doing unless gc named them (it names what it removes).
        vanished = sorted(shared_images - after_images)
        checks.append(
            Check.of(
                f"gc --yes --cluster {FAULT_CLUSTER} removed only it",
                not problems,
                "; ".join(problems)
                or f"removed {sorted(f'{k} {n}' for k, n in removed)}; shared "
                f"cluster {shared.name} and decoys untouched, no image removed by gc"
                + (f" (meanwhile gone, not by gc: {', '.join(vanished)})" if vanished else ""),
            )
        )
    except Exception as exc:  # noqa: BLE001 - one failed check must not end the soak
        checks.append(failed("gc", exc))
    finally:
        remove_decoys()
        KindCluster(name=FAULT_CLUSTER).delete()
    return checks


# ---------------------------------------------------------------------------------------------
# Engine fault (opt-in: stops the engine for everyone on this machine)


def engine_pid() -> int | None:
    pidfile = Path("/var/run/docker.pid")
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def engine_answers() -> bool:
    return (
        tools.run([tools.docker_binary(), "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30).returncode
        == 0
    )


def restart_engine() -> str:
    result = tools.run([str(ROOT / "hermetic" / "setup-host.sh"), "engine"], check=False, timeout=900)
    up = wait_for(engine_answers, 120, every=2.0)
    return f"setup-host.sh engine exit {result.returncode}; engine {'answers' if up is not None else 'DOES NOT ANSWER'}"


def kind_nodes_running() -> set[str]:
    """The kind node containers (of any cluster) that are running."""
    listed = tools.run(
        [
            tools.docker_binary(),
            "ps",
            "--filter",
            "label=io.x-k8s.kind.cluster",
            "--filter",
            "status=running",
            "--format",
            "{{.Names}}",
        ],
        check=False,
        timeout=30,
    )
    return set(listed.stdout.split())


def check_engine_fault(work: Path) -> list[Check]:
    running_before = kind_nodes_running()
    fault = KindCluster(name=FAULT_CLUSTER)
    fault.create()
    restart_note = ""

    def stop_engine() -> str:
        pid = engine_pid()
        if pid is None:
            raise HarnessError("no /var/run/docker.pid: cannot stop the engine", "start it with hermetic/setup-host.sh")
        os.kill(pid, signal.SIGTERM)
        stopped = wait_for(lambda: not engine_answers(), 120, every=1.0)
        return f"dockerd (pid {pid}) stopped" + (f" in {stopped:.0f} s" if stopped is not None else " (STILL ANSWERS)")

    def undo() -> None:
        nonlocal restart_note
        restart_note = restart_engine()

    try:
        check = fault_run("fault: Docker engine stopped during watch", fault, work / "engine", stop_engine, undo)
    except Exception as exc:  # noqa: BLE001 - the engine must come back whatever happened
        if not engine_answers():
            restart_note = restart_engine()
        check = failed("fault: Docker engine stopped during watch", exc)
    checks = [check, Check.of("engine restarted", engine_answers(), restart_note or "it never stopped")]
    # kind starts its nodes with --restart=on-failure:1: the engine may bring them back by itself.
    back = wait_for(lambda: running_before <= kind_nodes_running(), 120, every=2.0)
    stopped = sorted(running_before - kind_nodes_running())
    checks.append(
        Check.of(
            "kind nodes after the engine restart",
            not stopped,
            f"all {len(running_before)} running again after {back:.0f} s"
            if back is not None
            else f"not running: {', '.join(stopped)} (the next KindCluster.create recreates a cluster whose "
            "nodes stopped; or 'docker start' them)",
        )
    )
    try:
        KindCluster(name=FAULT_CLUSTER).delete()
    except HarnessError as exc:
        checks.append(failed(f"delete {FAULT_CLUSTER}", exc))
    return checks


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="how many runs in a row (default 20)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument(
        "--engine-fault",
        action="store_true",
        help="also stop the Docker engine mid-run (affects everyone on this machine)",
    )
    parser.add_argument("--cluster-name", default=None, help="the shared cluster (default: incident-harness)")
    parser.add_argument(
        "--json", default=None, help="where to write the checks as JSON (default reports/soak-<time>.json)"
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {PARTS}")

    # Started in the background by a shell without job control (nohup ... &), SIGINT is ignored and
    # children inherit that: the interrupt checks would test nothing. Children of a process with a
    # handler start with the default disposition.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = datetime.now(UTC)
    checks: list[Check] = []
    work = ROOT / "artifacts" / f"soak-{started:%Y%m%dT%H%M%SZ}"  # the child runs' output and reports
    shared = KindCluster(name=args.cluster_name or default_name())
    shared.create()
    say(f"shared cluster {shared.name} ({'reused' if shared.reused else 'created'})")
    steps: dict[str, Callable[[], list[Check]]] = {
        "runs": lambda: check_runs(shared, args.runs, work),
        "interrupts": lambda: check_interrupts(shared, work),
        "faults": lambda: check_faults(shared, work),
    }
    for part, run in steps.items():
        if part not in parts:
            continue
        say(f"== {part}")
        try:
            checks += run()
        except Exception as exc:  # noqa: BLE001 - report it as a failed check and go on
            checks.append(failed(part, exc))
    if args.engine_fault:
        say("== engine fault (stops the Docker engine for everyone)")
        try:
            checks += check_engine_fault(work)
        except Exception as exc:  # noqa: BLE001 - report it; the check restarted the engine
            checks.append(failed("engine fault", exc))

    print()
    print(
        render_checks(
            checks,
            title=f"soak on {os.uname().nodename}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        )
    )
    path = Path(args.json) if args.json else ROOT / "reports" / f"soak-{started:%Y%m%dT%H%M%SZ}.json"
    write_json_atomic(
        path,
        {
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "runs": args.runs,
            "parts": parts,
            "engine_fault": args.engine_fault,
            "checks": [c.to_dict() for c in checks],
        },
    )
    print(f"json: {path}")
    print(f"output and reports of the child runs: {work}")
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
