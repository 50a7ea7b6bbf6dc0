"""Scenario files: the schema, loading with clear errors, and discovery.

A scenario (YAML) names a cluster, images to build for platforms, a workload, the symptoms it
expects, fix steps and the recovery it expects. See scenarios/README.md for the schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.outcomes import Outcome
from harness.platforms import PlatformError, parse_platform

API_VERSION = "incident-harness/v1"
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

# Outcome names as people write them (kubectl's words) -> Outcome.
OUTCOME_NAMES: dict[str, Outcome] = {
    "Healthy": Outcome.HEALTHY,
    "CrashLoopBackOff": Outcome.CRASH_LOOP,
    "Init:CrashLoopBackOff": Outcome.INIT_CRASH_LOOP,
    "ImagePullBackOff": Outcome.IMAGE_PULL,
    "CreateContainerError": Outcome.CREATE_ERROR,
    "Pending": Outcome.PENDING,
    "Unschedulable": Outcome.UNSCHEDULABLE,
    "RanEmulated": Outcome.RAN_EMULATED,
    "Timeout": Outcome.TIMEOUT,
}
SYMPTOMS = {
    "waitingReason": str,  # a container was seen Waiting with this reason
    "terminatedReason": str,  # a container was seen Terminated with this reason (Error)
    "restartsAtLeast": int,  # restart count reached this
    "neverReady": bool,  # no pod of the workload was ever Ready
    "previousLogContains": str,  # the previous container's log has this text
    "eventContains": str,  # an event of the namespace has this text
}
STEPS = {
    "setImage": str,  # an image name from `images`: becomes the workload's image
    "rolloutRestart": bool,  # kubectl rollout restart
    "rollback": bool,  # kubectl rollout undo
}
PLATFORM_WORDS = {"native", "foreign"}
PREPARERS = {"", "service"}
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class ScenarioError(HarnessError):
    """A scenario file that does not fit the schema: names the file and the field."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    context: Path
    dockerfile: Path | None
    platform: str  # "native", "foreign" or a platform string
    platforms: tuple[str, ...] = ()  # several: one multi-platform index
    build_args: dict[str, str] = field(default_factory=dict)
    builder: str = "buildx"
    prepare: str = ""  # "service": the context is app/ + docker/uvicorn + wheels (images.stage_service_context)


@dataclass(frozen=True)
class Symptom:
    kind: str
    value: Any

    def describe(self) -> str:
        return f"{self.kind}: {self.value}"


@dataclass(frozen=True)
class Expected:
    outcome: Outcome
    symptoms: tuple[Symptom, ...]
    timeout: float
    deployment_available: bool = False


@dataclass(frozen=True)
class Step:
    kind: str
    value: Any


@dataclass(frozen=True)
class WorkloadSpec:
    manifests: tuple[Path, ...]
    image: str
    deployment: str | None = None
    container: str | None = None
    init_image: str | None = None
    pull_policy: str = "IfNotPresent"
    patch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    title: str
    incident: str
    node_image: str | None
    workers: int
    images: dict[str, ImageSpec]
    workload: WorkloadSpec
    expect: Expected
    fix_steps: tuple[Step, ...]
    fix_expect: Expected | None


