"""The pytest plugin without a cluster: when it is active, the skip-to-failure rule, scenario files as items.

Inner pytest sessions run in this process (pytester); the runner and the session are replaced
where an item would run a scenario, so what is tested is the plugin's own decisions.
"""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import plugin
from harness import runner as runner_module
from harness.outcomes import Outcome, Verdict
from harness.report import RunReport, VerdictReport

pytest_plugins = ["pytester"]

SKIPPED_E2E = """
import pytest

@pytest.mark.e2e
def test_needs_a_cluster():
    pytest.skip("no cluster here")

def test_plain_skip():
    pytest.skip("not today")
"""

OPTED_IN = "[tool.incident-harness]\nscenarios = 'scenarios'\n"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CI", "HARNESS_REQUIRE_E2E", "HARNESS_EXPECT_EMULATION", "PYTEST_PLUGINS"):
        monkeypatch.delenv(name, raising=False)


def _outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "skipped", "errors")}


# -- inert unless the project opts in --------------------------------------------------------------


def test_another_projects_skipped_e2e_test_stays_skipped_with_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_other=SKIPPED_E2E)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert _outcomes(result) == {"skipped": 2}, result.stdout.str()


@pytest.mark.parametrize("how", ["pyproject", "ini", "-p"])
def test_an_opted_in_project_fails_a_skipped_e2e_test_with_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_own=SKIPPED_E2E)
    args = ["-p", "no:cacheprovider"]
    if how == "pyproject":
        pytester.makefile(".toml", pyproject=OPTED_IN)
    elif how == "ini":
        pytester.makeini("[pytest]\nincident_harness = true\n")
    else:
        args += ["-p", "incident_harness"]
    result = pytester.runpytest(*args)
    assert _outcomes(result) == {"failed": 1, "skipped": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*e2e test skipped but --require-e2e is set: *no cluster here*"])


def test_without_ci_a_skip_stays_a_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_REQUIRE_E2E", "0")
    monkeypatch.setenv("CI", "true")  # HARNESS_REQUIRE_E2E=0 wins
    pytester.makefile(".toml", pyproject=OPTED_IN)
    pytester.makepyfile(test_own=SKIPPED_E2E)
    assert _outcomes(pytester.runpytest("-p", "no:cacheprovider")) == {"skipped": 2}
    assert _outcomes(pytester.runpytest("-p", "no:cacheprovider", "--require-e2e")) == {"failed": 1, "skipped": 1}


# -- scenario files as items ------------------------------------------------------------------------

SCENARIO = """
apiVersion: incident-harness/v1
kind: Scenario
name: demo-incident
title: A demo incident
images:
  app: {context: app, platform: foreign}
workload:
  manifests: [k8s/web.yaml]
  image: app
expect:
  outcome: CrashLoopBackOff
  timeout: 60
"""

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: x}]}
"""


def _project(pytester: pytest.Pytester, *, opted_in: bool = True) -> Path:
    root = pytester.path
    if opted_in:
        pytester.makefile(".toml", pyproject=OPTED_IN)
    (root / "app").mkdir()
    (root / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "k8s").mkdir()
    (root / "k8s" / "web.yaml").write_text(MANIFEST)
    (root / "scenarios" / "manifests").mkdir(parents=True)
    (root / "scenarios" / "demo.yaml").write_text(textwrap.dedent(SCENARIO))
    (root / "scenarios" / "manifests" / "extra.yaml").write_text(MANIFEST)  # a manifest, not a scenario
    (root / "scenarios" / "README.md").write_text("# scenarios\n")
    return root


def test_each_scenario_file_is_one_item_marked_e2e_and_scenario(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", "-m", "e2e and scenario")
    result.stdout.fnmatch_lines(["scenarios/demo.yaml::demo-incident", "1 test collected*"])


def test_an_inert_project_collects_no_scenario(pytester: pytest.Pytester) -> None:
    _project(pytester, opted_in=False)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert "demo-incident" not in result.stdout.str()


def test_the_repositorys_scenarios_are_collected_once_each() -> None:
    """Named twice (as a Makefile listing tests/e2e and scenarios might), each scenario file is still one item."""
    import sys

    from harness import scenario, tools

    repo = Path(__file__).resolve().parents[2]
    result = tools.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "scenarios", "scenarios"],
        cwd=repo,
        check=False,
        timeout=120,
    )
    items = [line for line in result.stdout.splitlines() if line.startswith("scenarios/")]
    assert len(items) == len(set(items)) == len(scenario.discover(repo / "scenarios")), result.stdout


def _report(status: int, *, masked: bool = False) -> RunReport:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    outcome = Outcome.RAN_EMULATED if masked else Outcome.CRASH_LOOP
    verdict = Verdict(outcome, ("web-1",), None, 0, masked, frozenset(), now, now, 1.0, (), "ran under emulation")
    return RunReport(
        scenario="demo-incident",
        started=now,
        finished=now,
        host_platform="linux/amd64",
        node_platform="linux/amd64",
        exit_status=status,
        emulation="qemu-aarch64 (F) runs linux/arm64 here" if masked else None,
        verdicts=(VerdictReport.judge("incident", Outcome.RAN_EMULATED if masked else Outcome.HEALTHY, verdict),),
        artifacts=("artifacts/demo-incident-20260102T000000Z",) if status in (1, 3) else (),
    )


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Scenario items run against a fake runner; the list holds the options each run got."""
    runs: list[Any] = []
    monkeypatch.setattr(plugin, "shared_session", lambda config: "the shared session")

    def fake_run(scenario: Any, options: runner_module.RunOptions) -> runner_module.RunResult:
        runs.append(options)
        status = int(os.environ["FAKE_STATUS"])
        report = _report(status, masked=status == 4)
        return runner_module.RunResult(scenario, report, [], list(report.verdicts), (Path("reports/demo.md"),))

    monkeypatch.setattr(runner_module, "run_scenario", fake_run)
    return runs


