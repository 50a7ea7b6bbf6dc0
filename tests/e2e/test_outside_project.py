"""The harness as another team uses it: a wheel installed into a fresh virtual environment, run from a
project of theirs that holds no file of this repository.

The throwaway project (in tmp_path) has its own pyproject.toml with [tool.incident-harness], its
own Dockerfile (FROM scratch with a static busybox for the image's platform), its own prepare
step that stages the build context, its own manifest and its own scenario: a foreign-platform
image crash-loops with exec format error, and an image for the nodes' platform fixes it. From
that directory, with the installed package only (no PYTHONPATH, no editable install):

- ``python -m harness list`` shows that project's scenario, not this repository's;
- ``python -m harness reproduce tiny-foreign`` exits 0 (incident reproduced, fix verified);
- ``python -m pytest`` collects the scenario file through the plugin and passes it.

The harness's dependencies are downloaded once as wheels into the harness cache (keyed by the
dependency list in pyproject.toml) and installed from there with --no-index, so a second run
does not need PyPI. The shared cluster is reused (HARNESS_CLUSTER, default incident-harness).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cluster import KindCluster
from harness.platforms import Platform
from harness.tools import REPO_ROOT, Result, cache_dir, run
from hermetic.images.debimage import fetch_debs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = "tiny-foreign"
DOCKERFILE = """\
# A tiny image: busybox for the platform being built (buildx sets TARGETARCH), sleeping.
FROM scratch
ARG TARGETARCH
COPY bin/busybox-${TARGETARCH} /bin/busybox
ENTRYPOINT ["/bin/busybox"]
CMD ["sleep", "3600"]
"""
STAGE = """\
# Stages the image's build context: the Dockerfile and the busybox binaries, into the folder given.
import shutil
import sys
from pathlib import Path

context = Path(sys.argv[1])
shutil.copy2("Dockerfile", context / "Dockerfile")
shutil.copytree("bin", context / "bin")
"""
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tiny
spec:
  replicas: 1
  selector:
    matchLabels: {app: tiny}
  template:
    metadata:
      labels: {app: tiny}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: tiny
          image: set-by-the-harness
"""
SCENARIO_FILE = f"""\
apiVersion: incident-harness/v1
kind: Scenario
name: {SCENARIO}
title: A busybox built for the other CPU crash-loops; one built for the nodes runs
x-stage: &stage
  command: ["{{python}}", stage.py, "{{context}}"]
  inputs: [Dockerfile, bin, stage.py]
images:
  laptop: {{prepare: *stage, platform: foreign}}
  ci: {{prepare: *stage, platform: native}}
workload:
  manifests: [deploy/tiny.yaml]
  image: laptop
expect:
  outcome: CrashLoopBackOff
  timeout: 150
  symptoms:
    - restartsAtLeast: 1
    - previousLogContains: "exec format error"
fix:
  steps:
    - setImage: ci
  expect:
    outcome: Healthy
    deploymentAvailable: true
    timeout: 150
"""
PYPROJECT = """\
[project]
name = "someone-elses-service"
version = "0.1.0"

[tool.incident-harness]
scenarios = "incidents"
"""


@dataclass(frozen=True)
class Outside:
    python: Path  # the fresh virtual environment's interpreter
    project: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 900) -> Result:
        return run([str(self.python), *args], cwd=self.project, env=self.env, check=False, timeout=timeout)


def _build_wheel(dist: Path, scratch: Path) -> Path:
    """A wheel of the harness from a copy of its sources (the build writes nothing into this repository)."""
    src = scratch / "src"
    src.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", src / "pyproject.toml")
    for package in ("harness", "hermetic"):
        shutil.copytree(REPO_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "-w", str(dist), str(src)],
        timeout=300,
        remedy="the harness's wheel does not build: read pip's output above",
    )
    (wheel,) = dist.glob("incident_harness-*.whl")
    return wheel


