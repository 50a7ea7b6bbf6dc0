"""Scenario files: every mistake a user can make is named by file and field; real scenarios load.

The files under data/scenarios are valid.yaml and copies of it with one mistake each (see the
README there); paths inside them are relative to data/, the parent of that folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import scenario
from harness.outcomes import Outcome
from harness.scenario import ScenarioError, Step, Symptom

DATA = Path(__file__).parent / "data" / "scenarios"
REPO = Path(__file__).resolve().parents[2]

# file -> (the field the error names, words the error must contain)
MISTAKES: dict[str, tuple[str, tuple[str, ...]]] = {
    "missing-title.yaml": ("title", ("it is required",)),
    "missing-workload-image.yaml": ("workload.image", ("it is required",)),
    "missing-fix-expect.yaml": ("fix.expect", ("it is required",)),
    "wrong-type-timeout.yaml": ("expect.timeout", ("a number of seconds", "'soon'")),
    "wrong-type-manifests.yaml": ("workload.manifests", ("list",)),
    "wrong-type-symptom.yaml": ("expect.symptoms[1].restartsAtLeast", ("int", "'two'")),
    "unknown-field.yaml": ("workloads", ("unknown field", "'workload'")),
    "unknown-nested-field.yaml": ("expect.symptom", ("unknown field", "'symptoms'")),
    "unknown-outcome.yaml": ("expect.outcome", ("'CrashLooping'", "'CrashLoopBackOff'", "'Healthy'")),
    "unknown-symptom.yaml": ("expect.symptoms[1].logContains", ("unknown symptom", "'previousLogContains'")),
    "bad-platform.yaml": ("images.laptop-build.platform", ("linux/sparc64", "native, foreign or a platform")),
    "bad-platforms-entry.yaml": ("images.laptop-build.platforms", ("windows/amd64",)),
    "missing-manifest-file.yaml": ("workload.manifests", ("no-such-file.yaml", "does not exist")),
    "missing-context.yaml": ("images.ci-build.context", ("no-such-folder", "does not exist")),
    "unknown-image.yaml": ("workload.image", ("one of the images", "'ci-build'", "'laptop-build'")),
    "bad-step.yaml": ("fix.steps[1].restart", ("unknown step", "'rolloutRestart'")),
    "bad-step-image.yaml": ("fix.steps[0].setImage", ("one of the images", "'ci-build'", "'laptop-build'")),
    "bad-step-two-keys.yaml": ("fix.steps[0]", ("with its value",)),
    "bad-pull-policy.yaml": ("workload.pullPolicy", ("IfNotPresent or Never", "not pulled")),
    "bad-name.yaml": ("name", ("lowercase",)),
    "bad-api-version.yaml": ("apiVersion", ("'incident-harness/v1'",)),
    "not-a-mapping.yaml": ("(top level)", ("a mapping, got list",)),
}


def test_every_bad_file_is_covered() -> None:
    files = {p.name for p in DATA.glob("*.yaml")} - {"valid.yaml", "not-yaml.yaml"}
    assert files == set(MISTAKES), files ^ set(MISTAKES)


def test_the_base_of_the_bad_files_is_valid() -> None:
    s = scenario.load(DATA / "valid.yaml")
    assert s.name == "unit-valid"
    assert s.images["laptop-build"].platform == "foreign"
    assert s.images["ci-build"].platform == "native"
    assert s.workload.manifests == (DATA / "manifests" / "deployment.yaml",)
    assert s.expect.outcome is Outcome.CRASH_LOOP
    assert s.expect.timeout == 60.0
    assert s.expect.symptoms == (Symptom("waitingReason", "CrashLoopBackOff"), Symptom("restartsAtLeast", 2))
    assert s.fix_steps == (Step("setImage", "ci-build"), Step("rolloutRestart", True))
    assert s.fix_expect is not None and s.fix_expect.outcome is Outcome.HEALTHY
    assert s.fix_expect.deployment_available


@pytest.mark.parametrize("filename", sorted(MISTAKES))
def test_a_mistake_names_the_file_and_the_field(filename: str) -> None:
    field, words = MISTAKES[filename]
    path = DATA / filename
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    error = caught.value
    assert str(path) in error.cause, error.cause
    assert f"field '{field}'" in error.cause, error.cause
    for word in words:
        assert word in error.cause, f"{word!r} not in {error.cause!r}"
    assert "\n" not in error.cause, "the cause is one line"
    assert "scenarios/README.md" in error.remedy
    # What the user sees: cause, then what to do.
    assert str(error) == f"{error.cause}\n  what to do: {error.remedy}"


def test_invalid_yaml_names_the_file_and_the_line() -> None:
    path = DATA / "not-yaml.yaml"
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    assert caught.value.cause.startswith(f"{path}: not valid YAML")
    assert "line 12" in caught.value.cause
    assert caught.value.remedy


def test_a_missing_scenario_says_how_to_list_them(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario.load(tmp_path / "nothing-here.yaml")
    assert "no scenario file" in caught.value.cause and "nothing-here.yaml" in caught.value.cause
    assert "python -m harness list" in caught.value.remedy


def test_a_scenario_is_found_by_name() -> None:
    assert scenario.load("arm64-on-amd64").path == scenario.SCENARIO_DIR / "arm64-on-amd64.yaml"


def test_the_seed_scenario_loads_as_the_incident() -> None:
    s = scenario.load(REPO / "scenarios" / "arm64-on-amd64.yaml")
    assert s.name == "arm64-on-amd64"
    assert s.node_image is None and s.workers == 0  # cluster: defaults (auto node image)
    laptop, ci = s.images["laptop-build"], s.images["ci-build"]
    assert (laptop.platform, ci.platform) == ("foreign", "native")
    assert laptop.prepare == ci.prepare == "service"
    assert laptop.dockerfile == REPO / "docker" / "Dockerfile"
    assert laptop.build_args["APP_VERSION"] == "laptop" and ci.build_args["APP_VERSION"] == "fixed"
    assert s.workload.manifests == (REPO / "k8s" / "deployment.yaml",)
    assert (s.workload.image, s.workload.deployment, s.workload.pull_policy) == (
        "laptop-build",
        "orders-api",
        "IfNotPresent",
    )
    assert s.expect.outcome is Outcome.CRASH_LOOP
    symptoms = dict((sym.kind, sym.value) for sym in s.expect.symptoms)
    assert symptoms["previousLogContains"] == "exec /usr/local/bin/uvicorn: exec format error"
    assert symptoms["restartsAtLeast"] == 2 and symptoms["neverReady"] is True
    assert s.fix_steps == (Step("setImage", "ci-build"), Step("rolloutRestart", True))
    assert s.fix_expect is not None
    assert s.fix_expect.outcome is Outcome.HEALTHY and s.fix_expect.deployment_available


@pytest.mark.parametrize("path", scenario.discover(), ids=lambda p: p.name)
def test_every_scenario_file_loads(path: Path) -> None:
    s = scenario.load(path)
    assert s.name == path.stem, "a scenario's name is its file name (python -m harness reproduce <name>)"
    assert s.title and s.images and s.workload.manifests
    assert s.workload.image in s.images


def test_discover_skips_readme_and_underscore_files(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yaml", "_draft.yaml", "README.md", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in scenario.discover(tmp_path)] == ["a.yaml", "b.yaml"]


def test_outcome_names_are_distinct() -> None:
    """The names a scenario may use map onto distinct outcomes, each with its kubectl label."""
    assert len(set(scenario.OUTCOME_NAMES.values())) == len(scenario.OUTCOME_NAMES)
    for name, outcome in scenario.OUTCOME_NAMES.items():
        if outcome is not Outcome.RAN_EMULATED:
            assert outcome.label == name
