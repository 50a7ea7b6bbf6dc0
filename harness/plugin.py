"""pytest plugin (entry point pytest11): the second door onto the harness's session.

Inert unless the project opts in: ``[tool.incident-harness]`` in the root's pyproject.toml, the
ini option ``incident_harness = true``, or loading it explicitly (``-p incident_harness``, or
``-p harness.plugin`` where the package is not installed). Inert means: options and markers are
registered, nothing else happens (no scenario files collected, no skip turned into a failure).

When active:

- every scenario file (apiVersion incident-harness/v1) under the project's scenarios folder
  that pytest visits is one test item (markers ``e2e`` and ``scenario``): it runs through the
  runner on the session's cluster and reports its verdict, and on failure its evidence;
- fixtures hand tests the same session as the CLI uses: ``harness_session`` (session scope),
  ``harness_cluster`` (its KindCluster), ``harness_namespace`` (fresh per test), ``image_builder``,
  ``deploy`` and ``expect_outcome``; a frozen node ends a test with ClusterGone, an image that
  runs emulated is never Healthy, evidence of a failed test is bounded;
- with ``--require-e2e`` (default when CI=true) a skipped e2e test fails the run;
- ``--harness-profile`` (default ``fast``): the kubelet settings of the suite's cluster
  (harness.profiles); each scenario item records the profile and the kubelets' effective
  maximum restart period as JUnit properties;
- under pytest-xdist every worker shares the one cluster (the same name; creation serialised by
  a lock, a namespace per test). Workers never delete it; the controller (the process that runs
  no tests) deletes it at the end when this run created it and --harness-keep-cluster is not given.
  A test that disturbs the cluster or the host for everyone (marker ``exclusive_cluster``, e.g.
  one that pauses the node, or ``emulation``: a kernel-wide binfmt handler) runs alone: e2e tests
  hold a shared lock on the cluster while they run, such a test an exclusive one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import profiles, report, tools, workload
from harness.cluster import KindCluster, default_name
from harness.errors import HarnessError
from harness.outcomes import Outcome, Verdict
from harness.platforms import Platform, parse_platform
from harness.project import Project, find_project
from harness.scenario import API_VERSION
from harness.session import Session

PLUGIN_NAMES = frozenset({"harness.plugin", "incident_harness"})
EXPECT_EMULATION_ENV = "HARNESS_EXPECT_EMULATION"

_ACTIVE = pytest.StashKey[bool]()
_PROJECT = pytest.StashKey[Project]()
_SESSION = pytest.StashKey["_SharedSession"]()
_CONTROLLER_CLUSTER = pytest.StashKey[KindCluster | None]()  # xdist controller: a cluster this run may delete
SUITE_PROFILE = profiles.Profile.FAST


def _require_e2e_default() -> bool:
    explicit = os.environ.get("HARNESS_REQUIRE_E2E")
    if explicit is not None:
        return explicit == "1"
    return os.environ.get("CI", "").lower() == "true"


def expects_emulation() -> bool:
    """This matrix cell expects the host to emulate foreign images (HARNESS_EXPECT_EMULATION=1)."""
    return os.environ.get(EXPECT_EMULATION_ENV) == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("incident-harness", "kind clusters for incident reproductions")
    group.addoption(
        "--harness-cluster", default=None, help="kind cluster to create or reuse (default: incident-harness)"
    )
    group.addoption(
        "--harness-keep-cluster", action="store_true", help="keep the cluster after the session (reuse it next time)"
    )
    group.addoption(
        "--harness-node-image", default=None, help="force a node image (default: kindest/node, else registry-free)"
    )
    group.addoption("--harness-kind-bin", default=None, help="the kind binary to use")
    group.addoption(
        "--harness-profile",
        default=SUITE_PROFILE.value,
        choices=profiles.names(),
        help=f"cluster profile: kubelet settings of the cluster (default {SUITE_PROFILE.value}; see harness.profiles)",
    )
    group.addoption("--harness-artifacts-dir", default="artifacts", help="where evidence of failed tests is saved")
    group.addoption("--harness-report-dir", default="reports", help="where the reports of scenario items are written")
    group.addoption("--harness-keep-namespace-on-failure", action="store_true", help="keep a failed test's namespace")
    group.addoption(
        "--harness-registry",
        default=None,
        metavar="HOST[:PORT]",
        help="push to and pull from this registry (default: the harness's own, started on first use)",
    )
    group.addoption(
        "--harness-strict-predictions",
        action="store_true",
        help="a scenario item whose prediction (read from the image before deploy) disagrees with what the cluster "
        "did fails, even when its expectations held",
    )
    group.addoption(
        "--require-e2e",
        action="store_true",
        default=_require_e2e_default(),
        help="a skipped e2e test fails the run (default when CI=true or HARNESS_REQUIRE_E2E=1)",
    )
    parser.addini(
        "incident_harness",
        type="bool",
        default=False,
        help="activate the incident-harness plugin (also: [tool.incident-harness] in pyproject.toml)",
    )


def _loaded_explicitly(config: pytest.Config) -> bool:
    named = list(getattr(config.known_args_namespace, "plugins", None) or [])
    named += [p.strip() for p in os.environ.get("PYTEST_PLUGINS", "").split(",")]
    return any(name in PLUGIN_NAMES for name in named)


def is_active(config: pytest.Config) -> bool:
    """Whether this pytest session opted in (see the module docstring)."""
    if _loaded_explicitly(config):
        return True
    try:
        if config.getini("incident_harness"):
            return True
    except ValueError:
        pass
    try:
        return find_project(start=config.rootpath).configured
    except HarnessError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real kind cluster and a Docker engine")
    config.addinivalue_line("markers", "scenario: runs a scenario file end to end")
    config.addinivalue_line("markers", "emulation: registers a QEMU binfmt_misc handler on the host (kernel-wide)")
    config.addinivalue_line(
        "markers",
        "exclusive_cluster: disturbs the shared cluster for every test (pauses its node...): under xdist it runs alone",
    )
    config.stash[_ACTIVE] = is_active(config)


def _active(config: pytest.Config) -> bool:
    return config.stash.get(_ACTIVE, False)


def is_xdist_worker(config: pytest.Config) -> bool:
    """This process is a pytest-xdist worker (it runs tests; the controller hands them out)."""
    return hasattr(config, "workerinput")


def is_xdist_controller(config: pytest.Config) -> bool:
    """This process hands tests to pytest-xdist workers and runs none itself."""
    return not is_xdist_worker(config) and getattr(config.option, "dist", "no") != "no"


def _profile(config: pytest.Config) -> profiles.Profile:
    return profiles.Profile.parse(config.getoption("--harness-profile") or SUITE_PROFILE.value)


def _cluster_name(config: pytest.Config) -> str:
    """The suite's cluster: --harness-cluster, else HARNESS_CLUSTER, else the profile's default (every worker alike)."""
    return str(config.getoption("--harness-cluster") or default_name(_profile(config)))


EXCLUSIVE_MARKERS = ("exclusive_cluster", "emulation")


@contextmanager
def cluster_use_lock(name: str, *, exclusive: bool) -> Iterator[None]:
    """Held while a test uses the shared cluster: shared by ordinary tests, exclusive by one that disturbs it."""
    path = tools.cache_dir() / "locks" / f"cluster-{name}.use"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, None]:
    """xdist worker: an e2e test runs while holding the cluster's use lock (setup, call and teardown)."""
    config = item.config
    if not (_active(config) and is_xdist_worker(config) and item.get_closest_marker("e2e")):
        yield
        return
    exclusive = any(item.get_closest_marker(m) for m in EXCLUSIVE_MARKERS)
    with cluster_use_lock(_cluster_name(config), exclusive=exclusive):
        yield


