"""The runner: turns a scenario into steps and a verdict.

    validate -> cluster -> build images per platform -> verify platform -> load (verify on node)
    -> apply workload -> watch, classify, collect evidence -> compare with the expectation
    -> fix steps -> watch again -> verdict + report

Each step is try / catch / finally: on failure the evidence (describe, events, logs, kind's
logs) is saved before clean-up, and clean-up runs in reverse order.

A cluster that stops answering must end the run with ClusterGone (exit status 3), never with a
verdict: a paused or frozen node still accepts TCP connections but never answers, so a watch
alone would sit until its deadline and report a wrong Timeout. Watches therefore run in a
helper thread while the runner probes the API server; clean-up is bounded in time; Ctrl-C
(KeyboardInterrupt) always runs the clean-up.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

import urllib3
from kubernetes import client as k8s

from harness import images, outcomes, platforms, signals, tools, workload
from harness.cluster import BoundedApiClient, KindCluster
from harness.errors import ClusterGone, HarnessError
from harness.outcomes import Evidence, Outcome, Verdict
from harness.platforms import Platform
from harness.report import RunReport, StepReport, StepStatus, VerdictReport, write_reports
from harness.scenario import Expected, ImageSpec, Scenario, Symptom

PYTHON_BASE_PLACEHOLDER = "{python-base}"
OFFICIAL_PYTHON_BASE = "python:3.11-slim"
API_PROBE_TIMEOUT = 5.0  # one probe of the API server (GET /version) may take this long
API_PROBE_INTERVAL = 5.0  # seconds between probes while a watch runs
API_GONE_AFTER = 15.0  # probes failing for this long: the cluster is gone (ClusterGone)
CLEANUP_SECONDS = 30.0  # one clean-up action may take this long

T = TypeVar("T")


class ExitStatus(IntEnum):
    """Exit codes of `python -m harness reproduce`, for CI."""

    OK = 0  # every expectation met: incident reproduced (and fix verified)
    EXPECTATION_FAILED = 1  # a symptom did not show, or the fix did not hold
    BAD_INPUT = 2  # the scenario file or the command line is wrong
    ENVIRONMENT = 3  # Docker, kind or the cluster failed or vanished
    MASKED_BY_EMULATION = 4  # the foreign image RAN under emulation: not reproducible on this host
    HANGUP = 129  # SIGHUP (128 + 1)
    INTERRUPTED = 130  # SIGINT, Ctrl-C (128 + 2)
    TERMINATED = 143  # SIGTERM (128 + 15): a CI cancel, `timeout`, `docker stop`


@dataclass
class RunOptions:
    cluster: KindCluster | None = None
    cluster_name: str | None = None
    node_image: str | None = None
    kind_bin: str | None = None
    keep_cluster: bool = True
    keep_namespace: bool = False
    report_dir: Path | None = Path("reports")
    artifacts_dir: Path = Path("artifacts")
    on_evidence: Callable[[Evidence], None] | None = None
    say: Callable[[str], None] = print
    api_gone_after: float = API_GONE_AFTER


@dataclass(frozen=True)
class SymptomCheck:
    symptom: Symptom
    seen: bool
    detail: str


@dataclass
class RunResult:
    scenario: Scenario
    report: RunReport
    symptoms: list[SymptomCheck]
    verdicts: list[VerdictReport]
    report_paths: tuple[Path, ...] = ()
    images: dict[str, str] = field(default_factory=dict)

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus(self.report.exit_status)


class _Run:
    """State of one run; its methods are the steps."""

    def __init__(self, scenario: Scenario, options: RunOptions) -> None:
        self.s = scenario
        self.o = options
        self.started = datetime.now(UTC)
        self.steps: list[StepReport] = []
        self.verdicts: list[VerdictReport] = []
        self.symptoms: list[SymptomCheck] = []
        self.facts: dict[str, str] = {}
        self.cleanups: list[tuple[str, Callable[[], None]]] = []
        self.built: dict[str, str] = {}
        self.cluster: KindCluster | None = options.cluster
        self.node_platform: Platform | None = None
        self.emulation: platforms.EmulationState | None = None
        self.namespace = ""
        self.work: workload.Workload | None = None
        self.fix_verified: bool | None = None
        self.masked = False
        self.artifacts: list[str] = []

    # -- steps ---------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        self.o.say(f"==> {name}")
        try:
            try:
                yield
            except urllib3.exceptions.HTTPError as exc:  # a call that timed out or lost its connection
                raise self._unanswered(name, exc) from exc
        except BaseException as exc:
            self.steps.append(StepReport(name, round(time.monotonic() - began, 2), StepStatus.FAILED, _first_line(exc)))
            raise
        self.steps.append(StepReport(name, round(time.monotonic() - began, 2), StepStatus.OK))

    def _unanswered(self, step: str, exc: BaseException) -> HarnessError:
        """What an API call that got no answer means: the cluster stopped answering, or (rarely) one slow call."""
        if self.cluster is None:
            return HarnessError(f"{step}: {_first_line(exc)}")
        problem = api_problem(self.cluster.kubeconfig)
        if problem is None:
            return HarnessError(
                f"{step}: an API call of cluster {self.cluster.name!r} got no answer ({_first_line(exc)[:200]}), "
                "though the API server answers now",
                "run again; if it repeats, look at the API server's load ('make doctor')",
            )
        return cluster_gone(self.cluster.name, f"stopped answering during '{step}' ({problem}): no verdict")

    def prepare_cluster(self) -> None:
        with self.step("cluster"):
            if self.cluster is None:
                self.cluster = KindCluster(
                    name=self.o.cluster_name or KindCluster().name,
                    node_image=self.o.node_image or self.s.node_image,
                    kind_bin=self.o.kind_bin,
                    workers=self.s.workers,
                )
                existed = self.cluster.exists()
                try:
                    self.cluster.create()
                except KeyboardInterrupt:
                    # A half-made cluster would be "reused" by the next run and never answer.
                    if not existed:
                        self.o.say(f"    interrupted: deleting the half-made cluster {self.cluster.name}")
                        _bounded(partial(_delete_half_made, self.cluster), 120, f"delete cluster {self.cluster.name}")
                    raise
                if not self.cluster.reused and not self.o.keep_cluster:
                    self.cleanups.append(("delete cluster", self.cluster.delete))
            self.cluster.guard()
            nodes = self.cluster.core.list_node().items
            self.node_platform = platforms.node_platform(
                self.cluster.core.api_client.sanitize_for_serialization(nodes[0])
            )
            self.emulation = platforms.read_binfmt()
            self.facts.update(
                {
                    "cluster": f"{self.cluster.name} ({'reused' if self.cluster.reused else 'created'})",
                    "node image": self.cluster.node_image or "(existing cluster)",
                    "node platform": str(self.node_platform),
                    "host platform": str(platforms.host_platform()),
                    "emulation": self.emulation.describe(),
                    "kubeconfig": str(self.cluster.kubeconfig),
                }
            )

    def resolve_platform(self, word: str) -> Platform:
        assert self.node_platform is not None
        if word == "native":
            return self.node_platform
        if word == "foreign":
            other = "arm64" if self.node_platform.architecture == "amd64" else "amd64"
            return platforms.parse_platform(f"linux/{other}")
        return platforms.parse_platform(word)

    def build_and_load(self, name: str) -> str:
        """Build image `name` of the scenario for its platform(s), verify, load, verify on nodes."""
        if name in self.built:
            return self.built[name]
        spec = self.s.images[name]
        assert self.cluster is not None
        words = spec.platforms or (spec.platform,)
        targets = [self.resolve_platform(w) for w in words]
        with self.step(f"build {name} for {', '.join(str(t) for t in targets)}"):
            built = [self._build_one(spec, t) for t in targets]
            for b in built:
                self.o.say(f"    built {b.ref} ({b.platform}, {b.builder.value}, {b.seconds:.1f}s)")
        with self.step(f"load {name} into the nodes"):
            if len(built) == 1:
                ref = built[0].ref
                self.cluster.load_image(ref)
            else:
                digest = "-".join(b.ref.rsplit("-", 1)[-1][:6] for b in built)
                ref = f"incident-harness/{name}:multi-{digest}"
                archive = tools.cache_dir() / "indexes" / f"{name}-multi-{digest}.tar"
                archive.parent.mkdir(parents=True, exist_ok=True)
                images.build_index(built, archive, ref)
                self.cluster.load_archive(archive, [ref])
            self.o.say(f"    {ref} present on every node (crictl)")
        self.built[name] = ref
        return ref

    def _build_one(self, spec: ImageSpec, platform: Platform) -> images.BuiltImage:
        context = images.prepare_context(spec.prepare) if spec.prepare is not None else spec.context
        args = {k: self._fill(v, platform) for k, v in spec.build_args.items()}
        return images.build_image(
            context,
            platform,
            dockerfile=spec.dockerfile,
            build_args=args,
            repository=f"incident-harness/{spec.name}",
            builder=images.Builder(spec.builder),
        )

    def _fill(self, value: str, platform: Platform) -> str:
        if PYTHON_BASE_PLACEHOLDER not in value:
            return value
        assert self.cluster is not None
        registry = (self.cluster.node_image or "").startswith("kindest/")
        base = OFFICIAL_PYTHON_BASE if registry else images.ensure_python_base(platform)
        return value.replace(PYTHON_BASE_PLACEHOLDER, base)

    def apply_workload(self) -> None:
        assert self.cluster is not None
        w = self.s.workload
        image = self.build_and_load(w.image)
        init_image = self.build_and_load(w.init_image) if w.init_image else None
        with self.step("apply workload"):
            self.cluster.guard()
            core = self.cluster.core
            with _interrupts_deferred():  # a namespace created must be registered for clean-up
                self.namespace = workload.create_namespace(core, self.s.name)
                self.facts["namespace"] = self.namespace
                if not self.o.keep_namespace:
                    namespace = self.namespace
                    self.cleanups.append(
                        (f"delete namespace {namespace}", lambda: workload.delete_namespace(core, namespace))
                    )
            docs = workload.render(
                workload.load_manifests(w.manifests),
                namespace=self.namespace,
                image=image,
                container=w.container,
                pull_policy=w.pull_policy,
                init_image=init_image,
                patches=w.patch,
            )
            api = self.cluster.api_client()
            with self.supervised("applying the workload") as gate:
                self.work = gate.run(lambda: workload.apply(api, docs, w.deployment))
            self.o.say(f"    namespace {self.namespace}, watching {self.work.selector}")

    def _emulated_platform(self) -> Platform | None:
        """The platform of a workload image (containers' or init containers') that these nodes
        would run under emulation, if any: then the workload starts instead of failing."""
        assert self.node_platform is not None and self.emulation is not None
        w = self.s.workload
        for name in (w.image, w.init_image):
            spec = self.s.images[name] if name else None
            if spec is None or spec.platforms:  # a multi-platform index: the node picks its own
                continue
            platform = self.resolve_platform(spec.platform)
            if (
                platforms.expected_outcome(platform, self.node_platform, self.emulation)
                is platforms.Expectation.EMULATED
            ):
                return platform
        return None

    def watch_incident(self) -> None:
        assert self.cluster is not None and self.work is not None
        expect = self.s.expect
        wanted = expect.outcome
        emulated_platform = self._emulated_platform()
        emulated = emulated_platform is not None
        if emulated_platform is not None:
            assert self.node_platform is not None and self.emulation is not None
            note = platforms.explain(emulated_platform, self.node_platform, self.emulation)
            self.o.say(f"    emulation: {note}")
            self.facts["emulation verdict"] = note
            wanted = Outcome.RAN_EMULATED
        with self.step(f"watch: expect {wanted.label}"), self.supervised("watching the workload") as gate:
            cluster, work = self.cluster, self.work
            verdict = gate.run(
                lambda: outcomes.watch_workload(
                    cluster.core,
                    self.namespace,
                    work.selector,
                    expect=wanted,
                    timeout=expect.timeout,
                    on_evidence=gate.evidence(self.o.on_evidence),
                    emulated=emulated,
                    min_restarts=_min_restarts(expect),
                )
            )
        if not emulated and verdict.outcome in (Outcome.HEALTHY, Outcome.RAN_EMULATED):
            # A foreign image that ran: a handler may have been registered while we watched.
            self.emulation = platforms.read_binfmt()
            if self._emulated_platform() is not None:
                emulated, wanted = True, Outcome.RAN_EMULATED
                note = "an emulator was registered on the host during the watch"
                self.facts["emulation verdict"] = note
                verdict = outcomes.mark_emulated(verdict, note)
        self.verdicts.append(VerdictReport.judge("incident", wanted, verdict))
        self.masked = emulated and verdict.outcome is Outcome.RAN_EMULATED
        self.symptoms = [] if self.masked else [_check(s, verdict) for s in expect.symptoms]
        for check in self.symptoms:
            self.o.say(f"    [{'x' if check.seen else ' '}] {check.symptom.describe()}  {check.detail}")

    def run_fix(self) -> None:
        if not self.s.fix_steps or self.s.fix_expect is None or self.masked:
            return
        assert self.cluster is not None and self.work is not None
        fix_started = datetime.now(UTC)
        deployment = self.work.deployment
        for step in self.s.fix_steps:
            if step.kind == "setImage":
                ref = self.build_and_load(step.value)
                with self.step(f"fix: set image {step.value}"):
                    _need(deployment, "setImage")
                    workload.set_image(
                        self.cluster.apps,
                        self.namespace,
                        deployment,  # type: ignore[arg-type]
                        ref,
                        container=self.s.workload.container,
                        pull_policy=self.s.workload.pull_policy,
                    )
            elif step.kind == "rolloutRestart":
                with self.step("fix: rollout restart"):
                    _need(deployment, "rolloutRestart")
                    workload.rollout_restart(self.cluster.apps, self.namespace, deployment)  # type: ignore[arg-type]
            elif step.kind == "rollback":
                with self.step("fix: rollout undo"):
                    _need(deployment, "rollback")
                    workload.rollback(self.cluster.apps, self.namespace, deployment)  # type: ignore[arg-type]
        fe = self.s.fix_expect
        cluster, work = self.cluster, self.work
        with self.step(f"watch fix: expect {fe.outcome.label}"), self.supervised("watching the fix") as gate:
            if fe.deployment_available and deployment:
                verdict = gate.run(
                    lambda: outcomes.wait_deployment_available(
                        cluster.apps,
                        cluster.core,
                        self.namespace,
                        deployment,
                        fe.timeout,
                        on_evidence=gate.evidence(self.o.on_evidence),
                    )
                )
            else:
                verdict = gate.run(
                    lambda: outcomes.watch_workload(
                        cluster.core,
                        self.namespace,
                        work.selector,
                        expect=fe.outcome,
                        timeout=fe.timeout,
                        on_evidence=gate.evidence(self.o.on_evidence),
                        pod_filter=outcomes.created_after(fix_started),
                    )
                )
        judged = VerdictReport.judge("fix", fe.outcome, verdict)
        self.verdicts.append(judged)
        fix_checks = [_check(s, verdict) for s in fe.symptoms]
        self.fix_verified = judged.passed and all(c.seen for c in fix_checks)

    # -- evidence and clean-up -------------------------------------------------------------------

    def collect_artifacts(self) -> None:
        """Describe, events and logs of the namespace, and kind's node logs, saved before clean-up."""
        if self.cluster is None:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        directory = self.o.artifacts_dir / f"{self.s.name}-{stamp}"
        problem = api_problem(self.cluster.kubeconfig)
        if problem is None:
            self.cluster.collect_evidence(self.namespace, self.work.selector if self.work else "", directory)
        else:
            # kubectl would wait for each command's timeout, and `kind export logs` hangs on a paused node.
            directory.mkdir(parents=True, exist_ok=True)
            paused = _paused_nodes(self.cluster.name)
            note = f"the API server did not answer ({problem}): no describe, events or pod logs\n"
            if paused:
                note += f"node(s) paused: {', '.join(paused)}: no node logs ('docker unpause' them)\n"
            else:
                try:
                    self.cluster.export_logs(directory / "kind-logs")
                except HarnessError as exc:
                    note += f"kind export logs failed: {_first_line(exc)}\n"
            (directory / "evidence-missing.txt").write_text(note)
        self.artifacts.append(str(directory))
        self.o.say(f"    evidence saved in {directory}")

    def clean_up(self) -> None:
        for what, action in reversed(self.cleanups):
            try:
                if what.startswith("delete namespace") and self.cluster is not None:
                    problem = api_problem(self.cluster.kubeconfig)
                    if problem is not None:
                        raise ClusterGone(f"the API server does not answer ({problem})")
                _bounded(action, CLEANUP_SECONDS, what)
            except Exception as exc:  # noqa: BLE001 - clean-up must go on
                self.o.say(f"    clean-up '{what}' failed: {_first_line(exc)}")
                if what.startswith("delete namespace") and self.cluster is not None:
                    self.o.say(
                        f"    remove it later: {tools.kubectl_binary()} --kubeconfig {self.cluster.kubeconfig} "
                        f"delete namespace {self.namespace}"
                    )
        self.cleanups.clear()

    @contextmanager
    def supervised(self, what: str) -> Iterator[_Supervisor]:
        """A watch runs in a helper thread while the API server is probed (see the module docstring)."""
        assert self.cluster is not None
        gate = _Supervisor(self.cluster, what, self.o.api_gone_after)
        try:
            yield gate
        finally:
            gate.close()

    def report(self, status: ExitStatus, error: str | None) -> RunReport:
        return RunReport(
            scenario=self.s.name,
            started=self.started,
            finished=datetime.now(UTC),
            host_platform=str(platforms.host_platform()),
            node_platform=str(self.node_platform) if self.node_platform else "",
            exit_status=int(status),
            emulation=self.facts.get("emulation verdict"),
            steps=tuple(self.steps),
            verdicts=tuple(self.verdicts),
            symptoms_reproduced=sum(c.seen for c in self.symptoms),
            symptoms_total=len(self.symptoms) if not self.masked else len(self.s.expect.symptoms),
            fix_verified=self.fix_verified,
            error=error,
            facts=dict(self.facts),
            artifacts=tuple(self.artifacts),
        )


