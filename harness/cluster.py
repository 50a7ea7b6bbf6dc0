"""kind cluster lifecycle: create or reuse, a private kubeconfig, load images, export logs.

Works without pytest. Every tool call goes through harness.tools.run, so a failure carries
the command line, exit code and output.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from tenacity import Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_exponential

from harness import engine, profiles, registry, tools
from harness.errors import ClusterGone, GuardRefused, HarnessError, NotManaged, ToolError
from harness.outcomes import LOG_GONE
from harness.profiles import PROFILE_LABEL, Profile

MANAGED_LABEL = "incident-harness.io/managed"
# A fingerprint of the kind configuration a cluster was made with (on every node): a cluster made
# with another configuration (an older harness, other containerd patches) is made again, not reused.
CONFIG_LABEL = "incident-harness.io/config"
REGISTRY_FREE_REPO = "incident-harness/node"
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"  # kind's label on each node container: the cluster's name
KIND_ROLE_LABEL = "io.x-k8s.kind.role"
KUBEADM_CONFIG = "/kind/kubeadm.conf"  # kind writes each node's kubeadm config (with its node labels) here
CREATION_WINDOW = timedelta(seconds=960)  # `kind create cluster` is given 900 s; its containers come in that time


DEFAULT_NAMES = {Profile.FAITHFUL: "incident-harness", Profile.FAST: "incident-harness-fast"}


def default_name(profile: Profile | str = Profile.FAITHFUL) -> str:
    """The cluster name: HARNESS_CLUSTER, else one per profile (the two never share a cluster).

    The same on every pytest-xdist worker: the workers share one cluster (a namespace per test).
    """
    return os.environ.get("HARNESS_CLUSTER") or DEFAULT_NAMES[Profile.parse(profile)]


class ProfileMismatch(HarnessError):
    """An existing cluster of that name was made with another profile: it is not reused silently."""


@contextmanager
def creation_lock(name: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Serialise creating, reusing and deleting cluster name among processes (xdist workers, parallel runs).

    An fcntl lock on a file under the harness cache; the kernel drops it when the holder exits.
    """
    path = tools.cache_dir() / "locks" / f"cluster-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say(f"    cluster {name}: another process is creating or deleting it; waiting for it")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def kubeconfig_path(name: str) -> Path:
    return tools.cache_dir() / "clusters" / name / "kubeconfig"


@dataclass(frozen=True)
class NodeImageChoice:
    image: str
    source: str  # "forced", "kindest", "registry-free"


_PULL_FAILED: dict[str, str] = {}


def resolve_node_image(forced: str | None = None) -> NodeImageChoice:
    """Which node image to use.

    A forced image (argument or HARNESS_NODE_IMAGE) wins. Otherwise kindest/node when it is
    present or can be pulled (a registry is reachable), else the registry-free image built
    by `make node-image`.
    """
    docker = tools.docker_binary()
    forced = forced or os.environ.get("HARNESS_NODE_IMAGE") or None
    if forced:
        return NodeImageChoice(forced, "forced")
    pins = tools.versions()
    kindest = pins["KINDEST_NODE_IMAGE"]
    if _image_present(docker, kindest):
        return NodeImageChoice(kindest, "kindest")
    if kindest not in _PULL_FAILED:
        pulled = tools.run([docker, "pull", kindest], check=False, timeout=900)
        if pulled.returncode == 0:
            return NodeImageChoice(kindest, "kindest")
        _PULL_FAILED[kindest] = (pulled.stderr.strip().splitlines() or ["pull failed"])[-1]
    free = f"{REGISTRY_FREE_REPO}:{pins['K8S_VERSION']}"
    if _image_present(docker, free):
        return NodeImageChoice(free, "registry-free")
    raise HarnessError(
        f"no node image: {kindest} cannot be pulled ({_PULL_FAILED[kindest]}) and the "
        f"registry-free image {free} is not built",
        "run 'make node-image' (builds it from Debian packages and Go modules), or pass --node-image",
    )


def _image_present(docker: str, ref: str) -> bool:
    return tools.run([docker, "image", "inspect", ref], check=False, timeout=60).returncode == 0


