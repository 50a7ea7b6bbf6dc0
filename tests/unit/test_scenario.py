"""Scenario files: every mistake a user can make is named by file and field; real scenarios load.

The files under data/scenarios are valid.yaml and copies of it with one mistake each (see the
README there); data/ is a project of its own (its pyproject.toml has [tool.incident-harness]), so
the paths inside them are relative to data/. Rules across fields are also checked on scenarios
written into a throwaway project in tmp_path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import images, scenario
from harness.outcomes import Outcome
from harness.project import find_project
from harness.scenario import ScenarioError, Step, Symptom

DATA = Path(__file__).parent / "data" / "scenarios"
REPO = Path(__file__).resolve().parents[2]

# file -> (the field the error names, words the error must contain)
MISTAKES: dict[str, tuple[str, tuple[str, ...]]] = {
    "missing-title.yaml": ("title", ("it is required",)),
    "missing-workload-image.yaml": ("workload.image", ("it is required",)),
    "missing-fix-expect.yaml": ("fix.expect", ("it is required",)),
    "wrong-type-timeout.yaml": ("expect.timeout", ("a positive number of seconds", "'soon'")),
    "wrong-type-manifests.yaml": ("workload.manifests", ("list",)),
    "wrong-type-symptom.yaml": ("expect.symptoms[1].restartsAtLeast", ("an integer", "'two'")),
    "unknown-field.yaml": ("workloads", ("unknown field", "'workload'")),
    "unknown-nested-field.yaml": ("expect.symptom", ("unknown field", "'symptoms'")),
    "unknown-outcome.yaml": ("expect.outcome", ("'CrashLooping'", "'CrashLoopBackOff'", "'Healthy'")),
    "unknown-symptom.yaml": ("expect.symptoms[1].logContains", ("unknown symptom", "'previousLogContains'")),
    "bad-platform.yaml": ("images.laptop-build.platform", ("linux/sparc64", "native, foreign or a platform")),
    "bad-platforms-entry.yaml": ("images.laptop-build.platforms[1]", ("windows/amd64",)),
    "missing-manifest-file.yaml": ("workload.manifests", ("no-such-file.yaml", "does not exist")),
    "missing-context.yaml": ("images.ci-build.context", ("no-such-folder", "does not exist")),
    "unknown-image.yaml": ("workload.image", ("one of the images", "'ci-build'", "'laptop-build'")),
    "bad-step.yaml": ("fix.steps[1].restart", ("unknown step", "'rolloutRestart'")),
    "bad-step-image.yaml": ("fix.steps[0].setImage", ("one of the images", "'ci-build'", "'laptop-build'")),
    "bad-step-two-keys.yaml": ("fix.steps[0]", ("with its value",)),
    "bad-pull-policy.yaml": ("workload.pullPolicy", ("not pullPolicy: Always with delivery: load", "no registry")),
    "bad-name.yaml": ("name", ("lowercase",)),
    "bad-api-version.yaml": ("apiVersion", ("'incident-harness/v1'",)),
    "not-a-mapping.yaml": ("(top level)", ("a mapping, got a list",)),
    "empty-fix-steps.yaml": ("fix.steps", ("at least 1",)),
    "empty-symptom.yaml": ("expect.symptoms[0].waitingReason", ("a non-empty string", "empty string")),
    "available-not-healthy.yaml": (
        "fix.expect.deploymentAvailable",
        ("only with outcome: Healthy", "CrashLoopBackOff"),
    ),
    "ran-emulated-by-hand.yaml": ("expect.outcome", ("RanEmulated is reserved", "'CrashLoopBackOff'")),
    "crash-loop-never-restarted.yaml": ("expect.outcome", ("restartPolicy Never", "'Healthy'", "Pod/orders-api")),
    "step-without-deployment.yaml": ("fix.steps[0].setImage", ("acts on a Deployment", "Pod/orders-api")),
}


def test_every_bad_file_is_covered() -> None:
    files = {p.name for p in DATA.glob("*.yaml")} - {"valid.yaml", "not-yaml.yaml"}
    assert files == set(MISTAKES), files ^ set(MISTAKES)


def test_the_base_of_the_bad_files_is_valid() -> None:
    s = scenario.load(DATA / "valid.yaml")
    assert s.name == "unit-valid"
    assert s.root == DATA.parent, "data/ is the project the file lies in"
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
    assert "scenarios/README.md" in error.remedy and "python -m harness schema" in error.remedy
    # What the user sees: cause, then what to do.
    assert str(error) == f"{error.cause}\n  what to do: {error.remedy}"


def test_invalid_yaml_names_the_file_and_the_line() -> None:
    path = DATA / "not-yaml.yaml"
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    assert caught.value.cause.startswith(f"{path}: not valid YAML")
    assert "line 12" in caught.value.cause and "\n" not in caught.value.cause
    assert caught.value.remedy


def test_a_missing_scenario_says_how_to_list_them(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario.load(tmp_path / "nothing-here.yaml")
    assert "no scenario file" in caught.value.cause and "nothing-here.yaml" in caught.value.cause
    assert "python -m harness list" in caught.value.remedy


def test_a_scenario_is_found_by_name_in_the_projects_folder() -> None:
    assert scenario.load("arm64-on-amd64").path == REPO / "scenarios" / "arm64-on-amd64.yaml"
    data = find_project(root=DATA.parent)
    assert scenario.load("valid", data).path == DATA / "valid.yaml"
    assert scenario.load("valid.yaml", data).path == DATA / "valid.yaml"


def test_the_seed_scenario_loads_as_the_incident() -> None:
    s = scenario.load(REPO / "scenarios" / "arm64-on-amd64.yaml")
    assert s.name == "arm64-on-amd64" and s.root == REPO
    assert s.node_image is None and s.workers == 0  # cluster: defaults (auto node image)
    laptop, ci = s.images["laptop-build"], s.images["ci-build"]
    assert (laptop.platform, ci.platform) == ("foreign", "native")
    # The repository-specific context is a declared step: a script of this repository, run in its root.
    assert laptop.prepare is not None and ci.prepare is not None
    assert laptop.prepare.command == ci.prepare.command == ("{python}", "scripts/stage_service_context.py", "{context}")
    assert laptop.prepare.root == REPO and laptop.prepare.base is None
    assert set(laptop.prepare.inputs) == {
        REPO / "app",
        REPO / "docker" / "uvicorn",
        REPO / "scripts" / "stage_service_context.py",
    }
    assert images.prepare_key(laptop.prepare) == images.prepare_key(ci.prepare), "one staged context for both"
    assert laptop.dockerfile == REPO / "docker" / "Dockerfile"
    assert laptop.build_args["APP_VERSION"] == "laptop" and ci.build_args["APP_VERSION"] == "fixed"
    assert laptop.build_args["PYTHON_BASE"] == "{python-base}"
    assert s.workload.manifests == (REPO / "k8s" / "deployment.yaml",)
    assert (s.workload.image, s.workload.deployment, s.workload.pull_policy, s.workload.delivery) == (
        "laptop-build",
        "orders-api",
        None,  # as the repository's manifest says: Always
        "registry",
    )
    assert s.expect.outcome is Outcome.CRASH_LOOP
    symptoms = dict((sym.kind, sym.value) for sym in s.expect.symptoms)
    assert symptoms["previousLogContains"] == "exec /usr/local/bin/uvicorn: exec format error"
    assert symptoms["restartsAtLeast"] == 2 and symptoms["neverReady"] is True
    assert s.fix_steps == (Step("setImage", "ci-build"), Step("rolloutRestart", True))
    assert s.fix_expect is not None
    assert s.fix_expect.outcome is Outcome.HEALTHY and s.fix_expect.deployment_available


@pytest.mark.parametrize("path", scenario.discover(REPO / "scenarios"), ids=lambda p: p.name)
def test_every_scenario_file_loads(path: Path) -> None:
    s = scenario.load(path)
    assert s.name == path.stem, "a scenario's name is its file name (python -m harness reproduce <name>)"
    assert s.title and s.images and s.workload.manifests
    assert s.workload.image in s.images


def test_discover_skips_readme_and_underscore_files(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yaml", "_draft.yaml", "README.md", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in scenario.discover(tmp_path)] == ["a.yaml", "b.yaml"]
    assert scenario.discover(tmp_path / "absent") == []


def test_outcome_names_are_distinct() -> None:
    """The names a scenario may use map onto distinct outcomes, each with its kubectl label."""
    assert len(set(scenario.OUTCOME_NAMES.values())) == len(scenario.OUTCOME_NAMES)
    for name, outcome in scenario.OUTCOME_NAMES.items():
        if outcome is not Outcome.RAN_EMULATED:
            assert outcome.label == name
    assert "RanEmulated" not in scenario.EXPECTABLE


# --------------------------------------------------------------------------------------------
# Rules across fields, on scenarios written into a throwaway project

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "x"}]},
        },
    },
}
BASE: dict[str, Any] = {
    "apiVersion": "incident-harness/v1",
    "kind": "Scenario",
    "name": "rules",
    "title": "rules across fields",
    "images": {"bad": {"platform": "foreign"}, "good": {}},
    "workload": {"manifests": ["k8s/app.yaml"], "image": "bad"},
    "expect": {"outcome": "CrashLoopBackOff", "symptoms": [{"restartsAtLeast": 1}]},
    "fix": {"steps": [{"setImage": "good"}], "expect": {"outcome": "Healthy"}},
}


def pod(policy: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": [{"name": "main", "image": "x"}], **spec}
    if policy:
        body["restartPolicy"] = policy
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one", "labels": {"app": "one"}}, "spec": body}


def job(policy: str | None = "Never") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "x"}]}
    if policy:
        spec["restartPolicy"] = policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}, "spec": {"template": {"spec": spec}}}


def write(tmp_path: Path, doc: dict[str, Any], *manifests: dict[str, Any]) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.incident-harness]\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "k8s").mkdir(exist_ok=True)
    (tmp_path / "k8s" / "app.yaml").write_text(yaml.safe_dump_all(list(manifests) or [DEPLOYMENT]))
    path = tmp_path / "scenarios" / "rules.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def edited(**changes: Any) -> dict[str, Any]:
    """BASE with changes: keys are dotted paths ("expect.outcome"); a value of None deletes the field."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return doc


