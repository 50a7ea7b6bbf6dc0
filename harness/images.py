"""Build images per platform, check their platform, save them, and assemble multi-platform indexes.

Tags are derived from content, never ``latest``::

    <repository>:<platform slug>-<first 12 hex of sha256(context files, Dockerfile, build args, platform)>

so the same inputs give the same tag and any change gives a new one. The builder is not part of
the tag: either builder makes an equivalent image from the same inputs (image IDs differ in
metadata such as creation times), and the later build takes the tag.

Builders, measured with Docker engine 20.10.24 (API 1.41, its BuildKit v0.8) and buildx v0.18.0:

- ``Builder.BUILDX``: ``buildx build --builder default --platform P --load`` (the docker driver,
  i.e. the BuildKit inside dockerd). A ``FROM`` naming a local image whose platform equals P is
  taken from the engine's image store, also when P is foreign (``FROM`` an arm64 base on this
  amd64 host: no pull, 0.5 s); no ``--pull=false`` or image-ID build arg is needed. When the
  local image has another platform, BuildKit ignores it and tries the registry ("failed to do
  request: Head https://registry-1.docker.io/..."), so build_image first checks every ``FROM``
  image that exists locally (check_base_images) and refuses a platform mismatch with a clear error.
- ``Builder.CLASSIC``: ``DOCKER_BUILDKIT=0 docker build --platform P``, the engine's legacy
  builder; it also takes a local base of platform P without pulling.

The service's Dockerfile only COPYs (nothing is RUN inside the image), so neither builder needs
an emulator for a foreign platform. After each build the image's platform (``docker image
inspect``) must equal the request, or HarnessError is raised: a build that silently produced
the host's platform is exactly the mistake the incident is about.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness import platforms
from harness.errors import HarnessError, ToolMissing
from harness.platforms import Platform
from harness.registry import Registry
from harness.tools import REPO_ROOT, buildx_command, cache_dir, docker_binary, run

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

TAG_DIGEST_LENGTH = 12


class Builder(enum.Enum):
    """Which builder turns a Dockerfile into an image (see the module docstring)."""

    BUILDX = "buildx"
    CLASSIC = "classic"


@dataclass(frozen=True)
class BuiltImage:
    """An image present in the local engine, built for one platform."""

    ref: str
    image_id: str
    platform: Platform
    builder: Builder
    seconds: float


# --------------------------------------------------------------------------------------------
# Tags from content


def platform_slug(platform: Platform) -> str:
    """The platform as a tag fragment: linux/arm64 -> linux-arm64, linux/arm/v7 -> linux-arm-v7."""
    return str(platform).replace("/", "-")


def _context_files(context: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(context):
        dirs.sort()
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if not name.endswith(".pyc"):
                yield Path(root) / name
        for name in dirs:
            path = Path(root) / name
            if path.is_symlink():
                yield path


def content_digest(context: Path, dockerfile: Path, build_args: Mapping[str, str], platform: Platform) -> str:
    """sha256 over the context's files (path, mode, content), the Dockerfile, build args, platform.

    File modification times are left out (a fresh checkout gives the same digest); __pycache__
    directories and .pyc files are left out. A .dockerignore is not interpreted: ignored files
    still count, which can only make tags change more often, never less.
    """
    if not context.is_dir():
        raise HarnessError(f"build context {context} is not a directory", "pass an existing directory")
    digest = hashlib.sha256()

    def feed(*parts: bytes) -> None:
        for part in parts:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)

    feed(b"images-v1", str(platform).encode())
    for path in sorted(_context_files(context), key=lambda p: p.relative_to(context).parts):
        rel = "/".join(path.relative_to(context).parts).encode()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            feed(b"L", rel, os.readlink(path).encode())
        else:
            feed(b"F", rel, oct(info.st_mode & 0o7777).encode(), _file_sha256(path).encode())
    feed(b"dockerfile", dockerfile.read_bytes())
    for key in sorted(build_args):
        feed(b"arg", key.encode(), build_args[key].encode())
    return digest.hexdigest()


def image_tag(repository: str, platform: Platform, digest: str) -> str:
    """<repository>:<platform slug>-<first 12 hex of digest>."""
    if not repository or ":" in repository.rsplit("/", 1)[-1] or "@" in repository:
        raise HarnessError(
            f"image repository {repository!r} must be a name without tag or digest",
            "pass e.g. repository='orders-api' or 'registry.example.com/orders-api'",
        )
    return f"{repository}:{platform_slug(platform)}-{digest[:TAG_DIGEST_LENGTH]}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Building


def _buildx_cmd(
    buildx: Sequence[str],
    platform: Platform,
    output: str,
    ref: str,
    dockerfile: Path,
    args: Sequence[str],
    context: Path,
) -> list[str]:
    """buildx on the engine's own (docker driver) builder; output is --load or --push."""
    return [
        *buildx,
        *("build", "--builder", "default", "--platform", str(platform), output, "--progress", "plain"),
        *("-t", ref, "-f", str(dockerfile), *args, str(context)),
    ]