@dataclass
class KindCluster:
    """A kind cluster the harness owns, with its own kubeconfig (never ~/.kube/config)."""

    name: str = field(default_factory=default_name)
    node_image: str | None = None
    kind_bin: str | None = None
    workers: int = 0
    kubeconfig: Path = field(default=Path())
    reused: bool = False
    profile: Profile = Profile.FAITHFUL
    started_creation: bool = False  # this process ran `kind create cluster` (a half-made cluster is its to delete)

    def __post_init__(self) -> None:
        self.profile = Profile.parse(self.profile)
        if self.kubeconfig == Path():
            self.kubeconfig = kubeconfig_path(self.name)

    @cached_property
    def kind(self) -> str:
        return tools.kind_binary(self.kind_bin)

    # -- lifecycle -------------------------------------------------------------------------

    def exists(self) -> bool:
        tools.ensure_engine()
        out = tools.run([self.kind, "get", "clusters"], timeout=60).stdout.split()
        return self.name in out

    def create(self, *, wait: float = 300) -> KindCluster:
        """Create the cluster, or reuse it when one of that name exists; wait until it is ready.

        Serialised by creation_lock: a process that finds the cluster made by another meanwhile
        reuses it. A cluster of another profile is refused (ProfileMismatch), never re-made.
        """
        tools.ensure_engine()
        with creation_lock(self.name, say=lambda line: print(line, flush=True)):
            self._create_or_reuse()
        os.chmod(self.kubeconfig, 0o600)
        self.wait_ready(timeout=wait)
        return self

    def _create_or_reuse(self) -> None:
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.exists():
            require_managed(self.name, "reuse")
            existing = self.existing_profile()
            if existing is not None and existing is not self.profile:
                raise profile_mismatch(self.name, existing, self.profile)
            if not self._nodes_running():
                # Its node containers stopped (e.g. the engine restarted): kind cannot revive them.
                require_managed(self.name, "delete (its nodes are stopped)")
                self._kind_delete()
            elif moved := self._moved_nodes():
                # Its nodes came back at other addresses (the engine restarted): kubeadm cannot follow.
                print(
                    f"cluster {self.name}: its nodes' addresses changed since it was made ({'; '.join(moved)}); "
                    "its control plane cannot start again, deleting it and creating it again",
                    flush=True,
                )
                require_managed(self.name, "delete (its nodes' addresses changed)")
                self._kind_delete()
            elif not self.made_with_this_config():
                # Made by an older harness or with other settings: reusing it would test something else.
                print(
                    f"cluster {self.name}: made with another kind configuration than this harness uses "
                    f"(label {CONFIG_LABEL}); deleting it and creating it again",
                    flush=True,
                )
                require_managed(self.name, "delete (made with another configuration)")
                self._kind_delete()
        if self.exists():
            self.reused = True
            self._export_kubeconfig()
        else:
            choice = resolve_node_image(self.node_image)
            profiles.check_node_image(self.profile, choice.image)
            self.node_image = choice.image
            config = self.kubeconfig.parent / "kind-config.yaml"
            config.write_text(yaml.safe_dump(self.kind_config()))
            self.started_creation = True
            # Written before kind makes a container: a creation interrupted before kind wrote the
            # nodes' labels leaves containers that are still known to be ours (judge_ownership).
            tools.write_text_atomic(
                creation_record(self.name),
                json.dumps({"cluster": self.name, "started": datetime.now(UTC).isoformat(), "pid": os.getpid()}),
            )
            tools.run(
                [
                    self.kind,
                    "create",
                    "cluster",
                    "--name",
                    self.name,
                    "--image",
                    choice.image,
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--config",
                    str(config),
                ],
                timeout=900,
                remedy=f"read the output above; 'kind export logs --name {self.name}' collects node logs",
            )
            creation_record(self.name).unlink(missing_ok=True)  # every node carries the label now
            registry.on_cluster_created(self)  # wires in the harness's registry when one runs

    def kind_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "kind": "Cluster",
            "apiVersion": "kind.x-k8s.io/v1alpha4",
            "containerdConfigPatches": [registry.CONTAINERD_CONFIG_PATCH],  # hosts.toml per registry
        }
        patches = self.profile.kubeadm_config_patches()
        if patches:  # faithful adds nothing: its fingerprint stays that of clusters made before profiles
            config["kubeadmConfigPatches"] = patches
        labels = {MANAGED_LABEL: "true", CONFIG_LABEL: config_fingerprint(config), PROFILE_LABEL: self.profile.value}
        config["nodes"] = [{"role": "control-plane", "labels": labels}] + [
            {"role": "worker", "labels": labels} for _ in range(self.workers)
        ]
        return config

    def made_with_this_config(self) -> bool:
        """Every node carries the fingerprint of the kind configuration this harness would use now."""
        wanted = config_fingerprint({k: v for k, v in self.kind_config().items() if k != "nodes"})
        nodes = engine.containers(f"{KIND_CLUSTER_LABEL}={self.name}")
        for node in nodes:
            text = engine.read_file(node.id, KUBEADM_CONFIG)
            labels = kubeadm_node_labels(text.decode(errors="replace") if text else "")
            if labels.get(CONFIG_LABEL) != wanted:
                return False
        return bool(nodes)

    def existing_profile(self) -> Profile | None:
        """The profile the existing cluster's nodes were made with (label PROFILE_LABEL; absent: faithful).

        None when there is no node, or the nodes disagree.
        """
        return profiles.profile_of_nodes(
            [kubeadm_node_labels(text.decode(errors="replace") if text else "") for _, text in self._node_configs()]
        )

    def _node_configs(self) -> list[tuple[engine.Container, bytes | None]]:
        """Each Kubernetes node container of the cluster (running or not) with its kubeadm config, if readable."""
        nodes = engine.containers(f"{KIND_CLUSTER_LABEL}={self.name}")
        kube_nodes = [n for n in nodes if n.labels.get(KIND_ROLE_LABEL) != "external-load-balancer"]
        return [(node, engine.read_file(node.id, KUBEADM_CONFIG)) for node in kube_nodes]

    def delete(self) -> None:
        """Delete the cluster and the files the harness made for it (nothing else).

        Refuses (NotManaged) a cluster of that name that the harness did not make.
        """
        with creation_lock(self.name):
            self._delete()

    def _delete(self) -> None:
        if self.exists():
            require_managed(self.name, "delete")
            self._kind_delete()
        else:
            # Gone: no half-made node of it can still appear (a half-made cluster is deleted in
            # rounds until none is left; the record must outlive each round but the last).
            creation_record(self.name).unlink(missing_ok=True)
        shutil.rmtree(self.kubeconfig.parent, ignore_errors=True)

    def _kind_delete(self) -> None:
        # --kubeconfig: kind removes the cluster's entry from that file, never from ~/.kube/config.
        tools.run(
            [self.kind, "delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig)], timeout=300
        )

    def _nodes_running(self) -> bool:
        """Every node container of the cluster runs (a stopped kind node is not restarted)."""
        nodes = engine.containers(f"{KIND_CLUSTER_LABEL}={self.name}")
        return bool(nodes) and all(n.state in ("running", "paused") for n in nodes)

    def _moved_nodes(self) -> list[str]:
        configs = self._node_configs()
        return moved_nodes([node for node, _ in configs], {node.id: text for node, text in configs})

    def _export_kubeconfig(self) -> None:
        tools.run(
            [self.kind, "export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig)], timeout=60
        )

    # -- API -------------------------------------------------------------------------------

    def api_client(self) -> k8s.ApiClient:
        """A client of this cluster's API server whose every call is bounded in time (see BoundedApiClient)."""
        if not self.kubeconfig.exists():
            raise ClusterGone(f"no kubeconfig for cluster {self.name!r}", "create it first ('make cluster')")
        return BoundedApiClient.from_kubeconfig(self.kubeconfig)

    @cached_property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client())

    @cached_property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api_client())

    def nodes(self) -> list[str]:
        return tools.run([self.kind, "get", "nodes", "--name", self.name], timeout=60).stdout.split()

    def node_exec(self, node: str, cmd: list[str], *, check: bool = True, timeout: float = 120) -> tools.Result:
        return tools.run([tools.docker_binary(), "exec", node, *cmd], check=check, timeout=timeout)

    def wait_ready(self, timeout: float = 300) -> None:
        """Wait (by watch) until every node is Ready and every kube-system pod is Running and ready."""
        deadline = time.monotonic() + timeout
        self._watch_until(
            lambda: self.core.list_node,
            {},
            lambda items: bool(items) and all(_node_ready(n) for n in items),
            deadline,
            "nodes Ready",
        )
        self._watch_until(
            lambda: self.core.list_namespaced_pod,
            {"namespace": "kube-system"},
            lambda items: bool(items) and all(_pod_running_ready(p) for p in items),
            deadline,
            "kube-system pods Running",
        )

    def _watch_until(self, lister: Any, kwargs: dict[str, Any], done: Any, deadline: float, what: str) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessError(
                    f"cluster {self.name!r}: timed out waiting for {what}",
                    f"inspect with 'kubectl --kubeconfig {self.kubeconfig} get pods -A', or 'make clean' and retry",
                )
            listed = self._list_with_retry(lister, kwargs, remaining, what)
            items = {i.metadata.name: i for i in listed.items}
            if done(list(items.values())):
                return
            server_timeout = max(1, int(min(remaining, 60)))
            stream = watch.Watch().stream(
                lister(),
                resource_version=listed.metadata.resource_version,
                timeout_seconds=server_timeout,
                _request_timeout=(REQUEST_TIMEOUT[0], server_timeout + REQUEST_TIMEOUT[1]),
                **kwargs,
            )
            for event in stream:
                obj = event["object"]
                if event["type"] == "DELETED":
                    items.pop(obj.metadata.name, None)
                else:
                    items[obj.metadata.name] = obj
                if done(list(items.values())):
                    return

    def _list_with_retry(self, lister: Any, kwargs: dict[str, Any], seconds: float, what: str) -> Any:
        """A list call, retried (bounded) while the API server is still starting or briefly away."""
        try:
            for attempt in Retrying(
                stop=stop_after_delay(max(seconds, 1)),
                wait=wait_exponential(max=5),
                retry=retry_if_exception_type(Exception),
                reraise=True,
            ):
                with attempt:
                    return lister()(**kwargs, _request_timeout=30)
        except Exception as exc:
            raise ClusterGone(
                f"cluster {self.name!r}: the API server does not answer while waiting for {what} ({type(exc).__name__})",
                f"check 'docker ps' for {self.name}-control-plane; 'make clean' removes a broken cluster",
            ) from exc
        raise AssertionError("unreachable")

    # -- guard -----------------------------------------------------------------------------

    def guard(self) -> None:
        """Refuse to go on unless the kubeconfig points at this harness-made kind cluster."""
        ensure_harness_context(self.kubeconfig, self.core)

    # -- images ----------------------------------------------------------------------------

    def load_image(self, ref: str) -> None:
        """Load a local image into every node (all platforms) and verify it there with crictl."""
        require_managed(self.name, "load an image into")
        tools.run([self.kind, "load", "docker-image", ref, "--name", self.name], timeout=600)
        for node in self.nodes():
            if not self.image_on_node(node, ref):
                raise HarnessError(
                    f"image {ref} was loaded but is not visible to the CRI on node {node}",
                    f"check 'docker exec {node} crictl images'; the image may be for a platform containerd filtered",
                )

    def load_archive(self, archive: Path, refs: list[str]) -> None:
        """Import an image archive (docker or OCI layout, e.g. a multi-platform index) into every node."""
        require_managed(self.name, "load an image archive into")
        tools.run([self.kind, "load", "image-archive", str(archive), "--name", self.name], timeout=600)
        for node in self.nodes():
            for ref in refs:
                if not self.image_on_node(node, ref):
                    raise HarnessError(
                        f"image {ref} from {archive.name} is not visible on node {node}",
                        f"check 'docker exec {node} crictl images'",
                    )

    def image_ids_on_node(self, node: str) -> dict[str, str]:
        """Every reference (tag and repo digest) containerd on node knows -> its image ID (the config digest).

        The image ID is what the node really runs: a container's imageID names one repo digest of
        it, and two manifests of one config (a re-push, a side-load) share that image.
        """
        out = self.node_exec(node, ["crictl", "images", "-o", "json"], timeout=60).stdout
        found: dict[str, str] = {}
        for image in json.loads(out).get("images", []):
            for ref in [*(image.get("repoTags") or []), *(image.get("repoDigests") or [])]:
                found[ref] = str(image.get("id", ""))
                found[_normalise_ref(ref)] = str(image.get("id", ""))
        return found

    def image_on_node(self, node: str, ref: str) -> bool:
        out = self.node_exec(node, ["crictl", "images", "-o", "json"]).stdout
        wanted = _normalise_ref(ref)
        for image in json.loads(out).get("images", []):
            if wanted in {_normalise_ref(t) for t in image.get("repoTags") or []}:
                return True
        return False

    def collect_evidence(self, namespace: str, selector: str, directory: Path) -> Path:
        """Describe, events, objects and logs of a namespace, plus kind's node logs, into directory."""
        directory.mkdir(parents=True, exist_ok=True)
        kubectl = [*tools.kubectl_command(self.kubeconfig), "-n", namespace]
        selector = selector or MANAGED_LABEL
        commands = (
            {}
            if not namespace
            else {
                "describe-pods.txt": ["describe", "pods"],
                "events.txt": ["get", "events", "--sort-by=.lastTimestamp"],
                "objects.yaml": ["get", "deploy,rs,pods,svc,endpoints", "-o", "yaml"],
                "logs.txt": ["logs", "--all-containers", "--prefix", "-l", selector],
            }
        )
        for filename, args in commands.items():
            (directory / filename).write_text(_evidence_text([*kubectl, *args]))
        if namespace:
            (directory / "logs-previous.txt").write_text(self._last_words(kubectl, namespace, selector))
        try:
            self.export_logs(directory / "kind-logs")
        except HarnessError as exc:
            (directory / "kind-logs.error.txt").write_text(str(exc))
        return directory

    def _last_words(self, kubectl: list[str], namespace: str, selector: str) -> str:
        """The log of every container's last terminated instance, each line prefixed [pod/name/container].

        `kubectl logs --previous` is right only while a newer instance runs: while the pod shows
        the exit (Terminated, "Error") or waits in CrashLoopBackOff, the last terminated instance
        is the current one, and --previous names the one before it, already removed by the kubelet.
        A container that restarts within a second (a short maximum back-off) changes between the
        two, so each attempt reads the pod's status again before it chooses.
        """
        try:
            pods: list[Any] = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        except Exception as exc:  # noqa: BLE001 - evidence is best effort; say why it is missing
            return f"listing pods in {namespace} failed: {exc}\n"
        chunks = []
        for pod in pods:
            name = pod.metadata.name
            for status in _statuses(pod):
                first = _last_ended(status)
                if first is None:
                    continue
                text = _evidence_text(partial(self._last_instance_log, kubectl, namespace, name, status.name, first))
                chunks += [f"[pod/{name}/{status.name}] {line}" for line in text.splitlines()]
        return "\n".join(chunks) + "\n" if chunks else "no container of these pods has terminated\n"

    def _last_instance_log(self, kubectl: list[str], namespace: str, pod: str, container: str, first: str) -> str:
        """kubectl logs of the container's last terminated instance, as the pod's status names it now."""
        try:
            current = self.core.read_namespaced_pod(pod, namespace)
            which = _last_ended(next(s for s in _statuses(current) if s.name == container)) or first
        except Exception:  # noqa: BLE001 - gone meanwhile: the first choice stands
            which = first
        previous = which == "previous"
        return _evidence_run([*kubectl, "logs", pod, "-c", container, *(["--previous"] if previous else [])])

    def export_logs(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        tools.run([self.kind, "export", "logs", str(directory), "--name", self.name], timeout=600)
        return directory


def _statuses(pod: Any) -> list[Any]:
    return list(pod.status.init_container_statuses or []) + list(pod.status.container_statuses or [])


def _last_ended(status: Any) -> str | None:
    """Which instance of a container ended last: "previous" while a newer one runs, "current" when the
    current one has terminated (or waits to restart after it), None when none has terminated."""
    if status.state is not None and status.state.running is not None:
        return "previous" if status.last_state is not None and status.last_state.terminated is not None else None
    ended_now = status.state is not None and status.state.terminated is not None
    ended_before = status.last_state is not None and status.last_state.terminated is not None
    return "current" if ended_now or ended_before else None


def _evidence_run(argv: list[str]) -> str:
    result = tools.run(argv, check=False, timeout=60)
    return result.stdout + result.stderr


def _evidence_text(source: list[str] | Callable[[], str]) -> str:
    """One kubectl command's output (argv, or a callable that runs one) for the evidence; re-asked for
    a few seconds while a log it names is gone.

    The kubelet keeps one dead instance per container: when a crash-looping container exits again,
    the older one is removed while the pod status may still name it for a moment.
    """
    once = source if callable(source) else partial(_evidence_run, source)
    retrying = Retrying(
        stop=stop_after_delay(10),
        wait=wait_exponential(multiplier=0.5, max=2),
        retry=retry_if_result(lambda text: LOG_GONE in text),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else "",
    )
    return str(retrying(once))


def _normalise_ref(ref: str) -> str:
    """docker.io/library/x:tag and x:tag name the same image."""
    name = ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    return name


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _pod_running_ready(pod: Any) -> bool:
    if pod.status.phase == "Succeeded":
        return True
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    return bool(pod.status.phase == "Running" and ready)


REQUEST_TIMEOUT = (10.0, 30.0)  # (connect, read) seconds for one API call that names none


class BoundedApiClient(k8s.ApiClient):
    """An ApiClient whose calls give up instead of waiting forever on a node that stopped answering.

    A paused or frozen kind node still accepts TCP connections and then never answers; the
    kubernetes client's default is to wait without limit. Every call that names no timeout
    gets REQUEST_TIMEOUT; watches (``watch=true``) and followed logs (``follow=true``) keep
    theirs, because they are meant to stay open. A read that timed out is not retried.
    """

    request_timeout: tuple[float, float] = REQUEST_TIMEOUT

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, *, retries: urllib3.Retry | bool | None = None) -> BoundedApiClient:
        """A client for kubeconfig's current context; retries: urllib3's (default: connection errors only)."""
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.retries = urllib3.Retry(total=3, read=0, redirect=0) if retries is None else retries
        return cls(configuration)

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if _request_timeout is None and not _streams(url):
            _request_timeout = self.request_timeout
        return super().call_api(method, url, header_params, body, post_params, _request_timeout)