def pytest_sessionstart(session: pytest.Session) -> None:
    """xdist controller: note whether the workers' cluster exists, so that only a cluster this run made is deleted."""
    config = session.config
    if not _active(config) or not is_xdist_controller(config) or config.getoption("--harness-keep-cluster"):
        return
    try:
        cluster = KindCluster(name=_cluster_name(config), kind_bin=config.getoption("--harness-kind-bin"))
        config.stash[_CONTROLLER_CLUSTER] = None if cluster.exists() else cluster
    except HarnessError:
        config.stash[_CONTROLLER_CLUSTER] = None  # no engine or kind here: the workers skip their e2e tests


def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist controller: the workers have ended; delete the cluster they made (unless kept)."""
    cluster = session.config.stash.get(_CONTROLLER_CLUSTER, None)
    if cluster is None:
        return
    try:
        if cluster.exists():
            cluster.delete()
    except HarnessError as exc:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"incident-harness: deleting cluster {cluster.name} failed: {exc.cause}")


# ---------------------------------------------------------------------------------------------
# Reports: skips of e2e tests, harness errors, evidence of failed tests


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    setattr(item, f"harness_rep_{rep.when}", rep)
    if _active(item.config):
        if rep.skipped and item.get_closest_marker("e2e") and item.config.getoption("--require-e2e"):
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            rep.outcome = "failed"
            rep.longrepr = f"e2e test skipped but --require-e2e is set: {reason}"
        elif rep.failed and call.excinfo is not None and isinstance(call.excinfo.value, HarnessError):
            # An error a user can meet: its cause and remedy, not a traceback.
            rep.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
    if rep.when == "call" and rep.failed:
        # Only tests that used harness_namespace (they asked for the harness) have evidence to save.
        ns: _TestNamespace | None = getattr(item, "harness_namespace", None)
        if ns is not None:
            directory = ns.collect(Path(item.config.getoption("--harness-artifacts-dir")), item.name)
            rep.sections.append(("incident-harness evidence", f"saved in {directory}"))


# ---------------------------------------------------------------------------------------------
# The session shared by fixtures and scenario items


@dataclass
class _SharedSession:
    """The pytest session's harness Session, opened on first use and closed at the end."""

    config: pytest.Config
    session: Session | None = None
    unavailable: str | None = None
    failed: HarnessError | None = None

    def get(self) -> Session:
        if self.unavailable is not None:
            pytest.skip(self.unavailable)
        if self.session is None:
            opt = self.config.getoption
            try:
                tools.ensure_engine()
                tools.kind_binary(opt("--harness-kind-bin"))
            except HarnessError as exc:
                self.unavailable = f"no kind cluster possible here: {exc.cause} ({exc.remedy})"
                pytest.skip(self.unavailable)
            if self.failed is not None:
                raise self.failed  # the cluster could not be made once: not again for every test
            try:
                self.session = Session.open(
                    name=_cluster_name(self.config),
                    node_image=opt("--harness-node-image"),
                    kind_bin=opt("--harness-kind-bin"),
                    # A worker never deletes the cluster the others share: the controller may, at the end.
                    keep_cluster=bool(opt("--harness-keep-cluster")) or is_xdist_worker(self.config),
                    say=_say(self.config),
                    registry_address=opt("--harness-registry"),
                    profile=_profile(self.config),
                )
            except HarnessError as exc:
                self.failed = exc
                raise
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _say(config: pytest.Config) -> Callable[[str], None]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None and ("clean-up" in line or "remove it later" in line):
            reporter.write_line(f"incident-harness: {line.strip()}")

    return say