def _classic_cmd(platform: Platform, ref: str, dockerfile: Path, args: Sequence[str], context: Path) -> list[str]:
    """The engine's classic builder (run with DOCKER_BUILDKIT=0): no buildx, no registry."""
    return [
        docker_binary(),
        "build",
        "--platform",
        str(platform),
        "-t",
        ref,
        "-f",
        str(dockerfile),
        *args,
        str(context),
    ]


def build_image(
    context: Path,
    platform: Platform,
    *,
    dockerfile: Path | None = None,
    build_args: dict[str, str] | None = None,
    repository: str,
    builder: Builder = Builder.BUILDX,
) -> BuiltImage:
    """Build context for platform, tag it by content, and check the result's platform."""
    dockerfile = dockerfile or context / "Dockerfile"
    if not dockerfile.is_file():
        raise HarnessError(f"Dockerfile {dockerfile} does not exist", "pass dockerfile= or add one to the context")
    args = dict(build_args or {})
    check_base_images(dockerfile, args, platform)
    ref = image_tag(repository, platform, content_digest(context, dockerfile, args, platform))
    arg_flags = [flag for key in sorted(args) for flag in ("--build-arg", f"{key}={args[key]}")]
    started = time.monotonic()
    if builder is Builder.BUILDX:
        buildx = buildx_command()
        if buildx is None:
            raise HarnessError(
                "docker buildx is not installed (neither the docker CLI plugin nor the standalone binary)",
                "run 'make setup' (hermetic/setup-host.sh buildx builds it with go)",
            )
        cmd = _buildx_cmd(buildx, platform, "--load", ref, dockerfile, arg_flags, context)
        env: dict[str, str] | None = None
    else:
        cmd = _classic_cmd(platform, ref, dockerfile, arg_flags, context)
        env = {"DOCKER_BUILDKIT": "0"}
    run(
        cmd,
        env=env,
        timeout=1800,
        remedy=f"read the build output above; the {builder.value} build of {ref} for {platform} failed",
    )
    seconds = time.monotonic() - started
    inspect = _inspect(ref)
    actual = platforms.image_platform(inspect)
    if actual != platform:
        raise HarnessError(
            f"{builder.value} built {ref} for {actual}, but {platform} was requested",
            "the builder ignored --platform (check the Dockerfile's FROM --platform and the builder "
            "in use); never ship this image",
        )
    return BuiltImage(ref=ref, image_id=str(inspect["Id"]), platform=actual, builder=builder, seconds=seconds)


