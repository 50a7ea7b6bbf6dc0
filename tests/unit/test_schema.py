"""The published JSON Schema of scenario files: valid draft 2020-12, made from the loader's own tables.

Every scenario in scenarios/ passes it, files with a mistake the tables can see fail it, and it is
never stricter than the loader (a file the schema refuses, the loader refuses too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from harness import cli, scenario
from harness.fields import FieldError

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "scenarios"
SCHEMA = scenario.json_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Mistakes the field tables (and so the schema) can see, without the manifests or the file system.
STRUCTURAL = [
    "missing-title.yaml",
    "missing-workload-image.yaml",
    "missing-fix-expect.yaml",
    "wrong-type-timeout.yaml",
    "wrong-type-manifests.yaml",
    "wrong-type-symptom.yaml",
    "unknown-field.yaml",
    "unknown-nested-field.yaml",
    "unknown-outcome.yaml",
    "unknown-symptom.yaml",
    "bad-step.yaml",
    "bad-step-two-keys.yaml",
    "bad-pull-policy.yaml",
    "bad-name.yaml",
    "bad-api-version.yaml",
    "not-a-mapping.yaml",
    "empty-fix-steps.yaml",
    "empty-symptom.yaml",
    "available-not-healthy.yaml",
    "ran-emulated-by-hand.yaml",
]
# Left to the loader: platform names (the schema checks their shape only), paths, image names,
# and what the manifests' kinds allow.
LOADER_ONLY = [
    "bad-platform.yaml",
    "bad-platforms-entry.yaml",
    "missing-context.yaml",
    "missing-manifest-file.yaml",
    "unknown-image.yaml",
    "bad-step-image.yaml",
    "crash-loop-never-restarted.yaml",
    "step-without-deployment.yaml",
]


def document(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_schema_is_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", scenario.discover(REPO / "scenarios"), ids=lambda p: p.name)
def test_every_scenario_of_this_repository_passes_the_schema(path: Path) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(document(path))]
    assert not errors, errors


def test_the_valid_unit_scenario_passes_the_schema() -> None:
    assert not list(VALIDATOR.iter_errors(document(DATA / "valid.yaml")))


@pytest.mark.parametrize("filename", STRUCTURAL)
def test_a_wrong_file_is_rejected_by_the_schema_as_by_the_loader(filename: str) -> None:
    data = document(DATA / filename)
    assert list(VALIDATOR.iter_errors(data)), f"the schema accepts {filename}"
    with pytest.raises(FieldError):
        scenario.SCENARIO.check(data, "")


@pytest.mark.parametrize("filename", LOADER_ONLY)
def test_what_only_the_loader_sees(filename: str) -> None:
    assert not list(VALIDATOR.iter_errors(document(DATA / filename)))
    with pytest.raises(scenario.ScenarioError):
        scenario.load(DATA / filename)


def test_every_data_file_is_sorted_into_one_list() -> None:
    names = {p.name for p in DATA.glob("*.yaml")} - {"valid.yaml", "not-yaml.yaml"}
    assert names == set(STRUCTURAL) | set(LOADER_ONLY)


def test_the_schema_names_the_place_of_the_mistake() -> None:
    error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(document(DATA / "empty-fix-steps.yaml")))
    assert error is not None and list(error.absolute_path) == ["fix", "steps"]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.yaml")), ids=lambda p: p.name)
def test_the_schema_is_never_stricter_than_the_loader(path: Path) -> None:
    try:
        data = document(path)
    except yaml.YAMLError:
        pytest.skip("not YAML")
    if list(VALIDATOR.iter_errors(data)):
        with pytest.raises(FieldError):
            scenario.SCENARIO.check(data, "")


def test_the_new_fields_are_in_the_schema() -> None:
    expectation = SCHEMA["properties"]["expect"]
    outcomes = expectation["properties"]["outcome"]["enum"]
    assert "RanEmulated" not in outcomes and "CrashLoopBackOff" in outcomes
    symptoms = expectation["properties"]["symptoms"]["items"]["properties"]
    assert symptoms["exitCode"] == {
        "description": symptoms["exitCode"]["description"],
        "type": "integer",
        "minimum": 0,
        "maximum": 255,
    }
    assert symptoms["probeFailed"]["enum"] == ["liveness", "readiness", "startup"]
    assert SCHEMA["properties"]["fix"]["properties"]["steps"]["minItems"] == 1
    prepare = SCHEMA["properties"]["images"]["additionalProperties"]["properties"]["prepare"]
    assert prepare["required"] == ["command", "inputs"]


def test_python_dash_m_harness_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA


def test_the_committed_schema_file_is_current() -> None:
    """scenarios/scenario.schema.json (named by the scenario files for editors) is what the loader checks."""
    committed = json.loads((REPO / "scenarios" / "scenario.schema.json").read_text())
    assert committed == SCHEMA, "regenerate it: python -m harness schema > scenarios/scenario.schema.json"
