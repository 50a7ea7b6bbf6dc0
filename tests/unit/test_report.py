"""Rendering of evidence lines, Markdown and JSON reports, and their atomic writing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.outcomes import Cause, Evidence, Outcome, Verdict
from harness.report import (
    SCHEMA,
    RunReport,
    StepReport,
    StepStatus,
    VerdictReport,
    format_evidence,
    render_json,
    render_markdown,
    render_terminal,
    write_reports,
)

T0 = datetime(2025, 11, 26, 8, 0, 0, tzinfo=UTC)


def ev(seconds: float, kind: str, subject: str, text: str) -> Evidence:
    return Evidence(T0 + timedelta(seconds=seconds), kind, subject, text, seconds)  # type: ignore[arg-type]


def crash_verdict() -> Verdict:
    cause = Cause(
        reason="exec format error",
        exit_code=1,
        termination_reason="Error",
        message="exec /usr/local/bin/uvicorn: exec format error",
        log_lines=("exec /usr/local/bin/uvicorn: exec format error",),
        exec_format_error=True,
        pod="orders-7d9",
        container="app",
        image="orders-api:v1",
        events=("BackOff: Back-off restarting failed container app in pod orders-7d9",),
    )
    timeline = (
        ev(0.0, "note", "harness", "watching pods app=orders in namespace shop"),
        ev(1.2, "state", "pod/orders-7d9", "Terminated: Error, exit code 1 (restarts 0)"),
        ev(1.3, "log", "pod/orders-7d9", "exec /usr/local/bin/uvicorn: exec format error"),
        ev(12.3, "state", "pod/orders-7d9", "Waiting: CrashLoopBackOff (restarts 2)"),
    )
    return Verdict(
        outcome=Outcome.CRASH_LOOP,
        pods=("orders-7d9",),
        cause=cause,
        restarts=2,
        ready_seen=False,
        phases_seen=frozenset({"Error", "CrashLoopBackOff"}),
        started_at=T0,
        decided_at=T0 + timedelta(seconds=12.4),
        seconds=12.4,
        timeline=timeline,
        summary="CrashLoopBackOff after 12.4 s: exec format error",
        namespace="shop",
        selector="app=orders",
    )


def healthy_verdict() -> Verdict:
    return Verdict(
        outcome=Outcome.HEALTHY,
        pods=("orders-5c6",),
        cause=None,
        restarts=0,
        ready_seen=True,
        phases_seen=frozenset({"Running"}),
        started_at=T0 + timedelta(seconds=60),
        decided_at=T0 + timedelta(seconds=75),
        seconds=15.0,
        timeline=(ev(60.0, "state", "pod/orders-5c6", "Running, ready (restarts 0)"),),
        summary="healthy after 15.0 s: 1 pod(s) ready, restarts 0",
    )


def run_report(**changes: object) -> RunReport:
    fields: dict[str, object] = {
        "scenario": "seed: arm64 image on amd64 nodes",
        "started": T0,
        "finished": T0 + timedelta(seconds=95.5),
        "host_platform": "linux/amd64",
        "node_platform": "linux/amd64",
        "exit_status": 0,
        "steps": (
            StepReport("create cluster", 31.0, StepStatus.OK, "reused incident-harness"),
            StepReport("build image linux/arm64", 4.2, StepStatus.OK, "orders-api:v1 | arm64"),
            StepReport("watch", 12.4, StepStatus.OK),
        ),
        "verdicts": (
            VerdictReport.judge("before fix", Outcome.CRASH_LOOP, crash_verdict()),
            VerdictReport.judge("after fix", {Outcome.HEALTHY}, healthy_verdict()),
        ),
        "symptoms_reproduced": 1,
        "symptoms_total": 1,
        "fix_verified": True,
        "facts": {"Kubernetes": "v1.34.4", "kind": "v0.30.0"},
    }
    fields.update(changes)
    return RunReport(**fields)  # type: ignore[arg-type]


def test_evidence_line_reads_like_the_example() -> None:
    line = format_evidence(ev(12.3, "state", "pod/orders-7d9", "Waiting: CrashLoopBackOff (restarts 2)"))
    assert line == "+12.3s  pod/orders-7d9 state  Waiting: CrashLoopBackOff (restarts 2)"


def test_evidence_offset_from_another_origin_and_one_line_only() -> None:
    e = ev(2.0, "event", "pod/x", "Unhealthy:\n  Readiness probe failed")
    assert format_evidence(e, T0 + timedelta(seconds=5)).startswith("-3.0s ")
    assert "\n" not in format_evidence(e)
    assert format_evidence(e).endswith("Unhealthy: Readiness probe failed")


def test_verdict_report_judges_against_the_expectation() -> None:
    assert VerdictReport.judge("x", Outcome.CRASH_LOOP, crash_verdict()).passed
    assert not VerdictReport.judge("x", {Outcome.HEALTHY, Outcome.RAN_EMULATED}, crash_verdict()).passed


def test_markdown_tells_the_story() -> None:
    md = render_markdown(run_report())
    assert md.startswith("# Incident reproduction: seed: arm64 image on amd64 nodes\n")
    assert "**PASSED — symptoms reproduced 1/1; fix verified**" in md
    assert "| Kubernetes | v1.34.4 |" in md
    assert "orders-api:v1 \\| arm64" in md  # a pipe inside a cell does not break the table
    assert "### 1. before fix: PASS" in md
    assert "- Expected: CrashLoopBackOff" in md
    assert "**exec format error**" in md
    assert "```text\nexec /usr/local/bin/uvicorn: exec format error\n```" in md
    assert "+12.3s  pod/orders-7d9 state  Waiting: CrashLoopBackOff (restarts 2)" in md
    assert "### 2. after fix: PASS" in md
    assert "States seen: CrashLoopBackOff, Error" in md


def test_markdown_warns_of_emulation_and_errors() -> None:
    md = render_markdown(
        run_report(
            exit_status=3,
            emulation="qemu-aarch64 is registered: arm64 images run emulated on this host",
            error="the Kubernetes API server stopped answering\n  what to do: recreate the cluster",
            fix_verified=None,
        )
    )
    assert "**FAILED (exit status 3)" in md
    assert "> **Emulation:** qemu-aarch64 is registered" in md
    assert "> **Error:**" in md and ">   what to do: recreate the cluster" in md
    assert "| Fix verified | not attempted |" in md


def test_log_lines_with_backticks_get_a_longer_fence() -> None:
    verdict = crash_verdict()
    assert verdict.cause is not None
    cause = Cause(**{**verdict.cause.__dict__, "log_lines": ("```python", "boom")})
    changed = Verdict(**{**verdict.__dict__, "cause": cause})
    md = render_markdown(run_report(verdicts=(VerdictReport.judge("x", Outcome.CRASH_LOOP, changed),)))
    assert "````text\n```python\nboom\n````" in md


def test_json_is_complete_and_stable() -> None:
    data = json.loads(render_json(run_report()))
    assert data["schema"] == SCHEMA
    assert data["passed"] is True
    assert data["symptoms"] == {"reproduced": 1, "total": 1}
    assert data["started"] == "2025-11-26T08:00:00.000Z"
    assert data["seconds"] == 95.5
    assert [s["status"] for s in data["steps"]] == ["ok", "ok", "ok"]
    first = data["verdicts"][0]
    assert first["expected"] == ["crash_loop"]
    assert first["verdict"]["outcome"] == "crash_loop"
    assert first["verdict"]["outcome_label"] == "CrashLoopBackOff"
    assert first["verdict"]["phases_seen"] == ["CrashLoopBackOff", "Error"]
    assert first["verdict"]["cause"]["exec_format_error"] is True
    assert first["verdict"]["timeline"][3] == {
        "timestamp": "2025-11-26T08:00:12.300Z",
        "elapsed": 12.3,
        "kind": "state",
        "subject": "pod/orders-7d9",
        "text": "Waiting: CrashLoopBackOff (restarts 2)",
    }
    assert data["verdicts"][1]["verdict"]["cause"] is None
    assert render_json(run_report()) == render_json(run_report())


def test_terminal_summary_marks_failures() -> None:
    text = render_terminal(
        run_report(
            exit_status=1,
            fix_verified=False,
            verdicts=(VerdictReport.judge("after fix", Outcome.HEALTHY, crash_verdict()),),
        )
    )
    assert text.splitlines()[0] == (
        "seed: arm64 image on amd64 nodes: FAILED (exit status 1) — symptoms reproduced 1/1; fix NOT verified"
    )
    assert "FAIL after fix: expected Healthy, observed CrashLoopBackOff" in text


def test_reports_are_written_atomically(tmp_path: Path) -> None:
    run = run_report()
    target = tmp_path / "reports" / "nested"
    md, js = write_reports(run, target)
    assert md.name == "seed-arm64-image-on-amd64-nodes-20251126T080000Z.md"
    assert js.with_suffix(".md") == md
    assert md.read_text() == render_markdown(run)
    assert json.loads(js.read_text())["scenario"] == run.scenario
    assert sorted(p.name for p in target.iterdir()) == sorted([md.name, js.name])  # no temp files left
    write_reports(run_report(exit_status=2), target)  # overwrites in place
    assert json.loads(js.read_text())["exit_status"] == 2


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_reports(run_report(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_verdicts_separate_evidence_is_reported_where_the_verdict_has_it() -> None:
    """Reasons by kind, exit codes, probe failures, health evidence and the images that ran."""
    import dataclasses

    from harness.outcomes.model import HealthEvidence, ImageRun

    detailed = dataclasses.replace(
        crash_verdict(),
        waiting_reasons_seen=frozenset({"CrashLoopBackOff"}),
        terminated_reasons_seen=frozenset({"Error"}),
        exit_codes_seen=frozenset({1}),
        probe_failures_seen=frozenset({"liveness"}),
        health=HealthEvidence("kubelet prober metrics", "Liveness 3 successes", 9.5),
        images_ran=(ImageRun("orders-7d9", "app", "orders-api:v1", "sha256:abc", "kind-control-plane"),),
    )
    run = run_report(verdicts=(VerdictReport.judge("incident", Outcome.CRASH_LOOP, detailed),))

    data = json.loads(render_json(run))["verdicts"][0]["verdict"]
    assert data["waiting_reasons_seen"] == ["CrashLoopBackOff"] and data["terminated_reasons_seen"] == ["Error"]
    assert data["exit_codes_seen"] == [1] and data["probe_failures_seen"] == ["liveness"]
    assert data["health"] == {"source": "kubelet prober metrics", "detail": "Liveness 3 successes", "seconds": 9.5}
    assert data["images_ran"][0]["image_id"] == "sha256:abc"
    markdown = render_markdown(run)
    assert "- Terminated reasons seen: Error" in markdown and "- Probe failures seen: liveness" in markdown
    assert "kubelet prober metrics" in markdown and "`orders-api:v1` (sha256:abc)" in markdown
    assert "another CPU architecture" not in markdown, "the report does not infer a cause from the log alone"


def test_every_report_records_the_profile_and_the_kubelets_settings_read_back() -> None:
    profile = {
        "cluster profile": "fast",
        "kubelet maxContainerRestartPeriod": "1s",
        "kubelet KubeletCrashLoopBackOffMax": "on",
        "kubelet version": "v1.34.4",
        "kubelet settings read from": "configz of 1 node",
    }
    run = run_report(profile=profile)
    markdown = render_markdown(run)
    assert "| cluster profile | fast |" in markdown
    assert "| kubelet maxContainerRestartPeriod | 1s |" in markdown
    data = json.loads(render_json(run))
    assert data["profile"] == profile
    assert "cluster profile: fast; kubelet maxContainerRestartPeriod: 1s" in render_terminal(run)
    assert json.loads(render_json(run_report()))["profile"] == {}  # no cluster reached: nothing claimed
