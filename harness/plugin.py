"""pytest plugin (entry point pytest11): options, fixtures and markers onto the harness library.

Fixtures: ``harness_cluster`` (session), ``harness_namespace`` (fresh per test), ``image_builder``,
``deploy`` and ``expect_outcome``. Markers: ``e2e`` (needs a real kind cluster) and ``scenario``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import images, outcomes, tools, workload
from harness.cluster import KindCluster, default_name
from harness.errors import HarnessError
from harness.outcomes import Outcome, Verdict
from harness.platforms import Platform, parse_platform


def _require_e2e_default() -> bool:
    explicit = os.environ.get("HARNESS_REQUIRE_E2E")
    if explicit is not None:
        return explicit == "1"
    return os.environ.get("CI", "").lower() == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("incident-harness", "kind clusters for incident reproductions")
    group.addoption("--cluster-name", default=None, help="kind cluster to create or reuse (default: incident-harness)")
    group.addoption(
        "--keep-cluster", action="store_true", help="keep the cluster after the session (reuse it next time)"
    )
    group.addoption("--node-image", default=None, help="force a node image (default: kindest/node, else registry-free)")
    group.addoption("--kind-bin", default=None, help="the kind binary to use")
    group.addoption("--artifacts-dir", default="artifacts", help="where evidence of failed tests is saved")
    group.addoption("--keep-namespace-on-failure", action="store_true", help="keep a failed test's namespace")
    group.addoption(
        "--require-e2e",
        action="store_true",
        default=_require_e2e_default(),
        help="a skipped e2e test fails the run (default when CI=true or HARNESS_REQUIRE_E2E=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real kind cluster and a Docker engine")
    config.addinivalue_line("markers", "scenario: runs a scenario file end to end")
    config.addinivalue_line("markers", "emulation: registers a QEMU binfmt_misc handler on the host (kernel-wide)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    setattr(item, f"harness_rep_{rep.when}", rep)
    if rep.skipped and item.get_closest_marker("e2e") and item.config.getoption("--require-e2e"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"e2e test skipped but --require-e2e is set: {reason}"
    if rep.when == "call" and rep.failed:
        ns: _Namespace | None = getattr(item, "harness_namespace", None)
        if ns is not None:
            directory = ns.collect(item.config.getoption("--artifacts-dir"), item.name)
            rep.sections.append(("incident-harness evidence", f"saved in {directory}"))


@pytest.fixture(scope="session")
def harness_cluster(request: pytest.FixtureRequest) -> Iterator[KindCluster]:
    """The session's kind cluster: reused when one of that name exists, else created."""
    opt = request.config.getoption
    cluster = KindCluster(
        name=opt("--cluster-name") or default_name(), node_image=opt("--node-image"), kind_bin=opt("--kind-bin")
    )
    try:
        tools.ensure_engine()
        tools.kind_binary(cluster.kind_bin)
    except HarnessError as exc:
        pytest.skip(f"no kind cluster possible here: {exc.cause} ({exc.remedy})")
    cluster.create()
    yield cluster
    if not cluster.reused and not opt("--keep-cluster"):
        cluster.delete()


@dataclass
class _Namespace:
    cluster: KindCluster
    name: str
    selectors: list[str] = field(default_factory=list)

    def collect(self, artifacts_dir: str, test_name: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        directory = Path(artifacts_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test_name)}-{stamp}"
        return self.cluster.collect_evidence(self.name, ",".join(self.selectors), directory)


@pytest.fixture
def harness_namespace(request: pytest.FixtureRequest, harness_cluster: KindCluster) -> Iterator[str]:
    """A fresh namespace for the test, deleted afterwards (kept on failure when asked)."""
    harness_cluster.guard()
    name = workload.create_namespace(harness_cluster.core, re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:30])
    ns = _Namespace(harness_cluster, name)
    request.node.harness_namespace = ns
    yield name
    call = getattr(request.node, "harness_rep_call", None)
    failed = call is not None and call.failed
    if not (failed and request.config.getoption("--keep-namespace-on-failure")):
        workload.delete_namespace(harness_cluster.core, name)


@pytest.fixture(scope="session")
def image_builder(harness_cluster: KindCluster) -> Callable[..., str]:
    """build(context, platform, repository=..., dockerfile=..., build_args=..., load=True) -> image ref."""

    def build(context: Path, platform: Platform | str, *, repository: str, load: bool = True, **kwargs: Any) -> str:
        target = parse_platform(platform) if isinstance(platform, str) else platform
        built = images.build_image(context, target, repository=repository, **kwargs)
        if load:
            harness_cluster.load_image(built.ref)
        return built.ref

    return build


@pytest.fixture
def deploy(
    request: pytest.FixtureRequest, harness_cluster: KindCluster, harness_namespace: str
) -> Callable[..., workload.Workload]:
    """deploy(manifests or objects, image=..., pull_policy="IfNotPresent", ...) -> Workload in the test's namespace."""

    def apply(source: list[Path] | list[dict[str, Any]], **render_args: Any) -> workload.Workload:
        harness_cluster.guard()
        paths = [p for p in source if isinstance(p, Path)]
        docs = workload.load_manifests(paths) if paths else [d for d in source if isinstance(d, dict)]
        render_args.setdefault("pull_policy", "IfNotPresent")
        rendered = workload.render(docs, namespace=harness_namespace, **render_args)
        applied = workload.apply(harness_cluster.api_client(), rendered)
        request.node.harness_namespace.selectors.append(applied.selector)
        return applied

    return apply


@pytest.fixture
def expect_outcome(harness_cluster: KindCluster) -> Callable[..., Verdict]:
    """expect_outcome(workload, Outcome.X, timeout=120, **watch_args) -> Verdict; fails with the evidence."""

    def expect(
        applied: workload.Workload, wanted: Outcome | set[Outcome], timeout: float = 120, **kwargs: Any
    ) -> Verdict:
        verdict = outcomes.watch_workload(
            harness_cluster.core, applied.namespace, applied.selector, expect=wanted, timeout=timeout, **kwargs
        )
        if not verdict.satisfies(wanted):
            from harness.report import render_timeline

            labels = " or ".join(sorted(o.label for o in ({wanted} if isinstance(wanted, Outcome) else wanted)))
            pytest.fail(
                f"expected {labels}, got {verdict.outcome.label}: {verdict.summary}\n"
                f"{render_timeline(verdict.timeline)}",
                pytrace=False,
            )
        return verdict

    return expect