def base_images(dockerfile_text: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile's FROM lines name (stages and scratch left out), ARGs substituted.

    Only ARGs declared before the first FROM can appear in FROM; build_args override their defaults.
    """
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    seen_from = False
    for raw in _logical_lines(dockerfile_text):
        words = raw.split()
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and not seen_from and len(words) > 1:
            name, _, default = words[1].partition("=")
            values[name] = build_args.get(name, default.strip('"'))
        elif instruction == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                continue
            image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), ""), rest[0])
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
            if image.lower() != "scratch" and image.lower() not in stages:
                found.append(image)
    return found


def _logical_lines(text: str) -> Iterator[str]:
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        yield current + stripped
        current = ""
    if current:
        yield current


def check_base_images(dockerfile: Path, build_args: Mapping[str, str], platform: Platform) -> None:
    """Refuse early when a FROM image is present locally but for another platform.

    Both builders would then try to pull the requested platform's variant from a registry, which
    fails on a registry-free machine with a DNS error that does not say what is wrong. Images
    absent locally are left to the builder (a registry may be reachable).
    """
    for image in base_images(dockerfile.read_text(), build_args):
        result = run([docker_binary(), "image", "inspect", image], check=False, timeout=60)
        if result.returncode != 0:
            continue
        have = platforms.image_platform(json.loads(result.stdout))
        if have != platform:
            raise HarnessError(
                f"base image {image} (FROM in {dockerfile}) is {have}, but the build is for {platform}",
                f"pass a base built for {platform}, e.g. python3 -m hermetic.images.python_base --platform {platform}",
            )


def _inspect(ref: str) -> dict[str, Any]:
    result = run([docker_binary(), "image", "inspect", ref], check=False, timeout=60)
    if result.returncode != 0:
        raise HarnessError(f"image {ref} is not in the local engine", "build or load it first")
    data = json.loads(result.stdout)
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise HarnessError(f"docker image inspect {ref} printed unexpected JSON", "inspect it by hand")
    return data[0]


def image_platform(ref: str) -> Platform:
    """The platform of a local image, from `docker image inspect`."""
    return platforms.image_platform(_inspect(ref))


def image_id(ref: str) -> str:
    """The ID (sha256 of the config) of a local image."""
    return str(_inspect(ref)["Id"])


# --------------------------------------------------------------------------------------------
# Build contexts a scenario prepares (images.NAME.prepare) and the Python base image


def ensure_python_base(platform: Platform) -> str:
    """The registry-free python:3.11-slim stand-in for platform (built once, then cached)."""
    from hermetic.images.python_base import ensure_python_base as ensure

    return ensure(str(platform)).ref


CONTEXT_ENV = "HARNESS_CONTEXT"  # the folder a prepare command fills
ROOT_ENV = "HARNESS_PROJECT_ROOT"  # the project root (also the command's working directory)


@dataclass(frozen=True)
class PrepareStep:
    """A command that fills an image's build context before the build (scenario field images.NAME.prepare).

    The command (an argument list, no shell) runs in the project root with an empty folder to
    fill, named by ``{context}`` in its arguments and by $HARNESS_CONTEXT; ``{root}`` is the
    project root and ``{python}`` the interpreter running the harness. When ``base`` is set, the
    folder starts as a copy of it. The result is cached under a key over the command, the
    content of ``inputs`` (what the command reads) and of ``base``.
    """

    command: tuple[str, ...]
    root: Path
    inputs: tuple[Path, ...]
    base: Path | None = None
    timeout: float = 600.0
    label: str = "prepare"  # names the step in messages: "<scenario file>: images.<name>.prepare"


def prepare_key(step: PrepareStep) -> str:
    """sha256 over the command and the content (path, mode, bytes) of the inputs and the base."""
    digest = hashlib.sha256()

    def feed(*parts: str) -> None:
        for part in parts:
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)

    def tree(tag: str, top: Path) -> None:
        if not top.exists():
            raise HarnessError(
                f"{step.label}: input {top} does not exist", "restore it, or fix the path in the scenario"
            )
        files = [top] if top.is_file() else sorted(_context_files(top))
        for path in files:
            rel = os.path.relpath(path, step.root)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                feed(tag, "L", rel, os.readlink(path))
            else:
                feed(tag, "F", rel, oct(info.st_mode & 0o111), _file_sha256(path))

    feed("prepare-v1", *step.command)
    for top in sorted(step.inputs):
        tree("input", top)
    if step.base is not None:
        tree("base", step.base)
    return digest.hexdigest()


def prepare_context(step: PrepareStep) -> Path:
    """The build context the step makes, from the cache when its key is there, else made now.

    The folder is filled in a temporary sibling and renamed into place when the command
    succeeded, so a failed or interrupted run never leaves a context a later run takes for
    complete. File modes are normalised (0644, 0755 for executables) for the same tag on every
    machine and a context readable by an image's non-root user.
    """
    target = cache_dir() / "contexts" / f"prepared-{prepare_key(step)[:16]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temp_dir(target.parent, f".{target.name}-") as tmp:
        if step.base is not None:
            shutil.copytree(
                step.base, tmp, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        fill = {"{context}": str(tmp), "{root}": str(step.root), "{python}": sys.executable}
        argv = list(step.command)
        for placeholder, value in fill.items():
            argv = [arg.replace(placeholder, value) for arg in argv]
        try:
            run(
                argv,
                cwd=step.root,
                env={CONTEXT_ENV: str(tmp), ROOT_ENV: str(step.root)},
                timeout=step.timeout,
                remedy=f"{step.label} failed: read its output above; it runs in {step.root} "
                f"with {CONTEXT_ENV} (and {{context}}) naming an empty folder to fill",
            )
        except ToolMissing as exc:
            raise HarnessError(
                f"{step.label}: command {argv[0]!r} not found", "install it, or name it by its path in the scenario"
            ) from exc
        _normalize_modes(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another run made the same context first: use that one
                raise
    return target


def stage_service_context() -> Path:
    """This repository's orders-api context (app/, docker/uvicorn, .deps/), as its seed scenario declares it.

    For this repository's own tests and bench, which build the service's image without running a
    scenario. The library never calls it: a scenario declares its images' ``prepare`` step.
    """
    from harness import scenario
    from harness.project import find_project

    seed = scenario.load(REPO_ROOT / "scenarios" / "arm64-on-amd64.yaml", find_project(root=REPO_ROOT))
    step = seed.images["ci-build"].prepare
    if step is None:
        raise HarnessError("the seed scenario's ci-build image declares no prepare step", "restore scenarios/")
    return prepare_context(step)


def _normalize_modes(root: Path) -> None:
    """Directories 0755, files 0644 or 0755 (if executable): readable by the image's non-root user
    whatever the host's umask, and the same tag on every machine."""
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o755)
        else:
            os.chmod(path, 0o755 if path.stat().st_mode & 0o100 else 0o644)