def api_problem(kubeconfig: Path, timeout: float = API_PROBE_TIMEOUT) -> str | None:
    """None when the API server of kubeconfig answers GET /version within timeout, else why not.

    No retries: a paused node accepts connections and then never answers; that must show
    within the timeout, not after urllib3's retries.
    """
    try:
        with BoundedApiClient.from_kubeconfig(kubeconfig, retries=False) as api:
            k8s.VersionApi(api).get_code(_request_timeout=(timeout, timeout))
    except Exception as exc:  # noqa: BLE001 - any failure means: not answering
        text = _first_line(exc)
        if "timed out" in text.lower():
            return f"no answer within {timeout:.0f} s"
        if "refused" in text.lower():
            return "connection refused"
        return text[:200] or type(exc).__name__
    return None


def cluster_gone(name: str, what: str) -> ClusterGone:
    """ClusterGone for cluster name, with what to look at and how to recover."""
    return ClusterGone(
        f"cluster {name!r} {what}",
        f"check its node with 'docker ps -a --filter label=io.x-k8s.kind.cluster={name}' "
        f"(paused? stopped? gone?); unpause or delete it ('kind delete cluster --name {name}') and run again",
    )


class _Supervisor:
    """Runs one watch in a helper thread; raises ClusterGone once the API server stops answering.

    After it gave up (or on Ctrl-C), evidence from the abandoned watch is dropped: it would print
    into the report, and a daemon thread caught writing to stdout at interpreter exit aborts the
    process (SIGABRT, "could not acquire lock for <stdout>"). close() waits for a print under way.
    """

    def __init__(self, cluster: KindCluster, what: str, gone_after: float) -> None:
        self.cluster = cluster
        self.what = what
        self.gone_after = gone_after
        self.open = True
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.open = False

    def evidence(self, forward: Callable[[Evidence], None] | None) -> Callable[[Evidence], None] | None:
        if forward is None:
            return None

        def gated(e: Evidence) -> None:
            with self._lock:
                if self.open:
                    forward(e)

        return gated

    def run(self, fn: Callable[[], T]) -> T:
        results: list[T] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def work() -> None:
            try:
                results.append(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                errors.append(exc)
            finally:
                done.set()

        threading.Thread(target=work, name=f"harness: {self.what}", daemon=True).start()
        failing_since: float | None = None
        while not done.wait(API_PROBE_INTERVAL):
            began = time.monotonic()
            problem = api_problem(self.cluster.kubeconfig)
            if done.is_set():
                break
            if problem is None:
                failing_since = None
                continue
            failing_since = began if failing_since is None else failing_since
            silent = time.monotonic() - failing_since
            if silent >= self.gone_after:
                self.close()
                raise cluster_gone(
                    self.cluster.name,
                    f"stopped answering while {self.what} ({problem}; for {silent:.0f} s): no verdict",
                )
        if errors:
            raise errors[0]
        return results[0]


def _delete_half_made(cluster: KindCluster, settle: float = 2.0, limit: float = 60.0) -> None:
    """Delete a cluster whose creation was interrupted, until no node container of it is left.

    The engine may still be finishing a `docker run` that the killed kind had sent: a container
    can appear after the first delete, so the listing must stay empty for `settle` seconds.
    """
    deadline = time.monotonic() + limit
    empty_since: float | None = None
    while time.monotonic() < deadline:
        listed = tools.run(
            [tools.docker_binary(), "ps", "-a", "-q", "--filter", f"label=io.x-k8s.kind.cluster={cluster.name}"],
            check=False,
            timeout=30,
        ).stdout.split()
        if listed:
            empty_since = None
            cluster.delete()
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since >= settle:
            break
        threading.Event().wait(0.5)
    cluster.delete()  # its kubeconfig folder, and anything that appeared at the very end


def _paused_nodes(cluster: str) -> list[str]:
    """The node containers of a kind cluster that are paused (none when docker does not answer)."""
    listed = tools.run(
        [
            tools.docker_binary(),
            "ps",
            "-a",
            "--filter",
            f"label=io.x-k8s.kind.cluster={cluster}",
            "--format",
            "{{.Names}} {{.State}}",
        ],
        check=False,
        timeout=30,
    ).stdout.splitlines()
    return [line.split()[0] for line in listed if line.endswith(" paused")]


def _bounded(action: Callable[[], object], seconds: float, what: str) -> None:
    """Run action in a helper thread; HarnessError if it has not finished within seconds."""
    errors: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name=f"harness: {what}", daemon=True).start()
    if not done.wait(seconds):
        raise HarnessError(
            f"{what} did not finish within {seconds:.0f} s (is the cluster answering?)",
            "check the cluster, then remove what is left by hand",
        )
    if errors:
        raise errors[0]


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C while a resource is created and registered for clean-up; a second Ctrl-C goes through.

    Only in the main thread, and only where Python's default SIGINT handler is installed.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt


