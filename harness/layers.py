"""Open images as stored (OCI layouts, docker save archives, the local engine) and read their layers.

Nothing is run and nothing is unpacked to disk: layer tarballs are read as streams, in order,
into one in-memory tree of the image's root file system (metadata, plus the first bytes of
executable files), applying the OCI image spec's layer rules:

- an entry replaces the one at the same path in lower layers (a non-directory also hides what
  was below a directory of that name; a directory over a directory merges);
- ``.wh.NAME`` deletes NAME (and everything under it) from lower layers;
- ``.wh..wh..opq`` in a directory hides every lower entry in it (entries of the same layer stay);
- hard links take the content of their target.

Layers may be uncompressed, gzip or zstd (zstd only when the ``zstandard`` module is installed:
Python 3.11 cannot read it otherwise, which is reported, never guessed around). Each layer's
bytes are checked against its digest while they are read, so a truncated or corrupt layer is
named as such.

Sources, decided by what the argument is:

- a directory with ``index.json``: an OCI image layout;
- a file: a tarball holding an OCI layout (``index.json``; ``docker save`` of Docker 25 and later
  writes both) or a ``docker save`` archive (``manifest.json``);
- otherwise an image reference in the local Docker engine, read with ``docker save`` into a
  temporary file;
- a reference the engine does not hold that names a registry host (``localhost:5001/x:tag``,
  ``registry.example.com/x@sha256:...``), or any reference written ``registry://REF``: read from
  that registry with the OCI distribution API (plain HTTP for loopback hosts, HTTPS otherwise,
  anonymous bearer tokens where the registry asks for one), manifests and blobs by digest,
  layers streamed and checked against their digests like the others.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

from harness.errors import HarnessError
from harness.tools import docker_binary, run

HEAD_SIZE = 4096  # bytes kept of each executable file: ELF and program headers, a #! line
TEXT_FILES = frozenset({"etc/passwd", "etc/group"})  # kept whole (up to TEXT_LIMIT), for user names
TEXT_LIMIT = 1 << 20
MAX_SYMLINKS = 40  # Linux's limit on symlinks followed in one path walk (ELOOP beyond)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MANIFEST_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)
REF_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class ImageError(HarnessError):
    """An image the harness cannot read."""


class ImageNotFound(ImageError):
    """The argument is neither a readable path nor an image in the local engine."""


class RegistryNotSupported(ImageError):
    """A registry reference: reading images from a registry is not built yet."""


class ImageUnreadable(ImageError):
    """An archive, layout, blob or layer that is corrupt, truncated or of an unknown format."""


# ---------------------------------------------------------------------------------------------
# What an image source holds


Opener = Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class Layer:
    """One layer tarball: how to open its stored bytes and what digest they must have."""

    name: str  # digest or archive member name, for messages
    media_type: str
    digest: str | None  # "sha256:<hex>" of the stored bytes; None when nothing says
    opener: Opener = field(repr=False, compare=False)
    diff_id: str | None = None  # "sha256:<hex>" of the uncompressed tar (the config's rootfs.diff_ids)


@dataclass(frozen=True)
class Manifest:
    """One image manifest: its config and layers (or why they cannot be read)."""

    digest: str | None
    media_type: str
    descriptor_platform: Mapping[str, str] | None  # the index entry's platform, if any
    annotations: Mapping[str, str]
    config: Mapping[str, Any]
    layers: tuple[Layer, ...]
    problem: str | None = None  # e.g. a blob that is not in the layout


@dataclass(frozen=True)
class Image:
    """An image as found: a single manifest, or an index of several."""

    name: str
    origin: str  # "OCI layout", "docker save archive", "local engine"
    index_digest: str | None
    is_index: bool
    manifests: tuple[Manifest, ...]


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageUnreadable(
            f"{where} is not valid JSON ({exc})", "the archive is damaged: save or copy it again"
        ) from exc


class _Blobs:
    """Read blobs by digest from a layout directory or from the members of a tarball."""

    def __init__(self, where: str, read: Callable[[str], bytes | None], opener: Callable[[str], Opener | None]) -> None:
        self.where = where
        self._read = read
        self._opener = opener

    def read(self, digest: str) -> bytes | None:
        return self._read(_blob_path(digest))

    def opener(self, digest: str) -> Opener | None:
        return self._opener(_blob_path(digest))


def _blob_path(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if not algorithm or not hexdigest or "/" in digest or ".." in digest:
        raise ImageUnreadable(f"invalid digest {digest!r}", "the image's index or manifest is damaged")
    return f"blobs/{algorithm}/{hexdigest}"


def _image_from_manifest(blobs: _Blobs, descriptor: Mapping[str, Any]) -> Manifest:
    digest = str(descriptor.get("digest", ""))
    media = str(descriptor.get("mediaType", ""))
    annotations = {str(k): str(v) for k, v in (descriptor.get("annotations") or {}).items()}
    platform = descriptor.get("platform")
    platform_fields = {str(k): str(v) for k, v in platform.items()} if isinstance(platform, Mapping) else None

    def missing(what: str) -> Manifest:
        return Manifest(digest, media, platform_fields, annotations, {}, (), f"{what} is not in {blobs.where}")

    raw = blobs.read(digest)
    if raw is None:
        return missing(f"manifest {digest}")
    manifest = _json(raw, f"manifest {digest} in {blobs.where}")
    config_digest = str((manifest.get("config") or {}).get("digest", ""))
    raw_config = blobs.read(config_digest) if config_digest else None
    if raw_config is None:
        return missing(f"config {config_digest or '(none)'} of manifest {digest}")
    config = _json(raw_config, f"config {config_digest} in {blobs.where}")
    layers = []
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or []) if isinstance(config, Mapping) else []
    for position, entry in enumerate(manifest.get("layers") or []):
        layer_digest = str(entry.get("digest", ""))
        opener = blobs.opener(layer_digest)
        if opener is None:
            return Manifest(
                digest,
                media,
                platform_fields,
                annotations,
                config,
                (),
                f"layer {layer_digest} of manifest {digest} is not in {blobs.where}",
            )
        diff_id = str(diff_ids[position]) if position < len(diff_ids) else None
        layers.append(Layer(layer_digest, str(entry.get("mediaType", "")), layer_digest, opener, diff_id))
    return Manifest(
        digest, media or str(manifest.get("mediaType", "")), platform_fields, annotations, config, tuple(layers)
    )


def _manifests_of(blobs: _Blobs, descriptor: Mapping[str, Any], depth: int = 0) -> list[Manifest]:
    media = str(descriptor.get("mediaType", ""))
    if media in INDEX_TYPES:
        if depth > 4:
            raise ImageUnreadable(f"indexes nested deeper than 4 levels in {blobs.where}", "flatten the index")
        raw = blobs.read(str(descriptor.get("digest", "")))
        if raw is None:
            raise ImageUnreadable(f"index {descriptor.get('digest')} is not in {blobs.where}", "copy the layout again")
        index = _json(raw, f"index {descriptor.get('digest')} in {blobs.where}")
        found: list[Manifest] = []
        for child in index.get("manifests") or []:
            found += _manifests_of(blobs, child, depth + 1)
        return found
    return [_image_from_manifest(blobs, descriptor)]


def _ref_name(descriptor: Mapping[str, Any]) -> str | None:
    annotations = descriptor.get("annotations") or {}
    for key in REF_NAME_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key])
    return None


def _layout_images(blobs: _Blobs, index_bytes: bytes, name: str, origin: str) -> list[Image]:
    """The images of an OCI layout's index.json: one per ref name (unnamed entries form one image)."""
    index = _json(index_bytes, f"index.json of {blobs.where}")
    descriptors = index.get("manifests") if isinstance(index, Mapping) else None
    if not isinstance(descriptors, list) or not descriptors:
        raise ImageUnreadable(f"index.json of {blobs.where} lists no manifests", "write the layout again")
    groups: dict[str | None, list[Mapping[str, Any]]] = {}
    for descriptor in descriptors:
        groups.setdefault(_ref_name(descriptor), []).append(descriptor)
    images = []
    for ref, members in groups.items():
        label = ref if ref and len(groups) > 1 else name
        if len(members) == 1 and members[0].get("mediaType") in INDEX_TYPES:
            top = members[0]
            images.append(Image(label, origin, str(top.get("digest")), True, tuple(_manifests_of(blobs, top))))
        elif len(members) == 1:
            images.append(Image(label, origin, None, False, tuple(_manifests_of(blobs, members[0]))))
        else:  # several entries side by side: index.json itself is the index
            manifests = [m for member in members for m in _manifests_of(blobs, member)]
            images.append(Image(label, origin, None, True, tuple(manifests)))
    return images


