"""A local OCI registry for the kind clusters, run and wired the standard kind way.

The harness runs ``crane registry serve`` (hermetic/registry_image.py builds the image from a
static crane binary; no pull) as the container ``incident-harness-registry``:

- published only on ``127.0.0.1:PORT`` (pushes from the host go to ``localhost:PORT``), never
  on all interfaces;
- attached to the docker network ``kind``, so the nodes reach it as
  ``incident-harness-registry:5000``;
- its data under the harness cache (``<cache>/registry/data``, mounted at /var/lib/registry);
- labelled ``incident-harness.io/managed=true``: a running container of ours is reused, one
  that is stopped is started again; a port held by anything else is a PortTaken error naming
  the port and, where /proc tells, the owning process (never a silent reuse).

Where a container registry is reachable, the official image is an equal choice:
``HARNESS_REGISTRY_IMAGE=registry:2`` (same port and data directory; not tested here, no
registry is reachable on the machines this was written on).

Wiring into a cluster (``Registry.connect``), as kind's local-registry guide does it:

- containerd's ``config_path = "/etc/containerd/certs.d"`` (KindCluster.kind_config adds it
  through containerdConfigPatches at create time; connect checks the nodes have it);
- ``/etc/containerd/certs.d/<host>/hosts.toml`` on every node, pointing the name the pods
  use (``localhost:PORT``) at the endpoint the nodes reach;
- the KEP-1755 ConfigMap ``kube-public/local-registry-hosting``.

A user-supplied registry (``Registry.ensure("HOST:PORT")``) is wired by the same connect; for a
loopback address the endpoint is the container that publishes that port.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness import tools
from harness.errors import HarnessError, ToolError

if TYPE_CHECKING:
    from harness.cluster import KindCluster

CONTAINER_NAME = "incident-harness-registry"
MANAGED_LABEL = "incident-harness.io/managed"
COMPONENT_LABEL = "incident-harness.io/component"
COMPONENT = "registry"
DEFAULT_PORT = 5001
PORT_ENV = "HARNESS_REGISTRY_PORT"
IMAGE_ENV = "HARNESS_REGISTRY_IMAGE"
KIND_NETWORK_ENV = "KIND_EXPERIMENTAL_DOCKER_NETWORK"
PORT_IN_CONTAINER = 5000
DATA_IN_CONTAINER = "/var/lib/registry"
CERTS_DIR = "/etc/containerd/certs.d"
CRI_REGISTRY_TABLE = 'plugins."io.containerd.grpc.v1.cri".registry'
CONTAINERD_CONFIG_PATCH = f'[{CRI_REGISTRY_TABLE}]\n  config_path = "{CERTS_DIR}"\n'
HOSTING_CONFIGMAP = "local-registry-hosting"
HOSTING_NAMESPACE = "kube-public"
HOSTING_KEY = "localRegistryHosting.v1"
HELP_URL = "https://kind.sigs.k8s.io/docs/user/local-registry/"


class PortTaken(HarnessError):
    """The registry's host port is held by something the harness did not make."""


class RegistryGone(HarnessError):
    """The registry does not answer (stopped, removed or unreachable)."""