def rejection(tmp_path: Path, doc: dict[str, Any], *manifests: dict[str, Any]) -> str:
    path = write(tmp_path, doc, *manifests)
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    cause = caught.value.cause
    assert cause.startswith(f"{path}: field '") and "\n" not in cause, cause
    return cause


def test_the_rules_base_loads_from_its_own_project(tmp_path: Path) -> None:
    s = scenario.load(write(tmp_path, BASE))
    assert s.root == tmp_path
    assert s.images["good"].context == s.root and s.workload.manifests == (s.root / "k8s" / "app.yaml",)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": ""}, "title"),
        ({"incident": ""}, "incident"),
        ({"workload.image": ""}, "workload.image"),
        ({"workload.container": ""}, "workload.container"),
        ({"workload.deployment": ""}, "workload.deployment"),
        ({"workload.manifests": [""]}, "workload.manifests[0]"),
        ({"images.good.context": ""}, "images.good.context"),
        ({"images.good.dockerfile": ""}, "images.good.dockerfile"),
        ({"images.good.platform": ""}, "images.good.platform"),
        ({"cluster": {"nodeImage": ""}}, "cluster.nodeImage"),
        ({"fix.steps": [{"setImage": ""}]}, "fix.steps[0].setImage"),
        ({"expect.symptoms": [{"terminatedReason": ""}]}, "expect.symptoms[0].terminatedReason"),
        ({"expect.symptoms": [{"previousLogContains": ""}]}, "expect.symptoms[0].previousLogContains"),
        ({"expect.symptoms": [{"eventContains": ""}]}, "expect.symptoms[0].eventContains"),
        ({"expect.symptoms": [{"waitingReason": ""}]}, "expect.symptoms[0].waitingReason"),
        ({"expect.symptoms": [{"probeFailed": ""}]}, "expect.symptoms[0].probeFailed"),
        ({"images.good.prepare": {"command": [""], "inputs": ["k8s"]}}, "images.good.prepare.command[0]"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_empty_string_is_refused_wherever_a_string_goes(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    cause = rejection(tmp_path, edited(**changes))
    assert f"field '{field}'" in cause and "empty string" in cause, cause


def test_an_empty_build_argument_is_a_value_docker_accepts(tmp_path: Path) -> None:
    s = scenario.load(write(tmp_path, edited(**{"images.good.buildArgs": {"EXTRA": "", "N": 3}})))
    assert s.images["good"].build_args == {"EXTRA": "", "N": "3"}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"fix.steps": []}, "fix.steps", ("at least 1",)),
        ({"fix.steps": [{"rolloutRestart": False}]}, "fix.steps[0].rolloutRestart", ("true",)),
        (
            {"fix.expect.outcome": "Pending", "fix.expect.deploymentAvailable": True},
            "fix.expect.deploymentAvailable",
            ("Healthy",),
        ),
        ({"expect.outcome": "RanEmulated"}, "expect.outcome", ("reserved",)),
        ({"expect.symptoms": [{"exitCode": 256}]}, "expect.symptoms[0].exitCode", ("from 0 to 255",)),
        ({"expect.symptoms": [{"exitCode": "1"}]}, "expect.symptoms[0].exitCode", ("an integer",)),
        (
            {"expect.symptoms": [{"probeFailed": "ready"}]},
            "expect.symptoms[0].probeFailed",
            ("'liveness'", "'readiness'", "'startup'"),
        ),
        ({"expect.symptoms": [{"probeFailed": "liveness"}]}, "expect.symptoms[0].probeFailed", ("livenessProbe",)),
        ({"expect.symptoms": [{"restartsAtLeast": 0}]}, "expect.symptoms[0].restartsAtLeast", ("at least 1",)),
        (
            {"fix.expect.symptoms": [{"restartsAtLeast": 1}]},
            "fix.expect.symptoms[0].restartsAtLeast",
            ("zero restarts",),
        ),
        ({"fix.expect.symptoms": [{"neverReady": True}]}, "fix.expect.symptoms[0].neverReady", ("Ready",)),
        (
            {"images.good.platforms": ["native"], "images.good.platform": "native"},
            "images.good.platforms",
            ("not both",),
        ),
        ({"images.good.platforms": ["native", "native"]}, "images.good.platforms", ("distinct",)),
        ({"images.good.platforms": []}, "images.good.platforms", ("at least 1",)),
        ({"images.Good": {}}, "images.Good", ("lowercase",)),
        ({"workload.deployment": "api"}, "workload.deployment", ("['web']", "'api'")),
        ({"workload.container": "sidecar"}, "workload.container", ("['web']",)),
        ({"workload.initImage": "good"}, "workload.initImage", ("no initContainers",)),
        ({"workload.initImage": "other"}, "workload.initImage", ("one of the images",)),
        ({"images.good.prepare": {"command": ["true"]}}, "images.good.prepare.inputs", ("it is required",)),
        (
            {"images.good.prepare": {"command": ["true"], "inputs": ["nope"]}},
            "images.good.prepare.inputs[0]",
            ("nope does not exist",),
        ),
        ({"images.good.prepare": {"command": [], "inputs": ["k8s"]}}, "images.good.prepare.command", ("at least 1",)),
        ({"images.good.dockerfile": "Dockerfile.missing"}, "images.good.dockerfile", ("does not exist",)),
        ({"expect.timeout": 0}, "expect.timeout", ("positive",)),
        ({"cluster": {"workers": 4}}, "cluster.workers", ("from 0 to 3",)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_rule_names_the_field_and_what_would_be_accepted(
    tmp_path: Path, changes: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    cause = rejection(tmp_path, edited(**changes))
    assert f"field '{field}'" in cause, cause
    for word in words:
        assert word in cause, f"{word!r} not in {cause!r}"


def test_an_image_without_a_dockerfile_is_refused_before_any_build(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    (tmp_path / "Dockerfile").unlink()
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    assert "field 'images.bad.dockerfile'" in caught.value.cause and "has none" in caught.value.cause


@pytest.mark.parametrize("step", [{"setImage": "good"}, {"rolloutRestart": True}, {"rollback": True}])
@pytest.mark.parametrize("workload", [pod(), job("OnFailure")], ids=["Pod", "Job"])
def test_rollout_steps_need_a_deployment(tmp_path: Path, step: dict[str, Any], workload: dict[str, Any]) -> None:
    doc = edited(**{"fix.steps": [step], "fix.expect.outcome": "Pending"})
    cause = rejection(tmp_path, doc, workload)
    kind = next(iter(step))
    assert f"field 'fix.steps[0].{kind}'" in cause and "acts on a Deployment" in cause, cause
    assert f"{workload['kind']}/{workload['metadata']['name']}" in cause and "k8s/app.yaml" in cause


def test_the_watched_deployment_decides_even_beside_a_job(tmp_path: Path) -> None:
    """A Deployment and a migration Job: the Deployment is watched, so its outcomes and steps count."""
    s = scenario.load(write(tmp_path, BASE, job(), DEPLOYMENT))
    assert s.fix_steps == (Step("setImage", "good"),)


def test_deployment_available_needs_a_deployment(tmp_path: Path) -> None:
    doc = edited(
        **{"fix": None, "expect.outcome": "Healthy", "expect.symptoms": [], "expect.deploymentAvailable": True}
    )
    cause = rejection(tmp_path, doc, pod())
    assert "field 'expect.deploymentAvailable'" in cause and "not a Deployment" in cause


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (job(None), ("OnFailure or Never", "Job/once")),
        (job("Always"), ("OnFailure or Never",)),
        (
            {
                **DEPLOYMENT,
                "spec": {
                    **DEPLOYMENT["spec"],
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "w"}]}},
                },
            },
            ("restartPolicy Always", "Deployment/web"),
        ),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, ("pod-making object",)),
        (pod(containers=[]), ("at least one container",)),
    ],
    ids=["job-without-policy", "job-always", "deployment-never", "no-pods", "no-containers"],
)
def test_manifests_the_api_server_would_refuse_are_named(
    tmp_path: Path, manifest: dict[str, Any], words: tuple[str, ...]
) -> None:
    doc = edited(**{"fix": None, "expect.outcome": "Pending", "expect.symptoms": []})
    cause = rejection(tmp_path, doc, manifest)
    assert "field 'workload.manifests" in cause, cause
    for word in words:
        assert word in cause, cause