def _docker_archive_images(archive: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], where: str) -> list[Image]:
    """The images of a `docker save` archive's manifest.json (one single-manifest image each)."""
    raw = _member_bytes(archive, members, "manifest.json")
    entries = _json(raw or b"", f"manifest.json of {where}")
    if not isinstance(entries, list) or not entries:
        raise ImageUnreadable(f"manifest.json of {where} lists no images", "save the image again")
    images = []
    for entry in entries:
        config_name = str(entry.get("Config", ""))
        config_bytes = _member_bytes(archive, members, config_name)
        if config_bytes is None:
            raise ImageUnreadable(f"{where}: config {config_name} named in manifest.json is missing", "save it again")
        config = _json(config_bytes, f"config {config_name} of {where}")
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = []
        for position, layer_name in enumerate(entry.get("Layers") or []):
            member = members.get(str(layer_name))
            if member is None:
                raise ImageUnreadable(f"{where}: layer {layer_name} named in manifest.json is missing", "save it again")
            expected = str(diff_ids[position]) if position < len(diff_ids) else None
            layers.append(
                Layer(
                    str(layer_name),
                    "application/vnd.docker.image.rootfs.diff.tar",
                    expected,
                    _member_opener(archive, member),
                    expected,
                )
            )
        tags = entry.get("RepoTags") or []
        name = str(tags[0]) if len(entries) > 1 and tags else where
        digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = Manifest(None, "docker save", None, {"image.id": digest}, config, tuple(layers))
        images.append(Image(name, "docker save archive", None, False, (manifest,)))
    return images


