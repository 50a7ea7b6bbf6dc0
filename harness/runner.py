"""The runner: a scenario's steps on a session, and its verdict.

    validate -> session (cluster) -> build images per platform -> load (verify on node)
    -> apply workload -> supervised watch, classify, evidence -> compare with the expectation
    -> fix steps -> watch pods created after the fix -> verdict + report

The session (harness.session) owns the cluster, supervision, the emulation check, bounded
evidence and clean-up; the runner maps the scenario onto its calls and judges. Each step is
try / finally: on failure the evidence is saved before clean-up, and clean-up runs in reverse
order. Ctrl-C (and, where installed, SIGTERM and SIGHUP as harness.errors.Interrupted) always
runs the clean-up, and the report says in which step the run stopped.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from pathlib import Path
from typing import Any

import urllib3

from harness import images, inspect, outcomes, platforms, signals, tools, workload
from harness.cluster import KindCluster
from harness.errors import HarnessError
from harness.inspect import Expected as Predicted
from harness.outcomes import Evidence, Outcome, Verdict
from harness.platforms import Platform
from harness.report import PredictionReport, RunReport, StepReport, StepStatus, VerdictReport, write_reports
from harness.scenario import Expected, ImageSpec, Scenario, ScenarioError, Symptom
from harness.session import (
    API_PROBE_INTERVAL,
    API_PROBE_TIMEOUT,
    CLEANUP_SECONDS,
    CLUSTER_GONE_AFTER,
    BadInput,
    Session,
    api_problem,
    cluster_gone,
    first_line,
)

PYTHON_BASE_PLACEHOLDER = "{python-base}"
OFFICIAL_PYTHON_BASE = "python:3.11-slim"
API_GONE_AFTER = CLUSTER_GONE_AFTER  # the session's one "cluster gone" rule (old name)

__all__ = [
    "API_GONE_AFTER",
    "API_PROBE_INTERVAL",
    "API_PROBE_TIMEOUT",
    "CLEANUP_SECONDS",
    "ExitStatus",
    "RunOptions",
    "RunResult",
    "SymptomCheck",
    "api_problem",
    "check_symptom",
    "cluster_gone",
    "compare_prediction",
    "decisive_prediction",
    "implied_outcomes",
    "run_scenario",
]


class ExitStatus(IntEnum):
    """Exit codes of `python -m harness reproduce`, for CI."""

    OK = 0  # every expectation met: incident reproduced (and fix verified)
    EXPECTATION_FAILED = 1  # a symptom did not show, or the fix did not hold
    BAD_INPUT = 2  # the scenario file, a manifest (rejected by the API server) or the command line is wrong
    ENVIRONMENT = 3  # Docker, kind or the cluster failed or vanished
    MASKED_BY_EMULATION = 4  # the foreign image RAN under emulation: not reproducible on this host
    HANGUP = 129  # SIGHUP
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM
    HUP = 129  # aliases: the signals' short names
    INT = 130
    TERM = 143


@dataclass
class RunOptions:
    session: Session | None = None  # a session to run on (the plugin's); else one is opened and closed
    cluster: KindCluster | None = None  # a cluster to run on (a session is opened on it)
    cluster_name: str | None = None
    node_image: str | None = None
    kind_bin: str | None = None
    keep_cluster: bool = True
    profile: str = "faithful"  # harness.profiles.Profile's name, for a session the run opens
    keep_namespace: bool = False
    report_dir: Path | None = Path("reports")
    artifacts_dir: Path = Path("artifacts")
    on_evidence: Callable[[Evidence], None] | None = None
    say: Callable[[str], None] = print
    api_gone_after: float = CLUSTER_GONE_AFTER
    registry: str | None = None  # a user's registry HOST[:PORT]; None: the harness runs its own
    delivery: str | None = None  # "registry" or "load" over the scenario's workload.delivery
    # Reads a built image's facts for the prediction before apply (harness.inspect.inspect_for's signature).
    inspect_images: Callable[[str, Sequence[tuple[inspect.Process | None, str | None]]], list[inspect.ImageFacts]] = (
        inspect.inspect_for
    )


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
    fix_checks: list[SymptomCheck] = field(default_factory=list)

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
        self.current_step = ""
        self.verdicts: list[VerdictReport] = []
        self.symptoms: list[SymptomCheck] = []
        self.fix_checks: list[SymptomCheck] = []
        self.facts: dict[str, str] = {}
        self.built: dict[str, str] = {}
        self.pushed: dict[str, images.PushedImage] = {}  # registry delivery: what the registry holds
        self.delivered: dict[str, set[str]] = {}  # image name -> the digests/IDs the harness delivered for it
        self.run_id = f"{scenario.name}-{secrets.token_hex(3)}"
        self.facts_by_id: dict[str, list[inspect.ImageFacts]] = {}  # image ID delivered -> the facts read of it
        self.session: Session | None = options.session
        self.owns_session = False
        self.namespace = ""
        self.work: workload.Workload | None = None
        self.fix_verified: bool | None = None
        self.masked = False
        self.emulation_note: str | None = None
        self.artifacts: list[str] = []
        self.profile: dict[str, str] = {}  # Session.profile_facts()
        self.containers: list[inspect.ManifestContainer] = []  # of the applied workload
        self.predictions: list[PredictionReport] = []  # every prediction made, for the report
        self.current_predictions: list[PredictionReport] = []  # for the pods the next watch judges

    # -- steps ---------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        # The bookkeeping holds signals back (signals.deferred), so an interrupt always finds the
        # step it names in the report: in progress (current_step, recorded FAILED) or ended.
        began = time.monotonic()
        try:
            try:
                with signals.deferred():
                    self.current_step = name
                    self.o.say(f"==> {name}")
                yield
            except urllib3.exceptions.HTTPError as exc:  # a call that timed out or lost its connection
                if self.session is None:
                    raise HarnessError(f"{name}: {first_line(exc)}") from exc
                raise self.session.unanswered(name, exc) from exc
        except BaseException as exc:
            self.steps.append(StepReport(name, round(time.monotonic() - began, 2), StepStatus.FAILED, first_line(exc)))
            raise
        with signals.deferred():
            self.steps.append(StepReport(name, round(time.monotonic() - began, 2), StepStatus.OK))
            self.current_step = ""

    def open_session(self) -> None:
        with self.step("cluster"):
            if self.session is None:
                if self.o.cluster is not None:
                    self.session = Session(self.o.cluster, say=self.o.say, gone_after=self.o.api_gone_after)
                else:
                    self.session = Session.open(
                        name=self.o.cluster_name,
                        node_image=self.o.node_image or self.s.node_image,
                        kind_bin=self.o.kind_bin,
                        workers=self.s.workers,
                        keep_cluster=self.o.keep_cluster,
                        say=self.o.say,
                        registry_address=self.o.registry,
                        profile=self.o.profile,
                    )
                self.owns_session = True
            session = self.session
            cluster = session.cluster
            self.facts.update(
                {
                    "cluster": f"{cluster.name} ({'reused' if cluster.reused else 'created'})",
                    "node image": cluster.node_image or "(existing cluster)",
                    "node platform": str(session.node_platform),
                    "host platform": str(platforms.host_platform()),
                    "emulation": session.emulation.describe(),
                    "kubeconfig": str(cluster.kubeconfig),
                }
            )
            # The cluster's profile and what its kubelets run with, read from their configz.
            self.profile = session.profile_facts()

    @property
    def sess(self) -> Session:
        assert self.session is not None
        return self.session

    def build_and_load(self, name: str) -> str:
        """Deliver image `name` of the scenario as the scenario says: pushed to the registry, or loaded."""
        if name in self.built:
            return self.built[name]
        if self.s.workload.delivery == "registry":
            return self.build_and_push(name)
        spec = self.s.images[name]
        words = spec.platforms or (spec.platform,)
        targets = [self.sess.platform(w) for w in words]
        with self.step(f"build {name} for {', '.join(str(t) for t in targets)}"):
            built = [self._build_one(spec, t) for t in targets]
            for b in built:
                self.o.say(f"    built {b.ref} ({b.platform}, {b.builder.value}, {b.seconds:.1f}s)")
        with self.step(f"load {name} into the nodes"):
            if len(built) == 1:
                ref = built[0].ref
                self.sess.load_image(ref, [built[0].platform])
            else:
                ref = self.sess.load_index(built, name)
            self.o.say(f"    {ref} present on every node (crictl)")
        self.built[name] = ref
        remember_delivery(self.s.name, name, _inspect_target(name, ref))
        for b in built:
            self.delivered.setdefault(name, set()).add(b.image_id)
        return ref

    def build_and_push(self, name: str) -> str:
        """`buildx build --platform P --push` (several platforms: one OCI index); the kubelet pulls it."""
        spec = self.s.images[name]
        if spec.retag_of is not None:
            return self.retag_and_push(name)
        words = spec.platforms or (spec.platform,)
        targets = [self.sess.platform(w) for w in words]
        repository = self._repository(name)
        args = {t: {k: self._fill(v, t) for k, v in spec.build_args.items()} for t in targets}
        context = images.prepare_context(spec.prepare) if spec.prepare is not None else spec.context
        dockerfile = spec.dockerfile or context / "Dockerfile"
        tag = spec.tag or _content_tag(context, dockerfile, args)
        if not self.pushed:
            with self.step("registry"):
                self.sess.registry()
        what = "one index of " if spec.platforms else ""
        with self.step(f"build {name} for {what}{', '.join(str(t) for t in targets)} and push"):
            members = [
                self.sess.push_image(
                    context,
                    t,
                    repository=repository,
                    tag=f"{tag}-{images.platform_slug(t)}" if spec.platforms else tag,
                    dockerfile=dockerfile,
                    build_args=args[t],
                )
                for t in targets
            ]
            for member in members:
                self.o.say(
                    f"    pushed {member.ref} ({member.digest[:19]}, {member.platforms[0]}, {member.seconds:.1f}s)"
                )
            pushed = self.sess.push_index(repository, tag, members) if spec.platforms else members[0]
            if pushed.is_index:
                held = ", ".join(str(p) for p in pushed.platforms) or "no platform"
                self.o.say(f"    pushed index {pushed.ref} ({pushed.digest[:19]}: {held})")
        self.built[name] = pushed.ref
        self.pushed[name] = pushed
        self.delivered.setdefault(name, set()).update(self.sess.image_ids(pushed.digest))
        remember_delivery(self.s.name, name, f"registry://{pushed.ref}")
        return pushed.ref

    def retag_and_push(self, name: str) -> str:
        """`docker pull --platform P REF`, `docker tag`, `docker push`: what a retag by hand pushes."""
        spec = self.s.images[name]
        assert spec.retag_of is not None
        source = self.build_and_push(spec.retag_of)
        platform = self.sess.platform(spec.platform)
        repository = self._repository(name)
        tag = spec.tag or f"retag-{images.platform_slug(platform)}-{source.rpartition(':')[2]}"[:128]
        with self.step(f"retag {spec.retag_of} as pulled on {platform}, push as {name}"):
            pushed = self.sess.push_retag(source, platform, repository=repository, tag=tag)
            held = ", ".join(str(p) for p in pushed.platforms) or "no platform"
            kind = "index" if pushed.is_index else "single manifest"
            self.o.say(f"    pushed {pushed.ref} ({kind} {pushed.digest[:19]}: {held}, {pushed.seconds:.1f}s)")
        self.built[name] = pushed.ref
        self.pushed[name] = pushed
        self.delivered.setdefault(name, set()).update(self.sess.image_ids(pushed.digest))
        return pushed.ref

    def _repository(self, name: str) -> str:
        """The repository image `name` is pushed to: the one its container's image names in the manifests.

        A fixed tag (images.NAME.tag) is the run's own: its repository sits under runs/<run id>/,
        so neither a run beside this one nor a node that pulled the tag in an earlier run can change
        what it names here (a fresh node has never pulled it, as in the incident).
        """
        base = self._manifest_repository(name)
        spec = self.s.images[name]
        if spec.tag is not None:
            return f"runs/{self.run_id}/{base}"
        return base

    def _manifest_repository(self, name: str) -> str:
        w = self.s.workload
        init = name == w.init_image and name != w.image
        docs = workload.load_manifests(list(w.manifests))
        for image in workload.container_images(docs, init=init, container=w.container):
            found = workload.image_repository(image)
            if found:
                return found
        return f"incident-harness/{name}"

    def _build_one(self, spec: ImageSpec, platform: Platform) -> images.BuiltImage:
        context = images.prepare_context(spec.prepare) if spec.prepare is not None else spec.context
        args = {k: self._fill(v, platform) for k, v in spec.build_args.items()}
        return self.sess.build_image(
            context,
            platform,
            load=False,
            dockerfile=spec.dockerfile,
            build_args=args,
            repository=f"incident-harness/{spec.name}",
            builder=images.Builder(spec.builder),
        )

    def _fill(self, value: str, platform: Platform) -> str:
        if PYTHON_BASE_PLACEHOLDER not in value:
            return value
        registry = (self.sess.cluster.node_image or "").startswith("kindest/")
        base = OFFICIAL_PYTHON_BASE if registry else images.ensure_python_base(platform)
        return value.replace(PYTHON_BASE_PLACEHOLDER, base)

    def apply_workload(self) -> None:
        w = self.s.workload
        image = self.build_and_load(w.image)
        init_image = self.build_and_load(w.init_image) if w.init_image else None
        with self.step("apply workload"):
            docs: list[dict[str, Any]] = []
            origins: list[str] = []
            for path in w.manifests:
                loaded = workload.load_manifests([path])
                docs += loaded
                origins += [str(path)] * len(loaded)
            # ${GIT_SHA} (the manifests' placeholder for the image's tag) becomes the tag delivered.
            docs = workload.substitute(docs, {"GIT_SHA": image.rpartition(":")[2]})
            render = partial(
                workload.render,
                docs,
                image=image,
                container=w.container,
                pull_policy=w.pull_policy,
                init_image=init_image,
                patches=w.patch,
            )
            # A workload that can never fit the nodes is bad input, said before anything is made.
            self.sess.check_capacity(render(namespace="capacity-check"), f"scenario {self.s.path}", origins=origins)
            self.namespace = self.sess.create_namespace(self.s.name)
            self.facts["namespace"] = self.namespace
            self.facts["delivery"] = self._delivery_fact()
            rendered = render(namespace=self.namespace)
            self.containers = inspect.containers_of(rendered)
            self.predict(self.containers)
            self.admit(rendered, origins)
            self.work = self.sess.apply(rendered, deployment=w.deployment, origins=origins)
            self.o.say(f"    namespace {self.namespace}, watching {self.work.selector}")

    def admit(self, rendered: list[dict[str, Any]], origins: list[str]) -> None:
        """The capacity gate: wait until the workload's peak requests fit the nodes (shown, and a step when it waited)."""

        def waiting(line: str) -> None:
            self.o.say(f"    {line}")
            if self.o.on_evidence is not None:
                self.o.on_evidence(Evidence(datetime.now(UTC), "note", "capacity", line))

        admitted = self.sess.admit(rendered, f"scenario {self.s.name}", origins=origins, on_wait=waiting)
        self.facts["capacity"] = f"{admitted.demand.describe()}" + (
            f"; waited {admitted.waited:.1f} s ({admitted.reason})" if admitted.waited else ""
        )
        if admitted.waited:
            self.steps.append(StepReport("wait for capacity", admitted.waited, StepStatus.OK, admitted.reason))

    def _delivery_fact(self) -> str:
        w = self.s.workload
        policy = w.pull_policy or "as the manifests say"
        if w.delivery == "registry":
            r = self.sess.registry()
            return f"registry {r.host} ({'the harness' if r.managed else 'given'}), pulled by the kubelet, imagePullPolicy {policy}"
        return f"load (kind load into every node, never pulled), imagePullPolicy {policy}"

    def after_watch(self, verdict: Verdict) -> Verdict:
        """The registry must still answer (else the verdict may be the registry's, not the workload's);
        each container that ran gets the platform of the digest it ran."""
        if self.s.workload.delivery == "registry":
            self.sess.check_registry()
        ran = getattr(verdict, "images_ran", None)
        if not ran:
            return verdict
        return replace(verdict, images_ran=self.sess.images_that_ran(ran))

    # -- prediction --------------------------------------------------------------------------------

    def predict(self, containers: list[inspect.ManifestContainer]) -> None:
        """Predict, from the built images' bytes, what each container does on these nodes; never fails the run."""
        names = {ref: name for name, ref in self.built.items()}
        mine = [c for c in containers if c.image in names]  # only the images the scenario builds
        by_ref: dict[str, list[inspect.ManifestContainer]] = {}
        for c in mine:
            by_ref.setdefault(c.image, []).append(c)
        found: dict[tuple[str, str], PredictionReport] = {}
        for ref, users in by_ref.items():
            try:
                held, note = self._held_instead(names[ref], ref, users)
                uses = [(c.process, c.name) for c in users]
                # A pushed image is read where the kubelet pulls it from (the engine may hold another platform under its tag).
                target = f"registry://{ref}" if names[ref] in self.pushed else _inspect_target(names[ref], ref)
                facts = held if held is not None else self.o.inspect_images(target, uses)
                if held is None:
                    for image_id in self.delivered.get(names[ref], ()):
                        self.facts_by_id[image_id] = facts
                judged = {
                    f.container: _noted(inspect.predict(f, self.sess.node_platform, self.sess.emulation), note)
                    for f in reversed(facts)
                }
                for c in users:
                    pred = judged[c.name]
                    found[(c.name, ref)] = _prediction(c, pred.outcome.value, pred.reason, pred.manifest)
            except Exception as exc:  # noqa: BLE001 - a prediction is information: it never fails the run
                for c in users:
                    found[(c.name, ref)] = _prediction(
                        c, Predicted.UNKNOWN.value, f"unknown, because {first_line(exc)}"
                    )
        self.current_predictions = [found[(c.name, c.image)] for c in mine]
        for p in self.current_predictions:
            self.o.say(f"    predicted: {p.line}")
            if p not in self.predictions:
                self.predictions.append(p)

    def _held_instead(
        self, name: str, ref: str, users: list[inspect.ManifestContainer]
    ) -> tuple[list[inspect.ImageFacts] | None, str]:
        """What a node runs instead of what was delivered: with imagePullPolicy IfNotPresent or Never a
        node that already holds the reference (pulled before its tag moved) starts its own copy.

        (facts of that copy, a note) when a node holds ref as an image ID other than the one
        delivered and the harness read that image before; (None, "") otherwise.
        """
        if all(c.pull_policy == "Always" for c in users) or self.s.workload.delivery != "registry":
            return None, ""
        delivered = self.delivered.get(name, set())
        for node, ids in self.sess.images_on_nodes().items():
            held = ids.get(ref)
            if held and held not in delivered and held in self.facts_by_id:
                policy = next(c.pull_policy for c in users if c.pull_policy != "Always")
                note = (
                    f"node {node} already holds {ref} as image {held[:19]} (pulled before the tag moved) and "
                    f"imagePullPolicy {policy} starts that copy: "
                )
                known = self.facts_by_id[held]
                by_name = {f.container: f for f in known}
                return [by_name.get(c.name) or replace(known[0], container=c.name) for c in users], note
        return None, ""

    def judged(self, label: str, wanted: Outcome, verdict: Verdict) -> VerdictReport:
        """The verdict, with the prediction set beside the observation (never changes whether it passed)."""
        judged = VerdictReport.judge(label, wanted, verdict)
        predicted, disagreement = compare_prediction(self.current_predictions, verdict)
        if disagreement:
            self.o.say(f"    {disagreement}")
        return replace(judged, predicted=predicted, disagreement=disagreement)

    def watch_incident(self) -> None:
        assert self.work is not None
        expect = self.s.expect
        note = self.sess.emulated(self.sess.workload_images(self.work))
        planned = Outcome.RAN_EMULATED if note else expect.outcome
        with self.step(f"watch: expect {planned.label}"):
            watched = self.sess.watch(
                self.work,
                expect=expect.outcome,
                timeout=expect.timeout,
                on_evidence=self.o.on_evidence,
                min_restarts=_min_restarts(expect),
            )
        verdict = self.after_watch(watched.verdict)
        wanted = Outcome.RAN_EMULATED if watched.emulation else expect.outcome
        if watched.emulation:
            self.o.say(f"    emulation: {watched.emulation}")
            self.facts["emulation verdict"] = watched.emulation
            self.emulation_note = watched.emulation
        self.verdicts.append(self.judged("incident", wanted, verdict))
        self.masked = watched.masked
        self.symptoms = [] if self.masked else _checks(expect, verdict, self.delivered)
        for check in self.symptoms:
            self.o.say(f"    [{'x' if check.seen else ' '}] {check.symptom.describe()}  {check.detail}")

    def run_fix(self) -> None:
        fe = self.s.fix_expect
        if fe is None or self.masked:
            return
        if not all(v.passed for v in self.verdicts) or not all(c.seen for c in self.symptoms):
            self.o.say("    the incident did not reproduce: no fix is run (a fix verified on it would prove nothing)")
            return
        assert self.work is not None
        deployment = self.work.deployment
        fix_started = datetime.now(UTC)
        fix_images: list[str] = []  # the names of the images the fix sets
        containers = list(self.containers)
        for step in self.s.fix_steps:
            if step.kind == "setImage":
                ref = self.build_and_load(step.value)
                fix_images.append(step.value)
                name = self.s.workload.container
                containers = [replace(c, image=ref) if not c.init and name in (None, c.name) else c for c in containers]
                with self.step(f"fix: set image {step.value}"):
                    self.sess.set_image(
                        self.namespace,
                        _need(deployment, "setImage", self.s),
                        ref,
                        container=self.s.workload.container,
                        pull_policy=self.s.workload.pull_policy,
                    )
            elif step.kind == "rolloutRestart":
                with self.step("fix: rollout restart"):
                    self.sess.rollout_restart(self.namespace, _need(deployment, "rolloutRestart", self.s))
            elif step.kind == "rollback":
                containers = []  # the previous revision's images are the cluster's to know: nothing predicted
                with self.step("fix: rollout undo"):
                    self.sess.rollback(self.namespace, _need(deployment, "rollback", self.s))
        self.o.say("    after the fix:")
        self.predict(containers)
        with self.step(f"watch fix: expect {fe.outcome.label}"):
            # Only pods created after the fix count: those of the broken revision prove nothing.
            watched = self.sess.watch(
                self.work,
                expect=fe.outcome,
                timeout=fe.timeout,
                on_evidence=self.o.on_evidence,
                pod_filter=outcomes.created_after(fix_started),
                min_restarts=_min_restarts(fe),
            )
        verdict = self.after_watch(watched.verdict)
        wanted = Outcome.RAN_EMULATED if watched.emulation else fe.outcome
        judged = self.judged("fix", wanted, verdict)
        self.verdicts.append(judged)
        # The new pods must run the digest the fix delivered, unless the scenario says which image must run.
        explicit = any(s.kind == "ranImage" for s in fe.symptoms)
        fixed = [] if explicit else [(n, self.built[n]) for n in fix_images]
        set_on = {c.name for c in containers if c.image in {self.built[n] for n in fix_images}} or None
        self.fix_checks = [
            *_checks(fe, verdict, self.delivered),
            *_after_fix_checks(verdict, fixed, self.delivered, set_on),
        ]
        for check in self.fix_checks:
            self.o.say(f"    [{'x' if check.seen else ' '}] fix: {check.symptom.describe()}  {check.detail}")
        if watched.masked:
            self.masked = True
            self.facts["emulation verdict"] = watched.emulation or ""
            self.emulation_note = watched.emulation
        self.fix_verified = judged.passed and not watched.masked and all(c.seen for c in self.fix_checks)

    # -- evidence and clean-up -------------------------------------------------------------------

    def collect_artifacts(self) -> None:
        """Describe, events and logs of the namespace, and kind's node logs, saved before clean-up."""
        if self.session is None:
            return
        selector = self.work.selector if self.work else ""
        directory = self.sess.collect_evidence(self.o.artifacts_dir, self.s.name, self.namespace, selector)
        self.artifacts.append(str(directory))
        self.o.say(f"    evidence saved in {directory}")

    def clean_up(self) -> None:
        if self.session is None:
            return
        if self.namespace:
            if self.o.keep_namespace:
                self.sess.keep_namespace(self.namespace)
            else:
                self.sess.delete_namespace(self.namespace)
        if self.owns_session:
            self.sess.close()

    def report(self, status: ExitStatus, error: str | None) -> RunReport:
        return RunReport(
            scenario=self.s.name,
            started=self.started,
            finished=datetime.now(UTC),
            host_platform=str(platforms.host_platform()),
            node_platform=self.facts.get("node platform", ""),
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
            predictions=tuple(self.predictions),
            profile=dict(self.profile),
        )