def test_a_manifest_that_is_not_kubernetes_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    (tmp_path / "k8s" / "app.yaml").write_text("just: a mapping\n")
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    assert "field 'workload.manifests[0]'" in caught.value.cause and "kind/apiVersion" in caught.value.cause


@pytest.mark.parametrize(
    ("outcome", "manifest", "reason"),
    [
        ("CrashLoopBackOff", pod("Never"), "never restarts a container"),
        ("CrashLoopBackOff", job("Never"), "never restarts a container"),
        ("Init:CrashLoopBackOff", DEPLOYMENT, "no initContainers"),
        ("Healthy", job("Never"), "how it ends"),
    ],
)
def test_an_outcome_the_watch_cannot_reach_is_refused(
    tmp_path: Path, outcome: str, manifest: dict[str, Any], reason: str
) -> None:
    doc = edited(**{"fix": None, "expect.outcome": outcome, "expect.symptoms": []})
    cause = rejection(tmp_path, doc, manifest)
    assert "field 'expect.outcome'" in cause and reason in cause and f"got {outcome!r}" in cause, cause
    assert "'Pending'" in cause, "the error lists the outcomes that could be expected"


@pytest.mark.parametrize("outcome", ["NotReady", "Complete", "Failed"])
def test_the_new_outcomes_load_where_they_can_be_reached(tmp_path: Path, outcome: str) -> None:
    if outcome not in scenario.OUTCOME_NAMES:
        pytest.skip(f"harness.outcomes has no {outcome} member in this build")
    manifest = pod("Never", containers=[{"name": "main", "image": "x", "readinessProbe": {"exec": {"command": ["x"]}}}])
    doc = edited(**{"fix": None, "expect.outcome": outcome, "expect.symptoms": [{"exitCode": 1}]})
    assert scenario.load(write(tmp_path, doc, manifest)).expect.outcome is scenario.OUTCOME_NAMES[outcome]