@contextmanager
def _temp_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory next to its destination; removed unless it was renamed away."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Saving and multi-platform indexes


def save_image(ref: str, dest: Path) -> Path:
    """`docker save` ref to dest (a docker-archive tarball), atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        run(
            [docker_binary(), "save", "-o", str(tmp), ref],
            timeout=900,
            remedy=f"check that {ref} exists (docker image ls) and that {dest.parent} has space",
        )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def normalize_reference(ref: str) -> str:
    """The full name containerd uses: "orders-api:x" -> "docker.io/library/orders-api:x"."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not tag:
        raise HarnessError(f"image reference {ref!r} has no tag", "use NAME:TAG (never rely on latest)")
    first, slash, _ = name.partition("/")
    if not slash:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Blob:
    digest: str  # "sha256:<hex>"
    size: int


class _LayoutWriter:
    """Writes an OCI image layout into a tar stream, each blob once."""

    def __init__(self, out: tarfile.TarFile) -> None:
        self.out = out
        self.written: set[str] = set()
        self._dir("blobs")
        self._dir("blobs/sha256")

    def _dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.out.addfile(info)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        self.out.addfile(info, io.BytesIO(data))

    def blob_bytes(self, data: bytes) -> _Blob:
        blob = _Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        if blob.digest not in self.written:
            self.add_bytes(f"blobs/sha256/{blob.digest[7:]}", data)
            self.written.add(blob.digest)
        return blob

    def blob_stream(self, open_stream: Callable[[], AbstractContextManager[IO[bytes]]], size: int) -> _Blob:
        """A blob read twice from open_stream() (hash, then copy), so layers never sit in memory."""
        digest = hashlib.sha256()
        with open_stream() as first:
            for chunk in iter(lambda: first.read(1 << 20), b""):
                digest.update(chunk)
        blob = _Blob("sha256:" + digest.hexdigest(), size)
        if blob.digest not in self.written:
            info = tarfile.TarInfo(f"blobs/sha256/{blob.digest[7:]}")
            info.size, info.mode = size, 0o644
            with open_stream() as second:
                self.out.addfile(info, second)
            self.written.add(blob.digest)
        return blob


