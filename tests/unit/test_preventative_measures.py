"""The measures taken after the seed incident stay in the repository's own files (static checks).

The incident: an image built on an Apple Silicon laptop (linux/arm64) reached amd64 nodes and
crash-looped with `exec /usr/local/bin/uvicorn: exec format error`. What keeps it from happening
again, and is checked here by parsing the files:

- the service's CI (.github/workflows/ci.yml) builds the image, for linux/amd64 only, with no QEMU
  set up (under emulation a wrong-platform image would pass the smoke test), and tags it with the
  commit SHA (github.sha), never `latest`;
- its Deployment (k8s/deployment.yaml) rolls out with RollingUpdate and maxUnavailable 0 (a broken
  image never replaces a serving pod), pulls with imagePullPolicy Always, names the image by the
  commit SHA placeholder, and has readiness and liveness probes.

Every assertion message names the measure that was broken.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI_WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
DEPLOYMENT = REPO / "k8s" / "deployment.yaml"
NODE_PLATFORM = "linux/amd64"
SHA_PLACEHOLDER = "${GIT_SHA}"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
# Architecture names other than amd64's, as platforms, Debian, Go, QEMU and uname spell them.
OTHER_ARCHITECTURES = re.compile(
    r"\b(arm64|aarch64|armhf|armel|armv[5-8]l?|arm/v[5-8]|i[3-6]86|386|ppc64le|ppc64|s390x|riscv64|mips\w*)\b",
    re.IGNORECASE,
)


def broken(measure: str, detail: str) -> str:
    return f"preventative measure broken: {measure} ({detail})"


def strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a parsed YAML tree (keys and values; comments are not part of it), with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str):
                yield path, key
            yield from strings(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, f"{where}[{index}]")
    elif isinstance(node, str):
        yield where, node


# ---------------------------------------------------------------------------------------------
# The service's CI workflow


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(CI_WORKFLOW.read_text())
    assert isinstance(data, dict) and isinstance(data.get("jobs"), dict), f"{CI_WORKFLOW} is not a workflow"
    return data


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(job name, job, step) for every step of every job."""
    for name, job in workflow["jobs"].items():
        for step in job.get("steps") or []:
            yield name, job, step


