"""Reports of a run: a live terminal timeline, a Markdown report for people, a JSON one for tools."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final, TextIO

from harness.outcomes import Cause, Evidence, Outcome, Verdict

SCHEMA: Final = "incident-harness/run-report/v1"
_KIND_WIDTH: Final = 5


class StepStatus(Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepReport:
    """One step of a run (create cluster, build image, load, apply, watch, fix ...)."""

    name: str
    seconds: float
    status: StepStatus
    detail: str = ""


@dataclass(frozen=True)
class PredictionReport:
    """What the image's bytes predict one container does on the nodes, before anything is deployed."""

    container: str
    init: bool
    image: str  # the reference the container runs
    outcome: str  # harness.inspect.Expected's value: "runs", "exec format error", ..., "unknown"
    reason: str  # one line
    manifest: str | None = None  # the platform label of the manifest judged (an index's entry)
    restart_policy: str = "Always"  # the pod's: what the kubelet does when the container exits

    @property
    def line(self) -> str:
        kind = "init container" if self.init else "container"
        return f"{kind} {self.container} ({self.image}): {self.outcome} — {self.reason}"


@dataclass(frozen=True)
class VerdictReport:
    """One watch of the workload, what was expected of it, and whether it matched.

    predicted and disagreement set the prediction beside the observation: information only,
    they never change `passed` (either the harness or the cluster surprised us).
    """

    label: str
    expected: frozenset[Outcome]
    verdict: Verdict
    passed: bool
    predicted: str = ""  # "CrashLoopBackOff (init container migrate: exec format error — ...)", "" if none
    disagreement: str | None = None  # "prediction disagrees: predicted X (reason), observed Y"

    @classmethod
    def judge(cls, label: str, expected: Outcome | Iterable[Outcome], verdict: Verdict) -> VerdictReport:
        wanted = frozenset({expected}) if isinstance(expected, Outcome) else frozenset(expected)
        return cls(label, wanted, verdict, verdict.outcome in wanted)


MASKED_BY_EMULATION = 4  # harness.runner.ExitStatus.MASKED_BY_EMULATION