def _platform_descriptor(config: Mapping[str, Any], where: str) -> dict[str, str]:
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise HarnessError(f"{where}: the image config has no os/architecture", "rebuild the image")
    result = {"architecture": arch, "os": os_name}
    if config.get("variant"):
        result["variant"] = str(config["variant"])
    return result


def _member_opener(
    archive: tarfile.TarFile, member: tarfile.TarInfo
) -> Callable[[], AbstractContextManager[IO[bytes]]]:
    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        handle = archive.extractfile(member)
        if handle is None:
            raise HarnessError(f"{member.name} in a docker save archive is not a file", "save the image again")
        try:
            yield handle
        finally:
            handle.close()

    return opener


def _add_docker_archive(layout: _LayoutWriter, archive_path: Path) -> dict[str, Any]:
    """Copy one `docker save` archive's config and layers in as blobs; return its manifest descriptor."""
    with tarfile.open(archive_path) as archive:
        members = {m.name: m for m in archive.getmembers()}
        manifest_member = members.get("manifest.json")
        handle = archive.extractfile(manifest_member) if manifest_member else None
        if handle is None:
            raise HarnessError(f"{archive_path} has no manifest.json: not a docker save archive", "save it again")
        entries = json.loads(handle.read())
        if not isinstance(entries, list) or len(entries) != 1:
            raise HarnessError(f"{archive_path} holds {len(entries)} images, expected 1", "save one image per archive")
        entry = entries[0]
        config_handle = archive.extractfile(members[entry["Config"]])
        if config_handle is None:
            raise HarnessError(f"{archive_path}: config {entry['Config']} missing", "save it again")
        config_bytes = config_handle.read()
        config = json.loads(config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = []
        for index, layer_name in enumerate(entry["Layers"]):
            member = members[layer_name]
            blob = layout.blob_stream(_member_opener(archive, member), member.size)
            if index < len(diff_ids) and diff_ids[index] != blob.digest:
                raise HarnessError(
                    f"{archive_path}: layer {layer_name} is {blob.digest}, the config says {diff_ids[index]}",
                    "save the image again (compressed layers are not expected in docker save output)",
                )
            layers.append({"mediaType": OCI_LAYER, "digest": blob.digest, "size": blob.size})
        config_blob = layout.blob_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest, "size": config_blob.size},
            "layers": layers,
        }
        manifest_blob = layout.blob_bytes(_canonical(manifest))
        return {
            "mediaType": OCI_MANIFEST,
            "digest": manifest_blob.digest,
            "size": manifest_blob.size,
            "platform": _platform_descriptor(config, str(archive_path)),
        }