def resolve(text: str, workflow: dict[str, Any], job: dict[str, Any], step: dict[str, Any]) -> str:
    """Substitute ${{ env.NAME }} from the step's, job's and workflow's env (the runner's order)."""
    env = {**(workflow.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression.startswith("env.") and expression[4:] in env:
            return str(env[expression[4:]])
        return match.group(0)

    return EXPRESSION.sub(one, text)


def build_steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for name, job, step in steps(workflow):
        uses = str(step.get("uses") or "")
        run = str(step.get("run") or "")
        if uses.startswith("docker/build-push-action") or re.search(r"\bdocker\s+(buildx\s+)?build\b", run):
            found.append((name, job, step))
    return found


def test_ci_builds_the_image(workflow: dict[str, Any]) -> None:
    assert build_steps(workflow), broken(
        "images are built by CI, never on laptops", f"no docker build step in {CI_WORKFLOW.name}"
    )


def test_ci_builds_for_the_nodes_platform_only(workflow: dict[str, Any]) -> None:
    measure = f"CI builds for {NODE_PLATFORM} only"
    for job_name, job, step in build_steps(workflow):
        label = f"job {job_name}, step {step.get('name') or step.get('uses')!r}"
        if "run" in step:
            requested = re.findall(r"--platform[= ](\S+)", resolve(str(step["run"]), workflow, job, step))
        else:
            requested = [str((step.get("with") or {}).get("platforms", ""))]
        assert requested and all(requested), broken(
            measure, f"{label} names no platform; the builder's default is its host's"
        )
        platforms = {
            p.strip().strip("\"'")
            for value in requested
            for p in re.split(r"[,\s]+", resolve(value, workflow, job, step))
            if p.strip()
        }
        assert platforms == {NODE_PLATFORM}, broken(measure, f"{label} builds for {sorted(platforms)}")
    for path, text in strings(workflow):
        other = OTHER_ARCHITECTURES.search(text)
        assert other is None, broken(measure, f"{path} names another architecture: {other.group(0)!r}")
        for platform in re.findall(r"\blinux/[a-z0-9_]+(?:/v\d)?", text):
            assert platform == NODE_PLATFORM, broken(measure, f"{path} names the platform {platform}")


def test_ci_sets_up_no_emulation(workflow: dict[str, Any]) -> None:
    measure = "no QEMU in CI (under emulation a wrong-platform image would pass the smoke test)"
    for job_name, _job, step in steps(workflow):
        uses = str(step.get("uses") or "")
        assert not re.match(r"(docker/setup-qemu-action|tonistiigi/binfmt|multiarch/qemu-user-static)", uses), broken(
            measure, f"job {job_name} uses {uses}"
        )
    for path, text in strings(workflow):
        assert not re.search(r"qemu|binfmt", text, re.IGNORECASE), broken(measure, f"{path}: {text.strip()[:80]!r}")


def test_ci_tags_images_by_commit_sha_never_latest(workflow: dict[str, Any]) -> None:
    measure = "images are tagged with the commit SHA (github.sha), never latest"
    sha = re.compile(r"(\$\{\{\s*github\.sha\s*\}\}|\$\{?GITHUB_SHA\}?)")
    for job_name, _job, step in build_steps(workflow):
        label = f"job {job_name}, step {step.get('name') or step.get('uses')!r}"
        if "run" in step:
            tags = re.findall(r"(?:-t|--tag)[= ](\S+)", str(step["run"]))
        else:
            tags = [t for t in re.split(r"[,\n]", str((step.get("with") or {}).get("tags", ""))) if t.strip()]
        assert tags, broken(measure, f"{label} sets no tag")
        for tag in tags:
            assert sha.search(tag.rpartition(":")[2]), broken(measure, f"{label} tags {tag.strip()!r}")
    for job_name, _job, step in steps(workflow):
        for command in re.findall(r"docker\s+(?:push|tag)\s+[^\n]*", str(step.get("run") or "")):
            assert sha.search(command), broken(measure, f"job {job_name}: {command.strip()!r} names no SHA tag")
    for path, text in strings(workflow):
        assert not re.search(r":latest\b|\blatest\s*=|value=latest\b", text), broken(
            measure, f"{path}: {text.strip()[:80]!r}"
        )


# ---------------------------------------------------------------------------------------------
# The Deployment


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    found = [d for d in docs if d.get("kind") == "Deployment"]
    assert len(found) == 1, f"{DEPLOYMENT} should hold one Deployment, holds {len(found)}"
    result: dict[str, Any] = found[0]
    return result


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def test_rolling_update_never_takes_a_serving_pod_away(deployment: dict[str, Any]) -> None:
    measure = "RollingUpdate with maxUnavailable 0 (a broken image never replaces a serving pod)"
    strategy = deployment["spec"].get("strategy") or {}
    assert strategy.get("type") == "RollingUpdate", broken(measure, f"strategy type is {strategy.get('type')!r}")
    unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")  # the API's default
    assert str(unavailable).rstrip("%") == "0", broken(measure, f"maxUnavailable is {unavailable!r}")


def test_images_are_always_pulled(deployment: dict[str, Any]) -> None:
    for c in containers(deployment):
        assert c.get("imagePullPolicy") == "Always", broken(
            "imagePullPolicy Always (no node keeps running a stale pull of a tag)",
            f"container {c['name']} has {c.get('imagePullPolicy')!r}",
        )


def test_image_is_named_by_the_commit_sha(deployment: dict[str, Any]) -> None:
    measure = f"the image tag is the commit SHA placeholder {SHA_PLACEHOLDER}, never latest"
    for c in containers(deployment):
        image = str(c.get("image", ""))
        name, _, tag = image.rpartition(":")
        assert "@" not in image and tag == SHA_PLACEHOLDER and "/" in name, broken(
            measure, f"container {c['name']} has image {image!r}"
        )
    sha = "0123456789abcdef0123456789abcdef01234567"
    rendered = string.Template(DEPLOYMENT.read_text()).substitute(GIT_SHA=sha)
    images = [
        c["image"] for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment" for c in containers(d)
    ]
    assert images and all(i.endswith(f":{sha}") for i in images), broken(
        measure, f"substituting GIT_SHA does not give a SHA tag: {images}"
    )


def test_readiness_and_liveness_probes(deployment: dict[str, Any]) -> None:
    handlers = {"httpGet", "tcpSocket", "exec", "grpc"}
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("readinessProbe", "livenessProbe"):
            measure = f"{probe} on every container (a pod that cannot serve is never Ready, a hung one restarts)"
            spec = c.get(probe)
            assert isinstance(spec, dict) and handlers & set(spec), broken(measure, f"container {c['name']} has none")
            port = (spec.get("httpGet") or spec.get("tcpSocket") or {}).get("port")
            assert port is None or port in ports, broken(
                measure, f"container {c['name']}: {probe} uses port {port!r}, which the container does not declare"
            )