@dataclass(frozen=True)
class RunReport:
    """Everything a run found. Generic: the runner fills what applies and leaves the rest empty."""

    scenario: str
    started: datetime
    finished: datetime
    host_platform: str
    node_platform: str
    exit_status: int
    emulation: str | None = None
    steps: tuple[StepReport, ...] = ()
    verdicts: tuple[VerdictReport, ...] = ()
    symptoms_reproduced: int = 0
    symptoms_total: int = 0
    fix_verified: bool | None = None
    error: str | None = None
    facts: Mapping[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    predictions: tuple[PredictionReport, ...] = ()
    # The cluster's profile and its kubelets' effective settings, read from configz
    # (harness.session.Session.profile_facts: "cluster profile", "kubelet ..."); empty: no cluster reached.
    profile: Mapping[str, str] = field(default_factory=dict)

    @property
    def disagreements(self) -> tuple[str, ...]:
        return tuple(vr.disagreement for vr in self.verdicts if vr.disagreement)

    @property
    def seconds(self) -> float:
        return round((self.finished - self.started).total_seconds(), 3)

    @property
    def passed(self) -> bool:
        return self.exit_status == 0

    def headline(self) -> str:
        """One line: the result, the symptoms reproduced and the fix."""
        if self.exit_status == MASKED_BY_EMULATION:
            return (
                f"MASKED BY EMULATION (exit status {self.exit_status}) — the foreign image ran under an "
                "emulator on this host, so the incident cannot show here"
            )
        parts = ["PASSED" if self.passed else f"FAILED (exit status {self.exit_status})"]
        if self.symptoms_total:
            parts.append(f"symptoms reproduced {self.symptoms_reproduced}/{self.symptoms_total}")
        if self.fix_verified is True:
            parts.append("fix verified")
        elif self.fix_verified is False:
            parts.append("fix NOT verified")
        if self.emulation:
            parts.append("emulation present")
        if self.disagreements:
            parts.append("prediction disagrees")
        status, details = parts[0], parts[1:]
        return f"{status} — {'; '.join(details)}" if details else status


# ---------------------------------------------------------------------------------------------
# Terminal


def _offset(seconds: float) -> str:
    return f"{'-' if seconds < 0 else '+'}{abs(seconds):.1f}s"


def format_evidence(e: Evidence, origin: datetime | None = None) -> str:
    """One terminal line: '+12.3s  pod/orders-7d9 state  Waiting: CrashLoopBackOff (restarts 2)'.

    The offset counts from origin when given, else from the start of the watch (e.elapsed).
    """
    seconds = (e.timestamp - origin).total_seconds() if origin is not None else e.elapsed
    text = " ".join(e.text.split()) if e.kind != "log" else e.text.replace("\n", " ").rstrip()
    return f"{_offset(seconds):<7} {e.subject} {e.kind:<{_KIND_WIDTH}}  {text}"


def render_timeline(evidence: Iterable[Evidence], origin: datetime | None = None) -> str:
    return "\n".join(format_evidence(e, origin) for e in evidence)


def live_printer(stream: TextIO) -> Callable[[Evidence], None]:
    """An on_evidence callback for watch_workload that prints each line as it is seen."""

    def show(e: Evidence) -> None:
        stream.write(format_evidence(e) + "\n")
        stream.flush()

    return show


def render_terminal(run: RunReport) -> str:
    """The end-of-run summary for the terminal (the timeline was printed live)."""
    lines = [f"{run.scenario}: {run.headline()}"]
    if run.profile:
        lines.append("  " + "; ".join(f"{k}: {v}" for k, v in run.profile.items()))
    if run.emulation:
        lines.append(f"  emulation: {run.emulation}")
    for step in run.steps:
        detail = f"  {step.detail}" if step.detail else ""
        lines.append(f"  [{step.status.value:<7}] {step.name} ({step.seconds:.1f} s){detail}")
    for p in run.predictions:
        lines.append(f"  predicted: {p.line}")
    for vr in run.verdicts:
        mark = "ok  " if vr.passed else "FAIL"
        lines.append(
            f"  {mark} {vr.label}: expected {_expected(vr.expected)}, observed {vr.verdict.outcome.label}"
            f" — {vr.verdict.summary}"
        )
        if vr.disagreement:
            lines.append(f"  !!   {vr.label}: {vr.disagreement}")
        elif vr.predicted:
            lines.append(f"       {vr.label}: prediction agrees: {vr.predicted}")
    if run.error:
        lines.append(f"  error: {run.error}")
    return "\n".join(lines)


def _expected(expected: Iterable[Outcome]) -> str:
    return " or ".join(sorted(o.label for o in expected)) or "(nothing)"


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _fence(body: str, info: str = "text") -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body.rstrip()}\n{fence}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cause_markdown(cause: Cause, node_platform: str) -> list[str]:
    where = f"`{cause.pod}`" + (f", container `{cause.container}`" if cause.container else "")
    out = ["**Cause**", "", f"- Pod: {where}", f"- Reason: {_cell(cause.reason)}"]
    if cause.image:
        out.append(f"- Image: `{cause.image}`")
    if cause.exit_code is not None:
        term = f" ({_cell(cause.termination_reason)})" if cause.termination_reason else ""
        out.append(f"- Exit code: {cause.exit_code}{term}")
    if cause.exec_format_error:
        # Only what was seen: the kernel refused to execute the entrypoint. Whether the image is for
        # another CPU is the cause's to say (from the image's platform), not this line's.
        out.append(
            "- **exec format error**: the node's kernel could not execute the container's entrypoint "
            f"(node platform {node_platform or 'unknown'}); see the reason above for what the evidence shows."
        )
    if cause.message:
        out.append(f"- Message: {_cell(' '.join(cause.message.split()))}")
    if cause.events:
        out.append("- Warning events:")
        out.extend(f"  - {_cell(text)}" for text in cause.events)
    if cause.log_lines:
        out += ["", "Previous container log (last lines):", "", _fence("\n".join(cause.log_lines))]
    return out