@pytest.mark.parametrize(
    ("status", "env", "expected"),
    [
        (0, {}, {"passed": 1}),
        (1, {}, {"failed": 1}),
        (2, {}, {"failed": 1}),
        (3, {}, {"failed": 1}),
        (4, {}, {"skipped": 1}),
        (4, {"CI": "true"}, {"failed": 1}),
        (4, {"CI": "true", "HARNESS_EXPECT_EMULATION": "1"}, {"passed": 1}),
    ],
    ids=["ok", "expectation-failed", "bad-input", "environment", "masked", "masked-in-ci", "masked-expected"],
)
def test_a_scenario_item_reports_its_verdict(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    fake_runs: list[Any],
    status: int,
    env: dict[str, str],
    expected: dict[str, int],
) -> None:
    _project(pytester)
    monkeypatch.setenv("FAKE_STATUS", str(status))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--harness-artifacts-dir", "evidence")

    assert _outcomes(result) == expected, result.stdout.str()
    assert len(fake_runs) == 1 and fake_runs[0].session == "the shared session"
    assert fake_runs[0].artifacts_dir == Path("evidence")
    out = result.stdout.str()
    if status in (1, 3):
        assert "report: reports/demo.md" in out and "evidence: artifacts/demo-incident-" in out, out
    if status == 4 and "HARNESS_EXPECT_EMULATION" not in env:
        assert "masked by emulation: qemu-aarch64 (F) runs linux/arm64 here" in out, out


def test_is_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("apiVersion: incident-harness/v1\nkind: Scenario\n")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    (tmp_path / "_draft.yaml").write_text("apiVersion: incident-harness/v1\n")
    (tmp_path / "broken.yaml").write_text("{")
    assert [p.name for p in sorted(tmp_path.iterdir()) if plugin.is_scenario_file(p)] == ["s.yaml"]
