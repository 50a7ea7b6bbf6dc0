"""The harness's local registry image: FROM scratch plus a static `crane` (stdlib only).

    python3 -m hermetic.registry_image      # builds what is missing, prints the image reference

1. ``crane`` (github.com/google/go-containerregistry/cmd/crane at CRANE_VERSION from
   hermetic/versions.env) is built once with ``go install`` (CGO_ENABLED=0, so it is static)
   into a private directory and renamed to ``<cache>/bin/crane-<version>``; an interrupted
   build leaves nothing that passes for complete.
2. The image is written as a ``docker save`` archive (one layer: /crane, /var/lib/registry,
   /tmp) and loaded with ``docker load``: no base image, no builder, nothing pulled. Layer
   entries carry fixed times and owners, so the same binary gives the same image ID.

The image's command is ``crane registry serve --address :5000 --disk /var/lib/registry``: the
same port and data directory as the official ``registry:2`` image, so a container of either
is run with the same ``docker run`` arguments. pkg/registry keeps blobs under --disk but
manifests and tags in memory: a restarted registry container has lost its tags (pushes redo
them; blobs already on disk are not uploaded twice).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform as host_platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hermetic.stages import cache_root, read_versions

MODULE = "github.com/google/go-containerregistry/cmd/crane"
REPOSITORY = "incident-harness/registry"
PORT_IN_CONTAINER = 5000
DATA_IN_CONTAINER = "/var/lib/registry"
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class BuildFailed(Exception):
    """Building crane or loading the image failed: the command, its exit code and the end of its output."""

    def __init__(self, what: str, cmd: list[str], returncode: int, output: str, remedy: str) -> None:
        tail = "\n    ".join(output.strip().splitlines()[-15:]) or "(no output)"
        super().__init__(f"{what}: {' '.join(cmd)} exited {returncode}\n    {tail}")
        self.remedy = remedy


@dataclass(frozen=True)
class RegistryImage:
    ref: str
    binary: Path
    built: bool  # False when both the binary and the image were already there
    seconds: float


def crane_version() -> str:
    return read_versions()["CRANE_VERSION"]


def goarch() -> str:
    machine = host_platform.machine().lower()
    return _GOARCH.get(machine, machine)


def image_ref(version: str | None = None, arch: str | None = None) -> str:
    return f"{REPOSITORY}:crane-{version or crane_version()}-{arch or goarch()}"


def crane_path(version: str | None = None) -> Path:
    return cache_root() / "bin" / f"crane-{version or crane_version()}"


def _run(what: str, cmd: list[str], remedy: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildFailed(what, cmd, 127, f"{cmd[0]} is not installed", remedy) from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(what, cmd, -1, f"timed out after {timeout} s", remedy) from exc
    if proc.returncode != 0:
        raise BuildFailed(what, cmd, proc.returncode, proc.stderr or proc.stdout, remedy)
    return proc.stdout


def ensure_crane(version: str | None = None) -> tuple[Path, bool]:
    """The static crane binary in the cache, built with `go install` when missing; (path, built)."""
    version = version or crane_version()
    target = crane_path(version)
    if target.is_file() and os.access(target, os.X_OK):
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    gobin = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".crane-{version}-build-"))
    try:
        _run(
            f"building crane {version}",
            ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{MODULE}@{version}"],
            "check that Go 1.21+ is installed and the Go module proxy is reachable (go env GOPROXY)",
            env={"GOBIN": str(gobin), "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": goarch()},
        )
        os.replace(gobin / "crane", target)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)
    return target, True


def _tar_entry(
    tar: tarfile.TarFile, name: str, *, mode: int, data: bytes | None = None, source: Path | None = None
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = mode
    if data is None and source is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif source is not None:
        info.size = source.stat().st_size
        with open(source, "rb") as handle:
            tar.addfile(info, handle)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def image_config(layer_digest: str, arch: str, version: str) -> dict[str, object]:
    """The image config: crane registry serve on :5000 with its data under /var/lib/registry."""
    return {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/crane", "registry", "serve"],
            "Cmd": ["--address", f":{PORT_IN_CONTAINER}", "--disk", DATA_IN_CONTAINER],
            "ExposedPorts": {f"{PORT_IN_CONTAINER}/tcp": {}},
            "Volumes": {DATA_IN_CONTAINER: {}},
            "Labels": {
                "org.opencontainers.image.title": "crane registry serve (incident-harness)",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.source": "https://github.com/google/go-containerregistry",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "incident-harness hermetic/registry_image.py"}],
    }


def write_archive(binary: Path, dest: Path, ref: str, arch: str, version: str) -> Path:
    """A `docker save` archive of the registry image at dest (written to a temporary name, then renamed)."""
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".registry-image-"))
    try:
        layer = work / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            _tar_entry(tar, "crane", mode=0o755, source=binary)
            _tar_entry(tar, "tmp", mode=0o1777)
            _tar_entry(tar, "var", mode=0o755)
            _tar_entry(tar, "var/lib", mode=0o755)
            _tar_entry(tar, "var/lib/registry", mode=0o755)
        digest = hashlib.sha256()
        with open(layer, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        layer_digest = "sha256:" + digest.hexdigest()
        config = json.dumps(image_config(layer_digest, arch, version), sort_keys=True).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_digest[7:]}/layer.tar"]}]
        partial = work / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
            _tar_entry(out, f"{layer_digest[7:]}", mode=0o755)
            _tar_entry(out, f"{layer_digest[7:]}/layer.tar", mode=0o644, source=layer)
            _tar_entry(out, config_name, mode=0o644, data=config)
            _tar_entry(out, "manifest.json", mode=0o644, data=json.dumps(manifest).encode())
        os.replace(partial, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def image_present(ref: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, timeout=60, check=False)
    return proc.returncode == 0


def ensure_registry_image() -> RegistryImage:
    """The registry image in the local engine, building crane and the image when missing."""
    started = time.monotonic()
    version, arch = crane_version(), goarch()
    ref = image_ref(version, arch)
    binary, built = ensure_crane(version)
    if image_present(ref) and not built:
        return RegistryImage(ref, binary, False, time.monotonic() - started)
    archives = cache_root() / "images" / "registry"
    archives.mkdir(parents=True, exist_ok=True)
    archive = write_archive(binary, archives / f"crane-{version}-{arch}.tar", ref, arch, version)
    try:
        _run(
            f"loading {ref}",
            ["docker", "load", "-i", str(archive)],
            "check that the Docker engine answers (docker info)",
        )
    finally:
        archive.unlink(missing_ok=True)
    return RegistryImage(ref, binary, True, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the harness's registry image (crane registry serve).")
    parser.parse_args(argv)
    try:
        image = ensure_registry_image()
    except BuildFailed as exc:
        print(f"registry-image: error: {exc}\nregistry-image: what to do: {exc.remedy}", file=sys.stderr)
        return 2
    print(image.ref)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