def _verdict_markdown(index: int, vr: VerdictReport, node_platform: str) -> list[str]:
    v = vr.verdict
    mark = "PASS" if vr.passed else "FAIL"
    out = [
        f"### {index}. {vr.label}: {mark}",
        "",
        f"- Expected: {_expected(vr.expected)}",
        f"- Observed: **{v.outcome.label}** after {v.seconds:.1f} s",
        *([f"- Predicted: {_cell(vr.predicted)}"] if vr.predicted else []),
        *([f"- **{_cell(vr.disagreement)}**"] if vr.disagreement else []),
        f"- Summary: {_cell(v.summary)}",
        f"- Pods: {', '.join(f'`{p}`' for p in v.pods) or '(none)'}",
        f"- Restarts (max): {v.restarts}; ready seen: {'yes' if v.ready_seen else 'no'}",
        f"- States seen: {', '.join(sorted(v.phases_seen)) or '(none)'}",
        *_seen_lines(v),
    ]
    if v.selector or v.namespace:
        out.append(f"- Watched: `{v.selector or '(all pods)'}` in namespace `{v.namespace}`")
    if v.last_state and v.outcome is Outcome.TIMEOUT:
        out.append(f"- Last state: {_cell(v.last_state)}")
    out.append("")
    if v.cause is not None:
        out += [*_cause_markdown(v.cause, node_platform), ""]
    if v.timeline:
        out += [
            f"<details><summary>Timeline ({len(v.timeline)} {'entry' if len(v.timeline) == 1 else 'entries'})</summary>",
            "",
            _fence(render_timeline(v.timeline, v.started_at)),
            "",
            "</details>",
            "",
        ]
    return out


_SEEN_FIELDS: Final = (
    ("waiting_reasons_seen", "Waiting reasons seen"),
    ("terminated_reasons_seen", "Terminated reasons seen"),
    ("exit_codes_seen", "Exit codes seen"),
    ("probe_failures_seen", "Probe failures seen"),
)


def _seen(v: Verdict, name: str) -> list[str] | None:
    """A Verdict's set field as sorted text (None where this Verdict has no such field)."""
    value = getattr(v, name, None)
    return None if value is None else sorted(str(x) for x in value)


def _seen_lines(v: Verdict) -> list[str]:
    out = []
    for name, label in _SEEN_FIELDS:
        values = _seen(v, name)
        if values:
            out.append(f"- {label}: {', '.join(values)}")
    health = getattr(v, "health", None)
    if health is not None:
        out.append(
            f"- Health evidence: {_cell(getattr(health, 'source', ''))}: {_cell(getattr(health, 'detail', ''))}"
            f" (at {float(getattr(health, 'seconds', 0.0)):.1f} s)"
        )
    for run in getattr(v, "images_ran", ()) or ():
        out.append(
            f"- Image ran: `{getattr(run, 'image', '')}` ({getattr(run, 'image_id', '') or 'no image ID'}"
            f"{'; image ' + run.config if getattr(run, 'config', '') else ''}"
            f"{', ' + run.platform if getattr(run, 'platform', '') else ''}) in pod "
            f"`{getattr(run, 'pod', '')}` container `{getattr(run, 'container', '')}` on `{getattr(run, 'node', '')}`"
        )
    return out