def _need(deployment: str | None, step: str) -> None:
    if not deployment:
        raise HarnessError(f"fix step {step!r} needs a Deployment in the workload", "add one, or drop the step")


def _min_restarts(expect: Expected) -> int:
    return max([int(s.value) for s in expect.symptoms if s.kind == "restartsAtLeast"] or [0])


def _check(symptom: Symptom, verdict: Verdict) -> SymptomCheck:
    texts = [e.text for e in verdict.timeline]
    kind, value = symptom.kind, symptom.value
    if kind in ("waitingReason", "terminatedReason"):
        seen = value in verdict.phases_seen
        return SymptomCheck(symptom, seen, f"(seen: {', '.join(sorted(verdict.phases_seen)) or 'nothing'})")
    if kind == "restartsAtLeast":
        return SymptomCheck(symptom, verdict.restarts >= int(value), f"(restarts: {verdict.restarts})")
    if kind == "neverReady":
        return SymptomCheck(symptom, (not verdict.ready_seen) == bool(value), f"(ready seen: {verdict.ready_seen})")
    if kind == "previousLogContains":
        lines = list(verdict.cause.log_lines) if verdict.cause else []
        hit = next((line for line in lines if value in line), None)
        return SymptomCheck(symptom, hit is not None, f"({hit!r})" if hit else f"(log: {lines[-1:]!r})")
    if kind == "eventContains":
        hit = next((t for t in texts if value in t), None)
        return SymptomCheck(symptom, hit is not None, f"({hit!r})" if hit else "")
    raise AssertionError(kind)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunResult:
    """Run a scenario end to end; never raises for expectations, only returns the verdict."""
    o = options or RunOptions()
    run = _Run(scenario, o)
    status = ExitStatus.OK
    error: str | None = None
    try:
        run.prepare_cluster()
        run.apply_workload()
        run.watch_incident()
        run.run_fix()
        if run.masked:
            status = ExitStatus.MASKED_BY_EMULATION
        elif (
            not all(v.passed for v in run.verdicts)
            or not all(c.seen for c in run.symptoms)
            or run.fix_verified is False
        ):
            status = ExitStatus.EXPECTATION_FAILED
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP raised as Interrupted (harness.signals)
        status = ExitStatus(signals.exit_status(exc))
        failed = [s.name for s in run.steps if s.status is StepStatus.FAILED]
        where = f"during step '{failed[-1]}'" if failed else f"after step '{run.steps[-1].name}'" if run.steps else ""
        error = f"interrupted by {signals.signal_name(exc)} {where}".rstrip()
    except HarnessError as exc:
        status, error = ExitStatus.ENVIRONMENT, str(exc)
    finally:
        if status not in (ExitStatus.OK, ExitStatus.MASKED_BY_EMULATION) and status < ExitStatus.HANGUP:
            try:
                run.collect_artifacts()
            except Exception as exc:  # noqa: BLE001 - evidence collection must not hide the failure
                o.say(f"    collecting evidence failed: {_first_line(exc)}")
        run.clean_up()
    report = run.report(status, error)
    paths: tuple[Path, ...] = ()
    if o.report_dir is not None:
        paths = write_reports(report, o.report_dir)
    return RunResult(scenario, report, run.symptoms, run.verdicts, paths, dict(run.built))
