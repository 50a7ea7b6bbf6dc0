"""python -m harness: list, doctor, reproduce, cluster, gc, inspect. A thin door onto the library.

The commands import what they need when they run: the scenario, runner, report and cluster
modules pull in the Kubernetes client (seconds), which `inspect`, a CI gate, never needs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness import project, signals, tools
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.inspect import ImageFacts
    from harness.platforms import EmulationState, Platform
    from harness.runner import RunOptions, RunResult
    from harness.scenario import Scenario

BAD_INPUT = 2  # harness.runner.ExitStatus.BAD_INPUT (a unit test keeps them equal)
ENVIRONMENT = 3  # harness.runner.ExitStatus.ENVIRONMENT


def _cmd_list(args: argparse.Namespace) -> int:
    from harness import scenario
    from harness.runner import ExitStatus

    found = project.find_project()  # --root, else [tool.incident-harness] above the cwd, else the cwd
    paths = scenario.discover()
    if not paths:
        print(f"no scenario files in {found.scenarios_dir} (project {found.root})")
        return int(ExitStatus.BAD_INPUT)
    status = 0
    for path in paths:
        try:
            s = scenario.load(path, found)
            shown = path.relative_to(found.root) if path.is_relative_to(found.root) else path
            print(f"{s.name:28} {s.title}  ({shown})")
        except scenario.ScenarioError as exc:
            print(f"{path.name:28} INVALID: {exc.cause}")
            status = int(ExitStatus.BAD_INPUT)
    return status


def _line(label: str, value: str) -> None:
    print(f"  {label:22} {value}")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from harness import platforms, profiles, registry
    from harness.cluster import REGISTRY_FREE_REPO, KindCluster, default_name, kubeconfig_path
    from harness.runner import ExitStatus

    problems = 0
    print("tools")
    for name, cmd in {
        "docker client": [tools.docker_binary(), "version", "--format", "{{.Client.Version}}"],
        "docker engine": [tools.docker_binary(), "version", "--format", "{{.Server.Version}}"],
        "kind": [tools.kind_binary(), "version"],
        "go": ["go", "version"],
    }.items():
        try:
            result = tools.run(cmd, check=False, timeout=30)
            ok = result.returncode == 0
            _line(
                name,
                (result.stdout.strip() or result.stderr.strip()).splitlines()[0]
                if ok
                else "NOT AVAILABLE: " + (result.stderr.strip().splitlines() or ["?"])[-1],
            )
        except HarnessError as exc:
            ok = False
            _line(name, f"MISSING ({exc.cause}); {exc.remedy}")
        problems += 0 if ok or name == "go" else 1
    buildx = tools.buildx_command()
    _line("buildx", " ".join(buildx) if buildx else "missing (run 'make setup'; the classic builder still works)")
    try:
        _line("kubectl", tools.kubectl_binary())
    except HarnessError as exc:
        _line("kubectl", f"missing: {exc.remedy}")
    bounding = Path("/proc/self/status").read_text()
    capbnd = next((line.split()[1] for line in bounding.splitlines() if line.startswith("CapBnd:")), "?")
    _line(
        "capability bounding",
        capbnd
        + (
            " (short: privileged nodes need the capfilter runtime)"
            if capbnd != "?" and int(capbnd, 16) & ((1 << 41) - 1) != (1 << 41) - 1
            else ""
        ),
    )

    print("node images")
    pins = tools.versions()
    for ref in (pins["KINDEST_NODE_IMAGE"], f"{REGISTRY_FREE_REPO}:{pins['K8S_VERSION']}"):
        present = tools.run([tools.docker_binary(), "image", "inspect", ref], check=False, timeout=30).returncode == 0
        _line(ref, "present" if present else "not present")

    print("registry")
    _line("local registry", registry.status())

    print("platforms")
    host = platforms.host_platform()
    _line("host", str(host))
    node = host
    name = args.cluster_name or default_name(args.profile)
    cluster = KindCluster(name=name)
    settings = None
    try:
        if cluster.exists() and kubeconfig_path(name).exists():
            listed = cluster.core.list_node().items
            raw = cluster.core.api_client.sanitize_for_serialization(listed[0])
            node = platforms.node_platform(raw)
            _line(f"nodes of {name}", str(node))
            found = profiles.profile_of_node_objects(listed)
            _line("cluster profile", found.value if found else "MIXED: its nodes carry different profile labels")
            settings = profiles.read_kubelet_settings(cluster.core)
        else:
            _line("nodes", f"no cluster {name!r} yet: assuming the host's platform")
    except HarnessError as exc:
        _line("nodes", f"unknown ({exc.cause})")
    if settings is not None:
        _line("kubelet (configz)", settings.describe())
    emulation = platforms.read_binfmt()
    _line("emulation", emulation.describe())
    foreign = platforms.foreign_of(node)
    expectation = platforms.expected_outcome(foreign, node, emulation)
    print("can the platform mismatch reproduce here?")
    print(f"  {platforms.explain(foreign, node, emulation)}")
    if expectation is platforms.Expectation.EXEC_FORMAT_ERROR:
        print("  yes: a foreign image fails with 'exec format error', as in the incident")
    elif expectation is platforms.Expectation.EMULATED:
        print("  no: emulation would run the foreign image; the harness will report 'masked by emulation'.")
        print(
            f"  to reproduce, disable the handler: echo 0 > /proc/sys/fs/binfmt_misc/qemu-{platforms.qemu_name(foreign)}"
        )
    else:
        print(f"  partly: {expectation.name.lower().replace('_', ' ')}")
    _truth_table(node, emulation)
    return 0 if problems == 0 else int(ExitStatus.ENVIRONMENT)


SEED_SCENARIO = "arm64-on-amd64.yaml"
SEED_IMAGES = ("laptop-build", "ci-build")


def _latest_local(repository: str) -> str | None:
    """The newest local image of a repository (docker lists newest first), or None."""
    result = tools.run(
        [tools.docker_binary(), "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository],
        check=False,
        timeout=30,
    )
    refs = [line for line in result.stdout.split() if not line.endswith(":<none>")] if result.returncode == 0 else []
    return refs[0] if refs else None


def _entrypoint_bytes(facts: ImageFacts) -> str:
    """The ELF the kernel loads for the image's entrypoint, in one phrase ('amd64 ELF /usr/bin/python3.11')."""
    m = facts.runnable[0] if facts.runnable else None
    ep = m.entrypoint if m is not None else None
    hop = ep.loaded_elf if ep is not None else None
    if hop is None or hop.elf is None:
        return "unknown" if ep is None else (ep.unknown or (ep.hops[-1].kind.value if ep.hops else "unknown"))
    return f"{hop.elf.architecture} ELF {hop.resolved or hop.requested}"


