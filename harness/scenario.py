"""Scenario files: the schema, loading with clear errors, and discovery.

A scenario (YAML) names a cluster, images to build for platforms, a workload, the symptoms it
expects, fix steps and the recovery it expects. The field tables below are the schema: the
loader checks a file with them, and ``python -m harness schema`` prints them as JSON Schema.
Rules across fields (image names, the manifests' kinds, outcomes the watch can reach) are
checked next, before anything is built or deployed. Paths in a file resolve against the
project's root (harness.project); scenarios/README.md describes every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import reachable, workload
from harness.errors import HarnessError
from harness.fields import (
    REQUIRED,
    Excludes,
    FieldError,
    Flag,
    Free,
    Implies,
    Integer,
    Node,
    Number,
    OneKey,
    Record,
    Scalar,
    Seq,
    Slot,
    Table,
    Text,
    document_schema,
    python_type,
)
from harness.images import PrepareStep
from harness.outcomes import Outcome
from harness.platforms import PlatformError, parse_platform
from harness.project import Project, find_project

API_VERSION = "incident-harness/v1"
SCHEMA_ID = "urn:incident-harness:scenario:v1"
# This repository's own scenarios, for its tests. The library resolves scenarios through the
# project (harness.project.find_project), never through this path.
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
REMEDY = "fix the scenario file (its schema: python -m harness schema; its fields: scenarios/README.md)"

# Outcome names as people write them (kubectl's words) -> the Outcome member's name. A name whose
# member this build of harness.outcomes lacks is not offered (NotReady, Complete and Failed are
# the verdict module's newer members).
_MEMBERS = {
    "Healthy": "HEALTHY",
    "NotReady": "NOT_READY",
    "CrashLoopBackOff": "CRASH_LOOP",
    "Init:CrashLoopBackOff": "INIT_CRASH_LOOP",
    "ImagePullBackOff": "IMAGE_PULL",
    "CreateContainerError": "CREATE_ERROR",
    "Pending": "PENDING",
    "Unschedulable": "UNSCHEDULABLE",
    "Complete": "COMPLETE",
    "Failed": "FAILED",
    "RanEmulated": "RAN_EMULATED",
    "Timeout": "TIMEOUT",
}
OUTCOME_NAMES: dict[str, Outcome] = {
    name: Outcome[member] for name, member in _MEMBERS.items() if member in Outcome.__members__
}
EXPECTABLE = tuple(name for name in OUTCOME_NAMES if name not in reachable.RESERVED_OUTCOMES)

NAME_PATTERN = r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?"
TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DELIVERIES = ("registry", "load")
NAME_WORDS = "lowercase letters, digits and '-', at most 40 characters"
NAME = re.compile(f"^{NAME_PATTERN}$")
PLATFORM_WORDS = ("native", "foreign")


def _platform_problem(value: str) -> str | None:
    if value in PLATFORM_WORDS:
        return None
    try:
        parse_platform(value)
    except PlatformError as exc:
        return f"native, foreign or a platform such as linux/arm64 ({exc.cause})"
    return None


# --------------------------------------------------------------------------------------------
# The tables (the schema)

SYMPTOM_FIELDS: dict[str, Node] = {
    "waitingReason": Text("a container was seen Waiting with this reason (state.waiting only)"),
    "terminatedReason": Text("a container was seen Terminated with this reason (state and lastState)"),
    "restartsAtLeast": Integer("a container's restart count reached this (the watch waits for it)", minimum=1),
    "neverReady": Flag("true: no pod of the workload was ever Ready; false: one was"),
    "previousLogContains": Text("the log of a container's previous (terminated) instance has this text"),
    "eventContains": Text("a Kubernetes event of the namespace has this text (not the harness's own notes)"),
    "exitCode": Integer("a container terminated with this exit code", minimum=0, maximum=255),
    "probeFailed": Text("the kubelet reported a failure of this probe", choices=reachable.PROBE_TYPES),
    "ranImage": Text(
        "an image name from `images`: every judged pod ran the digest the harness delivered for it "
        "(status.containerStatuses[].imageID)"
    ),
}
STEP_FIELDS: dict[str, Node] = {
    "setImage": Text("an image name from `images`: built, loaded and set on the Deployment"),
    "rolloutRestart": Flag("kubectl rollout restart of the Deployment", only_true=True),
    "rollback": Flag("kubectl rollout undo of the Deployment", only_true=True),
}
# What each symptom's and step's value is in Python (the names other modules code against).
SYMPTOMS: dict[str, type] = {name: python_type(node) for name, node in SYMPTOM_FIELDS.items()}
STEPS: dict[str, type] = {name: python_type(node) for name, node in STEP_FIELDS.items()}
PLATFORM = Text(
    "native (the nodes' platform), foreign (amd64 <-> arm64 of the nodes') or a platform such as linux/arm64",
    pattern=r"native|foreign|[a-z0-9]+(/[a-z0-9_]+){0,2}",
    expected="native, foreign or a platform such as linux/arm64",
    verify=_platform_problem,
)
PREPARE = Record(
    {
        "command": Slot(
            Seq(
                Text("an argument; {context}, {root} and {python} are replaced"),
                "the command (an argument list, no shell), run in the project root; it fills the folder named "
                "by {context} and $HARNESS_CONTEXT",
                min_items=1,
            ),
            REQUIRED,
        ),
        "inputs": Slot(
            Seq(
                Text("a file or folder relative to the project root"),
                "what the command reads: the prepared context is reused while their content is unchanged",
                min_items=1,
            ),
            REQUIRED,
        ),
        "timeout": Slot(Number("seconds the command may take"), 600.0),
    },
    "a command that fills the build context before the build (a copy of `context` first, if given)",
)
IMAGE = Record(
    {
        "context": Slot(Text("build context folder, relative to the project root (default: the root)")),
        "dockerfile": Slot(Text("Dockerfile relative to the project root (default: the context's Dockerfile)")),
        "platform": Slot(PLATFORM, "native"),
        "platforms": Slot(Seq(PLATFORM, "several platforms: one multi-platform index of them", min_items=1)),
        "buildArgs": Slot(
            Table(
                Scalar("passed as --build-arg; {python-base} becomes the Python base image for the platform"),
                "build arguments",
                key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                key_expected="a build argument name",
            )
        ),
        "builder": Slot(Text("the builder", choices=("buildx", "classic")), "buildx"),
        "retag": Slot(
            Record(
                {
                    "of": Slot(Text("an image name from `images` (pushed first)"), REQUIRED),
                    "pulledOn": Slot(PLATFORM, REQUIRED),
                },
                "no build: what `docker pull`, `docker tag` and `docker push` of image `of` make on a machine of "
                "platform `pulledOn` (the engine pulls only that platform, so an index loses the others)",
            )
        ),
        "tag": Slot(
            Text(
                "a fixed tag (e.g. a mutable 'latest') every build of this image is pushed or loaded under; "
                "default: a content tag, new for every change of its inputs",
                pattern=TAG_PATTERN,
                expected="up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -",
            )
        ),
        "prepare": Slot(PREPARE),
    },
    "one image, built for its platform(s) and loaded into the nodes",
    exclusive=(("platform", "platforms"),),
)
EXPECTATION = Record(
    {
        "outcome": Slot(
            Text(
                "what the watch must end in",
                choices=EXPECTABLE,
                reserved=reachable.RESERVED_OUTCOMES,
            ),
            REQUIRED,
        ),
        "symptoms": Slot(
            Seq(
                OneKey(SYMPTOM_FIELDS, what="symptom", example="{restartsAtLeast: 2}"),
                "each one is checked and reported",
            ),
            [],
        ),
        "timeout": Slot(Number("seconds the watch may take"), 180.0),
        "deploymentAvailable": Slot(Flag("the Deployment's current revision must be Available"), False),
    },
    rules=(Implies("deploymentAvailable", True, "outcome", "Healthy"),),
)
WORKLOAD = Record(
    {
        "manifests": Slot(
            Seq(Text("a file relative to the project root"), "applied in order in a fresh namespace", min_items=1),
            REQUIRED,
        ),
        "image": Slot(Text("the image (from `images`) every container gets"), REQUIRED),
        "deployment": Slot(Text("the Deployment to watch (default: the first one)")),
        "container": Slot(Text("set the image of this container only")),
        "initImage": Slot(Text("the image (from `images`) init containers get")),
        "delivery": Slot(
            Text(
                "registry: pushed to the harness's local registry (or --registry) and pulled by the kubelet; "
                "load: side-loaded into the nodes with `kind load`, never pulled",
                choices=DELIVERIES,
            ),
            "registry",
        ),
        "pullPolicy": Slot(
            Text(
                "imagePullPolicy of every container (default: as the manifests say with registry delivery, "
                "IfNotPresent with load)",
                choices=("Always", "IfNotPresent", "Never"),
            )
        ),
        "patch": Slot(Free("merged into each Deployment's spec")),
    },
    rules=(
        Excludes(
            "delivery",
            "load",
            "pullPolicy",
            "Always",
            "side-loaded images are in no registry, so Always fails to pull them; use delivery: registry to pull",
        ),
    ),
)
SCENARIO = Record(
    {
        "apiVersion": Slot(Text(choices=(API_VERSION,)), REQUIRED),
        "kind": Slot(Text(choices=("Scenario",)), REQUIRED),
        "name": Slot(Text("the scenario's name", pattern=NAME_PATTERN, expected=NAME_WORDS), REQUIRED),
        "title": Slot(Text("one line for humans"), REQUIRED),
        "incident": Slot(Text("what happened, in prose")),
        "cluster": Slot(
            Record(
                {
                    "nodeImage": Slot(Text("auto, or a kind node image reference"), "auto"),
                    "workers": Slot(Integer("worker nodes besides the control plane", minimum=0, maximum=3), 0),
                }
            ),
            {},
        ),
        "images": Slot(
            Table(
                IMAGE, "images by name", key_pattern=NAME_PATTERN, key_expected=NAME_WORDS, min_items=1, what="image"
            ),
            REQUIRED,
        ),
        "workload": Slot(WORKLOAD, REQUIRED),
        "expect": Slot(EXPECTATION, REQUIRED),
        "fix": Slot(
            Record(
                {
                    "steps": Slot(Seq(OneKey(STEP_FIELDS, what="step"), "run in order", min_items=1), REQUIRED),
                    "expect": Slot(EXPECTATION, REQUIRED),
                },
                "steps in order, then what recovery looks like",
            )
        ),
    },
    "An incident-harness scenario: images, a workload, the incident it shows, and its fix",
    extensions=True,
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of scenario files, from the tables the loader checks with."""
    return document_schema(SCENARIO, title="incident-harness scenario", schema_id=SCHEMA_ID)


