"""`python -m harness`: what a user sees and the exit codes CI relies on (no cluster needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli, scenario, tools
from harness.cli import main
from harness.errors import ClusterGone
from harness.runner import ExitStatus

DATA = Path(__file__).parent / "data" / "scenarios"
SEED = scenario.SCENARIO_DIR / "arm64-on-amd64.yaml"


def test_list_shows_every_scenario_with_its_title(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == ExitStatus.OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(scenario.discover())
    seed = next(line for line in lines if line.startswith("arm64-on-amd64 "))
    assert scenario.load(SEED).title in seed
    assert "(scenarios/arm64-on-amd64.yaml)" in seed


def test_list_marks_an_invalid_file_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scenario, "discover", lambda: [SEED, DATA / "unknown-outcome.yaml"])
    assert main(["list"]) == ExitStatus.BAD_INPUT
    out = capsys.readouterr().out
    assert "arm64-on-amd64" in out
    bad = next(line for line in out.splitlines() if line.startswith("unknown-outcome.yaml"))
    assert "INVALID" in bad and "field 'expect.outcome'" in bad and "'CrashLooping'" in bad


def test_list_with_no_scenarios_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(scenario, "discover", lambda: [])
    assert main(["list"]) == ExitStatus.BAD_INPUT
    assert "no scenario files" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("filename", "field"),
    [("unknown-outcome.yaml", "expect.outcome"), ("missing-manifest-file.yaml", "workload.manifests")],
)
def test_reproduce_of_a_bad_scenario_exits_2_naming_file_and_field(
    capsys: pytest.CaptureFixture[str], filename: str, field: str
) -> None:
    path = DATA / filename
    assert main(["reproduce", str(path)]) == 2  # ExitStatus.BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "", "nothing starts: no cluster, no build"
    first, second = captured.err.splitlines()
    assert first.startswith(f"error: {path}: field '{field}'"), first
    assert second.strip().startswith("what to do:") and "scenarios/README.md" in second


def test_reproduce_of_a_missing_scenario_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "no-such-incident"]) == ExitStatus.BAD_INPUT
    err = capsys.readouterr().err
    assert "error: no scenario file no-such-incident" in err
    assert "python -m harness list" in err


def test_an_environment_failure_exits_3_with_cause_and_remedy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def vanished(*args: Any, **kwargs: Any) -> Any:
        raise ClusterGone("the Kubernetes API server stopped answering", "delete the cluster and run again")

    monkeypatch.setattr(cli, "run_scenario", vanished)
    assert main(["reproduce", "arm64-on-amd64", "--quiet"]) == 3  # ExitStatus.ENVIRONMENT
    captured = capsys.readouterr()
    assert "scenario arm64-on-amd64:" in captured.out
    assert captured.err.splitlines() == [
        "error: the Kubernetes API server stopped answering",
        "  what to do: delete the cluster and run again",
    ]
    assert "Traceback" not in captured.err


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_scenario", interrupted)
    assert main(["reproduce", str(SEED), "--quiet"]) == 130  # ExitStatus.INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["reproduce"], ["cluster", "explode"]])
def test_bad_command_lines_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: python -m harness" in capsys.readouterr().err


def test_cluster_kubeconfig_prints_the_private_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "kubeconfig", "--name", "unit-test-cluster"]) == ExitStatus.OK
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tools.cache_dir() / "clusters" / "unit-test-cluster" / "kubeconfig"
    assert printed != Path.home() / ".kube" / "config"


def test_python_dash_m_harness_list_runs() -> None:
    result = tools.run([sys.executable, "-m", "harness", "list"], cwd=tools.REPO_ROOT, timeout=120)
    assert "arm64-on-amd64" in result.stdout
    bad = tools.run(
        [sys.executable, "-m", "harness", "reproduce", str(DATA / "bad-step.yaml")],
        cwd=tools.REPO_ROOT,
        check=False,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "field 'fix.steps[1].restart'" in bad.stderr


def test_exit_codes_are_stable() -> None:
    """CI scripts branch on these numbers: changing one is a breaking change."""
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "EXPECTATION_FAILED": 1,
        "BAD_INPUT": 2,
        "ENVIRONMENT": 3,
        "MASKED_BY_EMULATION": 4,
        "HANGUP": 129,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }
    assert (ExitStatus.HUP, ExitStatus.INT, ExitStatus.TERM) == (129, 130, 143)