def _truth_table(node: Platform, emulation: EmulationState) -> None:
    """The seed scenario's images, read from their bytes, and what they do on these nodes."""
    from harness import inspect
    from harness.runner import delivered_images

    print(f"seed scenario's images on {node} nodes ({SEED_SCENARIO})")
    rows = [("image", "label platform", "entrypoint bytes", "predicted outcome")]
    delivered = delivered_images(SEED_SCENARIO.removesuffix(".yaml"))
    for name in SEED_IMAGES:
        ref = delivered.get(name) or _latest_local(f"incident-harness/{name}")
        if ref is None:
            rows.append((name, "-", "-", "not built yet: run make reproduce"))
            continue
        try:
            facts = inspect.inspect(ref)[0]
            prediction = inspect.predict(facts, node, emulation)
            label = ", ".join(m.label for m in facts.runnable) or "-"
            rows.append((ref, label, _entrypoint_bytes(facts), f"{prediction.outcome.value}: {prediction.reason}"))
        except HarnessError as exc:
            rows.append((ref, "-", "-", f"unknown, because {exc.cause}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


def run_scenario(s: Scenario, options: RunOptions) -> RunResult:
    """harness.runner.run_scenario, imported when a scenario is run."""
    from harness import runner

    return runner.run_scenario(s, options)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from harness import report, scenario
    from harness.runner import ExitStatus, RunOptions

    if args.jobs < 1:
        print(f"error: --jobs {args.jobs}: at least 1", file=sys.stderr)
        return BAD_INPUT
    if len(args.scenario) > 1:
        return _reproduce_many(args)
    s = scenario.load(args.scenario[0])
    print(f"scenario {s.name}: {s.title}")
    printer = None if args.quiet else report.live_printer(sys.stdout)
    options = RunOptions(
        cluster_name=args.cluster_name,
        node_image=args.node_image,
        kind_bin=args.kind_bin,
        profile=args.profile,
        keep_cluster=not args.delete_cluster,
        keep_namespace=args.keep_namespace,
        report_dir=Path(args.report_dir),
        artifacts_dir=Path(args.artifacts_dir),
        on_evidence=printer,
        registry=args.registry,
        delivery=args.delivery,
    )
    result = run_scenario(s, options)
    print()
    print(report.render_terminal(result.report))
    for path in result.report_paths:
        print(f"report: {path}")
    status = result.exit_status
    if status is ExitStatus.MASKED_BY_EMULATION:
        print(
            "verdict: MASKED BY EMULATION: the foreign image ran under an emulator on this host; "
            "the incident cannot show here (see 'python -m harness doctor')"
        )
    return int(status)


def _reproduce_many(args: argparse.Namespace) -> int:
    """Several scenarios on one cluster, --jobs at a time, each in its own namespace with its own report."""
    from harness import jobs, scenario
    from harness.runner import RunOptions
    from harness.session import Session

    loaded = [scenario.load(path) for path in args.scenario]  # every file is checked before anything runs
    batch = jobs.label_jobs(loaded)
    out = jobs.Output(sys.stdout)
    print(f"{len(batch)} scenarios, {args.jobs} at a time, on cluster {args.cluster_name or 'incident-harness'}")
    session = Session.open(
        name=args.cluster_name,
        node_image=args.node_image or next((s.node_image for s in loaded if s.node_image), None),
        kind_bin=args.kind_bin,
        workers=max(s.workers for s in loaded),
        keep_cluster=not args.delete_cluster,
        say=print,
        profile=args.profile,
        registry_address=args.registry,
    )
    shared = len({s.name for s in loaded}) < len(loaded)  # a name given twice: a report folder per run

    def options_for(job: jobs.Job, out: jobs.Output) -> RunOptions:
        reports = Path(args.report_dir) / job.label.replace("#", "-") if shared else Path(args.report_dir)
        return RunOptions(
            session=session,
            keep_namespace=args.keep_namespace,
            report_dir=reports,
            artifacts_dir=Path(args.artifacts_dir),
            on_evidence=None if args.quiet else jobs.evidence_printer(out, job.label),
            say=lambda line: out.line(job.label, line),
            delivery=args.delivery,
        )

    try:
        results, interrupt = jobs.run_jobs(batch, options_for, out, args.jobs)
    finally:
        session.close()
    print()
    print(jobs.summary(results))
    statuses = [r.status for r in results]
    if interrupt is not None:
        statuses.append(signals.exit_status(interrupt))
    return jobs.worst(statuses)


def _cmd_cluster(args: argparse.Namespace) -> int:
    from harness.cluster import KindCluster, default_name

    cluster = KindCluster(
        name=args.name or default_name(args.profile),
        node_image=args.node_image,
        kind_bin=args.kind_bin,
        workers=args.workers,
        profile=args.profile,
    )
    if args.action == "create":
        from harness import profiles

        cluster.create()
        print(f"cluster {cluster.name} is ready ({'reused' if cluster.reused else 'created'}), profile {args.profile}.")
        settings = profiles.read_kubelet_settings(cluster.core)
        profiles.check_applied(cluster.profile, settings, cluster.name)
        print(f"kubelet (configz): {settings.describe()}")
        print("point kubectl at it with:")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print("  kubectl get nodes")
    elif args.action == "delete":
        existed = cluster.exists()
        cluster.delete()  # refuses (NotManaged, exit 3) a cluster the harness did not make
        print(f"cluster {cluster.name} deleted" if existed else f"no cluster {cluster.name} (nothing to delete)")
    else:
        print(cluster.kubeconfig)
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from harness import gc

    if args.cluster and args.all:
        print("error: --cluster and --all exclude each other (--all removes everything)", file=sys.stderr)
        return BAD_INPUT
    surveyed = gc.survey(args.cluster)
    if args.cluster and not surveyed.found:
        print(f"nothing the harness made belongs to cluster(s) {', '.join(args.cluster)}")
    for skipped in surveyed.skipped:
        print(f"leaving {skipped.kind} {skipped.name}: {skipped.reason}")
    for item in surveyed.found:
        print(f"{'removing' if args.yes else 'would remove'} {item.kind} {item.name}")
    if args.all:
        print(f"{'removing' if args.yes else 'would remove'} cache {tools.cache_dir()}")
    if not args.yes:
        print("(dry run: add --yes to remove)")
        return 0
    for refused in gc.remove(surveyed.found):
        print(f"left {refused.kind} {refused.name}: {refused.reason}")
    if args.all:
        shutil.rmtree(tools.cache_dir(), ignore_errors=True)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from harness import scenario

    print(json.dumps(scenario.json_schema(), indent=2))
    return 0


ROOT_HELP = "the project's root folder (default: the nearest with [tool.incident-harness] in pyproject.toml, else .)"


def _cmd_inspect(args: argparse.Namespace) -> int:
    from harness import inspect

    return inspect.command(args)


def _cmd_capture(args: argparse.Namespace) -> int:
    from harness import capture

    target = capture.Target(args.namespace, args.deployment, args.selector)
    api = capture.open_client(args.context, Path(args.kubeconfig) if args.kubeconfig else None)
    out = Path(args.out) if args.out else capture.default_out(target)
    result = capture.capture(api, target, out, context=args.context, local_images=not args.no_local_images)
    print(f"captured {result.pods} pod(s) from context {args.context}, namespace {args.namespace} (read-only)")
    for line in result.captured:
        print(f"  {line}")
    for line in result.missing:
        print(f"  could not read: {line}")
    print(f"bundle: {result.path}")
    print(f"next: python -m harness draft {result.path}")
    return 0


def _cmd_draft(args: argparse.Namespace) -> int:
    from harness import bundle, draft

    given = {}
    for item in args.image_platform or []:
        ref, sep, plat = item.rpartition("=")
        if not sep or not ref or not plat:
            print(f"error: --image-platform {item}: expected REF=PLATFORM", file=sys.stderr)
            return BAD_INPUT
        given[ref] = plat
    try:
        written = draft.write(
            bundle.read(Path(args.bundle)),
            Path(args.out) if args.out else None,
            name=args.name,
            platforms=given,
        )
    except bundle.BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    d = written.draft
    print(f"drafted {written.scenario}: outcome {d.outcome}, {len(d.symptoms)} symptom(s)")
    print(f"  manifest {written.manifest}")
    for path in written.contexts:
        print(f"  placeholder build context {path} (TODO)")
    for todo in d.todos:
        print(f"  TODO: {todo}")
    return 0


PROFILES = ("faithful", "fast")  # harness.profiles.names() (a unit test keeps them equal; imported late)


def _profile_type(value: str) -> str:
    if value not in PROFILES:
        raise argparse.ArgumentTypeError(f"unknown profile {value!r}: use one of {', '.join(PROFILES)}")
    return value


def _profile_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--profile", type=_profile_type, default="faithful", metavar="{faithful,fast}", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Reproduce Kubernetes incidents on kind.")
    parser.add_argument("--root", default=None, help=ROOT_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="list the project's scenario files")
    lst.add_argument("--root", default=argparse.SUPPRESS, help=ROOT_HELP)
    lst.set_defaults(func=_cmd_list)
    schema = sub.add_parser("schema", help="print the JSON Schema of scenario files (for editors)")
    schema.set_defaults(func=_cmd_schema)

    doctor = sub.add_parser("doctor", help="tools, engine, platforms, emulation: can the incident reproduce here?")
    doctor.add_argument("--cluster-name", default=None)
    _profile_argument(doctor, "the profile whose default cluster to look at (default: faithful)")
    doctor.set_defaults(func=_cmd_doctor)

    rep = sub.add_parser("reproduce", help="run a scenario end to end and print the verdict")
    rep.add_argument(
        "scenario",
        nargs="+",
        help="scenario file(s), or the name(s) of one in the project's scenarios folder; several share one cluster",
    )
    rep.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="run N of the scenarios at once (each in its own namespace, admitted by the nodes' capacity)",
    )
    rep.add_argument("--root", default=argparse.SUPPRESS, help=ROOT_HELP)
    rep.add_argument("--cluster-name", default=None, help="kind cluster to create or reuse (default: incident-harness)")
    rep.add_argument(
        "--node-image", default=None, help="force a node image (default: kindest/node, else registry-free)"
    )
    rep.add_argument("--kind-bin", default=None, help="kind binary to use")
    _profile_argument(
        rep,
        "kubelet settings of the cluster: faithful (kubelet defaults, the default) or fast "
        "(a short crash-loop back-off; default cluster incident-harness-fast)",
    )
    rep.add_argument(
        "--delete-cluster", action="store_true", help="delete the cluster afterwards if this run created it"
    )
    rep.add_argument("--keep-namespace", action="store_true", help="keep the scenario's namespace for inspection")
    rep.add_argument("--report-dir", default="reports", help="where the Markdown and JSON reports go")
    rep.add_argument("--artifacts-dir", default="artifacts", help="where evidence of a failed run goes")
    rep.add_argument("--quiet", action="store_true", help="no live timeline")
    rep.add_argument(
        "--registry",
        default=None,
        metavar="HOST[:PORT]",
        help="push to and pull from this registry (default: the harness's own, started on first use)",
    )
    rep.add_argument(
        "--delivery",
        choices=("registry", "load"),
        default=None,
        help="override the scenario's workload.delivery: push and pull, or kind load",
    )
    rep.set_defaults(func=_cmd_reproduce)

    cl = sub.add_parser("cluster", help="create, delete, or show the kubeconfig of a harness cluster")
    cl.add_argument("action", choices=["create", "delete", "kubeconfig"])
    cl.add_argument("--name", default=None)
    cl.add_argument("--node-image", default=None)
    cl.add_argument("--kind-bin", default=None)
    cl.add_argument("--workers", type=int, default=0)
    _profile_argument(cl, "kubelet settings of the cluster (default: faithful); also picks the default name")
    cl.set_defaults(func=_cmd_cluster)

    gcp = sub.add_parser("gc", help="list (and with --yes remove) clusters, containers and images the harness made")
    gcp.add_argument("--yes", action="store_true", help="remove them (default: only list)")
    gcp.add_argument("--all", action="store_true", help="also remove the harness's caches")
    gcp.add_argument(
        "--cluster",
        action="append",
        default=None,
        metavar="NAME",
        help="only this cluster and its node containers, no images (repeatable)",
    )
    gcp.set_defaults(func=_cmd_gc)

    from harness import inspect

    ins = sub.add_parser("inspect", help="read images' entrypoints from their layers; predict exec; CI gate")
    inspect.add_arguments(ins)
    ins.set_defaults(func=_cmd_inspect)

    cap = sub.add_parser("capture", help="save an incident's evidence from any cluster, read-only, into a bundle")
    cap.add_argument("--context", required=True, help="the kubeconfig context of the cluster")
    cap.add_argument("--namespace", "-n", required=True)
    which = cap.add_mutually_exclusive_group(required=True)
    which.add_argument("--deployment", help="the Deployment (with its ReplicaSets and pods)")
    which.add_argument("--selector", "-l", help="a label selector for the pods (their owners are captured too)")
    cap.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    cap.add_argument("--out", default=None, help="a new folder, or FILE.tar.gz (default: incident-NS-NAME-TIME)")
    cap.add_argument("--no-local-images", action="store_true", help="do not look up image platforms in local Docker")
    cap.set_defaults(func=_cmd_capture)
    dra = sub.add_parser("draft", help="write a scenario from an evidence bundle (or kubectl files saved by hand)")
    dra.add_argument("bundle", help="a bundle folder or .tar.gz from capture, or a folder of kubectl files")
    dra.add_argument("--out", default=None, help="the scenario file (default: the project's scenarios/NAME.yaml)")
    dra.add_argument("--name", default=None, help="the scenario's name (default: from the workload and outcome)")
    dra.add_argument("--root", default=argparse.SUPPRESS, help=ROOT_HELP)
    dra.add_argument(
        "--image-platform",
        action="append",
        metavar="REF=PLATFORM",
        help="an image's platform, when the bundle lacks it",
    )
    dra.set_defaults(func=_cmd_draft)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.root is not None and not Path(args.root).is_dir():
        parser.error(f"--root {args.root}: not a folder")
    try:
        # SIGTERM and SIGHUP take Ctrl-C's clean-up path (exit 143, 129).
        with signals.interrupting(), project.root_override(args.root):
            return int(args.func(args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        # A ScenarioError can only come from harness.scenario, imported by the command that raised it.
        scenario = sys.modules.get("harness.scenario")
        return BAD_INPUT if scenario is not None and isinstance(exc, scenario.ScenarioError) else ENVIRONMENT
    except KeyboardInterrupt as exc:
        print(f"interrupted ({signals.signal_name(exc)})", file=sys.stderr)
        return signals.exit_status(exc)