# --------------------------------------------------------------------------------------------
# What a loaded scenario is


class ScenarioError(HarnessError):
    """A scenario file that does not fit the schema: names the file and the field."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    context: Path  # the build context (default: the project root); see prepare
    dockerfile: Path | None
    platform: str  # "native", "foreign" or a platform string
    platforms: tuple[str, ...] = ()  # several: one multi-platform index
    build_args: dict[str, str] = field(default_factory=dict)
    builder: str = "buildx"
    prepare: PrepareStep | None = None  # when set, the build context is the folder it fills
    tag: str | None = None  # a fixed tag; None: a content tag
    retag_of: str | None = None  # no build: the image `docker pull --platform <platform>; tag; push` makes of this one


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
    pull_policy: str | None = "IfNotPresent"  # None: as the manifests say
    patch: dict[str, Any] = field(default_factory=dict)
    delivery: str = "load"  # "registry" or "load" (a scenario file defaults to registry)


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
    root: Path = Path(".")  # the project root the paths resolved against


# --------------------------------------------------------------------------------------------
# Parsing: the tables, then the rules across fields


def _existing(root: Path, rel: str, where: str, want: str) -> Path:
    path = root / rel
    if not (path.is_dir() if want == "folder" else path.is_file() if want == "file" else path.exists()):
        raise FieldError(where, f"a {want} relative to the project root {root} ({rel} does not exist)")
    return path


def _image(name: str, raw: dict[str, Any], root: Path, path: Path) -> ImageSpec:
    where = f"images.{name}"
    context = _existing(root, raw["context"], f"{where}.context", "folder") if raw["context"] else root
    dockerfile = _existing(root, raw["dockerfile"], f"{where}.dockerfile", "file") if raw["dockerfile"] else None
    if raw["retag"] is not None:
        given = [k for k in ("context", "dockerfile", "prepare", "platforms", "buildArgs") if raw[k]]
        if given:
            raise FieldError(f"{where}.{given[0]}", f"no {given[0]}: a retag builds nothing")
        retag = raw["retag"]
        return ImageSpec(name, root, None, retag["pulledOn"], tag=raw["tag"], retag_of=retag["of"])
    if dockerfile is None and raw["prepare"] is None and not (context / "Dockerfile").is_file():
        raise FieldError(f"{where}.dockerfile", f"a Dockerfile relative to the project root ({context} has none)")
    words = raw["platforms"] or []
    if len(set(words)) != len(words):
        raise FieldError(f"{where}.platforms", f"distinct platforms, got {words}")
    step = None
    if raw["prepare"] is not None:
        prep = raw["prepare"]
        inputs = [
            _existing(root, rel, f"{where}.prepare.inputs[{i}]", "file or folder")
            for i, rel in enumerate(prep["inputs"])
        ]
        step = PrepareStep(
            command=tuple(prep["command"]),
            root=root,
            inputs=tuple(inputs),
            base=context if raw["context"] else None,
            timeout=prep["timeout"],
            label=f"{path}: {where}.prepare",
        )
    return ImageSpec(
        name=name,
        context=context,
        dockerfile=dockerfile,
        platform=raw["platform"],
        platforms=tuple(words),
        build_args=dict(raw["buildArgs"] or {}),
        builder=raw["builder"],
        prepare=step,
        tag=raw["tag"],
    )


def _templates(manifests: list[Path], names: list[str]) -> list[reachable.PodTemplate]:
    found = []
    for i, (manifest, rel) in enumerate(zip(manifests, names, strict=True)):
        where = f"workload.manifests[{i}]"
        try:
            docs = workload.load_manifests([manifest])
        except HarnessError as exc:
            raise FieldError(where, f"Kubernetes objects in YAML ({exc.cause})") from exc
        for doc in docs:
            try:
                template = reachable.template_of(doc, rel)
            except reachable.ShapeError as exc:
                raise FieldError(where, str(exc)) from exc
            if template is not None:
                found.append(template)
    return found


def _expectation(raw: dict[str, Any], where: str, pods: reachable.PodTemplate) -> Expected:
    name = raw["outcome"]
    problem = reachable.outcome_problem(name, pods)
    if problem is not None:
        accepted = reachable.reachable_outcomes(pods, EXPECTABLE)
        raise FieldError(f"{where}.outcome", f"one of {accepted} for {pods.where} ({problem}), got {name!r}")
    if raw["deploymentAvailable"] and pods.kind != "Deployment":
        raise FieldError(
            f"{where}.deploymentAvailable", f"false: the watched workload is {pods.where}, not a Deployment"
        )
    symptoms = []
    for i, (kind, value) in enumerate(raw["symptoms"]):
        problem = reachable.symptom_problem(kind, value, name, pods)
        if problem is not None:
            raise FieldError(f"{where}.symptoms[{i}].{kind}", f"a symptom {name} can show for {pods.where} ({problem})")
        symptoms.append(Symptom(kind, value))
    return Expected(OUTCOME_NAMES[name], tuple(symptoms), raw["timeout"], raw["deploymentAvailable"])


def _parse(path: Path, data: Any, root: Path) -> Scenario:
    raw = SCENARIO.check(data, "")
    images = {name: _image(name, spec, root, path) for name, spec in raw["images"].items()}
    known = f"one of the images {sorted(images)}"

    wr = raw["workload"]
    manifests = [_existing(root, rel, "workload.manifests", "file") for rel in wr["manifests"]]
    for key in ("image", "initImage"):
        if wr[key] is not None and wr[key] not in images:
            raise FieldError(f"workload.{key}", f"{known}, got {wr[key]!r}")
    templates = _templates(manifests, wr["manifests"])
    try:
        pods = reachable.watched(templates, wr["deployment"])
    except reachable.ShapeError as exc:
        raise FieldError("workload.deployment" if wr["deployment"] else "workload.manifests", str(exc)) from exc
    if wr["container"] is not None and wr["container"] not in pods.containers:
        raise FieldError("workload.container", f"a container of {pods.where}: one of {list(pods.containers)}")
    if wr["initImage"] is not None and not (pods.init_containers or pods.sidecars):
        raise FieldError("workload.initImage", f"no initImage: {pods.where} has no initContainers")
    if wr["patch"] and not any(t.kind == "Deployment" for t in templates):
        raise FieldError("workload.patch", "no patch: it is merged into Deployments, and the manifests have none")

    delivery = wr["delivery"]
    pull_policy = wr["pullPolicy"]
    for name, spec in images.items():
        if spec.retag_of is not None and spec.retag_of not in images:
            raise FieldError(f"images.{name}.retag.of", f"{known}, got {spec.retag_of!r}")
        if spec.retag_of is not None and images[spec.retag_of].retag_of is not None:
            raise FieldError(f"images.{name}.retag.of", "an image that is built, not another retag")
        if delivery == "load" and (spec.tag is not None or spec.retag_of is not None):
            field_name = "tag" if spec.tag is not None else "retag"
            raise FieldError(
                f"images.{name}.{field_name}",
                f"no {field_name} with workload.delivery: load (a side-load replaces the nodes' copy of a tag and "
                "pulls nothing, so a moved tag or a retag cannot show); use delivery: registry",
            )
    if delivery == "load":
        pull_policy = pull_policy or "IfNotPresent"  # (Always is refused by the table's rule)

    expect = _expectation(raw["expect"], "expect", pods)
    steps: list[Step] = []
    fix_expect = None
    if raw["fix"] is not None:
        for i, (kind, value) in enumerate(raw["fix"]["steps"]):
            if pods.kind != "Deployment":
                raise FieldError(
                    f"fix.steps[{i}].{kind}",
                    f"no {kind} step: it acts on a Deployment, and the watched workload is {pods.where}",
                )
            if kind == "setImage" and value not in images:
                raise FieldError(f"fix.steps[{i}].{kind}", f"{known}, got {value!r}")
            steps.append(Step(kind, value))
        fix_expect = _expectation(raw["fix"]["expect"], "fix.expect", pods)
    for where, expected in (("expect", expect), ("fix.expect", fix_expect)):
        for i, symptom in enumerate(expected.symptoms if expected else ()):
            if symptom.kind == "ranImage" and symptom.value not in images:
                raise FieldError(f"{where}.symptoms[{i}].ranImage", f"{known}, got {symptom.value!r}")

    cluster = raw["cluster"] or {"nodeImage": "auto", "workers": 0}
    return Scenario(
        path=path,
        name=raw["name"],
        title=raw["title"],
        incident=raw["incident"] or "",
        node_image=None if cluster.get("nodeImage", "auto") == "auto" else cluster["nodeImage"],
        workers=cluster.get("workers", 0),
        images=images,
        workload=WorkloadSpec(
            tuple(manifests),
            wr["image"],
            wr["deployment"],
            wr["container"],
            wr["initImage"],
            pull_policy,
            wr["patch"] or {},
            delivery,
        ),
        expect=expect,
        fix_steps=tuple(steps),
        fix_expect=fix_expect,
        root=root,
    )


def parse(path: Path, data: Any, root: Path) -> Scenario:
    """Validate a loaded scenario document against the tables and the rules across fields.

    Paths resolve against root (the project root). Raises ScenarioError: one line naming the
    file, the field and what would be accepted.
    """
    try:
        return _parse(path, data, root)
    except FieldError as exc:
        raise ScenarioError(f"{path}: {exc}", REMEDY) from exc


def find(name: Path | str, project: Project) -> Path:
    """The scenario file for a path (as given, or under the project root) or a name in the scenarios folder."""
    given = Path(name)
    candidates = [given]
    if not given.is_absolute():
        candidates.append(project.root / given)
        if len(given.parts) == 1:
            candidates.append(project.scenarios_dir / (given.name if given.suffix else f"{given.name}.yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ScenarioError(
        f"no scenario file {given} (looked for {', '.join(str(c) for c in candidates[1:]) or 'it as given'})",
        f"list them with 'python -m harness list' (the scenarios of project {project.root} "
        f"live in {project.scenarios_dir})",
    )


def load(path: Path | str, project: Project | None = None) -> Scenario:
    """Load and validate one scenario file (or a name in the project's scenarios folder).

    project: whose root the file's paths resolve against. Default: the --root override if one is
    set, else the opted-in project ([tool.incident-harness]) the file lies in, else the current
    directory's project (find_project()). Nothing is built or deployed here.
    """
    if project is None:
        here = find_project()
        p = find(path, here)
        owner = find_project(start=p.resolve().parent)
        project = owner if owner.configured else here
    else:
        p = find(path, project)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {' '.join(str(exc).split())}", "fix the file's syntax") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: cannot be read ({exc})", "fix its permissions or encoding") from exc
    return parse(p, data, project.root)


def discover(directory: Path | None = None) -> list[Path]:
    """Every scenario file of a folder (default: the current project's), sorted.

    README and files starting with '_' are skipped; a folder that does not exist has none.
    """
    folder = directory if directory is not None else find_project().scenarios_dir
    return sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_")) if folder.is_dir() else []
