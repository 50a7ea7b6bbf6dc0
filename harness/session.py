"""The session: one kind cluster and what runs on it, for both doors (the CLI's runner and the pytest plugin).

A session owns, whichever door opened it:

- the cluster: created or reused (a cluster whose creation was interrupted is deleted, or the
  next run would reuse a cluster that never answers);
- namespaces, and apply: a manifest the API server rejects (HTTP 400/422, or a kind it does
  not know) is bad input naming the file and the object, not an environment failure;
- the capacity gate (admit): a workload is applied only when its peak requests fit what the
  nodes can still allocate, beside what other runs of this process were admitted for; it waits
  (said, and returned for the report) until then. One that can never fit is bad input;
- the supervised watch: the watch runs in a helper thread while the API server is probed. A
  paused or frozen node accepts TCP connections and never answers, so a watch alone would sit
  until its deadline and report a wrong Timeout. One rule says when the cluster is gone: no
  answer for CLUSTER_GONE_AFTER seconds, whether one call waited that long (REQUEST_TIMEOUT),
  the watch's retries did (gone_after) or the probes did. An abandoned watch is told to stop;
- the emulation check: a workload whose single-platform image these nodes would run under
  emulation is never plain Healthy (it is "Ran under emulation": masked, not fixed);
- bounded evidence: the API server is probed first; `kind export logs` never runs against a
  paused node;
- clean-up in reverse order, each action bounded in time.

Works without pytest.
"""

from __future__ import annotations

import inspect
import re
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import tenacity
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from harness import capacity, images, outcomes, platforms, profiles, signals, tools, workload
from harness.cluster import BoundedApiClient, KindCluster, default_name
from harness.errors import BadInput, ClusterGone, HarnessError, ManifestRejected
from harness.outcomes import Evidence, Outcome, Verdict
from harness.platforms import EmulationState, Platform
from harness.profiles import KubeletSettings, Profile
from harness.registry import Registry

T = TypeVar("T")

API_PROBE_TIMEOUT = 5.0  # one probe of the API server (GET /version) may take this long
API_PROBE_INTERVAL = 5.0  # seconds between probes while a supervised call runs
CLUSTER_GONE_AFTER = 15.0  # the one rule: no answer for this long means the cluster is gone
REQUEST_TIMEOUT = (API_PROBE_TIMEOUT, CLUSTER_GONE_AFTER)  # (connect, read) of one API call naming none
CLEANUP_SECONDS = 30.0  # one clean-up action may take this long
EVIDENCE_SECONDS = 240.0  # describe, events, logs and kind's node logs together
HALF_MADE_SECONDS = 120.0  # deleting a cluster whose creation was interrupted
STOP_JOIN_SECONDS = 1.5  # an abandoned watch's thread is given this long to end (it stops within about a second)
CAPACITY_WAIT_SECONDS = 900.0  # the longest a workload waits for room on the nodes
CAPACITY_RECHECK_SECONDS = 2.0  # the nodes are read again this often while waiting (a release wakes at once)


@dataclass(frozen=True)
class Admission:
    """A workload admitted by the capacity gate: what it asks, and how long it waited for room."""

    namespace: str
    demand: capacity.Demand
    waited: float = 0.0
    reason: str = ""  # why it waited ("needs cpu 300m, free 120m"); "" when it did not


@dataclass(frozen=True)
class Watched:
    """One supervised watch: the verdict, and the emulation that masked it (None: nothing emulated)."""

    verdict: Verdict
    emulation: str | None = None

    @property
    def masked(self) -> bool:
        """An image ran under emulation: the incident cannot show here."""
        return self.emulation is not None and self.verdict.outcome is Outcome.RAN_EMULATED


@dataclass
class _Cleanup:
    what: str
    action: Callable[[], object]
    needs_api: bool
    remedy: str = ""


def _quiet(_line: str) -> None:
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def api_problem(kubeconfig: Path, timeout: float = API_PROBE_TIMEOUT) -> str | None:
    """None when the API server of kubeconfig answers GET /version within timeout, else why not.

    No retries: a paused node accepts connections and then never answers; that must show
    within the timeout, not after urllib3's retries.
    """
    try:
        with BoundedApiClient.from_kubeconfig(kubeconfig, retries=False) as api:
            k8s.VersionApi(api).get_code(_request_timeout=(timeout, timeout))
    except Exception as exc:  # noqa: BLE001 - any failure means: not answering
        text = first_line(exc)
        if "timed out" in text.lower():
            return f"no answer within {timeout:.0f} s"
        if "refused" in text.lower():
            return "connection refused"
        return text[:200] or type(exc).__name__
    return None