def shared_session(config: pytest.Config) -> Session:
    """The harness Session of this pytest session (the one harness_session returns)."""
    if _SESSION not in config.stash:
        shared = _SharedSession(config)
        config.stash[_SESSION] = shared
        config.add_cleanup(shared.close)
    return config.stash[_SESSION].get()


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest) -> Session:
    """The session's harness Session: its kind cluster is reused when one of that name exists, else created."""
    return shared_session(request.config)


@pytest.fixture(scope="session")
def harness_cluster(harness_session: Session) -> KindCluster:
    """The session's kind cluster (not named kind_cluster: pytest-kind-ng owns that name)."""
    return harness_session.cluster


@dataclass
class _TestNamespace:
    session: Session
    name: str
    selectors: list[str] = field(default_factory=list)

    def collect(self, artifacts_dir: Path, test_name: str) -> Path:
        return self.session.collect_evidence(artifacts_dir, test_name, self.name, ",".join(self.selectors))


@pytest.fixture
def harness_namespace(request: pytest.FixtureRequest, harness_session: Session) -> Iterator[str]:
    """A fresh namespace for the test, deleted afterwards (kept on failure when asked)."""
    name = harness_session.create_namespace(request.node.name)
    request.node.harness_namespace = _TestNamespace(harness_session, name)
    yield name
    call = getattr(request.node, "harness_rep_call", None)
    failed = call is not None and call.failed
    if failed and request.config.getoption("--harness-keep-namespace-on-failure"):
        harness_session.keep_namespace(name)
    else:
        harness_session.delete_namespace(name)


