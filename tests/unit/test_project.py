"""The project the harness works for: its root, its scenarios, paths against it, prepared contexts.

A throwaway project in tmp_path stands in for another team's repository: its own pyproject.toml
with [tool.incident-harness], its own scenarios folder and manifests, and no file of this one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli, images, scenario, tools
from harness.errors import HarnessError, ToolError
from harness.project import ProjectError, find_project, root_override
from harness.runner import ExitStatus

REPO = Path(__file__).resolve().parents[2]
MANIFEST = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "tiny", "labels": {"app": "tiny"}},
    "spec": {"containers": [{"name": "tiny", "image": "x"}]},
}


def scenario_doc(name: str, **image: object) -> dict[str, object]:
    return {
        "apiVersion": "incident-harness/v1",
        "kind": "Scenario",
        "name": name,
        "title": f"the {name} scenario",
        "images": {"app": {"dockerfile": "build/Dockerfile", **image}},
        "workload": {"manifests": ["deploy/pod.yaml"], "image": "app"},
        "expect": {"outcome": "CrashLoopBackOff"},
    }


def make_project(root: Path, *names: str, table: str = "[tool.incident-harness]\n", folder: str = "scenarios") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "someone-else"\n\n{table}')
    (root / "build").mkdir(exist_ok=True)
    (root / "build" / "Dockerfile").write_text("FROM scratch\n")
    (root / "deploy").mkdir(exist_ok=True)
    (root / "deploy" / "pod.yaml").write_text(yaml.safe_dump(MANIFEST))
    (root / folder).mkdir(exist_ok=True)
    for name in names:
        (root / folder / f"{name}.yaml").write_text(yaml.safe_dump(scenario_doc(name)))
    return root


# --------------------------------------------------------------------------------------------
# find_project


def test_an_opted_in_folder_above_the_start_is_the_project(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo")
    (root / "src" / "deep").mkdir(parents=True)
    found = find_project(start=root / "src" / "deep")
    assert (found.root, found.scenarios_dir, found.configured) == (root, root / "scenarios", True)
    assert found.config_file == root / "pyproject.toml"


def test_a_pyproject_without_the_table_is_passed_by(tmp_path: Path) -> None:
    outer = make_project(tmp_path / "outer")
    inner = outer / "vendored"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "vendored"\n')
    assert find_project(start=inner).root == outer


def test_without_an_opted_in_folder_the_start_is_the_project(tmp_path: Path) -> None:
    found = find_project(start=tmp_path)
    assert (found.root, found.scenarios_dir, found.configured, found.config_file) == (
        tmp_path,
        tmp_path / "scenarios",
        False,
        None,
    )


def test_an_explicit_root_wins_and_must_exist(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "repo", table='[tool.incident-harness]\nscenarios = "incidents"\n', folder="incidents"
    )
    assert find_project(root=root, start=REPO).scenarios_dir == root / "incidents"
    with pytest.raises(ProjectError) as caught:
        find_project(root=tmp_path / "absent")
    assert "not a folder" in caught.value.cause and "--root" in caught.value.remedy


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("[tool.incident-harness]\nscenario = 'x'\n", ("tool.incident-harness.scenario", "unknown field")),
        ("[tool.incident-harness]\nscenarios = ''\n", ("tool.incident-harness.scenarios", "''")),
        ("[tool.incident-harness\n", ("not valid TOML",)),
        ("[tool]\nincident-harness = 3\n", ("must be a table",)),
    ],
)
def test_a_bad_table_names_the_file_and_field(tmp_path: Path, table: str, words: tuple[str, ...]) -> None:
    root = make_project(tmp_path / "repo", table=table)
    with pytest.raises(ProjectError) as caught:
        find_project(start=root)
    assert str(root / "pyproject.toml") in caught.value.cause
    for word in words:
        assert word in caught.value.cause, caught.value.cause


def test_root_override_is_what_find_project_sees_inside_the_block(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo")
    before = find_project()
    with root_override(root):
        assert find_project().root == root
        assert find_project(start=REPO).root == root, "the override wins over the start folder"
    assert find_project() == before
    with root_override(None):
        assert find_project() == before
    with pytest.raises(ProjectError), root_override(tmp_path / "absent"):
        pass


def test_this_repository_is_a_project_of_its_own_harness() -> None:
    found = find_project(start=REPO / "harness")
    assert found.root == REPO and found.configured and found.scenarios_dir == REPO / "scenarios"


# --------------------------------------------------------------------------------------------
# Scenarios of another project


def test_paths_resolve_against_the_project_root_not_the_files_folder(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    s = scenario.load(root / "scenarios" / "tiny.yaml")
    assert s.root == root
    assert s.workload.manifests == (root / "deploy" / "pod.yaml",)
    assert s.images["app"].dockerfile == root / "build" / "Dockerfile" and s.images["app"].context == root


def test_a_file_of_an_opted_in_project_resolves_in_it_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert scenario.load(root / "scenarios" / "tiny.yaml").root == root


def test_a_name_is_looked_up_in_the_projects_scenarios_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    monkeypatch.chdir(root / "deploy")
    assert scenario.load("tiny").path == root / "scenarios" / "tiny.yaml"
    assert [p.name for p in scenario.discover()] == ["tiny.yaml"]
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load("arm64-on-amd64")  # this repository's scenario is not that project's
    assert str(root / "scenarios") in caught.value.remedy


def test_list_shows_the_projects_scenarios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "repo", "beta", "alpha")
    monkeypatch.chdir(root)
    assert cli.main(["list"]) == ExitStatus.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["alpha", "beta"]
    assert "the alpha scenario" in lines[0] and "(scenarios/alpha.yaml)" in lines[0]


@pytest.mark.parametrize("argv", [["--root", "{root}", "list"], ["list", "--root", "{root}"]])
def test_list_takes_the_root_before_or_after_the_subcommand(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    assert cli.main([a.replace("{root}", str(root)) for a in argv]) == ExitStatus.OK
    assert capsys.readouterr().out.startswith("tiny ")
    assert find_project().root == REPO, "the override ends with the command"


def test_list_of_a_project_without_scenarios_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--root", str(tmp_path), "list"]) == ExitStatus.BAD_INPUT
    assert f"no scenario files in {tmp_path / 'scenarios'}" in capsys.readouterr().out


def test_a_root_that_is_not_a_folder_is_a_bad_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--root", str(tmp_path / "absent"), "list"])
    assert caught.value.code == 2 and "--root" in capsys.readouterr().err


def test_reproduce_takes_the_root_and_refuses_before_any_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    bad = scenario_doc("bad")
    bad["expect"] = {"outcome": "Complete" if "Complete" in scenario.OUTCOME_NAMES else "Init:CrashLoopBackOff"}
    (root / "scenarios" / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert cli.main(["reproduce", "bad", "--root", str(root)]) == ExitStatus.BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "", "nothing starts: no cluster, no build"
    assert f"{root / 'scenarios' / 'bad.yaml'}: field 'expect.outcome'" in captured.err


def test_python_dash_m_harness_list_in_another_project(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo", "tiny")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    result = tools.run([sys.executable, "-m", "harness", "list"], cwd=root, env=env, timeout=120)
    assert result.stdout.startswith("tiny ") and "arm64-on-amd64" not in result.stdout


# --------------------------------------------------------------------------------------------
# Prepared build contexts (images.prepare_context)

MAKER = """
import os, sys
from pathlib import Path
context = Path(sys.argv[1])
assert context == Path(os.environ["HARNESS_CONTEXT"]) and not any(p.name == "out.txt" for p in context.iterdir())
assert Path(os.environ["HARNESS_PROJECT_ROOT"]) == Path.cwd() == Path(sys.argv[2])
(context / "out.txt").write_text(Path("src/message.txt").read_text())
(context / "run.sh").write_text("#!/bin/sh\\n")
(context / "run.sh").chmod(0o700)
with open(sys.argv[3], "a") as runs:
    runs.write("ran\\n")