def _member_bytes(archive: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str) -> bytes | None:
    member = members.get(name)
    if member is None:
        return None
    try:
        handle = archive.extractfile(member)
        return handle.read() if handle is not None else None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ImageUnreadable(
            f"{name} in {archive.name!s} cannot be read ({exc})", "save or copy the archive again"
        ) from exc


def _member_opener(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Opener:
    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        handle = archive.extractfile(member)
        if handle is None:
            raise ImageUnreadable(f"{member.name} in {archive.name!s} is not a file", "save the image again")
        with handle:
            yield handle

    return opener


def _file_opener(path: Path) -> Opener:
    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        with open(path, "rb") as handle:
            yield handle

    return opener


def _open_layout_dir(path: Path, name: str) -> list[Image]:
    def read(rel: str) -> bytes | None:
        try:
            return (path / rel).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageUnreadable(f"{path / rel} cannot be read ({exc.strerror})", "check its permissions") from exc

    def opener(rel: str) -> Opener | None:
        return _file_opener(path / rel) if (path / rel).is_file() else None

    blobs = _Blobs(str(path), read, opener)
    index = read("index.json")
    assert index is not None
    return _layout_images(blobs, index, name, "OCI layout")


def _open_archive(stack: ExitStack, path: Path, name: str, origin: str | None = None) -> list[Image]:
    try:
        archive = stack.enter_context(tarfile.open(path, "r:*"))  # noqa: SIM115 (closed by the stack)
        members = {_clean(m.name): m for m in archive.getmembers()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ImageUnreadable(
            f"{path} is not a readable tar archive ({exc})",
            "pass an OCI layout directory, an OCI layout tarball or a `docker save` archive",
        ) from exc
    if "index.json" in members:

        def read(rel: str) -> bytes | None:
            return _member_bytes(archive, members, rel)

        def opener(rel: str) -> Opener | None:
            member = members.get(rel)
            return _member_opener(archive, member) if member is not None else None

        blobs = _Blobs(str(path), read, opener)
        return _layout_images(blobs, read("index.json") or b"", name, origin or "OCI layout (tar)")
    if "manifest.json" in members:
        images = _docker_archive_images(archive, members, name)
        if origin:
            images = [Image(i.name, origin, i.index_digest, i.is_index, i.manifests) for i in images]
        return images
    raise ImageUnreadable(
        f"{path} holds neither index.json nor manifest.json: not an image archive",
        "pass an OCI layout (docker buildx --output type=oci) or a `docker save` archive",
    )


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def looks_like_registry_reference(ref: str) -> bool:
    """True when ref names a registry host (registry.example.com/x, localhost:5000/x, host:port/x)."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def engine_inspect(ref: str) -> dict[str, Any] | None:
    """`docker image inspect ref` (one object), None when the engine has no such image."""
    result = run([docker_binary(), "image", "inspect", ref], check=False, timeout=60)
    if result.returncode != 0:
        return None
    found = json.loads(result.stdout)
    return dict(found[0]) if isinstance(found, list) and found else None


def _config_from_engine(info: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an image config inspect reads, from `docker image inspect` output."""
    config: dict[str, Any] = {"os": info.get("Os", ""), "architecture": info.get("Architecture", "")}
    if info.get("Variant"):
        config["variant"] = info["Variant"]
    config["config"] = dict(info.get("Config") or {})
    config["rootfs"] = {"type": "layers", "diff_ids": list((info.get("RootFS") or {}).get("Layers") or [])}
    return config


def _not_saved(name: str) -> Opener:
    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        if name:  # always: a layer taken from the cache is never opened
            raise ImageUnreadable(f"layer {name} is neither cached nor saved", "run inspect again")
        yield io.BytesIO()

    return opener


def _from_cache(target: str, info: Mapping[str, Any], cache: LayerCache | None) -> list[Image] | None:
    """The image from its engine config and cached layer indexes, when every layer is cached.

    Only for a single-manifest image: with the containerd image store an engine image may be an
    index (inspect then shows a Descriptor of an index type), which only `docker save` shows whole.
    """
    descriptor = info.get("Descriptor") or {}
    if cache is None or descriptor.get("mediaType") in INDEX_TYPES:
        return None
    config = _config_from_engine(info)
    diff_ids = config["rootfs"]["diff_ids"]
    if not diff_ids or not all(cache.has(str(d)) for d in diff_ids):
        return None
    found = [Layer(str(d), "", None, _not_saved(str(d)), str(d)) for d in diff_ids]
    manifest = Manifest(None, "engine", None, {"image.id": str(info.get("Id", ""))}, config, tuple(found))
    return [Image(target, "local engine, cached layer indexes", None, False, (manifest,))]


@contextmanager
def open_images(target: str, cache: LayerCache | None = None) -> Iterator[list[Image]]:
    """The images target names (see the module docstring); their layers are readable inside the block.

    With a cache, a local image whose layers were all indexed before is not saved again.
    """
    if target.startswith(("docker://", "registry://")):
        yield _open_registry(target.partition("://")[2], target)
        return
    if target.startswith("oci://"):
        raise RegistryNotSupported(
            f"{target}: oci:// is not a source inspect knows",
            "pass an OCI layout directory or tarball by its path, or a registry reference as registry://HOST/NAME:TAG",
        )
    path = Path(target)
    with ExitStack() as stack:
        if path.is_dir():
            if not (path / "index.json").is_file():
                raise ImageUnreadable(
                    f"{path} is a directory without index.json: not an OCI layout", "pass an OCI image layout"
                )
            yield _open_layout_dir(path, target)
            return
        if path.is_file():
            yield _open_archive(stack, path, target)
            return
        if target.startswith(("/", "./", "../")) or target.endswith((".tar", ".tar.gz", ".tgz")):
            raise ImageNotFound(f"{target}: no such file or directory", "pass an existing OCI layout or archive path")
        info = engine_inspect(target)
        if info is None:
            if looks_like_registry_reference(target):
                yield _open_registry(target, target)
                return
            raise ImageNotFound(
                f"image {target} is not in the local engine (docker image ls) and is not a file",
                "build or load it first, pass the path of an OCI layout or `docker save` archive, "
                f"or read it from its registry: registry://HOST/{target}",
            )
        cached = _from_cache(target, info, cache)
        if cached is not None:
            yield cached
            return
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-inspect-")))
        archive = tmp / "image.tar"
        run(
            [docker_binary(), "save", "-o", str(archive), target],
            timeout=900,
            remedy=f"check that {target} exists (docker image ls) and that {tmp.parent} has space",
        )
        yield _open_archive(stack, archive, target, "local engine")


# ---------------------------------------------------------------------------------------------
# A registry (OCI distribution API)

_ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))