@pytest.fixture(scope="session")
def image_builder(harness_session: Session) -> Callable[..., str]:
    """build(context, platform, repository=..., dockerfile=..., build_args=..., load=True) -> image ref."""

    def build(context: Path, platform: Platform | str, *, repository: str, load: bool = True, **kwargs: Any) -> str:
        target = parse_platform(platform) if isinstance(platform, str) else platform
        return harness_session.build_image(context, target, repository=repository, load=load, **kwargs).ref

    return build


@pytest.fixture
def deploy(request: pytest.FixtureRequest, harness_session: Session, harness_namespace: str) -> Callable[..., Any]:
    """deploy(manifests or objects, image=..., pull_policy="IfNotPresent", ...) -> Workload in the test's namespace."""

    def apply(source: list[Path] | list[dict[str, Any]], **render_args: Any) -> workload.Workload:
        docs: list[dict[str, Any]] = []
        origins: list[str] = []
        for entry in source:
            if isinstance(entry, Path):
                loaded = workload.load_manifests([entry])
                docs += loaded
                origins += [str(entry)] * len(loaded)
            else:
                docs.append(entry)
                origins.append(f"{request.node.name} (an object in code)")
        render_args.setdefault("pull_policy", "IfNotPresent")
        rendered = workload.render(docs, namespace=harness_namespace, **render_args)
        # The capacity gate: waits (said) until the peak requests fit; BadInput if they never can.
        harness_session.admit(rendered, f"test {request.node.name}", origins=origins)
        applied = harness_session.apply(rendered, origins=origins)
        request.node.harness_namespace.selectors.append(applied.selector)
        return applied

    return apply


@pytest.fixture
def expect_outcome(harness_session: Session) -> Callable[..., Verdict]:
    """expect_outcome(workload, Outcome.X, timeout=120, **watch_args) -> Verdict; fails with the evidence.

    Supervised like the CLI's watch: a cluster that stops answering raises ClusterGone. When an
    image ran under emulation and the test did not expect that, the test is skipped as masked
    (so --require-e2e fails it): the outcome it asks about cannot show on this host.
    """

    def expect(
        applied: workload.Workload, wanted: Outcome | set[Outcome], timeout: float = 120, **kwargs: Any
    ) -> Verdict:
        watched = harness_session.watch(applied, expect=wanted, timeout=timeout, **kwargs)
        verdict = watched.verdict
        if not verdict.satisfies(wanted):
            labels = " or ".join(sorted(o.label for o in ({wanted} if isinstance(wanted, Outcome) else wanted)))
            if watched.masked:
                pytest.skip(f"masked by emulation: expected {labels}, but {watched.emulation}")
            pytest.fail(
                f"expected {labels}, got {verdict.outcome.label}: {verdict.summary}\n"
                f"{report.render_timeline(verdict.timeline)}",
                pytrace=False,
            )
        return verdict

    return expect


# ---------------------------------------------------------------------------------------------
# Scenario files as test items


def _project(config: pytest.Config) -> Project:
    if _PROJECT not in config.stash:
        config.stash[_PROJECT] = find_project(start=config.rootpath)
    return config.stash[_PROJECT]


def is_scenario_file(path: Path) -> bool:
    """A YAML file whose top level says apiVersion incident-harness/v1 (a manifest or README is not)."""
    if path.suffix not in (".yaml", ".yml") or path.name.startswith("_"):
        return False
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("apiVersion") == API_VERSION


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if not _active(config) or file_path.suffix not in (".yaml", ".yml"):
        return None
    try:
        scenarios_dir = _project(config).scenarios_dir
    except HarnessError:
        return None
    if not file_path.resolve().is_relative_to(scenarios_dir) or not is_scenario_file(file_path):
        return None
    collector: pytest.Collector = ScenarioFile.from_parent(parent, path=file_path)
    return collector