class _Reader:
    """Reads one mapping of a scenario file, naming the file and field in every error."""

    def __init__(self, path: Path, data: Any, where: str) -> None:
        self.path, self.where = path, where
        if not isinstance(data, dict):
            self.fail("", f"a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, key: str, expected: str) -> None:
        field_name = f"{self.where}.{key}" if self.where and key else (key or self.where or "(top level)")
        raise ScenarioError(
            f"{self.path}: field '{field_name}': expected {expected}",
            "fix the scenario file (schema: scenarios/README.md)",
        )

    def get(self, key: str, kind: type, default: Any = ..., expected: str = "") -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, f"{expected or kind.__name__} (it is required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"{expected or kind.__name__}, got {value!r}")
        return value

    def sub(self, key: str, default: Any = ...) -> _Reader:
        return _Reader(self.path, self.get(key, dict, default), f"{self.where}.{key}" if self.where else key)

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            self.fail(extra[0], f"one of {sorted(allowed)} (unknown field)")


def _outcome(r: _Reader, key: str) -> Outcome:
    name = r.get(key, str)
    if name not in OUTCOME_NAMES:
        r.fail(key, f"one of {sorted(OUTCOME_NAMES)}, got {name!r}")
    return OUTCOME_NAMES[name]


def _platform_word(r: _Reader, key: str, value: Any) -> str:
    if not isinstance(value, str):
        r.fail(key, "native, foreign or a platform such as linux/arm64")
    if value in PLATFORM_WORDS:
        return str(value)
    try:
        return str(parse_platform(value))
    except PlatformError as exc:
        r.fail(key, f"native, foreign or a platform ({exc.cause})")
    raise AssertionError  # unreachable


def _expectation(r: _Reader) -> Expected:
    r.unknown({"outcome", "symptoms", "timeout", "deploymentAvailable"})
    symptoms = []
    for i, item in enumerate(r.get("symptoms", list, [])):
        sr = _Reader(r.path, item, f"{r.where}.symptoms[{i}]")
        if len(sr.data) != 1:
            sr.fail("", f"one of {sorted(SYMPTOMS)} with its value, e.g. {{restartsAtLeast: 2}}")
        kind = next(iter(sr.data))
        if kind not in SYMPTOMS:
            sr.fail(kind, f"one of {sorted(SYMPTOMS)} (unknown symptom)")
        symptoms.append(Symptom(kind, sr.get(kind, SYMPTOMS[kind])))
    timeout = r.get("timeout", float, 180.0, "a number of seconds")
    if timeout <= 0:
        r.fail("timeout", "a positive number of seconds")
    return Expected(_outcome(r, "outcome"), tuple(symptoms), timeout, r.get("deploymentAvailable", bool, False))


def parse(path: Path, data: Any) -> Scenario:
    """Validate a loaded scenario document; raise ScenarioError naming the file and field."""
    root = path.resolve().parent.parent  # scenarios/ sits at the repository root
    r = _Reader(path, data, "")
    r.unknown({"apiVersion", "kind", "name", "title", "incident", "cluster", "images", "workload", "expect", "fix"})
    if r.get("apiVersion", str) != API_VERSION:
        r.fail("apiVersion", f"{API_VERSION!r}")
    if r.get("kind", str) != "Scenario":
        r.fail("kind", "'Scenario'")
    name = r.get("name", str)
    if not NAME.match(name):
        r.fail("name", "lowercase letters, digits and '-', at most 40 characters")

    cluster = r.sub("cluster", {})
    cluster.unknown({"nodeImage", "workers"})
    node_image = cluster.get("nodeImage", str, "auto")
    workers = cluster.get("workers", int, 0)
    if not 0 <= workers <= 3:
        cluster.fail("workers", "0 to 3")

    images: dict[str, ImageSpec] = {}
    images_r = r.sub("images")
    if not images_r.data:
        images_r.fail("", "at least one image")
    for image_name in images_r.data:
        ir = images_r.sub(image_name)
        ir.unknown({"context", "dockerfile", "platform", "platforms", "buildArgs", "builder", "prepare"})
        context = root / ir.get("context", str, ".")
        if not context.is_dir():
            ir.fail("context", f"a folder relative to the repository root ({context} does not exist)")
        dockerfile = ir.get("dockerfile", str, None)
        if dockerfile is not None and not (root / dockerfile).is_file():
            ir.fail("dockerfile", f"a file relative to the repository root ({root / dockerfile} does not exist)")
        platforms = tuple(_platform_word(ir, "platforms", p) for p in ir.get("platforms", list, []))
        platform = _platform_word(ir, "platform", ir.get("platform", str, "native"))
        build_args = ir.get("buildArgs", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in build_args.items()):
            ir.fail("buildArgs", "a mapping of names to strings")
        builder = ir.get("builder", str, "buildx")
        if builder not in {"buildx", "classic"}:
            ir.fail("builder", "'buildx' or 'classic'")
        prepare = ir.get("prepare", str, "")
        if prepare not in PREPARERS:
            ir.fail("prepare", f"one of {sorted(PREPARERS)}")
        images[image_name] = ImageSpec(
            image_name,
            context,
            root / dockerfile if dockerfile else None,
            platform,
            platforms,
            {k: str(v) for k, v in build_args.items()},
            builder,
            prepare,
        )

    wr = r.sub("workload")
    wr.unknown({"manifests", "image", "deployment", "container", "initImage", "pullPolicy", "patch"})
    manifests = []
    for m in wr.get("manifests", list):
        if not isinstance(m, str) or not (root / m).is_file():
            wr.fail("manifests", f"files relative to the repository root ({m!r} does not exist)")
        manifests.append(root / m)
    image = wr.get("image", str)
    if image not in images:
        wr.fail("image", f"one of the images {sorted(images)}")
    init_image = wr.get("initImage", str, None)
    if init_image is not None and init_image not in images:
        wr.fail("initImage", f"one of the images {sorted(images)}")
    pull_policy = wr.get("pullPolicy", str, "IfNotPresent")
    if pull_policy not in {"IfNotPresent", "Never"}:
        wr.fail("pullPolicy", "IfNotPresent or Never (images are loaded into the nodes, not pulled)")
    workload = WorkloadSpec(
        tuple(manifests),
        image,
        wr.get("deployment", str, None),
        wr.get("container", str, None),
        init_image,
        pull_policy,
        wr.get("patch", dict, {}),
    )

    expect = _expectation(r.sub("expect"))

    steps: list[Step] = []
    fix_expect = None
    if "fix" in r.data:
        fr = r.sub("fix")
        fr.unknown({"steps", "expect"})
        for i, item in enumerate(fr.get("steps", list)):
            sr = _Reader(path, item, f"fix.steps[{i}]")
            if len(sr.data) != 1:
                sr.fail("", f"one of {sorted(STEPS)} with its value")
            kind, value = next(iter(sr.data.items()))
            if kind not in STEPS:
                sr.fail(kind, f"one of {sorted(STEPS)} (unknown step)")
            value = sr.get(kind, STEPS[kind])
            if kind == "setImage" and value not in images:
                sr.fail(kind, f"one of the images {sorted(images)}")
            steps.append(Step(kind, value))
        fix_expect = _expectation(fr.sub("expect"))

    return Scenario(
        path=path,
        name=name,
        title=r.get("title", str),
        incident=r.get("incident", str, ""),
        node_image=None if node_image == "auto" else node_image,
        workers=workers,
        images=images,
        workload=workload,
        expect=expect,
        fix_steps=tuple(steps),
        fix_expect=fix_expect,
    )


def load(path: Path | str) -> Scenario:
    """Load and validate one scenario file."""
    p = Path(path)
    if not p.is_file():
        candidate = SCENARIO_DIR / f"{p}.yaml"
        if candidate.is_file():
            p = candidate
        else:
            raise ScenarioError(
                f"no scenario file {p}", f"list them with 'python -m harness list' (they live in {SCENARIO_DIR.name}/)"
            )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}", "fix the file's syntax") from exc
    return parse(p, data)


def discover(directory: Path = SCENARIO_DIR) -> list[Path]:
    """Every scenario file, sorted (README and files starting with '_' are skipped)."""
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("_"))