@dataclass(frozen=True)
class PortOwner:
    """Who listens on a TCP port, as far as /proc (and docker) tell."""

    port: int
    pid: int | None = None
    command: str = ""
    container: str = ""

    def describe(self) -> str:
        parts = []
        if self.pid is not None:
            parts.append(f"process {self.pid} ({self.command})" if self.command else f"process {self.pid}")
        if self.container:
            parts.append(f"published by container {self.container}")
        return ", ".join(parts) or "a process this user cannot see"


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as a registry serves it."""

    repository: str
    digest: str
    media_type: str
    body: bytes

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise HarnessError(f"manifest {self.digest} of {self.repository} is not a JSON object", "push it again")
        return data


@dataclass(frozen=True)
class Registry:
    """A registry the nodes pull from and the host pushes to.

    host: the name image references use and pushes go to ("localhost:5001").
    endpoint: the URL containerd on the nodes talks to ("http://incident-harness-registry:5000").
    api: the URL the harness itself uses from the host ("http://127.0.0.1:5001").
    container: the harness's container, or "" for a user-supplied registry.
    """

    host: str
    endpoint: str
    api: str
    container: str = ""

    @property
    def managed(self) -> bool:
        return bool(self.container)

    @property
    def host_from_cluster_network(self) -> str:
        return urlsplit(self.endpoint).netloc

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def ensure(
        cls, address: str | None = None, *, port: int | None = None, name: str = CONTAINER_NAME, wait: float = 30
    ) -> Registry:
        """The harness's registry (reused when running, else started), or the user's at address.

        address: "HOST:PORT" (optionally with http:// or https://) of a registry the user runs;
        the harness then starts nothing. port: the host port of the harness's registry
        (default $HARNESS_REGISTRY_PORT, else 5001); name: its container's name.
        """
        tools.ensure_engine()
        registry = _external(address) if address else _ensure_managed(port, name)
        registry.wait_answering(wait)
        return registry

    # -- use -------------------------------------------------------------------------------

    def ref(self, repository: str, tag: str) -> str:
        """The image reference of repository:tag in this registry, as a pod spec names it."""
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repository):
            raise HarnessError(
                f"repository name {repository!r} is not valid", "use lower-case path components, e.g. 'orders-api'"
            )
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            raise HarnessError(f"tag {tag!r} is not valid", "use up to 128 of [A-Za-z0-9_.-], not starting with . or -")
        return f"{self.host}/{repository}:{tag}"

    def answers(self, timeout: float = 5) -> bool:
        """GET /v2/ answers 200 (or 401: a registry that wants credentials still answers)."""
        try:
            with self._open(urllib.request.Request(f"{self.api}/v2/"), timeout=timeout) as response:
                return int(response.status) == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except (OSError, ValueError):
            return False

    def wait_answering(self, seconds: float = 30) -> None:
        """Bounded retry until /v2/ answers; RegistryGone when it does not."""
        retrying = Retrying(
            stop=stop_after_delay(seconds), wait=wait_fixed(0.2), retry=retry_if_result(lambda ok: not ok)
        )
        try:
            retrying(self.answers, 2)
        except RetryError as exc:
            raise self.gone() from exc

    def gone(self) -> RegistryGone:
        where = f"container {self.container}" if self.container else f"the registry at {self.api}"
        remedy = (
            f"'docker logs {self.container}' tells why; the next run starts it again"
            if self.container
            else f"check that {self.host} runs and answers GET {self.api}/v2/"
        )
        return RegistryGone(f"{where} does not answer GET /v2/", remedy)

    def manifest_digest(self, repository: str, reference: str) -> str:
        """The digest the registry holds for repository:reference (a tag or digest), by HEAD."""
        request = urllib.request.Request(
            f"{self.api}/v2/{repository}/manifests/{reference}", method="HEAD", headers={"Accept": ACCEPT_MANIFESTS}
        )
        try:
            with self._open(request, timeout=30) as response:
                return str(response.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as exc:
            raise HarnessError(
                f"{self.host}/{repository}:{reference} is not in the registry (HTTP {exc.code})", "push it first"
            ) from exc
        except OSError as exc:
            raise self.gone() from exc

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest (or index) repository:reference as the registry serves it."""
        request = urllib.request.Request(
            f"{self.api}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}
        )
        body, headers = self._call(request, f"{self.host}/{repository}:{reference}")
        digest = headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = headers.get("content-type", "").split(";")[0].strip()
        return Manifest(repository, str(digest), media_type, body)

    def get_blob(self, repository: str, digest: str) -> bytes:
        request = urllib.request.Request(f"{self.api}/v2/{repository}/blobs/{digest}")
        body, _ = self._call(request, f"blob {digest} of {self.host}/{repository}")
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise HarnessError(f"blob {digest} of {self.host}/{repository} does not match its digest", "push it again")
        return body

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest or index under reference (a tag); return the digest the registry reports."""
        request = urllib.request.Request(
            f"{self.api}/v2/{repository}/manifests/{reference}",
            data=body,
            method="PUT",
            headers={"Content-Type": media_type},
        )
        _, headers = self._call(request, f"{self.host}/{repository}:{reference}")
        expected = "sha256:" + hashlib.sha256(body).hexdigest()
        digest = str(headers.get("docker-content-digest") or expected)
        if digest != expected:
            raise HarnessError(
                f"{self.host} stored {repository}:{reference} as {digest}, but its content is {expected}",
                "the registry rewrote the manifest; use another registry",
            )
        return digest

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        """urlopen; the harness's own registry (on loopback) never through an HTTP proxy of the environment."""
        if self.container or _loopback(urlsplit(self.api).hostname or ""):
            return _NO_PROXY.open(request, timeout=timeout)
        return urllib.request.urlopen(request, timeout=timeout)

    def _call(self, request: urllib.request.Request, what: str) -> tuple[bytes, Mapping[str, str]]:
        try:
            with self._open(request, timeout=60) as response:
                return response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()[:300]
            raise HarnessError(
                f"{request.get_method()} {what} failed: HTTP {exc.code} {detail}",
                "check the reference; a missing manifest must be pushed first",
            ) from exc
        except OSError as exc:
            raise self.gone() from exc

    # -- wiring ----------------------------------------------------------------------------

    def connect(self, cluster: KindCluster) -> None:
        """Make every node of cluster pull this registry's images, and publish the KEP-1755 ConfigMap."""
        if self.container:
            connect_network(self.container, kind_network())
        docker = tools.docker_binary()
        text = hosts_toml(self.endpoint)
        directory = f"{CERTS_DIR}/{self.host}"
        for node in cluster.nodes():
            check_config_path(node, _containerd_config(docker, node), cluster.name)
            tools.run(
                [
                    docker,
                    "exec",
                    "-i",
                    node,
                    "sh",
                    "-c",
                    'mkdir -p "$1" && cat > "$1/hosts.toml.tmp" && mv "$1/hosts.toml.tmp" "$1/hosts.toml"',
                    "sh",
                    directory,
                ],
                input=text,
                timeout=60,
                remedy=f"check that node {node} runs (docker ps)",
            )
        _apply_configmap(cluster, hosting_configmap(self))

    # -- lifecycle of the harness's own container -----------------------------------------

    def stop(self) -> None:
        if self.container:
            tools.run([tools.docker_binary(), "stop", self.container], check=False, timeout=60)

    def remove(self, *, data: bool = True) -> None:
        """Remove the harness's registry container (only if it carries our label) and, by default, its data."""
        if self.container:
            remove_container(self.container, data=data)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ACCEPT_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


# --------------------------------------------------------------------------------------------
# Pure parts (unit-tested)


def hosts_toml(endpoint: str) -> str:
    """containerd's hosts.toml for one registry host: pull and resolve from endpoint (plain HTTP or TLS)."""
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise HarnessError(f"registry endpoint {endpoint!r} is not an http(s) URL", "write it as http://HOST:PORT")
    base = f"{url.scheme}://{url.netloc}"
    return f'server = "{base}"\n\n[host."{base}"]\n  capabilities = ["pull", "resolve"]\n'


def hosting_configmap(registry: Registry) -> dict[str, Any]:
    """The KEP-1755 ConfigMap kube-public/local-registry-hosting describing registry."""
    document = (
        f'host: "{registry.host}"\n'
        f'hostFromContainerRuntime: "{registry.host_from_cluster_network}"\n'
        f'hostFromClusterNetwork: "{registry.host_from_cluster_network}"\n'
        f'help: "{HELP_URL}"\n'
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": HOSTING_CONFIGMAP,
            "namespace": HOSTING_NAMESPACE,
            "labels": {MANAGED_LABEL: "true"},
        },
        "data": {HOSTING_KEY: document},
    }