class ScenarioFile(pytest.File):
    """A scenario file: one item, named after the scenario (the file's stem when it does not load)."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness import scenario

        try:
            name = scenario.load(self.path, **_load_args(self.config)).name
        except HarnessError:
            name = self.path.stem
        item = ScenarioItem.from_parent(self, name=name)
        item.add_marker(pytest.mark.e2e)
        item.add_marker(pytest.mark.scenario)
        yield item


def _load_args(config: pytest.Config) -> dict[str, Any]:
    """scenario.load's project keyword where this version of it takes one."""
    import inspect

    from harness import scenario

    if "project" in inspect.signature(scenario.load).parameters:
        return {"project": _project(config)}
    return {}


class ScenarioFailed(Exception):
    """A scenario item whose run did not meet its expectations (or could not run)."""


class ScenarioItem(pytest.Item):
    """One scenario file run end to end through the runner on the shared session."""

    def runtest(self) -> None:
        from harness import scenario
        from harness.runner import ExitStatus, RunOptions, run_scenario

        loaded = scenario.load(self.path, **_load_args(self.config))
        session = shared_session(self.config)
        said: list[str] = []
        opt = self.config.getoption
        result = run_scenario(
            loaded,
            RunOptions(
                session=session,
                report_dir=Path(opt("--harness-report-dir")),
                artifacts_dir=Path(opt("--harness-artifacts-dir")),
                say=said.append,
            ),
        )
        self.harness_result = result
        # What the report read from the cluster (its nodes' label, the kubelets' configz), not the option asked.
        self.user_properties.append(("harness_profile", result.report.profile.get(profiles.PROFILE_FACT, "")))
        self.user_properties.append(
            ("kubelet_max_container_restart_period", result.report.profile.get(profiles.PERIOD_FACT, ""))
        )
        status = result.exit_status
        paths = "\n".join(f"report: {p}" for p in result.report_paths)
        self.user_properties.append(("exit_status", int(status)))
        if "delivery" in result.report.facts:
            self.user_properties.append(("delivery", result.report.facts["delivery"]))
        disagreements = [v.disagreement for v in result.report.verdicts if v.disagreement]
        if status is ExitStatus.OK and disagreements and opt("--harness-strict-predictions"):
            raise ScenarioFailed(
                f"{report.render_terminal(result.report)}\n{paths}\n\nthe expectations held, but "
                + "; ".join(disagreements)
                + " (--harness-strict-predictions)"
            )
        if status is ExitStatus.OK:
            return
        if status is ExitStatus.MASKED_BY_EMULATION:
            if expects_emulation():
                check_says_masked(result.report)
                return
            pytest.skip(
                f"masked by emulation: {result.report.emulation}; the incident cannot show on this host "
                f"(set {EXPECT_EMULATION_ENV}=1 where the matrix cell expects emulation)"
            )
        if status in (ExitStatus.INTERRUPTED, ExitStatus.TERMINATED, ExitStatus.HANGUP):
            raise KeyboardInterrupt
        evidence = "\n".join(f"evidence: {a}" for a in result.report.artifacts)
        raise ScenarioFailed(
            f"{report.render_terminal(result.report)}\n{paths}\n{evidence}\n\nrun log (last lines):\n"
            + "\n".join(said[-30:])
        )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed | HarnessError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.name}"


def check_says_masked(run: report.RunReport) -> None:
    """A masked run's report says masked, and claims neither a pass, health nor a reproduction."""
    problems = []
    if not run.emulation:
        problems.append("the report does not name the emulation that masked the run")
    if not run.verdicts or run.verdicts[0].verdict.outcome is not Outcome.RAN_EMULATED:
        problems.append("the incident verdict is not 'Ran under emulation'")
    if run.symptoms_reproduced or run.fix_verified is not None:
        problems.append("symptoms or a fix were claimed on a masked run")
    text = report.render_terminal(run)
    if "masked" not in text.lower():
        problems.append("the terminal report does not say masked")
    if problems:
        raise ScenarioFailed("; ".join(problems) + "\n" + text)


__all__ = [
    "EXCLUSIVE_MARKERS",
    "EXPECT_EMULATION_ENV",
    "ScenarioFile",
    "ScenarioItem",
    "check_says_masked",
    "cluster_use_lock",
    "expects_emulation",
    "is_active",
    "is_scenario_file",
    "is_xdist_controller",
    "is_xdist_worker",
    "shared_session",
]
