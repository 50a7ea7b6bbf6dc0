"""Draft a scenario from an evidence bundle (harness.bundle): the outcome seen, the symptoms shown, the manifest.

The outcome is what harness.outcomes makes of the captured pods (classify_workload, diagnose);
the symptoms are only those the bundle shows (waiting and terminated reasons, exit code, restart
count, never Ready, the decisive line of the last terminated instance's log, probe failures,
a Kubernetes event). The workload manifest is the captured object cleaned of what the cluster
added (status, managedFields, uid, resourceVersion, creationTimestamp, generation, the
cluster's annotations, the API server's defaulted fields, node-specific scheduling). Images
become ``images:`` entries: ``foreign`` where the captured node's architecture differs from the
image's known platform, ``native`` where they agree; what the bundle cannot know (the build
context and Dockerfile of an image whose source it has not seen, a platform it was not told)
is a ``# TODO:`` in the file, and the build context is a placeholder folder whose Dockerfile
refuses to build until a person replaces it. The file is checked with harness.scenario.load
before it is renamed into place.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from harness import bundle as bundles
from harness import reachable
from harness.bundle import Bundle, BundleError, Obj
from harness.outcomes import (
    ContainerState,
    Outcome,
    PodState,
    classify_pod,
    classify_workload,
    diagnose,
    has_exec_format_error,
)
from harness.project import find_project
from harness.workload import MANAGED_LABEL

RESTARTS_CAP: Final = 2  # restartsAtLeast: enough to show a loop without waiting out the back-off
CLUSTER_ANNOTATIONS: Final = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubectl.kubernetes.io/restartedAt",
)
META_DROP: Final = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "namespace",
    "selfLink",
    "ownerReferences",
    "finalizers",
    "generateName",
)
PROBE_DEFAULTS: Final = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
CONTAINER_DEFAULTS: Final = {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
POD_DEFAULTS: Final = {
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "terminationGracePeriodSeconds": 30,
    "restartPolicy": "Always",
    "serviceAccountName": "default",
    "serviceAccount": "default",
    "enableServiceLinks": True,
    "priority": 0,
    "preemptionPolicy": "PreemptLowerPriority",
}
NODE_SPECIFIC: Final = ("nodeName",)
SPEC_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "Deployment": {
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    },
    "StatefulSet": {
        "podManagementPolicy": "OrderedReady",
        "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
    },
}


# Where OUTCOME names come from: the scenario loader's table (kubectl's words).
def _outcome_name(outcome: Outcome) -> str:
    from harness.scenario import OUTCOME_NAMES

    return next(name for name, o in OUTCOME_NAMES.items() if o is outcome)


@dataclass(frozen=True)
class DraftImage:
    name: str  # the images: key
    ref: str  # as the pod spec names it
    image_id: str
    platform: str  # native | foreign | a platform string
    known_platform: str  # what the bundle told ("" unknown)
    node_platform: str
    source: str  # how known_platform was known
    containers: tuple[str, ...]
    init: bool


@dataclass(frozen=True)
class Draft:
    """What draft() decided, before anything is written."""

    name: str
    title: str
    incident: str
    outcome: str
    symptoms: tuple[tuple[str, Any], ...]
    manifest: Obj
    images: tuple[DraftImage, ...]
    main_image: str
    init_image: str | None
    container: str | None
    deployment: str | None
    todos: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Written:
    scenario: Path
    manifest: Path
    contexts: tuple[Path, ...]
    draft: Draft


# ---------------------------------------------------------------------------------------------
# Cleaning the manifest


def _default_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _clean_probe(probe: Any) -> Any:
    if not isinstance(probe, dict):
        return probe
    out = {k: v for k, v in probe.items() if PROBE_DEFAULTS.get(k, object()) != v}
    http = out.get("httpGet")
    if isinstance(http, dict) and http.get("scheme") == "HTTP":
        out["httpGet"] = {k: v for k, v in http.items() if k != "scheme"}
    return out


def _clean_container(c: Obj) -> Obj:
    out = {k: v for k, v in c.items() if CONTAINER_DEFAULTS.get(k, object()) != v}
    if out.get("imagePullPolicy") == _default_pull_policy(str(out.get("image") or "")):
        del out["imagePullPolicy"]
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if key in out:
            out[key] = _clean_probe(out[key])
    if out.get("ports"):
        out["ports"] = [
            {k: v for k, v in p.items() if not (k == "protocol" and v == "TCP")} if isinstance(p, dict) else p
            for p in out["ports"]
        ]
    if out.get("resources") == {}:
        del out["resources"]
    mounts = [m for m in out.get("volumeMounts") or [] if not str(m.get("name", "")).startswith("kube-api-access-")]
    if "volumeMounts" in out:
        if mounts:
            out["volumeMounts"] = mounts
        else:
            del out["volumeMounts"]
    return out


def _clean_pod_spec(spec: Obj, kind: str) -> Obj:
    out = {k: v for k, v in spec.items() if k not in NODE_SPECIFIC and POD_DEFAULTS.get(k, object()) != v}
    if kind in ("Job", "Pod") and spec.get("restartPolicy") != "Always" and "restartPolicy" in spec:
        out["restartPolicy"] = spec["restartPolicy"]  # required for a Job; a bare pod's own choice
    if out.get("securityContext") == {}:
        del out["securityContext"]
    for key in ("containers", "initContainers"):
        if key in out:
            out[key] = [_clean_container(dict(c)) for c in out[key] if isinstance(c, Mapping)]
    volumes = [v for v in out.get("volumes") or [] if not str(v.get("name", "")).startswith("kube-api-access-")]
    if "volumes" in out:
        if volumes:
            out["volumes"] = volumes
        else:
            del out["volumes"]
    tolerations = [
        t
        for t in out.get("tolerations") or []
        if not (
            t.get("key") in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            and t.get("tolerationSeconds") == 300
        )
    ]
    if "tolerations" in out:
        if tolerations:
            out["tolerations"] = tolerations
        else:
            del out["tolerations"]
    return out


def _clean_meta(meta: Mapping[str, Any], pod_template: bool = False) -> Obj:
    out = {k: v for k, v in meta.items() if k not in META_DROP}
    annotations = {k: v for k, v in (out.get("annotations") or {}).items() if k not in CLUSTER_ANNOTATIONS}
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    if out.get("labels"):
        # pod-template-hash is the ReplicaSet's; the harness's own label is added again when it applies
        drop = {"pod-template-hash", MANAGED_LABEL} if pod_template else {MANAGED_LABEL}
        out["labels"] = {k: v for k, v in out["labels"].items() if k not in drop}
    return out


def clean_manifest(obj: Mapping[str, Any]) -> Obj:
    """A workload object as a person would write it: what the cluster added or defaulted removed."""
    obj = copy.deepcopy(dict(obj))
    kind = str(obj.get("kind") or "")
    out: Obj = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": _clean_meta(obj.get("metadata") or {})}
    spec = dict(obj.get("spec") or {})
    if kind == "Pod":
        out["spec"] = _clean_pod_spec(spec, kind)
        return out
    for key, default in SPEC_DEFAULTS.get(kind, {}).items():
        if spec.get(key) == default:
            del spec[key]
    template = dict(spec.get("template") or {})
    if template:
        meta = _clean_meta(template.get("metadata") or {}, pod_template=True)
        template["metadata"] = meta
        template["spec"] = _clean_pod_spec(dict(template.get("spec") or {}), kind)
        spec["template"] = template
    out["spec"] = spec
    return out


# ---------------------------------------------------------------------------------------------
# Deciding


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    s = re.sub(r"-+", "-", s)[:limit].strip("-")
    return s or "image"


def _image_name(ref: str) -> str:
    repo = ref.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    return _slug(last.split(":", 1)[0])


def _foreign_word(known: str, node: str) -> str:
    """native / foreign / the platform itself, from the image's known platform and the node's.

    "foreign" means what the runner resolves it to: arm64 on amd64 nodes, amd64 on any other.
    """
    from harness.platforms import PlatformError, parse_platform

    if not known or not node:
        return "native"
    try:
        k, n = parse_platform(known), parse_platform(node)
    except PlatformError:
        return "native"
    if (k.os, k.architecture) == (n.os, n.architecture):
        return "native"
    foreign = "arm64" if n.architecture == "amd64" else "amd64"
    return "foreign" if (k.os, k.architecture) == ("linux", foreign) else str(k)


def _watched(b: Bundle) -> Obj | None:
    """The workload object to draft: the Deployment, else the pods' top owner, else None (bare pods)."""
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        found = next((o for o in b.workload if o.get("kind") == kind), None)
        if found is not None:
            return found
    return None