if len(sys.argv) > 4:
    sys.exit(int(sys.argv[4]))
"""


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "message.txt").write_text("hello\n")
    (root / "make_context.py").write_text(MAKER)
    return root


def step(root: Path, *extra: str, base: Path | None = None) -> images.PrepareStep:
    runs = root.parent / "runs.txt"
    return images.PrepareStep(
        command=("{python}", "make_context.py", "{context}", "{root}", str(runs), *extra),
        root=root,
        inputs=(root / "src", root / "make_context.py"),
        base=base,
        timeout=60,
        label="repo/scenarios/x.yaml: images.app.prepare",
    )


def runs(root: Path) -> int:
    path = root.parent / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_prepare_runs_the_command_in_the_root_and_caches_by_content(maker: Path) -> None:
    context = images.prepare_context(step(maker))
    assert (context / "out.txt").read_text() == "hello\n" and runs(maker) == 1
    assert (context / "run.sh").stat().st_mode & 0o777 == 0o755, "modes normalised"
    assert (context / "out.txt").stat().st_mode & 0o777 == 0o644
    assert context.parent == maker.parent / "cache" / "contexts"
    assert images.prepare_context(step(maker)) == context and runs(maker) == 1, "reused, not run again"
    (maker / "src" / "message.txt").write_text("changed\n")
    again = images.prepare_context(step(maker))
    assert again != context and (again / "out.txt").read_text() == "changed\n" and runs(maker) == 2


def test_a_failed_prepare_leaves_nothing_a_later_run_could_take_for_complete(maker: Path) -> None:
    with pytest.raises(ToolError) as caught:
        images.prepare_context(step(maker, "3"))
    assert caught.value.returncode == 3 and "images.app.prepare" in caught.value.remedy
    assert list((maker.parent / "cache" / "contexts").iterdir()) == []
    assert images.prepare_context(step(maker)).is_dir(), "a later run makes it"


def test_prepare_starts_from_a_copy_of_the_context_when_one_is_given(maker: Path) -> None:
    base = maker / "src"
    context = images.prepare_context(step(maker, base=base))
    assert sorted(p.name for p in context.iterdir()) == ["message.txt", "out.txt", "run.sh"]
    assert (base / "out.txt").exists() is False, "the project's folder is never written to"


def test_a_missing_command_or_input_is_named(maker: Path) -> None:
    missing = images.PrepareStep(command=("no-such-tool-here",), root=maker, inputs=(maker / "src",), label="L")
    with pytest.raises(HarnessError) as caught:
        images.prepare_context(missing)
    assert caught.value.cause == "L: command 'no-such-tool-here' not found"
    gone = images.PrepareStep(command=("true",), root=maker, inputs=(maker / "gone",), label="L")
    with pytest.raises(HarnessError) as caught:
        images.prepare_context(gone)
    assert "gone does not exist" in caught.value.cause


def test_the_key_covers_the_command_and_executable_bits_not_timestamps(maker: Path) -> None:
    first = images.prepare_key(step(maker))
    os.utime(maker / "src" / "message.txt", (0, 0))
    assert images.prepare_key(step(maker)) == first
    (maker / "src" / "message.txt").chmod(0o755)
    assert images.prepare_key(step(maker)) != first
    assert images.prepare_key(step(maker, "0")) != images.prepare_key(step(maker))
