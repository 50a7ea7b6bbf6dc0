"""Writing OCI image layouts without a registry or a builder (stdlib only).

An image here is a list of uncompressed layer tarballs plus a config; several images go into
one OCI layout tarball whose index names each image (io.containerd.image.name), which
`ctr images import` stores under those names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass
class Image:
    name: str  # full reference, e.g. registry.k8s.io/pause:3.10.1
    layers: list[Blob]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    architecture: str = "amd64"


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def add_blob(blobs: Path, path: Path) -> Blob:
    """Move (or copy) a file into blobs/sha256/ under its digest."""
    digest, size = _hash_file(path)
    target = blobs / "sha256" / digest.split(":", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(path, target)
    return Blob(digest, size, target)


def add_bytes(blobs: Path, data: bytes) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target = blobs / "sha256" / digest.split(":", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return Blob(digest, len(data), target)


def files_layer(dest: Path, files: dict[str, Path | bytes], dirs: dict[str, int] | None = None) -> Path:
    """A layer tarball from {path in image: host file or bytes}; executables keep mode 0755."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name in made or name in ("", "."):
                return
            parent = os.path.dirname(name)
            add_dir(parent)
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(info)
            made.add(name)

        for name, mode in sorted((dirs or {}).items()):
            add_dir(name.strip("/"), mode)
        for name, source in sorted(files.items()):
            name = name.strip("/")
            add_dir(os.path.dirname(name))
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(source), 0o644, 0
                tar.addfile(info, io.BytesIO(source))
            else:
                info = tarfile.TarInfo(name)
                info.size = source.stat().st_size
                info.mode = 0o755 if os.access(source, os.X_OK) else 0o644
                info.mtime = 0
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    return dest


def _diff_id(layer: Blob) -> str:
    return layer.digest  # layers are uncompressed: diff ID equals digest


def write_layout(dest_tar: Path, work: Path, images: list[Image]) -> Path:
    """Write an OCI layout tarball holding every image, each named in the index."""
    blobs = work / "blobs"
    manifests = []
    for image in images:
        config = {
            "architecture": image.architecture,
            "os": "linux",
            "config": {
                k: v for k, v in {"Env": image.env, "Entrypoint": image.entrypoint, "Cmd": image.cmd}.items() if v
            },
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(layer) for layer in image.layers]},
            "history": [{"created_by": "incident-harness hermetic/oci.py"} for _ in image.layers],
        }
        config_blob = add_bytes(blobs, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_blob.digest, "size": config_blob.size},
            "layers": [{"mediaType": LAYER, "digest": b.digest, "size": b.size} for b in image.layers],
        }
        manifest_blob = add_bytes(blobs, json.dumps(manifest, sort_keys=True).encode())
        tag = image.name.rsplit(":", 1)[1] if ":" in image.name.rsplit("/", 1)[-1] else "latest"
        manifests.append(
            {
                "mediaType": MANIFEST,
                "digest": manifest_blob.digest,
                "size": manifest_blob.size,
                "platform": {"architecture": image.architecture, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": image.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        )
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (work / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}, sort_keys=True)
    )
    partial = dest_tar.with_name(dest_tar.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        tar.add(work / "oci-layout", arcname="oci-layout")
        tar.add(work / "index.json", arcname="index.json")
        tar.add(blobs, arcname="blobs")
    os.replace(partial, dest_tar)
    return dest_tar