def check_config_path(node: str, config_text: str, cluster: str) -> None:
    """Raise unless the node's containerd config (as `containerd config dump` prints it) sets config_path."""
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"node {node}: containerd's config does not parse ({exc})", "inspect it by hand") from exc
    section: Any = config
    for key in ("plugins", "io.containerd.grpc.v1.cri", "registry"):
        section = section.get(key, {}) if isinstance(section, Mapping) else {}
    paths = str(section.get("config_path", "")) if isinstance(section, Mapping) else ""
    if CERTS_DIR not in paths.split(":"):
        raise HarnessError(
            f"cluster {cluster!r}: containerd on node {node} has no config_path {CERTS_DIR} "
            "(the cluster was created before the harness configured registries)",
            f"delete it ('python -m harness cluster delete --name {cluster}') and let the harness create it again",
        )


def listening_inodes(proc_net_tcp: str, port: int) -> set[int]:
    """Socket inodes listening on port, from the text of /proc/net/tcp or /proc/net/tcp6."""
    found: set[int] = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: TCP_LISTEN
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            if int(port_hex, 16) == port:
                found.add(int(fields[9]))
        except ValueError:
            continue
    return found


def socket_owner(inodes: Iterable[int], proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """The first process holding one of the socket inodes: (pid, command line)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    if not wanted:
        return None
    for entry in sorted(proc.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name), _command_line(entry)
        except OSError:
            continue
    return None


def _command_line(entry: Path) -> str:
    try:
        raw = (entry / "cmdline").read_bytes()
        words = [w.decode("utf-8", "replace") for w in raw.split(b"\0") if w]
        if words:
            return " ".join(shlex.join(words).split())[:200]
        return (entry / "comm").read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# The host's side: ports, containers, networks


def port_owner(port: int, proc: Path = Path("/proc")) -> PortOwner:
    """Who listens on port: the process (from /proc/net/tcp{,6} and /proc/*/fd) and a container publishing it."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / name).read_text(), port)
        except OSError:
            continue
    owner = socket_owner(inodes, proc)
    container = ""
    listed = tools.run(
        [tools.docker_binary(), "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"], check=False, timeout=30
    )
    if listed.returncode == 0:
        container = ",".join(listed.stdout.split())
    return PortOwner(port, owner[0] if owner else None, owner[1] if owner else "", container)


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound now (a listener on any address of the port makes it taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_taken(port: int) -> PortTaken:
    owner = port_owner(port)
    remedy = f"stop that, or choose another port with {PORT_ENV}=PORT"
    if owner.container:  # e.g. the registry of kind's guide: the harness can use it as it is
        remedy += f", or use that registry: --registry localhost:{port}"
    return PortTaken(
        f"port {port} on 127.0.0.1, wanted for the harness's registry, is taken by {owner.describe()}", remedy
    )


def kind_network() -> str:
    return os.environ.get(KIND_NETWORK_ENV) or "kind"


def _inspect_container(name: str) -> dict[str, Any] | None:
    result = tools.run([tools.docker_binary(), "container", "inspect", name], check=False, timeout=30)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout)
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None


def _ours(info: Mapping[str, Any]) -> bool:
    labels = (info.get("Config") or {}).get("Labels") or {}
    return bool(labels.get(MANAGED_LABEL) == "true" and labels.get(COMPONENT_LABEL) == COMPONENT)


def published_port(info: Mapping[str, Any]) -> int | None:
    """The host port a registry container publishes its port 5000 on (running or stopped)."""
    key = f"{PORT_IN_CONTAINER}/tcp"
    for bindings in (
        ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(key),
        ((info.get("HostConfig") or {}).get("PortBindings") or {}).get(key),
    ):
        for binding in bindings or []:
            if str(binding.get("HostPort", "")).isdigit():
                return int(binding["HostPort"])
    return None


def connect_network(container: str, network: str) -> None:
    """Attach container to the docker network (the one kind's nodes use), if it exists and is not attached yet."""
    docker = tools.docker_binary()
    if tools.run([docker, "network", "inspect", network], check=False, timeout=30).returncode != 0:
        return  # no kind cluster yet: kind creates the network, connect() attaches the registry later
    info = _inspect_container(container) or {}
    if network in ((info.get("NetworkSettings") or {}).get("Networks") or {}):
        return
    tools.run([docker, "network", "connect", network, container], timeout=60)


def data_dir(name: str = CONTAINER_NAME) -> Path:
    return tools.cache_dir() / "registry" / name


def _requested_port(port: int | None) -> int:
    if port is not None:
        return port
    text = os.environ.get(PORT_ENV, "")
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise HarnessError(f"{PORT_ENV}={text!r} is not a port number", "set it to a free port such as 5001")
    return int(text)


def _managed(port: int, name: str) -> Registry:
    return Registry(
        host=f"localhost:{port}",
        endpoint=f"http://{name}:{PORT_IN_CONTAINER}",
        api=f"http://127.0.0.1:{port}",
        container=name,
    )


def _ensure_managed(port: int | None, name: str, _attempt: int = 0) -> Registry:
    docker = tools.docker_binary()
    wanted = _requested_port(port)
    info = _inspect_container(name)
    if info is not None and not _ours(info):
        raise HarnessError(
            f"a container named {name} exists that the harness did not make (no {MANAGED_LABEL} label)",
            "rename or remove it, or pass the registry it runs as --registry HOST:PORT",
        )
    if info is not None:
        have = published_port(info)
        running = bool((info.get("State") or {}).get("Running"))
        explicit = port is not None or bool(os.environ.get(PORT_ENV))
        if have is not None and (have == wanted or not explicit):
            if not running:
                if not port_free(have):
                    raise port_taken(have)
                tools.run([docker, "start", name], timeout=60)
            registry = _managed(have, name)
            connect_network(name, kind_network())
            return registry
        if running:
            raise HarnessError(
                f"the harness's registry runs on port {have}, not on the port {wanted} asked for",
                f"use port {have}, or remove it first ('docker rm -f {name}')",
            )
        remove_container(name, data=False)  # ours, stopped, on another port
    if not port_free(wanted):
        raise port_taken(wanted)
    image = os.environ.get(IMAGE_ENV) or _build_image()
    data = data_dir(name)
    data.mkdir(parents=True, exist_ok=True)
    cmd = [
        docker,
        "run",
        "--detach",
        "--name",
        name,
        "--label",
        f"{MANAGED_LABEL}=true",
        "--label",
        f"{COMPONENT_LABEL}={COMPONENT}",
        "--publish",
        f"127.0.0.1:{wanted}:{PORT_IN_CONTAINER}",
        "--volume",
        f"{data}:{DATA_IN_CONTAINER}",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        image,
    ]
    try:
        tools.run(cmd, timeout=120)
    except ToolError as exc:
        if "already allocated" in exc.stderr or "address already in use" in exc.stderr:
            remove_container(name, data=False)
            raise port_taken(wanted) from exc
        if "is already in use" in exc.stderr and _attempt == 0:  # another session started it meanwhile
            return _ensure_managed(port, name, _attempt=1)
        raise
    connect_network(name, kind_network())
    return _managed(wanted, name)


def _build_image() -> str:
    from hermetic.registry_image import BuildFailed, ensure_registry_image

    try:
        return ensure_registry_image().ref
    except BuildFailed as exc:
        raise HarnessError(str(exc), exc.remedy) from exc


def remove_container(name: str = CONTAINER_NAME, *, data: bool = True) -> bool:
    """docker rm -f the registry container if it carries our labels (and its data); True if removed."""
    info = _inspect_container(name)
    if info is None or not _ours(info):
        return False
    tools.run([tools.docker_binary(), "rm", "-f", name], check=False, timeout=120)
    if data:
        shutil.rmtree(data_dir(name), ignore_errors=True)
    return True


def managed_containers() -> list[str]:
    """Names of the registry containers the harness made (running or not), for gc; both labels checked."""
    listed = tools.run(
        [
            tools.docker_binary(),
            "ps",
            "-a",
            "--filter",
            f"label={MANAGED_LABEL}=true",
            "--filter",
            f"label={COMPONENT_LABEL}={COMPONENT}",
            "--format",
            f'{{{{.Names}}}}\t{{{{.Label "{MANAGED_LABEL}"}}}}\t{{{{.Label "{COMPONENT_LABEL}"}}}}',
        ],
        timeout=60,
    )
    names = []
    for line in listed.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[0] and fields[1:] == ["true", COMPONENT]:
            names.append(fields[0])
    return names


def running(name: str = CONTAINER_NAME) -> Registry | None:
    """The harness's registry if its container runs (whether or not it answers), else None."""
    info = _inspect_container(name)
    if info is None or not _ours(info) or not (info.get("State") or {}).get("Running"):
        return None
    port = published_port(info)
    return _managed(port, name) if port is not None else None


def status(name: str = CONTAINER_NAME) -> str:
    """One line for doctor: whether the harness's registry runs, where, and whether it answers."""
    info = _inspect_container(name)
    if info is None:
        return "not running (started on first use)"
    if not _ours(info):
        return f"a container named {name} exists that the harness did not make"
    found = running(name)
    if found is None:
        return "stopped (started again on next use)"
    answer = "answers GET /v2/" if found.answers() else f"DOES NOT ANSWER GET {found.api}/v2/ (docker logs {name})"
    return f"running, {found.host} -> {found.endpoint}, {answer}"


def on_cluster_created(cluster: KindCluster) -> None:
    """Hook after a cluster is created: wire the harness's registry into it when one runs."""
    registry = running()
    if registry is not None and registry.answers():
        registry.connect(cluster)


# --------------------------------------------------------------------------------------------
# A user-supplied registry


def _external(address: str) -> Registry:
    text = address.strip()
    scheme = "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
    text = text.rstrip("/")
    if scheme not in ("http", "https") or not re.fullmatch(
        r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9a-fA-F:]+\](:[0-9]{1,5})?", text
    ):
        raise HarnessError(f"registry address {address!r} is not HOST[:PORT]", "pass e.g. --registry localhost:5000")
    hostname = urlsplit(f"//{text}").hostname or ""
    endpoint = f"{scheme}://{text}"
    if _loopback(hostname):
        endpoint = _endpoint_of_local(text, urlsplit(f"//{text}").port, scheme)
    api_host = text.replace("localhost", "127.0.0.1", 1) if hostname == "localhost" else text
    return Registry(host=text, endpoint=endpoint, api=f"{scheme}://{api_host}")


def _loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _endpoint_of_local(address: str, port: int | None, scheme: str) -> str:
    """Nodes cannot reach the host's loopback: use the container that publishes the port, by name."""
    if port is None:
        raise HarnessError(f"registry {address} names the host's loopback without a port", "add the port")
    listed = tools.run(
        [tools.docker_binary(), "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"], timeout=30
    ).stdout.split()
    for name in listed:
        info = _inspect_container(name) or {}
        for private, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
            if any(str(b.get("HostPort")) == str(port) for b in bindings or []):
                if _ours(info):
                    connect_network(name, kind_network())
                    info = _inspect_container(name) or {}
                networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
                if kind_network() not in networks:
                    raise HarnessError(
                        f"registry {address} runs in container {name}, which is not on the docker network "
                        f"{kind_network()!r} the kind nodes use",
                        f"docker network connect {kind_network()} {name}",
                    )
                return f"{scheme}://{name}:{private.partition('/')[0]}"
    raise HarnessError(
        f"registry {address} is on the host's loopback, which the kind nodes cannot reach",
        "run it in a container that publishes the port (kind's local-registry pattern), or give an address the "
        "nodes reach",
    )


# --------------------------------------------------------------------------------------------
# Cluster side


def _containerd_config(docker: str, node: str) -> str:
    return tools.run(
        [docker, "exec", node, "containerd", "config", "dump"],
        timeout=60,
        remedy=f"check that node {node} runs (docker ps)",
    ).stdout


def _apply_configmap(cluster: KindCluster, body: dict[str, Any]) -> None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    configmap = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=meta["labels"]), data=body["data"]
    )
    core = cluster.core
    try:
        core.replace_namespaced_config_map(name, namespace, configmap, _request_timeout=30)
    except ApiException as exc:
        if exc.status != 404:
            raise HarnessError(
                f"cluster {cluster.name!r}: writing ConfigMap {namespace}/{name} failed (HTTP {exc.status})",
                "check the API server (kubectl get --raw /readyz)",
            ) from exc
        core.create_namespaced_config_map(namespace, configmap, _request_timeout=30)