def _streams(url: str) -> bool:
    """The request stays open by design: a watch, or a log that is followed."""
    query = parse_qs(urlparse(url).query)
    return any(value.lower() == "true" for key in ("watch", "follow") for value in query.get(key, []))


def ensure_harness_context(kubeconfig: Path, core: k8s.CoreV1Api | None = None, *, label: str = MANAGED_LABEL) -> None:
    """The guard: the current context must be a local kind cluster that the harness labelled.

    Users keep production contexts; a reproduction must never reach them. With a core client, at
    least one node must carry ``label``=true (tests pass a label no node has to see a refusal).
    """
    try:
        loaded = yaml.safe_load(kubeconfig.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GuardRefused(
            f"cannot read kubeconfig {kubeconfig}: {exc}", "create the cluster with 'make cluster'"
        ) from exc
    current = loaded.get("current-context", "")
    contexts = {c["name"]: c.get("context", {}) for c in loaded.get("contexts") or []}
    clusters = {c["name"]: c.get("cluster", {}) for c in loaded.get("clusters") or []}
    context = contexts.get(current)
    remedy = "use a cluster made by the harness ('make cluster'); the harness never deploys elsewhere"
    if not current.startswith("kind-") or context is None:
        raise GuardRefused(f"refusing context {current!r} of {kubeconfig}: not a kind cluster", remedy)
    server = clusters.get(context.get("cluster", ""), {}).get("server", "")
    host = urlparse(server).hostname or ""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise GuardRefused(f"refusing context {current!r}: API server {server} is not on this machine", remedy)
    if core is not None:
        try:
            labelled = core.list_node(label_selector=f"{label}=true").items
        except Exception as exc:
            raise GuardRefused(f"refusing context {current!r}: cannot list its nodes ({exc})", remedy) from exc
        if not labelled:
            raise GuardRefused(f"refusing context {current!r}: its nodes lack the {label} label", remedy)


# -- ownership: what the harness made, and only that, it may delete --------------------------------


class Ownership(enum.Enum):
    ABSENT = "absent"  # no node container of that cluster name
    MANAGED = "managed"  # every node was made by the harness
    FOREIGN = "foreign"  # some node was not: hands off


@dataclass(frozen=True)
class OwnershipCheck:
    cluster: str
    ownership: Ownership
    reason: str  # for FOREIGN: which node and why
    containers: tuple[engine.Container, ...] = ()


def profile_mismatch(name: str, existing: Profile, wanted: Profile) -> ProfileMismatch:
    """The refusal to reuse cluster name, made with profile existing, for profile wanted."""
    return ProfileMismatch(
        f"cluster {name!r} was made with profile {existing.value}, not the requested {wanted.value}: "
        "it is not reused with other kubelet settings",
        f"pass --profile {existing.value} to use it, or delete it ('python -m harness cluster delete --name {name}') "
        f"to have it made with {wanted.value}",
    )


def config_fingerprint(config: dict[str, Any]) -> str:
    """A short content hash of a kind configuration (without its nodes' labels, which carry it)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _kubelet_extra_args(text: str, name: str) -> list[str]:
    """The values of the kubelet's --NAME in a kubeadm config (kind's /kind/kubeadm.conf), per document.

    kind writes a node's settings for kubeadm's Init- or JoinConfiguration there; kubeletExtraArgs is a
    map up to kubeadm v1beta3, a name/value list from v1beta4.
    """
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        return []
    values: list[str] = []
    for doc in docs:
        registration = doc.get("nodeRegistration")
        extra = registration.get("kubeletExtraArgs") if isinstance(registration, dict) else None
        if isinstance(extra, dict) and extra.get(name):
            values.append(str(extra[name]))
        elif isinstance(extra, list):
            values += [str(a.get("value") or "") for a in extra if isinstance(a, dict) and a.get("name") == name]
    return values


def kubeadm_node_labels(text: str) -> dict[str, str]:
    """The node labels in a kubeadm config (kind's /kind/kubeadm.conf): the kubelet's --node-labels."""
    labels: dict[str, str] = {}
    for value in _kubelet_extra_args(text, "node-labels"):
        for pair in value.split(","):
            key, sep, val = pair.strip().partition("=")
            if key and sep:
                labels[key] = val
    return labels


def kubeadm_node_ips(text: str) -> set[str]:
    """The addresses kubeadm pinned for a node (the kubelet's --node-ip; etcd and the API server use it too)."""
    return {ip.strip() for value in _kubelet_extra_args(text, "node-ip") for ip in value.split(",") if ip.strip()}


def moved_nodes(nodes: list[engine.Container], configs: Mapping[str, bytes | None]) -> list[str]:
    """Pure: the nodes whose address is no longer the one kubeadm pinned when the cluster was made.

    The engine gives a restarted container the next free address (several clusters restarted in
    another order swap theirs); etcd then cannot bind its pinned address and the API server never
    answers (kind issue 2045: kubeadm does not follow a node's address). One line per such node.
    """
    moved = []
    for node in nodes:
        text = configs.get(node.id)
        pinned = kubeadm_node_ips(text.decode("utf-8", "replace")) if text else set()
        ipv4 = {ip for ip in pinned if ":" not in ip}
        if node.state == "running" and ipv4 and node.addresses and not ipv4 & set(node.addresses):
            moved.append(f"{node.name}: made at {', '.join(sorted(ipv4))}, now at {', '.join(node.addresses)}")
    return moved


def creation_record(name: str) -> Path:
    """Where the harness notes that it is starting `kind create cluster --name name`.

    Outside the cluster's folder, which delete() removes: a half-made cluster is deleted in
    several rounds (a container may still appear after the first), each needing the record.
    """
    return tools.cache_dir() / "creating" / f"{name}.json"


def _creation_started(name: str) -> datetime | None:
    """When the harness started `kind create cluster` for name (its record), or None."""
    try:
        record = json.loads(creation_record(name).read_text())
        return datetime.fromisoformat(record["started"]) if record.get("cluster") == name else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def judge_ownership(
    cluster: str,
    nodes: list[engine.Container],
    configs: dict[str, bytes | None],
    creation_started: datetime | None,
) -> OwnershipCheck:
    """Pure: is a kind cluster with these node containers (and their kubeadm configs by id) the harness's?

    A node is the harness's when its kubeadm config carries MANAGED_LABEL=true (the harness
    labels every node at create). A node with no kubeadm config yet (a creation the harness
    interrupted) is the harness's when it was created within CREATION_WINDOW after the harness
    recorded, for this name, that it was starting `kind create cluster`. Everything else is
    someone else's.
    """
    if not nodes:
        return OwnershipCheck(cluster, Ownership.ABSENT, f"no node container of cluster {cluster!r}")
    kube_nodes = [n for n in nodes if n.labels.get(KIND_ROLE_LABEL) != "external-load-balancer"] or nodes
    for node in kube_nodes:
        config = configs.get(node.id)
        if config is None:
            slack = timedelta(seconds=1)  # one clock, but the engine and Python round it differently
            if creation_started is not None and (
                creation_started - slack <= node.created <= creation_started + CREATION_WINDOW
            ):
                continue
            reason = f"node {node.name} has no {KUBEADM_CONFIG} and the harness did not start creating it"
            return OwnershipCheck(cluster, Ownership.FOREIGN, reason, tuple(nodes))
        labels = kubeadm_node_labels(config.decode("utf-8", "replace"))
        if labels.get(MANAGED_LABEL) != "true":
            reason = f"node {node.name} lacks the {MANAGED_LABEL}=true label"
            return OwnershipCheck(cluster, Ownership.FOREIGN, reason, tuple(nodes))
    return OwnershipCheck(cluster, Ownership.MANAGED, "", tuple(nodes))


def check_ownership(name: str) -> OwnershipCheck:
    """Ask the engine for the cluster's node containers and read each one's kubeadm config (stopped ones too)."""
    nodes = engine.containers(f"{KIND_CLUSTER_LABEL}={name}")
    configs = {n.id: engine.read_file(n.id, KUBEADM_CONFIG) for n in nodes}
    return judge_ownership(name, nodes, configs, _creation_started(name))


def refusal(check: OwnershipCheck, action: str) -> NotManaged:
    """The error for a cluster the harness will not touch: one line why, one how to do it by hand."""
    return NotManaged(
        f"refusing to {action} kind cluster {check.cluster!r}: the harness did not make it ({check.reason})",
        f"if it is yours to remove, delete it by hand: kind delete cluster --name {check.cluster}",
    )


def require_managed(name: str, action: str) -> OwnershipCheck:
    """NotManaged unless every node container of cluster name was made by the harness (or there is none)."""
    check = check_ownership(name)
    if check.ownership is Ownership.FOREIGN:
        raise refusal(check, action)
    return check


def delete_cluster(name: str, kind_bin: str | None = None) -> None:
    KindCluster(name=name, kind_bin=kind_bin).delete()


__all__ = [
    "MANAGED_LABEL",
    "KindCluster",
    "NodeImageChoice",
    "Ownership",
    "OwnershipCheck",
    "ProfileMismatch",
    "ToolError",
    "check_ownership",
    "creation_lock",
    "default_name",
    "delete_cluster",
    "ensure_harness_context",
    "judge_ownership",
    "kubeadm_node_ips",
    "kubeadm_node_labels",
    "kubeconfig_path",
    "moved_nodes",
    "profile_mismatch",
    "require_managed",
    "resolve_node_image",
]