def parse_registry_reference(ref: str) -> tuple[str, str, str]:
    """(host, repository, tag or digest) of an image reference; Docker Hub names get their defaults.

    "localhost:5001/orders-api:abc" -> ("localhost:5001", "orders-api", "abc");
    "busybox" -> ("registry-1.docker.io", "library/busybox", "latest").
    """
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "registry-1.docker.io", name
        if "/" not in path:
            path = f"library/{path}"
    if host == "docker.io":
        host = "registry-1.docker.io"
    head, colon, tag = path.rpartition(":")
    if colon and "/" not in tag:
        path = head
    else:
        tag = "latest"
    if not path or path != path.lower():
        raise ImageNotFound(
            f"{ref} is not an image reference (repository {path!r})", "write HOST/NAME:TAG or HOST/NAME@sha256:..."
        )
    return host, path, digest if at else tag


class _RegistryReader:
    """GET manifests and blobs of one repository: plain HTTP on loopback, else HTTPS; anonymous tokens."""

    def __init__(self, host: str, repository: str) -> None:
        import urllib.request

        hostname = host.rpartition(":")[0] if host.count(":") == 1 else host
        local = hostname in ("localhost", "127.0.0.1", "::1", "[::1]")
        self.where = f"{host}/{repository}"
        self.base = f"{'http' if local else 'https'}://{'127.0.0.1' + host[len(hostname) :] if hostname == 'localhost' else host}"
        self.repository = repository
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self._opener = urllib.request.build_opener(*handlers)
        self._token: str | None = None
        self.manifests: dict[str, bytes] = {}

    def _request(self, path: str, accept: str | None = None) -> Any:
        import urllib.error
        import urllib.request

        url = f"{self.base}/v2/{self.repository}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                return self._opener.open(urllib.request.Request(url, headers=headers), timeout=60)
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
                if exc.code == 401 and attempt == 0 and challenge.lower().startswith("bearer "):
                    self._token = self._anonymous_token(challenge)
                    continue
                if exc.code in (401, 403):
                    raise ImageUnreadable(
                        f"{self.where}: the registry refuses anonymous reads (HTTP {exc.code})",
                        "docker pull it (with your credentials) and inspect the local image",
                    ) from exc
                if exc.code == 404:
                    raise ImageNotFound(
                        f"{self.where}: {path} is not in the registry (HTTP 404)", "check the name and tag"
                    ) from exc
                raise ImageUnreadable(f"{self.where}: GET {path} failed (HTTP {exc.code})", "try again later") from exc
            except OSError as exc:
                raise ImageUnreadable(
                    f"{self.where}: the registry at {self.base} does not answer ({exc})", "check that it runs"
                ) from exc
        raise AssertionError("unreachable")

    def _anonymous_token(self, challenge: str) -> str:
        import re
        import urllib.parse

        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.pop("realm", "")
        if not realm:
            raise ImageUnreadable(
                f"{self.where}: the registry's token challenge names no realm", "docker pull it instead"
            )
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        try:
            with self._opener.open(f"{realm}?{query}", timeout=60) as response:
                data = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise ImageUnreadable(
                f"{self.where}: no anonymous token from {realm} ({exc})", "docker pull it instead"
            ) from exc
        return str(data.get("token") or data.get("access_token") or "")

    def manifest(self, reference: str) -> tuple[dict[str, Any], str]:
        """The top manifest or index: (its descriptor, its body)."""
        with self._request(f"manifests/{reference}", _ACCEPT) as response:
            body = response.read()
            media = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise ImageUnreadable(
                f"{self.where}@{reference}: the registry served other bytes ({digest})", "use another registry"
            )
        self.manifests[digest] = body
        if not media:
            media = str(_json(body, f"manifest {digest} of {self.where}").get("mediaType", ""))
        return {"mediaType": media, "digest": digest, "size": len(body)}, body

    def read(self, rel: str) -> bytes | None:
        digest = rel.removeprefix("blobs/").replace("/", ":", 1)
        if digest in self.manifests:
            return self.manifests[digest]
        try:
            with self._request(f"blobs/{digest}") as response:
                body = bytes(response.read())
        except ImageNotFound:  # an index's entry is a manifest, served under /manifests/
            try:
                with self._request(f"manifests/{digest}", _ACCEPT) as response:
                    body = bytes(response.read())
            except ImageNotFound:
                return None
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise ImageUnreadable(f"{self.where}: blob {digest} does not match its digest", "push the image again")
        return body

    def opener(self, rel: str) -> Opener | None:
        digest = rel.removeprefix("blobs/").replace("/", ":", 1)

        @contextmanager
        def stream() -> Iterator[IO[bytes]]:
            with self._request(f"blobs/{digest}") as response:
                yield cast(IO[bytes], response)

        return stream


