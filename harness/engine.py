"""Questions to the Docker engine, asked through its API (the docker SDK), answered as values.

What the safety checks need is structured: containers by label with their labels, state and
creation time, a file read out of a container (stopped ones too), an image's labels. The API
gives these directly, where the CLI would give text to parse (and `docker cp` a tar on stdout).
Builds (buildx), `kind` and `docker save` stay command lines (harness.tools.run).
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import docker.errors
import requests.exceptions
from docker.client import DockerClient

from harness.errors import EngineUnavailable

API_TIMEOUT = 60  # seconds for one engine API call

_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException)


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    created: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()  # its IPv4 address on each network it is attached to


@lru_cache(maxsize=1)
def _client() -> Any:
    try:
        return DockerClient.from_env(timeout=API_TIMEOUT)
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(
        f"the Docker engine API does not answer ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
        "run 'make setup' to start it, or start Docker yourself (DOCKER_HOST names its socket)",
    )


def _parse_created(text: str) -> datetime:
    """The engine's RFC 3339 time with nanoseconds (2026-12-01T09:05:01.123456789Z) as an aware datetime."""
    found = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if found is None:
        raise ValueError(f"not an engine timestamp: {text!r}")
    whole, fraction, zone = found.groups()
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}")


def containers(label: str) -> list[Container]:
    """Every container (running or not) carrying label ("key" or "key=value")."""
    try:
        found = _client().api.containers(all=True, filters={"label": label})
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc
    details = [d for d in (_inspect_container(c["Id"]) for c in found) if d is not None]
    return [_container(d) for d in details]


def container(name: str) -> Container | None:
    """The container called name (or with that id), or None."""
    details = _inspect_container(name)
    return _container(details) if details is not None else None


def _inspect_container(name: str) -> dict[str, Any] | None:
    """The engine's inspection of a container; None when there is none (removed a moment ago)."""
    try:
        return dict(_client().api.inspect_container(name))
    except docker.errors.NotFound:
        return None
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc


def _container(d: Mapping[str, Any]) -> Container:
    return Container(
        id=d["Id"],
        name=d["Name"].lstrip("/"),
        state=d["State"]["Status"],
        created=_parse_created(d["Created"]),
        labels=dict(d["Config"].get("Labels") or {}),
        addresses=tuple(
            str(n.get("IPAddress"))
            for n in ((d.get("NetworkSettings") or {}).get("Networks") or {}).values()
            if isinstance(n, Mapping) and n.get("IPAddress")
        ),
    )


def read_file(container: str, path: str) -> bytes | None:
    """The bytes of a regular file in a container, stopped or running; None when it does not exist."""
    try:
        stream, _ = _client().api.get_archive(container, path)
        archive = b"".join(stream)
    except docker.errors.NotFound:
        return None
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        extracted = tar.extractfile(member) if member is not None else None
        return extracted.read() if extracted is not None else None


def image_labels(ref: str) -> dict[str, str] | None:
    """The labels of a local image (empty when it has none); None when there is no such image."""
    try:
        inspected = _client().api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc
    return dict((inspected.get("Config") or {}).get("Labels") or {})


def image_tags(label: str | None = None) -> list[str]:
    """Every repository:tag of the local images (untagged images have none); with label, of those carrying it."""
    try:
        listed = _client().api.images(filters={"label": label} if label else None)
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc
    return sorted(tag for image in listed for tag in image.get("RepoTags") or [] if not tag.endswith(":<none>"))


def ping() -> None:
    """EngineUnavailable when the engine does not answer."""
    try:
        _client().ping()
    except _UNREACHABLE as exc:
        raise _unavailable(exc) from exc