def index_from_archives(archives: Iterable[Path], dest: Path, ref: str) -> Path:
    """Write an OCI image layout tarball holding one index (one manifest per archive) named ref.

    index.json names a single nested image index, annotated with io.containerd.image.name (the
    normalized reference, e.g. docker.io/library/orders-api:abc) and org.opencontainers.image.ref.name
    (the tag), so `ctr images import --all-platforms` creates one image with every platform.
    """
    full_ref = normalize_reference(ref)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
            layout = _LayoutWriter(out)
            descriptors = [_add_docker_archive(layout, path) for path in archives]
            seen = [json.dumps(d["platform"], sort_keys=True) for d in descriptors]
            if len(set(seen)) != len(seen):
                raise HarnessError(
                    f"two images for the same platform in the index for {ref}", "pass one image per platform"
                )
            if not descriptors:
                raise HarnessError(f"no images given for the index {ref}", "pass at least one image")
            nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
            nested_blob = layout.blob_bytes(_canonical(nested))
            top = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_INDEX,
                        "digest": nested_blob.digest,
                        "size": nested_blob.size,
                        "annotations": {
                            ANNOTATION_CONTAINERD_NAME: full_ref,
                            ANNOTATION_REF_NAME: full_ref.rpartition(":")[2],
                        },
                    }
                ],
            }
            layout.add_bytes("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
            layout.add_bytes("index.json", _canonical(top))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def build_index(images: list[BuiltImage], dest: Path, ref: str) -> Path:
    """One multi-platform OCI layout tarball at dest from per-platform images (docker save each)."""
    if not images:
        raise HarnessError(f"no images given for the index {ref}", "pass at least one BuiltImage")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _temp_dir(dest.parent, f".{dest.name}-saves-") as tmp:
        archives = [save_image(image.ref, tmp / f"{platform_slug(image.platform)}.tar") for image in images]
        return index_from_archives(archives, dest, ref)


# --------------------------------------------------------------------------------------------
# Pushing to a registry (see harness/registry.py)
#
# Measured with Docker engine 20.10.24 (classic image store) and buildx v0.18.0: the docker
# driver pushes a single-platform build to a loopback registry (`--push`: BuildKit hands the
# image to dockerd, which pushes it, plain HTTP being allowed for 127.0.0.0/8), and its metadata
# file's containerimage.digest is the digest the registry then serves. It refuses several
# platforms in one build ("Multi-platform build is not supported for the docker driver"), so a
# multi-platform image is pushed one platform at a time and tied together by push_index, which
# PUTs one OCI index through the registry's HTTP API.

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_SINGLE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)


@dataclass(frozen=True)
class PushedImage:
    """An image (one manifest, or an index) a registry holds under ref.

    ref: the reference a pod spec uses ("localhost:5001/orders-api:abc"); digest: the digest the
    registry serves for it (what the kubelet reports as imageID after a pull); platforms: the
    platform of each manifest it holds.
    """

    ref: str
    repository: str
    tag: str
    digest: str
    media_type: str
    size: int
    platforms: tuple[Platform, ...]
    seconds: float

    @property
    def by_digest(self) -> str:
        """ref pinned to its digest: "localhost:5001/orders-api@sha256:..."."""
        return f"{self.ref.rpartition(':')[0]}@{self.digest}"

    @property
    def is_index(self) -> bool:
        return self.media_type not in _SINGLE_MANIFESTS