def _open_registry(ref: str, name: str) -> list[Image]:
    """The image ref names in its registry (its layers streamed when read)."""
    host, repository, reference = parse_registry_reference(ref)
    reader = _RegistryReader(host, repository)
    descriptor, _body = reader.manifest(reference)
    blobs = _Blobs(reader.where, reader.read, reader.opener)
    is_index = descriptor["mediaType"] in INDEX_TYPES
    origin = f"registry {host}"
    return [
        Image(
            name, origin, descriptor["digest"] if is_index else None, is_index, tuple(_manifests_of(blobs, descriptor))
        )
    ]


# ---------------------------------------------------------------------------------------------
# The root file system of a manifest


@dataclass(frozen=True)
class FileEntry:
    """One path of the merged root file system."""

    kind: str  # "file", "dir", "symlink", "other"
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    size: int
    linkname: str  # symlinks only
    head: bytes | None  # first HEAD_SIZE bytes of executable files (whole text of TEXT_FILES)
    layer: int  # index of the layer it comes from


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self, entry: FileEntry) -> None:
        self.entry = entry
        self.children: dict[str, _Node] = {}


@dataclass(frozen=True)
class Resolution:
    """Where a path leads after following symlinks: the entry, or why there is none."""

    path: str  # the last path reached (absolute)
    entry: FileEntry | None
    links: tuple[str, ...]  # each symlink followed, "/bin -> usr/bin"
    error: str | None = None  # "missing", "loop", "not a directory"