def _pod_from_owner(pod: Obj) -> Obj:
    """A bare pod's manifest from the pod itself."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod.get("metadata") or {}, "spec": pod.get("spec") or {}}


def _stable_event_text(message: str, pod: str, namespace: str) -> str:
    """The part of an event message that does not name this pod's instance (pod name, uid, namespace)."""
    cut = len(message)
    for word in (pod, namespace):
        if word and word in message:
            cut = min(cut, message.index(word))
    uid = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", message)
    if uid:
        cut = min(cut, uid.start())
    text = message[:cut].rstrip(" (_/:")
    return text if len(text) >= 12 else ""


def _reason_of(cause: Any) -> str:
    return str(getattr(cause, "reason", "") or "unknown")


def _decisive_line(lines: Sequence[str]) -> str:
    line = next((t for t in reversed(lines) if has_exec_format_error([t])), "")
    return (line or (lines[-1] if lines else "")).strip()


def _backoff_events(events: Sequence[Obj], pod: str, container: str) -> list[Obj]:
    """The kubelet's BackOff events for a container ("Back-off restarting failed container NAME ...")."""
    return [
        e
        for e in events
        if e.get("reason") == "BackOff"
        and (e.get("involvedObject") or {}).get("name") == pod
        and re.search(rf"restarting failed container {re.escape(container)}\b", str(e.get("message") or ""))
    ]