def push_build(
    registry: Registry,
    repository: str,
    tag: str,
    context: Path,
    platform: Platform,
    *,
    dockerfile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
) -> PushedImage:
    """`buildx build --platform P --push -t HOST/REPOSITORY:TAG`, then what the registry holds.

    Without buildx, the classic builder builds and `docker push` pushes. A failing build or push
    raises ToolError carrying the builder's last lines. The pushed manifest's platform must be
    the one requested.
    """
    dockerfile = dockerfile or context / "Dockerfile"
    if not dockerfile.is_file():
        raise HarnessError(f"Dockerfile {dockerfile} does not exist", "pass dockerfile= or add one to the context")
    args = dict(build_args or {})
    check_base_images(dockerfile, args, platform)
    ref = registry.ref(repository, tag)
    arg_flags = [flag for key in sorted(args) for flag in ("--build-arg", f"{key}={args[key]}")]
    remedy = f"read the last lines above: the build or push of {ref} for {platform} failed"
    started = time.monotonic()
    buildx = buildx_command()
    if buildx is not None:
        run(_buildx_cmd(buildx, platform, "--push", ref, dockerfile, arg_flags, context), timeout=1800, remedy=remedy)
    else:
        run(
            _classic_cmd(platform, ref, dockerfile, arg_flags, context),
            env={"DOCKER_BUILDKIT": "0"},
            timeout=1800,
            remedy=remedy,
        )
        run([docker_binary(), "push", ref], timeout=900, remedy=remedy)
    pushed = describe_pushed(registry, repository, tag, seconds=time.monotonic() - started)
    if pushed.platforms != (platform,):
        raise HarnessError(
            f"{ref} was pushed for {', '.join(map(str, pushed.platforms))}, but {platform} was requested",
            "the builder ignored --platform; never ship this image",
        )
    return pushed


def tag_local(source: str, target: str) -> None:
    """`docker tag SOURCE TARGET` (a fixed tag over a content-tagged build)."""
    run([docker_binary(), "tag", source, target], timeout=60, remedy=f"check that {source} exists (docker image ls)")


def push_local(registry: Registry, source: str, repository: str, tag: str) -> PushedImage:
    """Tag a local image as HOST/REPOSITORY:TAG and `docker push` it (what a retag by hand does)."""
    ref = registry.ref(repository, tag)
    started = time.monotonic()
    docker = docker_binary()
    run([docker, "tag", source, ref], timeout=60, remedy=f"check that {source} exists (docker image ls)")
    run([docker, "push", ref], timeout=900, remedy=f"read the last lines above: docker push {ref} failed")
    return describe_pushed(registry, repository, tag, seconds=time.monotonic() - started)


def push_retag(registry: Registry, source: str, platform: Platform, repository: str, tag: str) -> PushedImage:
    """`docker pull --platform P SOURCE`, `docker tag`, `docker push` (a retag by hand on a P machine).

    The engine pulls one platform of an index, so what it pushes back is that platform's single
    manifest, whatever the source held (docker/for-mac#6894).
    """
    started = time.monotonic()
    docker = docker_binary()
    run(
        [docker, "pull", "--platform", str(platform), source],
        timeout=900,
        remedy=f"read the last lines above: docker pull --platform {platform} {source} failed",
    )
    pushed = push_local(registry, source, repository, tag)
    return dataclasses.replace(pushed, seconds=time.monotonic() - started)


def push_index(registry: Registry, repository: str, tag: str, members: Iterable[PushedImage]) -> PushedImage:
    """PUT one OCI index naming members (single-platform manifests already in repository) as repository:tag."""
    started = time.monotonic()
    descriptors = []
    for member in members:
        if member.repository != repository or member.is_index or len(member.platforms) != 1:
            raise HarnessError(
                f"{member.ref} cannot go into an index of {registry.host}/{repository}",
                "pass single-platform images pushed to the same repository",
            )
        manifest = registry.get_manifest(repository, member.digest)
        config = _config_of(registry, repository, manifest.json())
        descriptors.append(
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.body),
                "platform": _platform_descriptor(config, member.ref),
            }
        )
    body = index_manifest(descriptors)
    registry.put_manifest(repository, tag, body, OCI_INDEX)
    return describe_pushed(registry, repository, tag, seconds=time.monotonic() - started)


def push_multi(
    registry: Registry,
    repository: str,
    tag: str,
    context: Path,
    platforms_wanted: Iterable[Platform],
    *,
    dockerfile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
) -> PushedImage:
    """A multi-platform push: each platform as TAG-<platform slug>, then one OCI index as TAG."""
    started = time.monotonic()
    members = [
        push_build(
            registry,
            repository,
            f"{tag}-{platform_slug(platform)}",
            context,
            platform,
            dockerfile=dockerfile,
            build_args=build_args,
        )
        for platform in platforms_wanted
    ]
    index = push_index(registry, repository, tag, members)
    return dataclasses.replace(index, seconds=time.monotonic() - started)