class RootFS:
    """The merged view of a manifest's layers (metadata and heads only)."""

    def __init__(self) -> None:
        self.root = _Node(FileEntry("dir", 0o755, 0, 0, 0, "", None, -1))

    def lookup(self, path: str) -> FileEntry | None:
        """The entry at path taken literally (no symlink is followed)."""
        node = self._node(_parts(path))
        return node.entry if node is not None else None

    def _node(self, parts: Sequence[str]) -> _Node | None:
        node: _Node | None = self.root
        for part in parts:
            if node is None:
                return None
            node = node.children.get(part)
        return node

    def resolve(self, path: str, cwd: str = "/", *, follow_final: bool = True) -> Resolution:
        """Walk path as the kernel does, inside this root: symlinks (absolute ones from the image's
        root, relative ones from their directory), "..", at most MAX_SYMLINKS links."""
        if not path.startswith("/"):
            path = posixpath.join(cwd or "/", path)
        pending = deque(_parts(path, keep_dots=True))
        stack: list[tuple[str, _Node]] = []
        links: list[str] = []
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if stack:
                    stack.pop()
                continue
            parent = stack[-1][1] if stack else self.root
            if parent.entry.kind != "dir":
                where = "/" + "/".join(n for n, _ in stack)
                return Resolution(where, None, tuple(links), "not a directory")
            node = parent.children.get(name)
            here = "/" + "/".join([*(n for n, _ in stack), name])
            if node is None:
                return Resolution(here, None, tuple(links), "missing")
            if node.entry.kind == "symlink" and (pending or follow_final):
                if len(links) >= MAX_SYMLINKS:
                    return Resolution(here, None, tuple(links), "loop")
                target = node.entry.linkname
                links.append(f"{here} -> {target}")
                if target.startswith("/"):
                    stack = []
                pending.extendleft(reversed(_parts(target, keep_dots=True)))
                continue
            stack.append((name, node))
        final = "/" + "/".join(n for n, _ in stack)
        return Resolution(final, stack[-1][1].entry if stack else self.root.entry, tuple(links))

    # -- building ------------------------------------------------------------------------------

    def _apply_layer(
        self, index: int, entries: list[tuple[str, FileEntry]], whiteouts: list[str], opaque: list[str]
    ) -> None:
        for directory in opaque:
            node = self._node(_parts(directory))
            if node is not None and node.entry.kind == "dir":
                node.children.clear()
        for gone in whiteouts:
            parts = _parts(gone)
            parent = self._node(parts[:-1]) if parts else None
            if parent is not None:
                parent.children.pop(parts[-1], None)
        for path, entry in entries:
            parts = _parts(path)
            if not parts:
                self.root.entry = entry if entry.kind == "dir" else self.root.entry
                continue
            node = self.root
            for part in parts[:-1]:
                child = node.children.get(part)
                if child is None or child.entry.kind != "dir":
                    child = _Node(FileEntry("dir", 0o755, 0, 0, 0, "", None, index))
                    node.children[part] = child
                node = child
            existing = node.children.get(parts[-1])
            if existing is not None and existing.entry.kind == "dir" and entry.kind == "dir":
                existing.entry = entry
            else:
                node.children[parts[-1]] = _Node(entry)