def render_markdown(run: RunReport) -> str:
    out = [f"# Incident reproduction: {run.scenario}", "", f"**{run.headline()}**", ""]
    if run.emulation:
        out += [f"> **Emulation:** {_cell(run.emulation)}", ""]
    if run.error:
        out += ["> **Error:**", ">", *[f"> {line}" for line in run.error.splitlines()], ""]
    rows = [
        ("Started", _when(run.started)),
        ("Finished", f"{_when(run.finished)} ({run.seconds:.1f} s)"),
        ("Host platform", run.host_platform or "unknown"),
        ("Node platform", run.node_platform or "unknown"),
        *run.profile.items(),
        *sorted(run.facts.items()),
    ]
    if run.symptoms_total:
        rows.append(("Symptoms reproduced", f"{run.symptoms_reproduced}/{run.symptoms_total}"))
    fix = {True: "yes", False: "no", None: "not attempted"}[run.fix_verified]
    rows += [("Fix verified", fix), ("Exit status", str(run.exit_status))]
    out += ["| | |", "|---|---|", *[f"| {_cell(k)} | {_cell(v)} |" for k, v in rows], ""]
    if run.steps:
        out += ["## Steps", "", "| # | Step | Status | Seconds | Detail |", "|---|---|---|---:|---|"]
        for i, step in enumerate(run.steps, 1):
            out.append(
                f"| {i} | {_cell(step.name)} | {step.status.value} | {step.seconds:.1f} | {_cell(step.detail)} |"
            )
        out.append("")
    if run.predictions:
        out += [
            "## Prediction (from the images' bytes, before deploy)",
            "",
            "| Container | Init | Image | Manifest | Predicted | Reason |",
            "|---|---|---|---|---|---|",
        ]
        for p in run.predictions:
            out.append(
                f"| {_cell(p.container)} | {'yes' if p.init else 'no'} | `{_cell(p.image)}` | {_cell(p.manifest or '')}"
                f" | **{_cell(p.outcome)}** | {_cell(p.reason)} |"
            )
        out.append("")
    if run.verdicts:
        out += ["## Verdicts", ""]
        for i, vr in enumerate(run.verdicts, 1):
            out += _verdict_markdown(i, vr, run.node_platform)
    if run.artifacts:
        out += ["## Artifacts", "", *[f"- `{a}`" for a in run.artifacts], ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# JSON


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def evidence_to_dict(e: Evidence) -> dict[str, Any]:
    return {"timestamp": _iso(e.timestamp), "elapsed": e.elapsed, "kind": e.kind, "subject": e.subject, "text": e.text}


def cause_to_dict(c: Cause) -> dict[str, Any]:
    return {
        "reason": c.reason,
        "exit_code": c.exit_code,
        "termination_reason": c.termination_reason,
        "message": c.message,
        "log_lines": list(c.log_lines),
        "exec_format_error": c.exec_format_error,
        "pod": c.pod,
        "container": c.container,
        "image": c.image,
        "events": list(c.events),
    }


def verdict_to_dict(v: Verdict) -> dict[str, Any]:
    data: dict[str, Any] = {
        "outcome": v.outcome.value,
        "outcome_label": v.outcome.label,
        "summary": v.summary,
        "namespace": v.namespace,
        "selector": v.selector,
        "pods": list(v.pods),
        "restarts": v.restarts,
        "ready_seen": v.ready_seen,
        "phases_seen": sorted(v.phases_seen),
        "started_at": _iso(v.started_at),
        "decided_at": _iso(v.decided_at),
        "seconds": v.seconds,
        "last_state": v.last_state,
        "cause": cause_to_dict(v.cause) if v.cause is not None else None,
        "timeline": [evidence_to_dict(e) for e in v.timeline],
    }
    for name, _label in _SEEN_FIELDS:
        values = getattr(v, name, None)
        if values is not None:
            data[name] = sorted(values)
    health = getattr(v, "health", None)
    if health is not None:
        data["health"] = {
            "source": getattr(health, "source", ""),
            "detail": getattr(health, "detail", ""),
            "seconds": getattr(health, "seconds", 0.0),
        }
    ran = getattr(v, "images_ran", None)
    if ran is not None:
        data["images_ran"] = [
            {k: getattr(r, k, "") for k in ("pod", "container", "image", "image_id", "config", "platform", "node")}
            for r in ran
        ]
    return data


def run_to_dict(run: RunReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "scenario": run.scenario,
        "passed": run.passed,
        "exit_status": run.exit_status,
        "started": _iso(run.started),
        "finished": _iso(run.finished),
        "seconds": run.seconds,
        "host_platform": run.host_platform,
        "node_platform": run.node_platform,
        "emulation": run.emulation,
        "symptoms": {"reproduced": run.symptoms_reproduced, "total": run.symptoms_total},
        "fix_verified": run.fix_verified,
        "error": run.error,
        "profile": dict(run.profile),
        "facts": dict(sorted(run.facts.items())),
        "steps": [
            {"name": s.name, "seconds": s.seconds, "status": s.status.value, "detail": s.detail} for s in run.steps
        ],
        "verdicts": [
            {
                "label": vr.label,
                "expected": sorted(o.value for o in vr.expected),
                "passed": vr.passed,
                "predicted": vr.predicted or None,
                "prediction_disagrees": vr.disagreement,
                "verdict": verdict_to_dict(vr.verdict),
            }
            for vr in run.verdicts
        ],
        "prediction": [
            {
                "container": p.container,
                "init": p.init,
                "image": p.image,
                "manifest": p.manifest,
                "outcome": p.outcome,
                "reason": p.reason,
            }
            for p in run.predictions
        ],
        "artifacts": list(run.artifacts),
    }


def render_json(run: RunReport) -> str:
    return json.dumps(run_to_dict(run), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Files


def report_stem(run: RunReport) -> str:
    """File name without extension: the scenario's name made file-safe, and the start time."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run.scenario).strip("-.") or "run"
    return f"{slug}-{run.started.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _write_atomic(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_reports(run: RunReport, directory: Path) -> tuple[Path, Path]:
    """Write <scenario>-<start>.md and .json into directory (created if needed), each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = report_stem(run)
    markdown, data = directory / f"{stem}.md", directory / f"{stem}.json"
    _write_atomic(data, render_json(run))
    _write_atomic(markdown, render_markdown(run))
    return markdown, data