def index_manifest(descriptors: Iterable[Mapping[str, Any]]) -> bytes:
    """The canonical bytes of an OCI image index over manifest descriptors (one per platform, no duplicates)."""
    listed = [dict(d) for d in descriptors]
    if not listed:
        raise HarnessError("an index needs at least one manifest", "pass at least one image")
    for descriptor in listed:
        missing = {"mediaType", "digest", "size", "platform"} - descriptor.keys()
        if missing:
            raise HarnessError(f"index entry {descriptor} lacks {', '.join(sorted(missing))}", "describe it fully")
    seen = [json.dumps(d["platform"], sort_keys=True) for d in listed]
    if len(set(seen)) != len(seen):
        raise HarnessError("two manifests for the same platform in one index", "pass one image per platform")
    return _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed})


def describe_pushed(registry: Registry, repository: str, tag: str, *, seconds: float = 0.0) -> PushedImage:
    """What the registry holds under repository:tag: digest, media type, size and platform(s)."""
    manifest = registry.get_manifest(repository, tag)
    data = manifest.json()
    media_type = manifest.media_type or str(data.get("mediaType", ""))
    found: list[Platform] = []
    if media_type in _SINGLE_MANIFESTS:
        config = _config_of(registry, repository, data)
        described = _platform_descriptor(config, registry.ref(repository, tag))
        found.append(Platform(described["os"], described["architecture"], described.get("variant", "")))
    else:
        for entry in data.get("manifests", []):
            described = entry.get("platform") or {}
            if described.get("os") and described.get("architecture") not in (None, "unknown"):
                found.append(
                    Platform(str(described["os"]), str(described["architecture"]), str(described.get("variant", "")))
                )
    return PushedImage(
        ref=registry.ref(repository, tag),
        repository=repository,
        tag=tag,
        digest=manifest.digest,
        media_type=media_type,
        size=len(manifest.body),
        platforms=tuple(found),
        seconds=seconds,
    )


def held_images(registry: Registry, pushed: PushedImage) -> tuple[dict[str, tuple[Platform, ...]], set[str]]:
    """(every digest a pushed image holds -> its platform(s), the config digests among them).

    The digests: the image (or index) itself, each member manifest, and each config digest, the
    image ID a node that pulls it runs.
    """
    manifest = registry.get_manifest(pushed.repository, pushed.digest).json()
    held: dict[str, tuple[Platform, ...]] = {pushed.digest: pushed.platforms}
    if not pushed.is_index:
        config = str((manifest.get("config") or {}).get("digest", ""))
        held[config] = pushed.platforms
        return held, {config}
    configs: set[str] = set()
    for entry in manifest.get("manifests", []):
        described = entry.get("platform") or {}
        if described.get("os") and described.get("architecture") not in (None, "unknown"):
            platform = (
                Platform(str(described["os"]), str(described["architecture"]), str(described.get("variant", ""))),
            )
            child = registry.get_manifest(pushed.repository, str(entry.get("digest"))).json()
            config = str((child.get("config") or {}).get("digest", ""))
            held[str(entry.get("digest"))] = platform
            held[config] = platform
            configs.add(config)
    return held, configs


def _config_of(registry: Registry, repository: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    config = manifest.get("config") or {}
    digest = config.get("digest")
    if not isinstance(digest, str):
        raise HarnessError(f"a manifest in {registry.host}/{repository} has no config", "push the image again")
    data = json.loads(registry.get_blob(repository, digest))
    if not isinstance(data, dict):
        raise HarnessError(f"config {digest} in {registry.host}/{repository} is not a JSON object", "push it again")
    return data