def _parts(path: str, *, keep_dots: bool = False) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return parts if keep_dots else [p for p in parts if p != "."]


def _wants_content(path: str, member: tarfile.TarInfo) -> int:
    if path in TEXT_FILES:
        return TEXT_LIMIT
    return HEAD_SIZE if member.mode & 0o111 else 0


class _Hashing(io.RawIOBase):
    """A raw stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        if not data:
            return 0
        buffer[: len(data)] = data
        self.digest.update(data)
        self.count += len(data)
        return len(data)


def _decompressor(stream: Any, layer: Layer, image: str) -> IO[bytes]:
    magic = stream.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ImageUnreadable(
                f"layer {layer.name} of {image} is zstd-compressed, which this Python cannot read",
                "pip install zstandard (Python 3.11 has no zstd module), or rebuild with gzip layers",
            ) from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(stream)
        return reader
    return cast(IO[bytes], stream)


@dataclass(frozen=True)
class LayerIndex:
    """What one layer holds, as the root file system needs it: entries (with heads) and whiteouts."""

    diff_id: str  # sha256 of the uncompressed tar
    entries: tuple[tuple[str, FileEntry], ...]
    whiteouts: tuple[str, ...]
    opaque: tuple[str, ...]


INDEX_FORMAT = 1


class LayerCache:
    """Layer indexes kept on disk by diff_id (content-addressed: a layer's bytes never change).

    The directory name carries the index format and a hash of this module's source, so a change
    in how layers are read never meets an index written by older code.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def default(cls) -> LayerCache:
        from harness.tools import cache_dir

        source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
        return cls(cache_dir() / "inspect" / f"layers-v{INDEX_FORMAT}-{source}")

    def _path(self, diff_id: str) -> Path:
        algorithm, _, hexdigest = diff_id.partition(":")
        return self.root / f"{algorithm}-{hexdigest}.json"

    def has(self, diff_id: str) -> bool:
        return self._path(diff_id).is_file()

    def get(self, diff_id: str) -> LayerIndex | None:
        try:
            data = json.loads(self._path(diff_id).read_bytes())
            if data.get("format") != INDEX_FORMAT or data.get("diff_id") != diff_id:
                return None
            entries = tuple(
                (
                    path,
                    FileEntry(
                        kind, mode, uid, gid, size, linkname, base64.b64decode(head) if head is not None else None, -1
                    ),
                )
                for path, kind, mode, uid, gid, size, linkname, head in data["entries"]
            )
            return LayerIndex(diff_id, entries, tuple(data["whiteouts"]), tuple(data["opaque"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: read the layer again

    def put(self, index: LayerIndex) -> None:
        entries = [
            [
                p,
                e.kind,
                e.mode,
                e.uid,
                e.gid,
                e.size,
                e.linkname,
                base64.b64encode(e.head).decode() if e.head is not None else None,
            ]
            for p, e in index.entries
        ]
        data = {
            "format": INDEX_FORMAT,
            "diff_id": index.diff_id,
            "entries": entries,
            "whiteouts": list(index.whiteouts),
            "opaque": list(index.opaque),
        }
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index-")
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, separators=(",", ":"))
            os.replace(tmp, self._path(index.diff_id))
        except OSError:
            pass  # a cache that cannot be written only costs time


def read_rootfs(layers: Sequence[Layer], image: str, cache: LayerCache | None = None) -> RootFS:
    """Read every layer, bottom to top, into one RootFS; ImageUnreadable names a bad layer."""
    fs = RootFS()
    for position, layer in enumerate(layers):
        index = cache.get(layer.diff_id) if cache is not None and layer.diff_id else None
        if index is None:
            index = index_layer(layer, image)
            if cache is not None:
                cache.put(index)
        fs._apply_layer(
            position,
            [(path, replace(entry, layer=position)) for path, entry in index.entries],
            list(index.whiteouts),
            list(index.opaque),
        )
    return fs


def index_layer(layer: Layer, image: str) -> LayerIndex:
    """Read one layer's tar stream (checking its digests); ImageUnreadable when it is bad."""
    try:
        return _index_layer(layer, image)
    except ImageUnreadable:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ImageUnreadable(
            f"layer {layer.name} of {image} cannot be read: {exc or type(exc).__name__} (truncated or corrupt)",
            "rebuild or save the image again",
        ) from exc


def _check(layer: Layer, image: str, what: str, expected: str | None, hashing: _Hashing) -> None:
    if not expected or not expected.startswith("sha256:"):
        return
    actual = "sha256:" + hashing.digest.hexdigest()
    if actual != expected:
        raise ImageUnreadable(
            f"layer {layer.name} of {image}: {hashing.count} bytes {what} with digest {actual[:19]}…, "
            f"not {expected[:19]}…: truncated or corrupt",
            "rebuild or save the image again",
        )


def _index_layer(layer: Layer, image: str) -> LayerIndex:
    entries: list[tuple[str, FileEntry]] = []
    whiteouts: list[str] = []
    opaque: list[str] = []
    seen: dict[str, FileEntry] = {}
    with layer.opener() as raw:
        stored = _Hashing(raw)
        buffered = io.BufferedReader(stored, buffer_size=1 << 16)
        stream = _decompressor(buffered, layer, image)
        plain = _Hashing(stream)
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for member in tar:
                path = _clean(member.name).rstrip("/")
                directory, base = posixpath.split(path)
                if base == OPAQUE_MARKER:
                    opaque.append(directory)
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    whiteouts.append(posixpath.join(directory, base[len(WHITEOUT_PREFIX) :]))
                    continue
                entry = _entry(tar, member, path, seen)
                seen[path] = entry
                entries.append((path, entry))
        while plain.read(1 << 20):  # the rest (tar padding) belongs to the diff_id
            pass
        while buffered.read(1 << 20):  # and what the decompressor left (a gzip trailer) to the digest
            pass
    _check(layer, image, "stored", layer.digest, stored)
    _check(layer, image, "uncompressed", layer.diff_id, plain)
    diff_id = "sha256:" + plain.digest.hexdigest()
    return LayerIndex(diff_id, tuple(entries), tuple(whiteouts), tuple(opaque))


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, seen: Mapping[str, FileEntry]) -> FileEntry:
    index = -1  # set when the layer is applied
    mode, uid, gid = member.mode & 0o7777, member.uid, member.gid
    if member.isdir():
        return FileEntry("dir", mode, uid, gid, 0, "", None, index)
    if member.issym():
        return FileEntry("symlink", mode, uid, gid, 0, member.linkname, None, index)
    if member.islnk():
        target = _clean(member.linkname).rstrip("/")
        source = seen.get(target)  # hard links point into their own layer
        head = source.head if source is not None else None
        size = source.size if source is not None else 0
        return FileEntry("file", mode, uid, gid, size, "", head, index)
    if member.isreg():
        wanted = _wants_content(path, member)
        head = None
        if wanted:
            handle = tar.extractfile(member)
            head = handle.read(wanted) if handle is not None else b""
        return FileEntry("file", mode, uid, gid, member.size, "", head, index)
    return FileEntry("other", mode, uid, gid, 0, "", None, index)
