"""Scenario files are test items: what a project that opted in gets from `pytest`, on the real cluster.

The repository's own scenario files are collected by the plugin as items (run them with
`pytest scenarios`); this file checks what such an item reports, from a throwaway project that
has its own Dockerfile, manifests and scenarios and no file of this repository: a scenario that
reproduces passes (or, on a host that emulates the foreign platform, is skipped as masked), and
one whose expectation does not hold fails with its verdict, its report files and its evidence.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from harness import tools
from harness.session import Session
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

# pytester points HOME at a temporary directory; the inner session must still find the cached
# kind, kubectl, images and the shared cluster's kubeconfig, which live under the real cache.
CACHE = tools.cache_dir()

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: main
          image: set-by-harness
{command}
"""

SCENARIO = """
apiVersion: incident-harness/v1
kind: Scenario
name: {name}
title: {title}
images:
  app:
    context: app
    platform: {platform}
    buildArgs: {{BASE: "{base}"}}
workload:
  manifests: [k8s/{name}.yaml]
  image: app
expect:
  outcome: {outcome}
  timeout: 90
  symptoms:
    - {symptom}
"""


def _project(root: Path, session: Session) -> None:
    native = ensure_busybox_httpd(str(session.node_platform)).ref
    foreign = ensure_busybox_httpd(str(session.foreign)).ref
    (root / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "0"\n\n[tool.incident-harness]\n')
    (root / "app").mkdir()
    (root / "app" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (root / "k8s").mkdir()
    (root / "scenarios").mkdir()
    exits = '          command: ["/bin/busybox", "sh", "-c", "echo goodbye-from-main >&2; exit 3"]'
    cases = {
        "foreign-build": ("An image for the wrong CPU", "foreign", foreign, "CrashLoopBackOff", ""),
        "claims-healthy": ("A crashing service said to be healthy", "native", native, "Healthy", exits),
    }
    for name, (title, platform, base, outcome, command) in cases.items():
        (root / "k8s" / f"{name}.yaml").write_text(DEPLOYMENT.format(name=name, command=command))
        symptom = "previousLogContains: exec format error" if outcome != "Healthy" else "neverReady: false"
        (root / "scenarios" / f"{name}.yaml").write_text(
            textwrap.dedent(
                SCENARIO.format(name=name, title=title, platform=platform, base=base, outcome=outcome, symptom=symptom)
            )
        )


def test_scenario_items_report_verdict_reports_and_evidence(
    harness_session: Session, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(CACHE))
    _project(pytester.path, harness_session)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("HARNESS_REQUIRE_E2E", "0")
    artifacts, reports = tmp_path / "artifacts", tmp_path / "reports"

    result = pytester.runpytest_subprocess(
        "--harness-keep-cluster",
        "--harness-cluster",
        harness_session.cluster.name,
        "--harness-artifacts-dir",
        str(artifacts),
        "--harness-report-dir",
        str(reports),
        "-p",
        "no:cacheprovider",
        "-rs",
        "-v",
        timeout=600,
    )
    output = result.stdout.str()

    masked = harness_session.emulated([ensure_busybox_httpd(str(harness_session.foreign)).ref])
    outcomes = {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "skipped")}
    if masked:
        assert outcomes == {"skipped": 1, "failed": 1}, output
        assert "masked by emulation" in output, output
    else:
        assert outcomes == {"passed": 1, "failed": 1}, output
        assert re.search(r"scenarios/foreign-build\.yaml::foreign-build PASSED", output), output

    # The failed item names its verdict, its reports and its evidence.
    assert re.search(r"scenarios/claims-healthy\.yaml::claims-healthy FAILED", output), output
    assert "expected Healthy, observed CrashLoopBackOff" in output, output
    report_json = next(Path(p) for p in re.findall(r"report: (\S+\.json)", output) if "claims-healthy" in p)
    data = json.loads(report_json.read_text())
    assert data["exit_status"] == 1 and data["passed"] is False, data
    assert data["verdicts"][0]["verdict"]["outcome"] == "crash_loop", data["verdicts"][0]
    # The item's own line (a cause says "evidence: ..." too, naming what it rests on).
    (evidence,) = re.findall(r"^evidence: (\S+)$", output, re.MULTILINE)
    describe = (Path(evidence) / "describe-pods.txt").read_text()
    assert re.search(r"Exit Code:\s+3", describe), describe
    assert "goodbye-from-main" in (Path(evidence) / "logs-previous.txt").read_text()
    assert Path(evidence).parent == artifacts

    # Only the failed run left evidence; every run wrote its reports.
    written = sorted(re.sub(r"-\d{8}T\d{6}Z\.json$", "", p.name) for p in reports.glob("*.json"))
    assert written == ["claims-healthy", "foreign-build"], written


REJECTED = {
    "invalid-value": (
        DEPLOYMENT.format(name="invalid-value", command="          ports: [{containerPort: 99999999}]"),
        "Deployment/invalid-value: rejected by the API server (HTTP 422",
    ),
    "unknown-kind": (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gadget}\n---\n"
        + DEPLOYMENT.format(name="unknown-kind", command=""),
        "Widget/gadget: the API server knows no kind 'Widget'",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_manifest_the_api_server_rejects_is_bad_input_naming_file_and_object(
    case: str, harness_session: Session, tmp_path: Path
) -> None:
    from harness import runner, scenario

    manifest, expected = REJECTED[case]
    (tmp_path / "pyproject.toml").write_text("[tool.incident-harness]\n")  # the project its paths resolve in
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / f"{case}.yaml").write_text(manifest)
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / f"{case}.yaml"
    native = ensure_busybox_httpd(str(harness_session.node_platform)).ref
    path.write_text(
        textwrap.dedent(
            SCENARIO.format(
                name=case,
                title="rejected",
                platform="native",
                base=native,
                outcome="Healthy",
                symptom="neverReady: false",
            )
        )
    )
    said: list[str] = []
    result = runner.run_scenario(
        scenario.load(path),
        runner.RunOptions(session=harness_session, report_dir=tmp_path / "reports", say=said.append),
    )

    error = result.report.error or ""
    assert result.exit_status is runner.ExitStatus.BAD_INPUT, "\n".join(said)
    assert error.startswith(f"{tmp_path / 'k8s' / case}.yaml: {expected}"), error
    assert not result.verdicts and not result.report.artifacts
