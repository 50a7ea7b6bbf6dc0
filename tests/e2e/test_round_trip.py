"""From the incident to a regression test, end to end on the harness's own cluster.

For the seed incident (scenarios/arm64-on-amd64.yaml) and its init-container variant
(scenarios/foreign-init-container.yaml):

1. run the scenario's broken half (no fix) and keep its namespace: real pods crash-looping;
2. capture it as a user would from any cluster: a plain kubeconfig file (a copy of the harness's)
   and its context, through the read-only client; the kubeconfig is left byte for byte as it was;
3. draft a scenario from the bundle into a fresh project (pyproject.toml with
   [tool.incident-harness]);
4. fill in what the draft cannot know, as a user would: the service's source is copied into the
   project (app/, docker/, the staging script) and each image's placeholder context is replaced by
   the prepare/dockerfile/buildArgs the repository's own scenarios use;
5. ``python -m harness reproduce`` the draft: exit 0, and the verdict's outcome and symptoms are
   the original's.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import cli, platforms, workload
from harness.cluster import KindCluster
from harness.runner import ExitStatus, RunOptions, run_scenario
from harness.scenario import SCENARIO_DIR, Scenario, load, parse
from harness.tools import REPO_ROOT

pytestmark = [pytest.mark.e2e]

CASES = ("arm64-on-amd64", "foreign-init-container")
SOURCE = ("app", "docker", "scripts/stage_service_context.py")  # the service's repository, as the user has it


@dataclass(frozen=True)
class Original:
    scenario: Scenario
    namespace: str


def _broken_half(path: Path) -> Scenario:
    """The scenario without its fix: the incident only, so the namespace stays broken for capture."""
    data = yaml.safe_load(path.read_text())
    data.pop("fix", None)
    return parse(path, data, REPO_ROOT)


def _run_original(name: str, cluster: KindCluster, out: Path) -> Original:
    said: list[str] = []
    scenario = _broken_half(SCENARIO_DIR / f"{name}.yaml")
    result = run_scenario(
        scenario,
        RunOptions(
            cluster=cluster,
            # Side-loaded, each image keeps its own repository (incident-harness/<name>), which the
            # draft names its images after: the round trip compares them by name.
            delivery="load",
            keep_namespace=True,
            report_dir=out / "reports",
            artifacts_dir=out / "artifacts",
            say=said.append,
        ),
    )
    found = (re.search(r"namespace (\S+), watching", line) for line in said)
    namespace = next((m.group(1) for m in found if m), "")
    if result.exit_status is ExitStatus.MASKED_BY_EMULATION:
        if namespace:
            workload.delete_namespace(cluster.core, namespace)
        pytest.skip("the host emulates the foreign platform: the incident cannot show here")
    assert result.exit_status is ExitStatus.OK, "\n".join(said[-30:])
    assert namespace, said
    return Original(scenario, namespace)


def _unchecked_symptoms() -> set[str]:
    """Symptom kinds the scenario schema accepts but this build's runner cannot check yet (none, once it can)."""
    from datetime import UTC, datetime

    from harness import runner
    from harness.outcomes import Outcome, Verdict
    from harness.scenario import SYMPTOMS, Symptom

    check = getattr(runner, "_check", None)  # a runner that checks every symptom kind has no such helper
    if check is None:
        return set()
    now = datetime.now(UTC)
    verdict = Verdict(Outcome.CRASH_LOOP, (), None, 0, False, frozenset(), now, now, 0.0, (), "")
    unchecked = set()
    for kind, kind_type in SYMPTOMS.items():
        try:
            check(Symptom(kind, kind_type(1) if kind_type is not str else "x"), verdict)
        except AssertionError:
            unchecked.add(kind)
    return unchecked


def _fill_in(text: str, images: dict[str, str]) -> str:
    """What a user does to the draft: each image's placeholder context becomes its real build."""
    data = yaml.safe_load(text)
    out = text
    for image in data["images"]:
        seed_image = images[image]
        block = (
            f"  {image}:\n"
            "    prepare:\n"
            '      command: ["{python}", scripts/stage_service_context.py, "{context}"]\n'
            "      inputs: [app, docker/uvicorn, scripts/stage_service_context.py]\n"
            "    dockerfile: docker/Dockerfile\n"
            "    buildArgs:\n"
            '      PYTHON_BASE: "{python-base}"\n'
            f"      APP_VERSION: {seed_image}\n"
        )
        # the drafted entry: two TODO comment lines, context, platform (kept as drafted)
        pattern = re.compile(rf"  {re.escape(image)}:\n    # TODO:.*\n    # .*\n    context: .*\n")
        out, count = pattern.subn(lambda _m, b=block: b, out)
        assert count == 1, f"drafted entry of image {image} not found in:\n{text}"
    for kind in sorted(_unchecked_symptoms()):
        out = re.sub(rf"  - {kind}: .*\n", "", out)  # this runner cannot check it yet
    return out