def cluster_gone(name: str, what: str) -> ClusterGone:
    """ClusterGone for cluster name, with what to look at and how to recover."""
    return ClusterGone(
        f"cluster {name!r} {what}",
        f"check its node with 'docker ps -a --filter label=io.x-k8s.kind.cluster={name}' "
        f"(paused? stopped? gone?); unpause or delete it ('kind delete cluster --name {name}') and run again",
    )


class Session:
    """A kind cluster and what runs on it; close() undoes what the session made, in reverse order."""

    def __init__(
        self,
        cluster: KindCluster,
        *,
        say: Callable[[str], None] = _quiet,
        gone_after: float = CLUSTER_GONE_AFTER,
        registry_address: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.registry_address = registry_address  # a user's registry (--registry HOST); None: the harness's
        self.say = say
        self.gone_after = gone_after
        self._cleanups: list[_Cleanup] = []
        self._namespaces: dict[str, _Cleanup] = {}
        self._platforms: dict[str, tuple[Platform, ...]] = {}
        self._node_platform: Platform | None = None
        self._emulation: EmulationState | None = None
        self._api: k8s.ApiClient | None = None
        self._registry: Registry | None = None
        self._registry_lock = threading.Lock()
        self._image_ids: dict[str, set[str]] = {}  # pushed digest -> the image IDs of its manifests
        self._profile: Profile | None = None
        self._kubelet: KubeletSettings | None = None

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        name: str | None = None,
        node_image: str | None = None,
        kind_bin: str | None = None,
        workers: int = 0,
        keep_cluster: bool = True,
        say: Callable[[str], None] = _quiet,
        registry_address: str | None = None,
        profile: Profile | str = Profile.FAITHFUL,
    ) -> Session:
        """Create the cluster, or reuse one of that name; unless keep_cluster, close() deletes a cluster it created.

        profile: the kubelet settings the cluster is made with (harness.profiles); the default name
        is the profile's; an existing cluster of another profile is refused (ProfileMismatch).
        """
        wanted = Profile.parse(profile)
        cluster = KindCluster(
            name=name or default_name(wanted), node_image=node_image, kind_bin=kind_bin, workers=workers, profile=wanted
        )
        existed = cluster.exists()
        try:
            cluster.create()
        except KeyboardInterrupt:
            # Only a creation this process started: another (an xdist worker) may be making it meanwhile.
            if not existed and cluster.started_creation:
                say(f"    interrupted: deleting the half-made cluster {cluster.name}")
                _bounded(partial(_delete_half_made, cluster), HALF_MADE_SECONDS, f"delete cluster {cluster.name}")
            raise
        session = cls(cluster, say=say, registry_address=registry_address)
        if not cluster.reused and not keep_cluster:
            session.defer(f"delete cluster {cluster.name}", cluster.delete, needs_api=False)
        session.start()
        return session

    def start(self) -> Session:
        """Check the guard; read the nodes' platform and profile, the kubelets' settings, the host's emulation.

        ProfileNotApplied when the kubelets do not run with what the nodes' profile sets.
        """
        with self.answering("checking the cluster"):
            self.cluster.guard()
            nodes = self.core.list_node().items
        if not nodes:
            raise cluster_gone(self.cluster.name, "has no nodes")
        self._node_platform = platforms.node_platform(self.api.sanitize_for_serialization(nodes[0]))
        found = profiles.profile_of_node_objects(nodes)
        if found is None:
            raise HarnessError(
                f"cluster {self.cluster.name!r}: its nodes carry different {profiles.PROFILE_LABEL} labels",
                f"delete it ('python -m harness cluster delete --name {self.cluster.name}') and create it again",
            )
        self._profile = found
        with self.answering("reading the kubelets' configz"):
            self._kubelet = profiles.read_kubelet_settings(self.core)
        profiles.check_applied(found, self._kubelet, self.cluster.name)
        self._emulation = platforms.read_binfmt()
        return self

    def close(self) -> list[str]:
        """Run every clean-up in reverse order, each bounded; returns the failures (already said)."""
        failures = []
        while self._cleanups:
            failure = self._run_cleanup(self._cleanups.pop())
            if failure:
                failures.append(failure)
        self._namespaces.clear()
        return failures

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def defer(self, what: str, action: Callable[[], object], *, needs_api: bool = True, remedy: str = "") -> None:
        """Register a clean-up action; close() runs it (after those registered later)."""
        self._cleanups.append(_Cleanup(what, action, needs_api, remedy))

    def _run_cleanup(self, cleanup: _Cleanup) -> str | None:
        try:
            if cleanup.needs_api:
                problem = self.api_problem()
                if problem is not None:
                    raise ClusterGone(f"the API server does not answer ({problem})")
            _bounded(cleanup.action, CLEANUP_SECONDS, cleanup.what)
        except Exception as exc:  # noqa: BLE001 - clean-up must go on
            message = f"clean-up '{cleanup.what}' failed: {first_line(exc)}"
            self.say(f"    {message}")
            if cleanup.remedy:
                self.say(f"    {cleanup.remedy}")
            return message
        return None

    # -- the cluster's API -----------------------------------------------------------------------

    @property
    def api(self) -> k8s.ApiClient:
        """A client whose every call is bounded by REQUEST_TIMEOUT (watches keep their own)."""
        if self._api is None:
            client = self.cluster.api_client()
            if isinstance(client, BoundedApiClient):
                client.request_timeout = REQUEST_TIMEOUT
            self._api = client
        return self._api

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    def api_problem(self) -> str | None:
        """None when the API server answers now, else why not."""
        return api_problem(self.cluster.kubeconfig)

    def unanswered(self, what: str, exc: BaseException) -> HarnessError:
        """What an API call that got no answer means: the cluster stopped answering, or (rarely) one slow call."""
        problem = self.api_problem()
        if problem is None:
            return HarnessError(
                f"{what}: an API call of cluster {self.cluster.name!r} got no answer ({first_line(exc)[:200]}), "
                "though the API server answers now",
                "run again; if it repeats, look at the API server's load ('python -m harness doctor')",
            )
        return cluster_gone(self.cluster.name, f"stopped answering during '{what}' ({problem}): no verdict")

    @contextmanager
    def answering(self, what: str) -> Iterator[None]:
        """Turn an API call that timed out or lost its connection into ClusterGone (or a one-off error)."""
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            raise self.unanswered(what, exc) from exc

    # -- platforms and emulation ---------------------------------------------------------------

    @property
    def node_platform(self) -> Platform:
        if self._node_platform is None:
            self.start()
        assert self._node_platform is not None
        return self._node_platform

    @property
    def foreign(self) -> Platform:
        return platforms.foreign_of(self.node_platform)

    @property
    def profile(self) -> Profile:
        """The profile the cluster's nodes were made with (their label; none: faithful)."""
        if self._profile is None:
            self.start()
        assert self._profile is not None
        return self._profile

    @property
    def kubelet(self) -> KubeletSettings:
        """What every node's kubelet runs with, read from its configz when the session started."""
        if self._kubelet is None:
            self.start()
        assert self._kubelet is not None
        return self._kubelet

    def profile_facts(self) -> dict[str, str]:
        """For a report: the cluster's profile and the kubelets' effective settings (read, not assumed)."""
        return {profiles.PROFILE_FACT: self.profile.value, **self.kubelet.facts()}

    @property
    def emulation(self) -> EmulationState:
        if self._emulation is None:
            self._emulation = platforms.read_binfmt()
        return self._emulation

    def platform(self, word: str) -> Platform:
        """ "native", "foreign" or a platform string, for these nodes."""
        return platforms.resolve_platform_word(word, self.node_platform)

    def image_platforms(self, refs: Iterable[str]) -> Mapping[str, tuple[str, ...]]:
        """ref -> the platform(s) the image holds, for the refs whose platforms are known.

        Every digest the harness pushed or loaded is listed too ("sha256:..." -> its platforms): a
        container's imageID names what it really ran, even after its tag moved. A digest the
        harness never saw (a node's repo digest of an image it holds under another name) is looked
        up on the nodes: its image ID (config digest) is what the harness knows.
        """
        found = {key: tuple(str(p) for p in held) for key, held in self._platforms.items() if key.startswith("sha256:")}
        for ref in refs:
            held = self._platforms_of(ref)
            if held:
                found[ref] = tuple(str(p) for p in held)
        return _NodeResolved(found, self._platforms_on_nodes)

    def images_on_nodes(self, nodes: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """node -> (every reference containerd there knows -> its image ID), for nodes (default: all).

        A node that cannot tell (gone, paused) maps to {}: what it holds is evidence, never a failure.
        """
        found: dict[str, dict[str, str]] = {}
        for node in self.cluster.nodes() if nodes is None else nodes:
            try:
                found[node] = self.cluster.image_ids_on_node(node)
            except HarnessError:
                found[node] = {}
        return found

    def _platforms_on_nodes(self, digest: str) -> tuple[str, ...]:
        """The platform(s) of the image a node holds under a repo digest, if the harness knows its image ID."""
        for ids in self.images_on_nodes().values():
            for ref, config in ids.items():
                if ref.endswith(f"@{digest}") and self._platforms.get(config):
                    return tuple(str(p) for p in self._platforms[config])
        return ()

    def _platforms_of(self, ref: str) -> tuple[Platform, ...]:
        if ref not in self._platforms:
            try:
                self._platforms[ref] = (images.image_platform(ref),)
            except HarnessError:
                self._platforms[ref] = ()  # not a local image (or no engine): nothing known
        return self._platforms[ref]

    def emulated(self, refs: Iterable[str]) -> str | None:
        """Why these nodes would run one of the images under emulation, or None.

        A multi-platform index is never emulated: the node picks its own platform.
        """
        for ref in refs:
            held = self._platforms_of(ref)
            if len(held) != 1:
                continue
            expectation = platforms.expected_outcome(held[0], self.node_platform, self.emulation)
            if expectation is platforms.Expectation.EMULATED:
                return f"{ref}: {platforms.explain(held[0], self.node_platform, self.emulation)}"
        return None

    # -- images ----------------------------------------------------------------------------------

    def note_image(self, ref: str, held: Sequence[Platform]) -> None:
        """Record the platform(s) an image holds (for the emulation check and the watch)."""
        self._platforms[ref] = tuple(held)

    def build_image(
        self, context: Path, platform: Platform, *, repository: str, load: bool = True, **kwargs: Any
    ) -> images.BuiltImage:
        """Build an image for platform (images.build_image), record its platform, load it into the nodes."""
        built = images.build_image(context, platform, repository=repository, **kwargs)
        self.note_image(built.ref, [built.platform])
        self._platforms[built.image_id] = (built.platform,)
        if load:
            self.load_image(built.ref, [built.platform])
        return built

    def load_image(self, ref: str, held: Sequence[Platform] | None = None) -> None:
        """Load a local image into every node and verify it there; held: its platform(s), if known."""
        self.cluster.load_image(ref)
        if held is not None:
            self.note_image(ref, held)

    def load_index(self, built: Sequence[images.BuiltImage], name: str) -> str:
        """One multi-platform index of the built images, loaded into every node; returns its ref."""
        digest = "-".join(b.ref.rsplit("-", 1)[-1][:6] for b in built)
        ref = f"incident-harness/{name}:multi-{digest}"
        archive = tools.cache_dir() / "indexes" / f"{name}-multi-{digest}.tar"
        archive.parent.mkdir(parents=True, exist_ok=True)
        images.build_index(list(built), archive, ref)
        self.cluster.load_archive(archive, [ref])
        self.note_image(ref, [b.platform for b in built])
        return ref

    # -- the registry the nodes pull from ---------------------------------------------------------

    def registry(self) -> Registry:
        """The registry images are pushed to and the nodes pull from: started (or reused) and wired in once.

        The harness's own (harness.registry), or the user's at registry_address; either way the
        nodes get a hosts.toml for it and the cluster the KEP-1755 ConfigMap.
        """
        with self._registry_lock:
            if self._registry is None:
                started = time.monotonic()
                found = Registry.ensure(self.registry_address)
                found.connect(self.cluster)
                self.say(f"    registry {found.host} -> {found.endpoint} ({time.monotonic() - started:.1f}s)")
                self._registry = found
            return self._registry

    def check_registry(self) -> None:
        """RegistryGone (an environment failure) when the registry this session pushed to no longer answers."""
        if self._registry is not None and not self._registry.answers():
            raise self._registry.gone()

    def push_image(
        self, context: Path, platform: Platform, *, repository: str, tag: str, **kwargs: Any
    ) -> images.PushedImage:
        """`buildx build --platform P --push` to the session's registry (images.push_build), recorded."""
        pushed = images.push_build(self.registry(), repository, tag, context, platform, **kwargs)
        self._image_ids[pushed.digest] = self.note_pushed(pushed)
        return pushed

    def push_index(self, repository: str, tag: str, members: Sequence[images.PushedImage]) -> images.PushedImage:
        """One OCI index of pushed single-platform images under repository:tag (images.push_index), recorded."""
        pushed = images.push_index(self.registry(), repository, tag, members)
        self._image_ids[pushed.digest] = self.note_pushed(pushed)
        return pushed

    def push_retag(self, source: str, platform: Platform, *, repository: str, tag: str) -> images.PushedImage:
        """What `docker pull --platform P SOURCE`, `docker tag` and `docker push` put in the registry (images.push_retag)."""
        pushed = images.push_retag(self.registry(), source, platform, repository, tag)
        self._image_ids[pushed.digest] = self.note_pushed(pushed)
        return pushed

    def image_ids(self, digest: str) -> set[str]:
        """The image IDs (config digests) a node that pulls this pushed digest runs."""
        return set(self._image_ids.get(digest, set()))

    def note_pushed(self, pushed: images.PushedImage) -> set[str]:
        """Record a pushed image: its reference's platform(s), and the platform of each digest it holds.

        Returns the image IDs (config digests) of its manifests: what a node that pulls it runs.
        """
        self.note_image(pushed.ref, pushed.platforms)
        held, configs = images.held_images(self.registry(), pushed)
        self._platforms.update(held)
        return configs

    def digest_platforms(self, digest: str) -> tuple[Platform, ...]:
        """The platform(s) of an image ID or digest ("ref@sha256:..." too), where the harness pushed or loaded it."""
        return self._platforms.get(digest.rpartition("@")[2], ())

    def images_that_ran(self, ran: Sequence[outcomes.ImageRun]) -> tuple[outcomes.ImageRun, ...]:
        """Each container that ran, with the image ID its node knows it by and that image's platform."""
        known = self.images_on_nodes(sorted({r.node for r in ran if r.image_id and r.node and not r.config}))
        out = []
        for r in ran:
            config = r.config or known.get(r.node, {}).get(r.image_id.removeprefix("docker-pullable://"), "")
            held = self.digest_platforms(config) or self.digest_platforms(r.image_id)
            out.append(replace(r, config=config, platform=", ".join(str(p) for p in held) or r.platform))
        return tuple(out)

    # -- namespaces and apply --------------------------------------------------------------------

    def create_namespace(self, prefix: str) -> str:
        """A fresh namespace, deleted by close() or delete_namespace() unless keep_namespace() is called."""
        prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:30] or "harness"
        with self.answering("creating a namespace"), _interrupts_deferred():
            # A namespace created must be registered for clean-up: Ctrl-C waits until it is.
            name = workload.create_namespace(self.core, prefix)
            cleanup = _Cleanup(
                f"delete namespace {name}",
                partial(self._delete_namespace_now, name),
                True,
                f"remove it later: kubectl --kubeconfig {self.cluster.kubeconfig} delete namespace {name}",
            )
            self._cleanups.append(cleanup)
            self._namespaces[name] = cleanup
        return name

    def _delete_namespace_now(self, name: str) -> None:
        self.ledger.release(name)
        workload.delete_namespace(self.core, name)

    def delete_namespace(self, name: str) -> bool:
        """Delete a namespace of this session now (bounded; the API server is probed first); False if it failed."""
        self.ledger.release(name)  # its terminating pods count on the nodes until they are gone
        cleanup = self._namespaces.pop(name, None)
        if cleanup is None:
            return True
        self._cleanups.remove(cleanup)
        return self._run_cleanup(cleanup) is None

    def keep_namespace(self, name: str) -> None:
        """Leave a namespace of this session on the cluster (for inspection)."""
        self.ledger.release(name)  # its pods are counted as they are from now on
        cleanup = self._namespaces.pop(name, None)
        if cleanup is not None:
            self._cleanups.remove(cleanup)

    # -- the capacity gate -------------------------------------------------------------------------

    @property
    def ledger(self) -> capacity.Ledger:
        """The demand admitted on this cluster by this process (shared by its sessions)."""
        return capacity.ledger(self.cluster.name)

    def free_capacity(self, exclude_namespaces: Collection[str] = ()) -> list[capacity.NodeFree]:
        with self.answering("reading the nodes' free capacity"):
            return capacity.free_capacity(self.core, exclude_namespaces)

    def check_capacity(
        self, docs: Sequence[Mapping[str, Any]], what: str, *, origins: Sequence[str] | None = None
    ) -> capacity.Demand:
        """What the gate waits for: the workload's peak demand (its steady state where the peak can
        never fit); BadInput (naming the file, the resource, what it asks and what the nodes have)
        when even that can never fit these nodes. Deploys nothing."""
        demand = capacity.peak_requests(docs, origins)
        if demand.empty:
            return demand
        nodes = self.free_capacity()
        capacity.refuse_impossible(demand, nodes, what)
        return capacity.gated(demand, nodes)

    def admit(
        self,
        docs: Sequence[Mapping[str, Any]],
        what: str,
        *,
        origins: Sequence[str] | None = None,
        timeout: float = CAPACITY_WAIT_SECONDS,
        on_wait: Callable[[str], None] | None = None,
    ) -> Admission:
        """Wait until the rendered workload's peak requests fit the nodes, and hold them for its namespace.

        The room stays held (in this process, for every session on the cluster) until the
        namespace is deleted or kept, or the session closes. BadInput when it can never fit;
        HarnessError when no room was found within timeout. on_wait gets the line said when it
        has to wait ("waiting for capacity: needs cpu 300m, free 120m") and the line once admitted
        ("admitted after 12.3 s"); without it they are said.

        The gate is only as good as the requests: pods that request nothing are admitted at once.
        """
        namespace = next((str(d.get("metadata", {}).get("namespace") or "") for d in docs), "")
        demand = self.check_capacity(docs, what, origins=origins)
        if demand.empty:
            return Admission(namespace, demand)
        began = time.monotonic()
        said: list[str] = []

        def attempt() -> capacity.Fit:
            fit = self.ledger.try_admit(namespace, demand, self.free_capacity)
            if not fit.ok and (not said or said[-1] != fit.reason):
                line = f"waiting for capacity: {fit.reason}"
                said.append(fit.reason)
                (on_wait or (lambda text: self.say(f"    {what}: {text}")))(line)
            return fit

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_fixed(CAPACITY_RECHECK_SECONDS),
            sleep=self.ledger.wait_changed,  # a release in this process wakes it at once
            retry=tenacity.retry_if_result(lambda fit: not fit.ok),  # errors are not retried
        )
        try:
            retrying(attempt)
        except tenacity.RetryError as exc:
            raise HarnessError(
                f"{what}: no room on the nodes of cluster {self.cluster.name!r} within {timeout:.0f} s "
                f"({said[-1] if said else 'never fitted'})",
                "wait for other runs on the cluster to end, or run fewer at once (--jobs)",
            ) from exc
        waited = time.monotonic() - began
        if said:
            (on_wait or (lambda text: self.say(f"    {what}: {text}")))(f"admitted after {waited:.1f} s")
        return Admission(namespace, demand, round(waited, 2) if said else 0.0, said[0] if said else "")

    def release(self, namespace: str) -> None:
        """Stop holding room for a namespace's workload (its pods, if any, count as they are)."""
        self.ledger.release(namespace)

    def apply(
        self,
        docs: Sequence[dict[str, Any]],
        *,
        deployment: str | None = None,
        origins: Sequence[str] | None = None,
    ) -> workload.Workload:
        """Server-side apply of rendered objects, in order, supervised; origins[i] names the file of docs[i].

        ManifestRejected (bad input) when the API server refuses an object (HTTP 400 or 422) or
        knows no such kind.
        """
        return self.supervised("applying the workload", lambda: self._apply(docs, deployment, origins))

    def _apply(
        self, docs: Sequence[dict[str, Any]], deployment: str | None, origins: Sequence[str] | None
    ) -> workload.Workload:
        return workload.apply(self.api, list(docs), deployment, origins)

    # -- fix steps on a Deployment ---------------------------------------------------------------

    def set_image(
        self, namespace: str, deployment: str, ref: str, *, container: str | None = None, pull_policy: str | None = None
    ) -> None:
        with self.answering(f"setting the image of deployment {deployment}"):
            workload.set_image(self.apps, namespace, deployment, ref, container=container, pull_policy=pull_policy)

    def rollout_restart(self, namespace: str, deployment: str) -> None:
        with self.answering(f"restarting deployment {deployment}"):
            workload.rollout_restart(self.apps, namespace, deployment)

    def rollback(self, namespace: str, deployment: str) -> None:
        with self.answering(f"rolling back deployment {deployment}"):
            workload.rollback(self.apps, namespace, deployment)

    # -- the supervised watch ----------------------------------------------------------------------

    def workload_images(self, work: workload.Workload) -> list[str]:
        """The images the workload's pods run now: the live Deployment's template, else the applied objects."""
        templates: list[Mapping[str, Any]] = []
        if work.deployment:
            with self.answering(f"reading deployment {work.deployment}"):
                try:
                    live = self.apps.read_namespaced_deployment(work.deployment, work.namespace)
                    templates.append(self.api.sanitize_for_serialization(live.spec.template.spec))
                except ApiException:
                    templates = []
        if not templates:
            templates = [spec for spec in (_pod_spec(obj) for obj in work.objects) if spec is not None]
        refs: list[str] = []
        for spec in templates:
            for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                image = c.get("image") if isinstance(c, Mapping) else None
                if isinstance(image, str) and image not in refs:
                    refs.append(image)
        return refs

    def watch(
        self,
        work: workload.Workload,
        *,
        expect: Outcome | Collection[Outcome],
        timeout: float,
        on_evidence: Callable[[Evidence], None] | None = None,
        emulated: bool = False,
        **watch_args: Any,
    ) -> Watched:
        """Watch the workload's pods (outcomes.watch_workload) under supervision, with the emulation check.

        When one of the images would run under emulation here, the watch also accepts (and
        stops at) RanEmulated; a Healthy verdict is then marked as emulated, never left plain
        Healthy. An emulator registered during the watch is caught the same way.
        """
        refs = self.workload_images(work)
        self._emulation = platforms.read_binfmt()
        note = self.emulated(refs)
        if note is None and emulated:
            note = "the caller said the image runs under emulation"
        wanted = {expect} if isinstance(expect, Outcome) else set(expect)
        if note is not None:
            wanted.add(Outcome.RAN_EMULATED)
        if "fail_on" not in watch_args and Outcome.NOT_READY not in wanted:
            # Failed readiness probes remove a pod from its Service and nothing more: the kubelet
            # keeps probing, and a slow start (a busy node, an emulated CPU) becomes Ready later.
            # So NotReady is a verdict early only when it is what the caller expects; otherwise it
            # is one only if the pods are still not Ready at the deadline.
            watch_args = {
                **watch_args,
                **_supported(outcomes.watch_workload, {"fail_on": outcomes.DECISIVE - {Outcome.NOT_READY}}),
            }
        stop = threading.Event()
        extra = _supported(
            outcomes.watch_workload,
            {"gone_after": self.gone_after, "image_platforms": self.image_platforms(refs), "stop": stop},
        )
        # The watch's threads are told to stop (and waited for, briefly) only where it takes a stop event.
        with self.supervision(
            f"watching {work.selector or 'the pods'}", stop=stop if "stop" in extra else None
        ) as gate:
            verdict = gate.run(
                lambda: outcomes.watch_workload(
                    self.core,
                    work.namespace,
                    work.selector,
                    expect=wanted,
                    timeout=timeout,
                    on_evidence=gate.evidence(on_evidence),
                    emulated=note is not None,
                    **{**extra, **watch_args},
                )
            )
        if verdict.outcome is Outcome.HEALTHY:
            if note is None:
                # A foreign image that ran: a handler may have been registered while we watched.
                self._emulation = platforms.read_binfmt()
                late = self.emulated(refs)
                note = f"an emulator was registered on the host during the watch ({late})" if late else None
            if note is not None:
                verdict = outcomes.mark_emulated(verdict, note)
        return Watched(verdict, note)

    @contextmanager
    def supervision(self, what: str, *, stop: threading.Event | None = None) -> Iterator[_Supervisor]:
        """A supervisor for one call run in a helper thread while the API server is probed."""
        gate = _Supervisor(self, what, stop)
        try:
            yield gate
        finally:
            gate.close()

    def supervised(self, what: str, fn: Callable[[], T], *, stop: threading.Event | None = None) -> T:
        """fn() in a helper thread; ClusterGone once the API server has not answered for gone_after seconds."""
        with self.supervision(what, stop=stop) as gate:
            return gate.run(fn)

    # -- evidence ----------------------------------------------------------------------------------

    def collect_evidence(self, artifacts_dir: Path, label: str, namespace: str, selector: str = "") -> Path:
        """Describe, events, logs and kind's node logs into artifacts_dir/<label>-<time>, bounded in time.

        The API server is probed first: kubectl would wait for each command's timeout, and `kind
        export logs` hangs on a paused node. What could not be collected is said in
        evidence-missing.txt.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        directory = Path(artifacts_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}-{stamp}"
        directory.mkdir(parents=True, exist_ok=True)
        problem = self.api_problem()
        if problem is None:
            try:
                _bounded(
                    partial(self.cluster.collect_evidence, namespace, selector, directory),
                    EVIDENCE_SECONDS,
                    "collecting evidence",
                )
            except HarnessError as exc:
                (directory / "evidence-missing.txt").write_text(f"collecting evidence failed: {first_line(exc)}\n")
            return directory
        paused = paused_nodes(self.cluster.name)
        note = f"the API server did not answer ({problem}): no describe, events or pod logs\n"
        if paused:
            note += f"node(s) paused: {', '.join(paused)}: no node logs ('docker unpause' them)\n"
        else:
            try:
                _bounded(
                    partial(self.cluster.export_logs, directory / "kind-logs"), EVIDENCE_SECONDS, "kind export logs"
                )
            except HarnessError as exc:
                note += f"kind export logs failed: {first_line(exc)}\n"
        (directory / "evidence-missing.txt").write_text(note)
        return directory


class _Supervisor:
    """Runs one call in a helper thread; raises ClusterGone once the API server stops answering.

    After it gave up (or on Ctrl-C), the call's stop event is set so its threads end, and
    evidence from the abandoned call is dropped: it would print into the report, and a thread
    caught writing to stdout at interpreter exit aborts the process. close() waits for a print
    under way.
    """

    def __init__(self, session: Session, what: str, stop: threading.Event | None) -> None:
        self.session = session
        self.what = what
        self.stop = stop
        self.open = True
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.open = False

    def evidence(self, forward: Callable[[Evidence], None] | None) -> Callable[[Evidence], None] | None:
        if forward is None:
            return None

        def gated(e: Evidence) -> None:
            with self._lock:
                if self.open:
                    forward(e)

        return gated

    def run(self, fn: Callable[[], T]) -> T:
        results: list[T] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def work() -> None:
            signals.leave_to_main_thread()  # Ctrl-C, SIGTERM and SIGHUP act in the main thread at once
            try:
                results.append(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=work, name=f"harness: {self.what}", daemon=True)
        thread.start()
        try:
            self._supervise(done)
        except BaseException:
            self._abandon(thread)
            raise
        if errors:
            if isinstance(errors[0], ClusterGone):
                # The call's own retries gave up first: the same rule, said the session's way.
                gone = errors[0]
                raise cluster_gone(
                    self.session.cluster.name, f"stopped answering while {self.what} ({gone.cause}): no verdict"
                ) from gone
            raise errors[0]
        return results[0]

    def _supervise(self, done: threading.Event) -> None:
        failing_since: float | None = None
        while not done.wait(API_PROBE_INTERVAL):
            began = time.monotonic()
            problem = self.session.api_problem()
            if done.is_set():
                return
            if problem is None:
                failing_since = None
                continue
            failing_since = began if failing_since is None else failing_since
            silent = time.monotonic() - failing_since
            if silent >= self.session.gone_after:
                raise cluster_gone(
                    self.session.cluster.name,
                    f"stopped answering while {self.what} ({problem}; for {silent:.0f} s): no verdict",
                )

    def _abandon(self, thread: threading.Thread) -> None:
        self.close()
        if self.stop is not None:
            self.stop.set()
            thread.join(STOP_JOIN_SECONDS)


class _NodeResolved(Mapping[str, tuple[str, ...]]):
    """Known platforms by reference or digest; an unknown "sha256:" digest is asked of the nodes once."""

    def __init__(self, known: dict[str, tuple[str, ...]], resolve: Callable[[str], tuple[str, ...]]) -> None:
        self._known = dict(known)
        self._resolve = resolve
        self._asked: set[str] = set()

    def __getitem__(self, key: str) -> tuple[str, ...]:
        if key not in self._known and key.startswith("sha256:") and key not in self._asked:
            self._asked.add(key)
            found = self._resolve(key)
            if found:
                self._known[key] = found
        return self._known[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._known))

    def __len__(self) -> int:
        return len(self._known)


def _supported(fn: Callable[..., Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of wanted that fn accepts (newer keywords are passed only where they exist)."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(wanted)
    return {k: v for k, v in wanted.items() if k in parameters}


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return None
    if obj.get("kind") == "Pod":
        return spec
    template = spec.get("template")
    if obj.get("kind") == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    inner = template.get("spec") if isinstance(template, Mapping) else None
    return inner if isinstance(inner, Mapping) else None


def paused_nodes(cluster: str) -> list[str]:
    """The node containers of a kind cluster that are paused (none when docker does not answer)."""
    listed = tools.run(
        [
            tools.docker_binary(),
            "ps",
            "-a",
            "--filter",
            f"label=io.x-k8s.kind.cluster={cluster}",
            "--format",
            "{{.Names}} {{.State}}",
        ],
        check=False,
        timeout=30,
    ).stdout.splitlines()
    return [line.split()[0] for line in listed if line.endswith(" paused")]


def _delete_half_made(cluster: KindCluster, settle: float = 2.0, limit: float = 60.0) -> None:
    """Delete a cluster whose creation was interrupted, until no node container of it is left.

    The engine may still be finishing a `docker run` that the killed kind had sent: a container
    can appear after the first delete, so the listing must stay empty for `settle` seconds.
    """
    deadline = time.monotonic() + limit
    empty_since: float | None = None
    while time.monotonic() < deadline:
        listed = tools.run(
            [tools.docker_binary(), "ps", "-a", "-q", "--filter", f"label=io.x-k8s.kind.cluster={cluster.name}"],
            check=False,
            timeout=30,
        ).stdout.split()
        if listed:
            empty_since = None
            cluster.delete()
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since >= settle:
            break
        threading.Event().wait(0.5)
    cluster.delete()  # its kubeconfig folder, and anything that appeared at the very end


def _bounded(action: Callable[[], object], seconds: float, what: str) -> None:
    """Run action in a helper thread; HarnessError if it has not finished within seconds."""
    errors: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        signals.leave_to_main_thread()
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name=f"harness: {what}", daemon=True).start()
    if not done.wait(seconds):
        raise HarnessError(
            f"{what} did not finish within {seconds:.0f} s (is the cluster answering?)",
            "check the cluster, then remove what is left by hand",
        )
    if errors:
        raise errors[0]


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C while a resource is created and registered for clean-up; a second Ctrl-C goes through.

    Only in the main thread, and only where Python's default SIGINT handler is installed.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt


__all__ = [
    "API_PROBE_INTERVAL",
    "API_PROBE_TIMEOUT",
    "CAPACITY_WAIT_SECONDS",
    "CLUSTER_GONE_AFTER",
    "REQUEST_TIMEOUT",
    "Admission",
    "BadInput",
    "ManifestRejected",
    "Session",
    "Watched",
    "api_problem",
    "cluster_gone",
    "first_line",
    "paused_nodes",
]