def test_new_symptoms_load(tmp_path: Path) -> None:
    probed = copy.deepcopy(DEPLOYMENT)
    probed["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": 80}}
    doc = edited(**{"expect.symptoms": [{"exitCode": 0}, {"probeFailed": "liveness"}, {"restartsAtLeast": 3}]})
    s = scenario.load(write(tmp_path, doc, probed))
    assert s.expect.symptoms == (
        Symptom("exitCode", 0),
        Symptom("probeFailed", "liveness"),
        Symptom("restartsAtLeast", 3),
    )


def test_extension_fields_hold_yaml_anchors(tmp_path: Path) -> None:
    doc = edited(**{"x-note": {"anything": [1, 2]}})
    assert scenario.load(write(tmp_path, doc)).name == "rules"


def test_a_prepare_step_resolves_against_the_project(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text("FROM scratch\n")
    prepare = {
        "command": ["{python}", "make_context.py", "{context}"],
        "inputs": ["src", "k8s/app.yaml"],
        "timeout": 30,
    }
    doc = edited(**{"images.good.prepare": prepare, "images.good.context": "src"})
    step = scenario.load(write(tmp_path, doc)).images["good"].prepare
    assert step is not None
    assert step.command == ("{python}", "make_context.py", "{context}")
    assert step.root == tmp_path and step.base == tmp_path / "src" and step.timeout == 30.0
    assert step.inputs == (tmp_path / "src", tmp_path / "k8s" / "app.yaml")
    assert "images.good.prepare" in step.label


# --------------------------------------------------------------------------------------------
# The outcome x kind table (scenarios/README.md shows the same)

Y, N = True, False
# columns: Deployment/ReplicaSet/StatefulSet/DaemonSet, Job OnFailure, Job Never, Pod Always, Pod OnFailure, Pod Never.
# Pods here have a regular init container and a readiness probe, so Init:CrashLoopBackOff and NotReady can show.
TABLE: dict[str, tuple[bool, ...]] = {
    "Healthy": (Y, N, N, Y, Y, Y),
    "NotReady": (Y, Y, Y, Y, Y, Y),
    "CrashLoopBackOff": (Y, Y, N, Y, Y, N),
    "Init:CrashLoopBackOff": (Y, Y, N, Y, Y, N),
    "ImagePullBackOff": (Y, Y, Y, Y, Y, Y),
    "CreateContainerError": (Y, Y, Y, Y, Y, Y),
    "Pending": (Y, Y, Y, Y, Y, Y),
    "Unschedulable": (Y, Y, Y, Y, Y, Y),
    "Complete": (N, Y, Y, N, Y, Y),
    "Failed": (N, Y, Y, N, N, Y),
    "Timeout": (Y, Y, Y, Y, Y, Y),
    "RanEmulated": (N, N, N, N, N, N),
}
COLUMNS = [
    ("Deployment", "Always"),
    ("Job", "OnFailure"),
    ("Job", "Never"),
    ("Pod", "Always"),
    ("Pod", "OnFailure"),
    ("Pod", "Never"),
]


def template(
    kind: str, policy: str, *, init: bool = True, probes: frozenset[str] = frozenset({"readiness"}), **more: Any
) -> Any:
    from harness.reachable import PodTemplate

    return PodTemplate(
        kind=kind,
        name="x",
        where=f"m.yaml: {kind}/x",
        restart_policy=policy,
        containers=("main",),
        init_containers=("init",) if init else (),
        sidecars=more.pop("sidecars", ()),
        probes=probes,
        **more,
    )


@pytest.mark.parametrize("outcome", sorted(TABLE))
def test_the_outcome_table(outcome: str) -> None:
    from harness import reachable

    got = tuple(reachable.outcome_problem(outcome, template(k, p)) is None for k, p in COLUMNS)
    assert got == TABLE[outcome], [(c, g) for c, g in zip(COLUMNS, got, strict=True)]
    for kind in ("ReplicaSet", "StatefulSet", "DaemonSet"):
        assert (reachable.outcome_problem(outcome, template(kind, "Always")) is None) == TABLE[outcome][0]


def test_what_the_pod_spec_adds_to_the_table() -> None:
    from harness import reachable

    plain = template("Deployment", "Always", init=False, probes=frozenset())
    assert "readinessProbe" in (reachable.outcome_problem("NotReady", plain) or "")
    assert (
        reachable.outcome_problem(
            "NotReady", template("Deployment", "Always", probes=frozenset(), readiness_gates=True)
        )
        is None
    )
    assert "no initContainers" in (reachable.outcome_problem("Init:CrashLoopBackOff", plain) or "")
    # A sidecar (init container with restartPolicy Always) restarts whatever the pod's policy.
    sidecar = template("Pod", "Never", init=False, sidecars=("proxy",))
    assert reachable.outcome_problem("CrashLoopBackOff", sidecar) is None
    assert reachable.outcome_problem("Init:CrashLoopBackOff", sidecar) is None
    # activeDeadlineSeconds fails any bare pod.
    assert reachable.outcome_problem("Failed", template("Pod", "Always", active_deadline=True)) is None
    assert reachable.reachable_outcomes(template("Pod", "Never", init=False, probes=frozenset())) == [
        "Healthy",
        "ImagePullBackOff",
        "CreateContainerError",
        "Pending",
        "Unschedulable",
        "Complete",
        "Failed",
        "Timeout",
    ]


def test_the_readme_table_is_this_table() -> None:
    """scenarios/README.md shows the table users read; it must say what the loader does."""
    text = (REPO / "scenarios" / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == len(COLUMNS) + 1:
            rows[cells[0].strip("`")] = tuple(c.startswith("yes") for c in cells[1:])
    assert rows == TABLE


def test_symptoms_and_steps_map_names_to_python_types() -> None:
    """Other modules code against these tables (contract): name -> the type of its value."""
    symptoms, steps = dict(scenario.SYMPTOMS), dict(scenario.STEPS)
    assert symptoms == {
        "waitingReason": str,
        "terminatedReason": str,
        "restartsAtLeast": int,
        "neverReady": bool,
        "previousLogContains": str,
        "eventContains": str,
        "exitCode": int,
        "probeFailed": str,
        "ranImage": str,
    }
    assert steps == {"setImage": str, "rolloutRestart": bool, "rollback": bool}