@pytest.fixture(scope="module")
def kubeconfig_copy(harness_cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain kubeconfig file naming the cluster, as a user's ~/.kube/config would."""
    path = tmp_path_factory.mktemp("kubeconfig") / "config"
    shutil.copyfile(harness_cluster.kubeconfig, path)
    return path


def _emulated(harness_cluster: KindCluster) -> str | None:
    node = harness_cluster.core.list_node().items[0]
    node_p = platforms.node_platform(harness_cluster.core.api_client.sanitize_for_serialization(node))
    foreign = platforms.parse_platform("linux/arm64" if node_p.architecture == "amd64" else "linux/amd64")
    state = platforms.read_binfmt()
    if platforms.expected_outcome(foreign, node_p, state) is platforms.Expectation.EMULATED:
        return platforms.explain(foreign, node_p, state)
    return None


@pytest.mark.parametrize("name", CASES)
def test_round_trip(
    name: str, harness_cluster: KindCluster, kubeconfig_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    why = _emulated(harness_cluster)
    if why:
        pytest.skip(f"the host emulates the foreign platform ({why})")
    original = _run_original(name, harness_cluster, tmp_path)
    bundle = tmp_path / f"{name}-bundle.tar.gz"
    before = (kubeconfig_copy.read_bytes(), kubeconfig_copy.stat().st_mtime_ns)
    try:
        context = yaml.safe_load(kubeconfig_copy.read_text())["current-context"]
        assert context == f"kind-{harness_cluster.name}"
        status = cli.main(
            [
                "capture",
                "--kubeconfig",
                str(kubeconfig_copy),
                "--context",
                context,
                "--namespace",
                original.namespace,
                "--deployment",
                original.scenario.workload.deployment or "orders-api",
                "--out",
                str(bundle),
            ]
        )
        captured = capsys.readouterr().out
        assert status == 0, captured
    finally:
        workload.delete_namespace(harness_cluster.core, original.namespace)
    assert (kubeconfig_copy.read_bytes(), kubeconfig_copy.stat().st_mtime_ns) == before, "capture wrote the kubeconfig"
    assert bundle.is_file() and not list(tmp_path.glob(f".{bundle.name}.partial-*"))

    project = tmp_path / "service"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "orders-api"\n\n[tool.incident-harness]\n')
    assert cli.main(["--root", str(project), "draft", str(bundle), "--name", f"{name}-drafted"]) == 0, (
        capsys.readouterr()
    )
    drafted_path = project / "scenarios" / f"{name}-drafted.yaml"
    drafted = drafted_path.read_text()
    draft_output = capsys.readouterr().out
    assert "TODO" in drafted, drafted
    loaded = load(drafted_path)
    assert loaded.expect.outcome is original.scenario.expect.outcome, drafted
    drafted_symptoms = {(s.kind, s.value) for s in loaded.expect.symptoms}
    missing = [s for s in original.scenario.expect.symptoms if (s.kind, s.value) not in drafted_symptoms]
    assert not missing, f"the draft lacks the original's symptoms {missing}:\n{drafted}"
    for image in loaded.images.values():
        want = original.scenario.images[image.name].platform
        assert image.platform == want, f"image {image.name}: drafted {image.platform}, the incident's was {want}"

    # The user's part: the service's source in the project, the build of each image.
    for rel in SOURCE:
        src, dst = REPO_ROOT / rel, project / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    shutil.rmtree(project / "scenarios" / "contexts")
    versions = {"laptop-build": "laptop", "ci-build": "fixed"}
    filled = _fill_in(drafted, versions)
    drafted_path.write_text(filled)
    diff = "".join(
        difflib.unified_diff(
            drafted.splitlines(keepends=True),
            filled.splitlines(keepends=True),
            f"a/scenarios/{drafted_path.name}",
            f"b/scenarios/{drafted_path.name}",
        )
    )
    keep = os.environ.get("HARNESS_ROUND_TRIP_KEEP")
    if keep:  # for the documentation: the draft as written, the diff, the bundle, the outputs
        shown = Path(keep) / name
        shown.mkdir(parents=True, exist_ok=True)
        (shown / "capture.txt").write_text(captured)
        (shown / "draft.txt").write_text(draft_output)
        (shown / "drafted.yaml").write_text(drafted)
        (shown / "manifest.yaml").write_text((project / "scenarios" / "manifests" / drafted_path.name).read_text())
        (shown / "filled.diff").write_text(diff)
        shutil.copyfile(bundle, shown / bundle.name)

    reports = tmp_path / "reproduce-reports"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--root",
            str(project),
            "reproduce",
            f"scenarios/{drafted_path.name}",
            "--cluster-name",
            harness_cluster.name,
            "--profile",
            harness_cluster.profile.value,
            "--report-dir",
            str(reports),
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
            "--quiet",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if keep:
        (Path(keep) / name / "reproduce.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\ndiff applied:\n{diff}"
    report = json.loads(next(reports.rglob("*.json")).read_text())
    verdict = report["verdicts"][0]["verdict"]
    assert verdict["outcome"] == original.scenario.expect.outcome.value, verdict
    checked = len(load(drafted_path).expect.symptoms)
    assert report["symptoms"] == {"reproduced": checked, "total": checked}, report["symptoms"]