def delivered_images_file(scenario_name: str) -> Path:
    """Where the references last delivered for a scenario's images are kept (doctor reads them)."""
    return tools.cache_dir() / "delivered" / f"{scenario_name}.json"


def remember_delivery(scenario_name: str, image: str, target: str) -> None:
    """Record what inspect reads for image `image` of the scenario (registry://REF, a local ref or an archive)."""
    path = delivered_images_file(scenario_name)
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    known[image] = target
    tools.write_text_atomic(path, json.dumps(known, indent=2, sort_keys=True) + "\n")


def delivered_images(scenario_name: str) -> dict[str, str]:
    """image name -> what inspect reads for it, as last delivered for the scenario ({} if never)."""
    try:
        data = json.loads(delivered_images_file(scenario_name).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _noted(prediction: inspect.Prediction, note: str) -> inspect.Prediction:
    return replace(prediction, reason=note + prediction.reason) if note else prediction


def _content_tag(context: Path, dockerfile: Path, args: dict[Platform, dict[str, str]]) -> str:
    """A tag that names the build's inputs: the platform slug and a digest of context, Dockerfile and arguments."""
    digests = [images.content_digest(context, dockerfile, a, t) for t, a in args.items()]
    if len(digests) == 1:
        (platform,) = args
        return f"{images.platform_slug(platform)}-{digests[0][: images.TAG_DIGEST_LENGTH]}"
    joined = hashlib.sha256("".join(digests).encode()).hexdigest()
    return f"multi-{joined[: images.TAG_DIGEST_LENGTH]}"


def _prediction(
    c: inspect.ManifestContainer, outcome: str, reason: str, manifest: str | None = None
) -> PredictionReport:
    return PredictionReport(c.name, c.init, c.image, outcome, reason, manifest, c.restart_policy)


def _inspect_target(name: str, ref: str) -> str:
    """What inspect reads for a built image: the local image, or the archive of an index the session loaded."""
    _head, sep, tag = ref.rpartition(":multi-")
    if sep:
        archive = tools.cache_dir() / "indexes" / f"{name}-multi-{tag}.tar"  # harness.session.Session.load_index
        if archive.is_file():
            return str(archive)
    return ref


# ---------------------------------------------------------------------------------------------
# Prediction beside observation

_EXITS_AT_ONCE = frozenset(
    {
        Predicted.EXEC_FORMAT_ERROR,
        Predicted.NO_SUCH_FILE,
        Predicted.PERMISSION_DENIED,
        Predicted.BAD_INTERPRETER,
        Predicted.EXEC_FAILS,
        Predicted.EXITS,
    }
)
_CONTRADICT_RUNS = frozenset({Outcome.RAN_EMULATED, Outcome.IMAGE_PULL})


def implied_outcomes(predicted: Predicted, *, init: bool, restart_policy: str = "Always") -> frozenset[Outcome] | None:
    """The workload outcomes a container's predicted exec implies (None: the prediction decides nothing).

    A process that cannot be executed exits at once: a restarting pod crash-loops (an init
    container: Init:CrashLoopBackOff), a pod with restartPolicy Never fails. "Runs" is
    contradicted only by emulation, a pull failure or an exec format error (compare_prediction):
    what a running program does next is the program's own business.
    """
    if predicted in _EXITS_AT_ONCE:
        if restart_policy == "Never":
            return frozenset({Outcome.FAILED})
        return frozenset({Outcome.INIT_CRASH_LOOP if init else Outcome.CRASH_LOOP})
    if predicted is Predicted.RUNS_EMULATED:
        return frozenset({Outcome.RAN_EMULATED})
    if predicted is Predicted.CANNOT_PULL:
        return frozenset({Outcome.IMAGE_PULL})
    if predicted is Predicted.RUNS:
        return frozenset(Outcome) - _CONTRADICT_RUNS
    return None


def _predicted(p: PredictionReport) -> Predicted:
    try:
        return Predicted(p.outcome)
    except ValueError:
        return Predicted.UNKNOWN


def decisive_prediction(predictions: list[PredictionReport]) -> PredictionReport | None:
    """The container whose prediction decides the pod's fate.

    Init containers run first, in order: the first that cannot start (or is unknown) decides. Then
    a main container that cannot be pulled or started, then one unknown, then one emulated; else
    all run and the first main container stands for them.
    """
    blocking = _EXITS_AT_ONCE | {Predicted.CANNOT_PULL}
    inits = [p for p in predictions if p.init]
    mains = [p for p in predictions if not p.init]
    for p in inits:
        if _predicted(p) in blocking | {Predicted.UNKNOWN}:
            return p
    for wanted in (blocking, {Predicted.UNKNOWN}):
        for p in mains:
            if _predicted(p) in wanted:
                return p
    for p in predictions:
        if _predicted(p) is Predicted.RUNS_EMULATED:
            return p
    first = mains or inits
    return first[0] if first else None


def compare_prediction(predictions: list[PredictionReport], verdict: Verdict) -> tuple[str, str | None]:
    """(what was predicted, in the verdict's terms; the disagreement line, or None when they agree).

    Both are information only: neither changes whether the verdict passed.
    """
    p = decisive_prediction(predictions)
    if p is None:
        return "", None
    kind = "init container" if p.init else "container"
    because = f"{kind} {p.container}: {p.outcome} — {p.reason}"
    predicted = _predicted(p)
    implied = implied_outcomes(predicted, init=p.init, restart_policy=p.restart_policy)
    if implied is None:
        return f"unknown ({because}): nothing to compare", None
    observed = verdict.outcome
    if predicted is Predicted.RUNS:
        label = "runs (not " + " nor ".join(sorted(o.label for o in _CONTRADICT_RUNS)) + " nor an exec format error)"
        exec_failed = verdict.cause is not None and verdict.cause.exec_format_error
        contradicted = observed in _CONTRADICT_RUNS or exec_failed
    else:
        label = " or ".join(sorted(o.label for o in implied))
        contradicted = observed not in implied
    text = f"{label} ({because})"
    if not contradicted:
        return text, None
    return text, f"prediction disagrees: predicted {text}, observed {observed.label}"


def with_delivery(scenario: Scenario, delivery: str | None) -> Scenario:
    """The scenario with its delivery overridden (--delivery); load never pulls, so Always is refused."""
    if delivery is None or delivery == scenario.workload.delivery:
        return scenario
    if delivery not in ("registry", "load"):
        raise BadInput(f"--delivery {delivery!r} is not a delivery", "pass --delivery registry or --delivery load")
    policy = scenario.workload.pull_policy
    if delivery == "load":
        if policy == "Always":
            raise BadInput(
                f"{scenario.path}: field 'workload.pullPolicy' is Always, and --delivery load never pulls",
                "drop --delivery load, or set workload.pullPolicy to IfNotPresent",
            )
        policy = policy or "IfNotPresent"
    return replace(scenario, workload=replace(scenario.workload, delivery=delivery, pull_policy=policy))


def _validate(scenario: Scenario) -> None:
    """What the runner cannot run, refused before anything is deployed."""
    if scenario.fix_expect is not None and not scenario.fix_steps:
        raise BadInput(
            f"{scenario.path}: field 'fix.steps': at least one step (a fix that changes nothing verifies nothing)",
            "add the step(s) that fixed the incident, or remove 'fix'",
        )


def _need(deployment: str | None, step: str, scenario: Scenario) -> str:
    if not deployment:
        raise BadInput(
            f"{scenario.path}: fix step {step!r} needs a Deployment in the workload",
            "add one to the manifests (and name it in workload.deployment), or drop the step",
        )
    return deployment


def _min_restarts(expect: Expected) -> int:
    return max([int(s.value) for s in expect.symptoms if s.kind == "restartsAtLeast"] or [0])


def _seen_set(verdict: Verdict, name: str) -> frozenset[object] | None:
    """A Verdict set field by name (None where this Verdict has no such field)."""
    value = getattr(verdict, name, None)
    return frozenset(value) if value is not None else None


def _shown(values: frozenset[object]) -> str:
    return ", ".join(sorted(str(v) for v in values)) or "nothing"


def check_symptom(
    symptom: Symptom, verdict: Verdict, delivered: Mapping[str, Collection[str]] | None = None
) -> SymptomCheck:
    """Whether the verdict shows the symptom, looking only where the symptom's name says.

    delivered: image name -> the digests (and image IDs) the harness delivered for it, for ranImage.
    """
    kind, value = symptom.kind, symptom.value
    if isinstance(value, str) and not value.strip():
        return SymptomCheck(symptom, False, "(an empty value matches nothing)")
    if kind in ("waitingReason", "terminatedReason"):
        field_name = "waiting_reasons_seen" if kind == "waitingReason" else "terminated_reasons_seen"
        seen = _seen_set(verdict, field_name)
        if seen is None:  # a Verdict without separate reason sets: the mixed set is all there is
            seen = frozenset(verdict.phases_seen)
        return SymptomCheck(symptom, value in seen, f"(seen: {_shown(seen)})")
    if kind == "exitCode":
        codes = _seen_set(verdict, "exit_codes_seen")
        if codes is None:
            codes = frozenset(
                {verdict.cause.exit_code} if verdict.cause and verdict.cause.exit_code is not None else ()
            )
        return SymptomCheck(symptom, int(value) in codes, f"(exit codes seen: {_shown(codes)})")
    if kind == "probeFailed":
        probes = _seen_set(verdict, "probe_failures_seen") or frozenset()
        return SymptomCheck(symptom, str(value).lower() in probes, f"(probe failures seen: {_shown(probes)})")
    if kind == "restartsAtLeast":
        return SymptomCheck(symptom, verdict.restarts >= int(value), f"(restarts: {verdict.restarts})")
    if kind == "neverReady":
        return SymptomCheck(symptom, (not verdict.ready_seen) == bool(value), f"(ready seen: {verdict.ready_seen})")
    if kind == "previousLogContains":
        lines = list(verdict.cause.log_lines) if verdict.cause else []
        hit = next((line for line in lines if value in line), None)
        return SymptomCheck(symptom, hit is not None, f"({hit!r})" if hit else f"(log: {lines[-1:]!r})")
    if kind == "eventContains":
        # Kubernetes events only (the tracker files probe-failure events as "probe"); never the harness's notes.
        events = [e.text for e in verdict.timeline if e.kind in ("event", "probe")]
        hit = next((t for t in events if value in t), None)
        return SymptomCheck(symptom, hit is not None, f"({hit!r})" if hit else f"(in {len(events)} event(s))")
    if kind == "ranImage":
        return ran_image(verdict, str(value), (delivered or {}).get(str(value), ()), symptom)
    if kind == "deploymentAvailable":
        healthy = verdict.outcome is Outcome.HEALTHY
        return SymptomCheck(symptom, healthy, f"(judged by the watch: {verdict.outcome.label})")
    raise AssertionError(f"unknown symptom {kind!r}")


def _digest(image_id: str) -> str:
    """The digest part of a container's imageID ("localhost:5001/x@sha256:..." or "sha256:...")."""
    return image_id.rpartition("@")[2]


def _ran_id(r: outcomes.ImageRun) -> str:
    """What identifies the image a container ran: the node's image ID (config digest), else its imageID's digest."""
    return str(getattr(r, "config", "") or _digest(getattr(r, "image_id", "") or ""))


def ran_image(verdict: Verdict, name: str, digests: Collection[str], symptom: Symptom | None = None) -> SymptomCheck:
    """Every container that ran the image's repository ran one of the digests delivered for image `name`."""
    shown = symptom or Symptom("ranImage", name)
    ran = [r for r in getattr(verdict, "images_ran", ()) or () if r.image_id]
    if not digests:
        return SymptomCheck(shown, False, f"(the harness delivered nothing as {name})")
    if not ran:
        return SymptomCheck(shown, False, "(no container reported an imageID: none started)")
    wanted = {_digest(d) for d in digests}
    seen = sorted({f"image {_ran_id(r)[:19]} ({r.platform or 'platform unknown'})" for r in ran})
    other = [r for r in ran if _ran_id(r) not in wanted]
    if other:
        return SymptomCheck(
            shown, False, f"(ran {', '.join(seen)}; {name} is {', '.join(sorted(d[:19] for d in wanted))})"
        )
    return SymptomCheck(shown, True, f"(ran {', '.join(seen)})")


def _checks(
    expect: Expected, verdict: Verdict, delivered: Mapping[str, Collection[str]] | None = None
) -> list[SymptomCheck]:
    checks = [check_symptom(s, verdict, delivered) for s in expect.symptoms]
    if expect.deployment_available:
        # Healthy means the Deployment is Available for its current revision (the watch waits for it).
        checks.append(check_symptom(Symptom("deploymentAvailable", True), verdict))
    return checks


def _after_fix_checks(
    verdict: Verdict,
    fix_images: list[tuple[str, str]],
    delivered: Mapping[str, Collection[str]] | None = None,
    containers: Collection[str] | None = None,
) -> list[SymptomCheck]:
    """The fix's expectation must be met by pods created after the fix, running the digest of its image (when set)."""
    checks = [
        SymptomCheck(
            Symptom("podsCreatedAfterFix", True),
            bool(verdict.pods),
            f"({len(verdict.pods)} pod(s) created after the fix)",
        )
    ]
    ran = list(getattr(verdict, "images_ran", ()) or ())
    if not fix_images or not ran:
        return checks
    name, ref = fix_images[-1]
    mine = [r for r in ran if containers is None or r.container in containers]  # the containers the fix set
    wanted = {_digest(d) for d in (delivered or {}).get(name, ())}
    wrong = sorted(
        {
            f"{r.image} as image {_ran_id(r)[:19]}" if _ran_id(r) else r.image
            for r in mine
            # What ran is known by its image ID where the node told it, else only by its reference.
            if (_ran_id(r) not in wanted if wanted and _ran_id(r) else r.image != ref)
        }
    )
    digests = ", ".join(sorted(d[:19] for d in wanted))
    checks.append(
        SymptomCheck(
            Symptom("runsFixImage", name),
            not wrong,
            f"(ran other builds: {', '.join(wrong)}; {name} is {digests or ref})" if wrong else f"({digests or ref})",
        )
    )
    return checks


def _decide(run: _Run) -> ExitStatus:
    if run.masked:
        return ExitStatus.MASKED_BY_EMULATION
    if not all(v.passed for v in run.verdicts) or not all(c.seen for c in run.symptoms) or run.fix_verified is False:
        return ExitStatus.EXPECTATION_FAILED
    return ExitStatus.OK


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunResult:
    """Run a scenario end to end; never raises for expectations, only returns the verdict."""
    o = options or RunOptions()
    run = _Run(scenario, o)
    status = ExitStatus.OK
    error: str | None = None
    try:
        run.s = with_delivery(scenario, o.delivery)
        _validate(run.s)
        run.open_session()
        run.apply_workload()
        run.watch_incident()
        run.run_fix()
        status = _decide(run)
    except KeyboardInterrupt as exc:
        # Ctrl-C, or SIGTERM / SIGHUP raised as Interrupted (harness.signals): no verdict.
        status = ExitStatus(signals.exit_status(exc))
        if run.current_step:
            where = f" during step '{run.current_step}'"
        else:  # between two steps
            where = f" after step '{run.steps[-1].name}'" if run.steps else ""
        error = f"interrupted by {signals.signal_name(exc)}{where}"
    except (BadInput, ScenarioError) as exc:
        status, error = ExitStatus.BAD_INPUT, str(exc)
    except HarnessError as exc:
        status, error = ExitStatus.ENVIRONMENT, str(exc)
    finally:
        if status in (ExitStatus.EXPECTATION_FAILED, ExitStatus.ENVIRONMENT):
            try:
                run.collect_artifacts()
            except Exception as exc:  # noqa: BLE001 - evidence collection must not hide the failure
                o.say(f"    collecting evidence failed: {first_line(exc)}")
        try:
            run.clean_up()
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the verdict
            o.say(f"    clean-up failed: {first_line(exc)}")
    report = run.report(status, error)
    paths: tuple[Path, ...] = ()
    if o.report_dir is not None:
        paths = write_reports(report, o.report_dir)
    return RunResult(scenario, report, run.symptoms, run.verdicts, paths, dict(run.built), run.fix_checks)