def _between_restarts(pods: Sequence[PodState], events: Sequence[Obj]) -> tuple[PodState, ContainerState] | None:
    """A container caught between two crashes: it failed (now, or the run before), is not ready, and the kubelet
    backed off restarting it. The snapshot may show it running again, or terminated before the back-off's
    Waiting reason was written (a pod held in Pending by such an init container is an init crash loop)."""
    for p in pods:
        for c in p.containers:
            done = c.state == "terminated" and not c.failed  # it has since succeeded
            failed_before = c.restarts >= 1 and c.last_exit_code not in (None, 0) and not done
            if (c.failed or failed_before) and not c.ready and _backoff_events(events, p.name, c.name):
                return p, c
    return None


def decide(
    b: Bundle,
    *,
    name: str | None = None,
    platforms: Mapping[str, str] | None = None,
) -> Draft:
    """The scenario the bundle supports, as data (nothing written)."""
    todos: list[str] = []
    notes: list[str] = list(b.missing)
    watched = _watched(b)
    if watched is None:
        if len(b.pods) > 1:
            notes.append(f"no workload object in the bundle: drafted a bare pod from {b.pods[0]['metadata']['name']}")
        watched = _pod_from_owner(b.pods[0])
        todos.append("the bundle has no workload object (Deployment ...): the manifest is a bare pod made from a pod")
    manifest = clean_manifest(watched)
    kind = str(manifest["kind"])
    wname = str(manifest["metadata"].get("name") or "workload")
    outcome = classify_workload(list(b.pods), list(b.events))
    pods = [classify_pod(p) for p in b.pods]
    culprit_pod = next((p for p in pods if p.outcome is outcome and p.culprit is not None), None) or next(
        (p for p in pods if p.culprit is not None), pods[0]
    )
    c = culprit_pod.culprit
    loop = _between_restarts(pods, b.events) if outcome in (None, Outcome.HEALTHY, Outcome.PENDING) else None
    if loop is not None:
        culprit_pod, c = loop
        outcome = Outcome.INIT_CRASH_LOOP if c.init else Outcome.CRASH_LOOP
        notes.append(
            f"the capture caught pod {culprit_pod.name} container {c.name} between restarts ({c.describe()}); "
            f"restarts {c.restarts}, last exit code {c.last_exit_code} and the kubelet's BackOff event make it "
            f"{outcome.label}"
        )
    if outcome is None:
        outcome = Outcome.TIMEOUT
        todos.append("the captured pods had not settled (starting, or running without a decision): outcome Timeout")
    outcome_name = _outcome_name(outcome)
    raw_pod = next(p for p in b.pods if p["metadata"]["name"] == culprit_pod.name)
    previous = b.log(culprit_pod.name, c.name, "previous") if c else ()
    node_info = b.nodes.get(culprit_pod.node) or {}
    cause = diagnose(
        raw_pod,
        list(b.events),
        list(previous),
        node_platform=bundles.node_platform(node_info),
        image_platforms={r.image: (r.image_platform,) for r in b.images if r.image_platform},
    )

    symptoms: list[tuple[str, Any]] = []
    if c is not None:
        if c.state == "waiting" and c.reason:
            symptoms.append(("waitingReason", c.reason))
        elif _backoff_events(b.events, culprit_pod.name, c.name):
            symptoms.append(("waitingReason", "CrashLoopBackOff"))  # the kubelet's BackOff: it waited in back-off
        term_reason = c.reason if c.state == "terminated" else c.last_reason
        exit_code = c.exit_code if c.state == "terminated" else c.last_exit_code
        if term_reason:
            symptoms.append(("terminatedReason", term_reason))
        if exit_code is not None:
            symptoms.append(("exitCode", exit_code))
        restarts = max(
            (x.restarts for p in pods for x in p.containers if (x.name, x.init) == (c.name, c.init)), default=0
        )
        if restarts >= 1:
            symptoms.append(("restartsAtLeast", min(restarts, RESTARTS_CAP)))
            if restarts > RESTARTS_CAP:
                notes.append(
                    f"{c.subject_name} had restarted {restarts} times; restartsAtLeast {RESTARTS_CAP} shows the loop"
                )
    if not any(p.ready for p in pods) and outcome is not Outcome.HEALTHY:
        symptoms.append(("neverReady", True))
    line = _decisive_line(previous)
    if line:
        symptoms.append(("previousLogContains", line))
    probe_seen = {
        m.group(1).lower()
        for e in b.events
        if (e.get("involvedObject") or {}).get("name") == culprit_pod.name
        and (
            m := re.match(r"\s*(Liveness|Readiness|Startup) probe (failed|errored)", str(e.get("message") or ""), re.I)
        )
    }
    probe_caused = outcome is Outcome.NOT_READY or bool(cause and cause.probe)
    for probe in sorted(probe_seen):
        if probe_caused:
            symptoms.append(("probeFailed", probe))
        else:  # a probe that failed while a crashing container was briefly up: incidental, and racy to assert
            notes.append(
                f"seen, not asserted: a {probe} probe failure of {culprit_pod.name} (the cause is {_reason_of(cause)})"
            )
    warnings = [
        e
        for e in b.events
        if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("name") == culprit_pod.name
    ]
    chosen = next((e for e in warnings if e.get("reason") == "BackOff"), warnings[-1] if warnings else None)
    if chosen is not None:
        text = _stable_event_text(str(chosen.get("message") or ""), culprit_pod.name, b.namespace)
        if text:
            symptoms.append(("eventContains", text))
    template = reachable.template_of(manifest, "manifest")
    if template is not None:
        kept = []
        for kind_, value in symptoms:
            problem = reachable.symptom_problem(kind_, value, outcome_name, template)
            if problem is None:
                kept.append((kind_, value))
            else:
                notes.append(f"left out {kind_}: {value} ({problem})")
        symptoms = kept
        if reachable.outcome_problem(outcome_name, template) is not None:
            raise BundleError(
                f"{b.source}: the pods show {outcome_name}, which {template.where} cannot reach "
                f"({reachable.outcome_problem(outcome_name, template)})",
                "check that the bundle's workload object is the pods' owner",
            )

    # Images
    given = dict(platforms or {})
    by_ref: dict[tuple[str, bool], list[bundles.ImageRecord]] = {}
    for r in b.images:
        by_ref.setdefault((r.image, r.init), []).append(r)
    images: list[DraftImage] = []
    taken: set[str] = set()
    for (ref, init), records in sorted(by_ref.items(), key=lambda kv: (not kv[0][1], kv[0][0])):
        first = records[0]
        known = given.get(ref) or given.get(first.image_id) or first.image_platform
        source = (
            "given with --image-platform" if (given.get(ref) or given.get(first.image_id)) else first.platform_source
        )
        word = _foreign_word(known, first.node_platform)
        if not known:
            todos.append(
                f"image {ref}: the bundle does not say its platform (drafted native); if it was built for another "
                "CPU than the nodes', say platform: foreign (or draft with --image-platform REF=PLATFORM)"
            )
        base = _image_name(ref)
        key = base
        n = 2
        while key in taken:
            key = f"{base}-{n}"[:40]
            n += 1
        taken.add(key)
        images.append(
            DraftImage(
                name=key,
                ref=ref,
                image_id=first.image_id,
                platform=word,
                known_platform=known,
                node_platform=first.node_platform,
                source=source,
                containers=tuple(sorted({x.container for x in records})),
                init=init,
            )
        )
    spec = manifest["spec"] if kind == "Pod" else manifest["spec"]["template"]["spec"]
    mains = [i for i in images if not i.init]
    inits = [i for i in images if i.init]
    container = None
    if not mains:
        raise BundleError(f"{b.source}: no container status names an image", "capture again once the pods exist")
    if len(mains) > 1:
        culprit_image = next((i for i in mains if c is not None and c.name in i.containers), mains[0])
        main = culprit_image
        container = culprit_image.containers[0]
        todos.append(
            f"the containers run {len(mains)} images; only {container} gets image {main.name}: the others keep their "
            "manifest image, which must be loadable into the nodes"
        )
    else:
        main = mains[0]
    init_image = None
    if inits and {s.get("name") for s in spec.get("initContainers") or []}:
        init_image = inits[0].name
        if len(inits) > 1:
            todos.append("the init containers run several images; all get " + init_image)
        if all(i.ref == main.ref for i in inits):
            init_image = None
            images = [i for i in images if not i.init]
    images = [i for i in images if i.name in {main.name, init_image}]
    for i in images:
        todos.append(
            f"image {i.name}: give the build context and Dockerfile of {i.ref} (the bundle has not seen its source)"
        )

    reason = cause.reason if cause else outcome_name
    title = f"{kind} {wname}: {outcome_name} ({reason})"
    incident = f"{kind} {wname}: pods ended {outcome_name}"
    if cause is not None:
        where = f"pod {cause.pod}" + (f" container {cause.container}" if cause.container else "")
        incident += f"; {where}: {cause.reason}"
        if cause.exit_code is not None:
            incident += f", exit code {cause.exit_code}"
        if cause.explanation:
            incident += f"; {cause.explanation}"
        if line:
            incident += f"; its last terminated instance logged {line!r}"
    scenario_name = _slug(name or f"{wname}-{outcome_name}")
    return Draft(
        name=scenario_name,
        title=title,
        incident=incident,
        outcome=outcome_name,
        symptoms=tuple(symptoms),
        manifest=manifest,
        images=tuple(images),
        main_image=main.name,
        init_image=init_image,
        container=container,
        deployment=wname if kind == "Deployment" else None,
        todos=tuple(todos),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# Writing


PLACEHOLDER_DOCKERFILE: Final = """\
# TODO: this placeholder stands for the Dockerfile of {ref}
# (imageID {image_id}; it ran on {node}). Draft could not see its source.
# Replace this folder with the image's build context, or point images.{name}.context and
# images.{name}.dockerfile in {scenario} at the real ones (see README.md here).
# Until then the build stops at the next line, on purpose.
TODO replace-this-placeholder-with-the-Dockerfile-of-{name}
"""
PLACEHOLDER_README: Final = """\
# TODO: the build context of image `{name}`

`python -m harness draft` made this folder as a placeholder for the image that ran as
`{ref}` (imageID `{image_id}`, on a {node} node; the image's platform as the bundle knew it:
{known}). The bundle holds what the cluster showed, not the image's source, so:

1. put the image's build context here (or point `images.{name}.context` / `dockerfile` in
   `{scenario}` at it, and delete this folder);
2. build for the platform the scenario names (`platform: {platform}`), as the incident's image was;
3. `python -m harness reproduce {scenario}`.
"""


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def render(d: Draft, manifest_rel: str, contexts: Mapping[str, str], bundle_note: str) -> str:
    """The scenario file text: the fields, with comments where a person must look."""
    lines = [
        f"# Drafted by `python -m harness draft` from {bundle_note}.",
        "# Lines marked TODO need a person; the rest is what the evidence showed.",
    ]
    for note in d.notes:
        lines.append(f"# note: {note}")
    head: dict[str, Any] = {
        "apiVersion": "incident-harness/v1",
        "kind": "Scenario",
        "name": d.name,
        "title": d.title,
        "incident": d.incident,
    }
    lines.append(_yaml(head).rstrip())
    evidence = {
        "x-evidence": {
            "images": [
                {
                    "name": i.name,
                    "ran": i.ref,
                    "imageID": i.image_id,
                    "nodePlatform": i.node_platform or "unknown",
                    "imagePlatform": i.known_platform or "unknown",
                    **({"platformSource": i.source} if i.source else {}),
                }
                for i in d.images
            ]
        }
    }
    lines.append("")
    lines.append("# What the bundle told about each image (ignored by the loader: x- fields).")
    lines.append(_yaml(evidence).rstrip())
    lines.append("")
    lines.append("images:")
    for i in d.images:
        lines.append(f"  {i.name}:")
        lines.append(f"    # TODO: the build context and Dockerfile of {i.ref}: the bundle has not seen its source;")
        lines.append(f"    # {contexts[i.name]} is a placeholder that refuses to build until you replace it.")
        lines.append(f"    context: {contexts[i.name]}")
        platform_note = (
            f"the image is {i.known_platform}, the nodes {i.node_platform or 'unknown'} (x-evidence says how known)"
            if i.known_platform
            else "TODO: platform unknown to the bundle; native drafted"
        )
        lines.append(f"    platform: {i.platform}    # {platform_note}")
    lines.append("")
    workload: dict[str, Any] = {"manifests": [manifest_rel], "image": d.main_image}
    if d.deployment:
        workload["deployment"] = d.deployment
    if d.container:
        workload["container"] = d.container
    if d.init_image:
        workload["initImage"] = d.init_image
    lines.append(_yaml({"workload": workload}).rstrip())
    lines.append("")
    lines.append("# What the captured pods showed (harness.outcomes on the bundle's pods and events).")
    expect = {"expect": {"outcome": d.outcome, "timeout": 180, "symptoms": [{k: v} for k, v in d.symptoms]}}
    lines.append(_yaml(expect).rstrip())
    if d.todos:
        lines.append("")
        for todo in d.todos:
            lines.append(f"# TODO: {todo}")
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write(
    b: Bundle,
    out: Path | None = None,
    *,
    name: str | None = None,
    platforms: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> Written:
    """Draft from b and write the scenario, its manifest and placeholder contexts; validated before rename."""
    from harness import scenario

    project = find_project(root=root, start=(out.resolve().parent if out is not None else None))
    d = decide(b, name=name or (out.stem if out is not None else None), platforms=platforms)
    out = (out if out is not None else project.scenarios_dir / f"{d.name}.yaml").resolve()
    proot = project.root.resolve()
    if not out.is_relative_to(proot):
        raise BundleError(
            f"{out}: outside the project root {proot}", "draft into the project's scenarios folder, or pass --root"
        )
    if out.exists():
        raise BundleError(f"{out} already exists", "name another file with --out, or delete it first")
    manifest_path = out.parent / "manifests" / f"{out.stem}.yaml"
    contexts_dir = out.parent / "contexts" / out.stem
    if manifest_path.exists() or contexts_dir.exists():
        raise BundleError(
            f"{manifest_path if manifest_path.exists() else contexts_dir} already exists", "name another --out"
        )
    rel = {i.name: str((contexts_dir / i.name).relative_to(proot)) for i in d.images}
    scenario_rel = str(out.relative_to(proot))
    made: list[Path] = []
    try:
        header = f"# Drafted by `python -m harness draft` from the workload object in {b.source.name}, cleaned of\n"
        header += "# status, managedFields, IDs, the cluster's annotations and defaulted fields, and nodeName.\n"
        _atomic_text(manifest_path, header + _yaml(d.manifest))
        made.append(manifest_path)
        for i in d.images:
            tmp = Path(tempfile.mkdtemp(prefix=f".{i.name}.partial-", dir=_mkdirs(contexts_dir.parent)))
            fields = {
                "name": i.name,
                "ref": i.ref,
                "image_id": i.image_id or "unknown",
                "node": i.node_platform or "unknown",
                "known": i.known_platform or "unknown",
                "platform": i.platform,
                "scenario": scenario_rel,
            }
            (tmp / "Dockerfile").write_text(PLACEHOLDER_DOCKERFILE.format(**fields))
            (tmp / "README.md").write_text(PLACEHOLDER_README.format(**fields))
            contexts_dir.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, contexts_dir / i.name)
        if d.images:
            made.append(contexts_dir)
        bundle_note = (
            f"the kubectl files in {b.source.name}"
            if b.plain
            else f"the evidence bundle {b.source.name} (context {b.context}, namespace {b.namespace}, captured {b.captured_at})"
        )
        text = render(d, str(manifest_path.relative_to(proot)), rel, bundle_note)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".yaml", dir=_mkdirs(out.parent))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            scenario.load(Path(tmp_name), project)
        except BaseException:
            os.unlink(tmp_name)
            raise
        os.replace(tmp_name, out)
    except BaseException:
        for path in made:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    return Written(out, manifest_path, tuple(contexts_dir / i.name for i in d.images), d)


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
