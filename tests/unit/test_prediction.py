"""Prediction beside observation: the outcome a predicted exec implies, the container that decides,
the disagreement line, and how the reports show them (never changing whether a run passed)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from harness import cli, inspect
from harness.inspect import Expected as Predicted
from harness.outcomes import Cause, Outcome, Verdict
from harness.report import PredictionReport, RunReport, VerdictReport, render_json, render_markdown, render_terminal
from harness.runner import ExitStatus, compare_prediction, decisive_prediction, implied_outcomes

T0 = datetime(2025, 11, 26, 8, 0, 0, tzinfo=UTC)
EXITS_AT_ONCE = [
    Predicted.EXEC_FORMAT_ERROR,
    Predicted.NO_SUCH_FILE,
    Predicted.PERMISSION_DENIED,
    Predicted.BAD_INTERPRETER,
    Predicted.EXEC_FAILS,
    Predicted.EXITS,
]


def verdict(outcome: Outcome, *, exec_format_error: bool = False) -> Verdict:
    cause = None
    if exec_format_error:
        cause = Cause(
            reason="exec format error",
            exit_code=1,
            termination_reason="Error",
            message="",
            log_lines=("exec /app/server: exec format error",),
            exec_format_error=True,
            pod="web-1",
            container="web",
            image="web:v1",
            events=(),
        )
    return Verdict(
        outcome=outcome,
        pods=("web-1",),
        cause=cause,
        restarts=2,
        ready_seen=outcome is Outcome.HEALTHY,
        phases_seen=frozenset(),
        started_at=T0,
        decided_at=T0 + timedelta(seconds=5),
        seconds=5.0,
        timeline=(),
        summary=f"{outcome.label} after 5.0 s",
    )


def pred(outcome: Predicted, *, container: str = "web", init: bool = False, policy: str = "Always") -> PredictionReport:
    return PredictionReport(container, init, f"{container}:v1", outcome.value, f"because of {container}", None, policy)


# -- the mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("predicted", EXITS_AT_ONCE)
def test_a_process_that_cannot_start_implies_a_crash_loop_init_crash_loop_or_failed(predicted: Predicted) -> None:
    assert implied_outcomes(predicted, init=False) == {Outcome.CRASH_LOOP}
    assert implied_outcomes(predicted, init=False, restart_policy="OnFailure") == {Outcome.CRASH_LOOP}
    assert implied_outcomes(predicted, init=True) == {Outcome.INIT_CRASH_LOOP}
    assert implied_outcomes(predicted, init=False, restart_policy="Never") == {Outcome.FAILED}
    assert implied_outcomes(predicted, init=True, restart_policy="Never") == {Outcome.FAILED}


def test_emulated_pull_runs_and_unknown() -> None:
    assert implied_outcomes(Predicted.RUNS_EMULATED, init=False) == {Outcome.RAN_EMULATED}
    assert implied_outcomes(Predicted.CANNOT_PULL, init=True) == {Outcome.IMAGE_PULL}
    runs = implied_outcomes(Predicted.RUNS, init=False)
    assert runs is not None
    assert {Outcome.HEALTHY, Outcome.NOT_READY, Outcome.COMPLETE, Outcome.CRASH_LOOP} <= runs
    assert Outcome.RAN_EMULATED not in runs and Outcome.IMAGE_PULL not in runs
    assert implied_outcomes(Predicted.UNKNOWN, init=False) is None


def test_every_predicted_outcome_is_mapped_or_explicitly_undecided() -> None:
    for predicted in Predicted:
        implied = implied_outcomes(predicted, init=False)
        assert (implied is None) == (predicted is Predicted.UNKNOWN)


# -- which container decides ------------------------------------------------------------------


def test_the_first_init_container_that_cannot_start_decides() -> None:
    preds = [
        pred(Predicted.RUNS, container="setup", init=True),
        pred(Predicted.EXEC_FORMAT_ERROR, container="migrate", init=True),
        pred(Predicted.NO_SUCH_FILE, container="web"),
    ]
    decided = decisive_prediction(preds)
    assert decided is not None and decided.container == "migrate"


def test_a_failing_main_container_outranks_an_emulated_one_and_unknown_is_not_guessed() -> None:
    preds = [pred(Predicted.RUNS_EMULATED, container="side"), pred(Predicted.EXEC_FORMAT_ERROR, container="web")]
    assert decisive_prediction(preds) == preds[1]
    assert decisive_prediction([pred(Predicted.RUNS), pred(Predicted.RUNS_EMULATED, container="side")]) is not None
    assert decisive_prediction([pred(Predicted.RUNS), pred(Predicted.UNKNOWN, container="x")]) == pred(
        Predicted.UNKNOWN, container="x"
    )
    assert decisive_prediction([]) is None


# -- agreement and disagreement ------------------------------------------------------------------


def test_agreement_has_no_disagreement_line() -> None:
    predicted, disagreement = compare_prediction([pred(Predicted.EXEC_FORMAT_ERROR)], verdict(Outcome.CRASH_LOOP))
    assert disagreement is None
    assert predicted.startswith("CrashLoopBackOff (container web: exec format error — because of web)")
    init = [pred(Predicted.RUNS), pred(Predicted.EXEC_FORMAT_ERROR, container="migrate", init=True)]
    assert compare_prediction(init, verdict(Outcome.INIT_CRASH_LOOP))[1] is None
    assert compare_prediction([pred(Predicted.NO_SUCH_FILE, policy="Never")], verdict(Outcome.FAILED))[1] is None
    assert compare_prediction([pred(Predicted.RUNS)], verdict(Outcome.HEALTHY))[1] is None
    assert compare_prediction([pred(Predicted.RUNS)], verdict(Outcome.NOT_READY))[1] is None
    assert compare_prediction([pred(Predicted.RUNS_EMULATED)], verdict(Outcome.RAN_EMULATED))[1] is None


def test_disagreement_names_prediction_reason_and_observation() -> None:
    _, line = compare_prediction([pred(Predicted.EXEC_FORMAT_ERROR)], verdict(Outcome.HEALTHY))
    assert line == (
        "prediction disagrees: predicted CrashLoopBackOff (container web: exec format error — because of web), "
        "observed Healthy"
    )
    _, init = compare_prediction([pred(Predicted.EXEC_FORMAT_ERROR, init=True)], verdict(Outcome.CRASH_LOOP))
    assert init is not None and init.endswith("observed CrashLoopBackOff") and "Init:CrashLoopBackOff" in init


def test_runs_is_contradicted_by_emulation_a_pull_failure_or_an_exec_format_error() -> None:
    for outcome in (Outcome.RAN_EMULATED, Outcome.IMAGE_PULL):
        assert compare_prediction([pred(Predicted.RUNS)], verdict(outcome))[1] is not None
    crashed = verdict(Outcome.CRASH_LOOP, exec_format_error=True)
    assert compare_prediction([pred(Predicted.RUNS)], crashed)[1] is not None
    # An app crashing for its own reasons does not contradict "the kernel will run it".
    assert compare_prediction([pred(Predicted.RUNS)], verdict(Outcome.CRASH_LOOP))[1] is None


def test_unknown_and_no_prediction_compare_nothing() -> None:
    text, line = compare_prediction([pred(Predicted.UNKNOWN)], verdict(Outcome.HEALTHY))
    assert line is None and text.startswith("unknown (")
    assert compare_prediction([], verdict(Outcome.HEALTHY)) == ("", None)
    odd = replace(pred(Predicted.RUNS), outcome="something new")
    assert compare_prediction([odd], verdict(Outcome.HEALTHY))[1] is None


# -- reports ----------------------------------------------------------------------------------


def run_report(disagreement: str | None) -> RunReport:
    vr = VerdictReport.judge("incident", Outcome.HEALTHY, verdict(Outcome.HEALTHY))
    vr = replace(
        vr, predicted="CrashLoopBackOff (container web: exec format error — arm64 ELF)", disagreement=disagreement
    )
    return RunReport(
        scenario="web",
        started=T0,
        finished=T0 + timedelta(seconds=30),
        host_platform="linux/amd64",
        node_platform="linux/amd64",
        exit_status=0,
        verdicts=(vr,),
        predictions=(
            PredictionReport("web", False, "web:v1", "exec format error", "arm64 ELF | on amd64", "linux/arm64"),
            PredictionReport("migrate", True, "tools:v1", "unknown", "unknown, because docker save failed"),
        ),
    )


LINE = (
    "prediction disagrees: predicted CrashLoopBackOff (container web: exec format error — arm64 ELF), observed Healthy"
)


def test_a_disagreement_is_visible_everywhere_and_changes_no_status() -> None:
    run = run_report(LINE)
    assert run.passed and run.verdicts[0].passed and run.exit_status == 0
    assert run.disagreements == (LINE,)
    terminal = render_terminal(run)
    assert LINE in terminal and "prediction disagrees" in terminal.splitlines()[0]
    assert "predicted: container web (web:v1): exec format error — arm64 ELF | on amd64" in terminal
    assert "predicted: init container migrate (tools:v1): unknown — unknown, because docker save failed" in terminal
    markdown = render_markdown(run)
    assert f"**{LINE}**" in markdown
    assert "## Prediction" in markdown
    assert "| web | no | `web:v1` | linux/arm64 | **exec format error** | arm64 ELF \\| on amd64 |" in markdown
    data = json.loads(render_json(run))
    assert data["verdicts"][0]["prediction_disagrees"] == LINE
    assert data["verdicts"][0]["passed"] is True
    assert data["prediction"][0] == {
        "container": "web",
        "init": False,
        "image": "web:v1",
        "manifest": "linux/arm64",
        "outcome": "exec format error",
        "reason": "arm64 ELF | on amd64",
    }
    assert data["prediction"][1]["init"] is True


def test_agreement_is_shown_quietly() -> None:
    run = run_report(None)
    terminal = render_terminal(run)
    assert "prediction disagrees" not in terminal
    assert "incident: prediction agrees: CrashLoopBackOff" in terminal
    assert "- Predicted: CrashLoopBackOff" in render_markdown(run)
    assert json.loads(render_json(run))["verdicts"][0]["prediction_disagrees"] is None


def test_a_report_without_predictions_has_an_empty_section() -> None:
    run = replace(run_report(None), predictions=(), verdicts=())
    assert json.loads(render_json(run))["prediction"] == []
    assert "## Prediction" not in render_markdown(run)


# -- the containers a prediction is made for --------------------------------------------------


def test_containers_of_rendered_objects_carry_init_and_restart_policy() -> None:
    docs = [
        {
            "kind": "Job",
            "metadata": {"name": "migrate"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "initContainers": [{"name": "wait", "image": "tools:v1", "command": ["/bin/wait"]}],
                        "containers": [{"name": "run", "image": "app:v1", "args": ["migrate"]}],
                    }
                }
            },
        },
        {"kind": "Service", "metadata": {"name": "web"}},
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "app:v1"}]}}},
        },
    ]
    found = inspect.containers_of(docs)
    assert [(c.workload, c.name, c.init, c.restart_policy) for c in found] == [
        ("Job/migrate", "wait", True, "Never"),
        ("Job/migrate", "run", False, "Never"),
        ("Deployment/web", "web", False, "Always"),
    ]
    assert found[0].process.command == ("/bin/wait",) and found[1].process.args == ("migrate",)


def test_the_cli_exit_codes_are_the_runners() -> None:
    assert cli.BAD_INPUT == ExitStatus.BAD_INPUT
    assert cli.ENVIRONMENT == ExitStatus.ENVIRONMENT


def test_the_doctor_says_when_the_seed_images_are_not_built(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.platforms import EmulationState, Platform

    monkeypatch.setattr(cli, "_latest_local", lambda repository: None)
    from harness import runner

    monkeypatch.setattr(runner, "delivered_images", lambda scenario_name: {})
    cli._truth_table(Platform("linux", "amd64"), EmulationState(mounted=False, enabled=False))
    out = capsys.readouterr().out
    assert "image" in out and "label platform" in out and "entrypoint bytes" in out and "predicted outcome" in out
    assert out.count("not built yet: run make reproduce") == 2


def test_an_image_that_cannot_be_read_is_predicted_unknown_and_the_run_goes_on() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from harness import runner
    from harness.platforms import EmulationState, Platform

    def unreadable(target: str, uses: Any) -> list[inspect.ImageFacts]:
        raise inspect.InspectError(f"image {target} is not present", "build it")

    said: list[str] = []
    run = runner._Run(
        cast(Any, SimpleNamespace(name="web", workload=SimpleNamespace(delivery="load"))),
        runner.RunOptions(say=said.append, inspect_images=unreadable),
    )
    run.session = cast(
        Any, SimpleNamespace(node_platform=Platform("linux", "amd64"), emulation=EmulationState(False, False))
    )
    run.built = {"web": "web:v1"}
    docs = [{"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "web:v1"}]}}]
    run.predict(inspect.containers_of([*docs, {"kind": "Pod", "spec": {"containers": [{"image": "other:v1"}]}}]))
    assert [(p.container, p.outcome) for p in run.predictions] == [("c", "unknown")]
    assert run.predictions[0].reason.startswith("unknown, because image web:v1 is not present")
    assert said == ["    predicted: container c (web:v1): unknown — " + run.predictions[0].reason]