def _dependency_wheels(wheel: Path) -> Path:
    """Wheels of the harness's dependencies, downloaded once into the harness cache (renamed into place)."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256("\n".join(sorted(deps)).encode()).hexdigest()[:16]
    target = cache_dir() / "e2e-outside-project" / f"wheels-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        run(
            [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-w", str(tmp), str(wheel)],
            timeout=900,
            remedy="check that PyPI is reachable",
        )
        (tmp / wheel.name).unlink()  # only the dependencies are cached; the harness's wheel is this run's
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another xdist worker downloaded the same wheels first: use those
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _busybox(platform: Platform, scratch: Path) -> Path:
    deb = fetch_debs(["busybox-static"], str(platform))["busybox-static"]
    out = scratch / f"busybox-{platform.architecture}"
    run(["dpkg-deb", "-x", str(deb), str(out)], timeout=120)
    return out / "bin" / "busybox"


@pytest.fixture(scope="module")
def outside(
    tmp_path_factory: pytest.TempPathFactory, harness_cluster: KindCluster, node_arch: Platform, foreign: Platform
) -> Iterator[Outside]:
    scratch = tmp_path_factory.mktemp("outside-build")
    wheel = _build_wheel(scratch / "dist", scratch)
    deps = _dependency_wheels(wheel)
    venv = scratch / "venv"  # fresh, without the system's site-packages; this pip installs into it
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=300)
    python = venv / "bin" / "python"
    run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check"),
            *("--no-compile", "--no-index", "--find-links", str(deps), str(wheel)),
        ],
        timeout=600,
        remedy=f"delete {deps} and run again (a dependency's wheel may be missing)",
    )

    project = tmp_path_factory.mktemp("someone-elses-repo")
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "Dockerfile").write_text(DOCKERFILE)
    (project / "stage.py").write_text(STAGE)
    (project / "bin").mkdir()
    for platform in (node_arch, foreign):
        target = project / "bin" / f"busybox-{platform.architecture}"
        shutil.copy2(_busybox(platform, scratch), target)
        target.chmod(0o755)
    (project / "deploy").mkdir()
    (project / "deploy" / "tiny.yaml").write_text(MANIFEST)
    (project / "incidents").mkdir()
    (project / "incidents" / f"{SCENARIO}.yaml").write_text(SCENARIO_FILE)

    # tools.run adds these to this process's environment: emptied, they hide this repository's sources
    # (PYTHONPATH) and this session's pytest settings from the project's runs.
    env = {name: "" for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env.update(
        {
            "HARNESS_CLUSTER": harness_cluster.name,
            "HARNESS_TEST_PROFILE": harness_cluster.profile.value,
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }
    )
    yield Outside(python, project, env)


def _said(result: Result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"


def test_the_installed_package_is_the_wheel_not_this_repository(outside: Outside) -> None:
    result = outside.run("-c", "import harness, hermetic; print(harness.__file__); print(hermetic.__file__)")
    assert result.returncode == 0, _said(result)
    for line in result.stdout.split():
        assert "site-packages" in line and not line.startswith(str(REPO_ROOT)), result.stdout
    assert [p.name for p in outside.project.rglob("*.py")] == ["stage.py"], "the project's only Python is its own"


def test_list_shows_the_projects_scenarios(outside: Outside) -> None:
    result = outside.run("-m", "harness", "list", timeout=120)
    assert result.returncode == 0, _said(result)
    assert result.stdout.split()[0] == SCENARIO and f"(incidents/{SCENARIO}.yaml)" in result.stdout
    assert "arm64-on-amd64" not in result.stdout, "this repository's scenarios are not that project's"


def test_reproduce_runs_the_projects_scenario(outside: Outside) -> None:
    result = outside.run(
        "-m",
        "harness",
        "reproduce",
        SCENARIO,
        "--cluster-name",
        outside.env["HARNESS_CLUSTER"],
        "--profile",
        outside.env["HARNESS_TEST_PROFILE"],
    )
    if result.returncode == 4:  # ExitStatus.MASKED_BY_EMULATION: the host runs the foreign busybox
        pytest.skip(f"masked by emulation on this host:\n{result.stdout[-2000:]}")
    assert result.returncode == 0, _said(result)
    assert (outside.project / "reports").is_dir(), "reports land in that project"
    staged = list((cache_dir() / "contexts").glob("prepared-*"))
    assert staged, "the project's prepare step made a context in the harness cache"


def test_pytest_collects_the_scenario_file_and_passes_it(outside: Outside) -> None:
    """The plugin collects every scenario file of an opted-in project as a test item."""
    result = outside.run(
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-v",
        "--harness-keep-cluster",
        "--harness-cluster",
        outside.env["HARNESS_CLUSTER"],
        "--harness-profile",
        outside.env["HARNESS_TEST_PROFILE"],
    )
    if result.returncode == 0 and "skipped" in result.stdout and "masked" in result.stdout:
        pytest.skip("masked by emulation on this host")
    assert result.returncode == 0, _said(result)
    assert SCENARIO in result.stdout and "1 passed" in result.stdout, _said(result)


def test_pytest_kind_ng_installs_beside_the_harness(outside: Outside) -> None:
    """Both plugins load in one pytest: neither option names nor the fixture name `kind_cluster` clash."""
    run(
        [
            *(sys.executable, "-m", "pip", "--python", str(outside.python), "install"),
            *("--disable-pip-version-check", "--no-compile", "pytest-kind-ng>=26,<27"),
        ],
        timeout=600,
        remedy="check that PyPI is reachable",
    )
    result = outside.run("-m", "pytest", "-p", "no:cacheprovider", "--help")
    assert result.returncode == 0, _said(result)
    assert "--harness-cluster" in result.stdout and "--cluster-name" in result.stdout, _said(result)
    fixtures = outside.run("-m", "pytest", "-p", "no:cacheprovider", "--fixtures", "--collect-only", "-q", "incidents")
    assert "kind_cluster" in fixtures.stdout and "harness_cluster" in fixtures.stdout, _said(fixtures)
