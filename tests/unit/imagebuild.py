"""Small images written by the tests themselves: layers, OCI layouts, `docker save` archives, ELF headers.

Nothing here is run. Binaries are either hand-made ELF headers (every field the inspector reads
is real; no loadable segment) or Debian's static busybox for a given architecture, fetched with
the private apt state of hermetic.images.debimage (no dpkg change on the host) and cached under
the harness cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.elf import ELF_MAGIC, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ET_EXEC, PT_INTERP

EM = {"386": 3, "arm": 40, "amd64": 62, "arm64": 183, "ppc64le": 21, "s390x": 22, "riscv64": 243}
INTERPRETERS = {
    "amd64": "/lib64/ld-linux-x86-64.so.2",
    "arm64": "/lib/ld-linux-aarch64.so.1",
}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def elf_header(
    arch: str,
    *,
    interpreter: str | None = None,
    bits: int | None = None,
    big_endian: bool = False,
    elf_type: int = ET_EXEC,
) -> bytes:
    """A minimal well-formed ELF file for arch: header, plus one PT_INTERP program header if asked."""
    machine = EM[arch]
    bits = bits or (32 if arch in {"386", "arm"} else 64)
    big_endian = big_endian or arch == "s390x"
    order = "big" if big_endian else "little"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    word = 8 if bits == 64 else 4

    def n(value: int, size: int) -> bytes:
        return value.to_bytes(size, order)

    ident = ELF_MAGIC + bytes([ELFCLASS64 if bits == 64 else ELFCLASS32, ELFDATA2MSB if big_endian else ELFDATA2LSB, 1])
    ident += bytes(9)
    phnum = 1 if interpreter is not None else 0
    phoff = ehsize if phnum else 0
    out = ident + n(elf_type, 2) + n(machine, 2) + n(1, 4) + n(0, word) + n(phoff, word) + n(0, word)
    out += n(0, 4) + n(ehsize, 2) + n(phentsize, 2) + n(phnum, 2) + n(0, 2) * 3
    assert len(out) == ehsize
    if interpreter is not None:
        path = interpreter.encode() + b"\0"
        at = ehsize + phentsize
        if bits == 64:
            ph = n(PT_INTERP, 4) + n(4, 4) + n(at, 8) + n(0, 8) * 2 + n(len(path), 8) * 2 + n(1, 8)
        else:
            ph = n(PT_INTERP, 4) + n(at, 4) + n(0, 4) * 2 + n(len(path), 4) * 2 + n(4, 4) + n(1, 4)
        out += ph + path
    return out


@dataclass(frozen=True)
class F:
    """One layer entry: a file, directory, symlink, hard link or whiteout (a file named .wh.X)."""

    path: str
    data: bytes = b""
    mode: int = 0o755
    kind: str = "file"  # "file", "dir", "symlink", "hardlink"
    target: str = ""
    uid: int = 0
    gid: int = 0


def link(path: str, target: str) -> F:
    return F(path, kind="symlink", target=target, mode=0o777)


def directory(path: str) -> F:
    return F(path, kind="dir")


def layer_tar(entries: Sequence[F]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 1_700_000_000
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            elif entry.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry.target.lstrip("/")
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


def image_config(
    arch: str,
    *,
    os_name: str = "linux",
    variant: str = "",
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    user: str = "",
    workdir: str = "",
) -> dict[str, Any]:
    config: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if user:
        config["User"] = user
    if workdir:
        config["WorkingDir"] = workdir
    result: dict[str, Any] = {"architecture": arch, "os": os_name, "config": config, "rootfs": {"type": "layers"}}
    if variant:
        result["variant"] = variant
    return result


@dataclass
class Spec:
    """One manifest to write: its config, its layers (uncompressed tars), how to store them."""

    config: dict[str, Any]
    layers: list[bytes]
    compression: str = ""  # "", "gzip", or "zstd-fake" (zstd magic, for the cannot-read path)
    platform: dict[str, str] | None = None  # the index entry's platform (default: from the config)
    annotations: dict[str, str] = field(default_factory=dict)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class _Out:
    """Blobs and top-level files, written to a directory or a tarball."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        self.files[f"blobs/sha256/{digest[7:]}"] = data
        return digest

    def write(self, dest: Path, as_tar: bool) -> Path:
        if as_tar:
            with tarfile.open(dest, "w") as tar:
                for name, data in sorted(self.files.items()):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        else:
            for name, data in self.files.items():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(data)
        return dest


def _manifest(out: _Out, spec: Spec) -> dict[str, Any]:
    config = json.loads(json.dumps(spec.config))
    config["rootfs"] = {"type": "layers", "diff_ids": [_sha(layer) for layer in spec.layers]}
    config_bytes = _canonical(config)
    layers = []
    for layer in spec.layers:
        if spec.compression == "gzip":
            stored, media = gzip.compress(layer, mtime=0), LAYER_GZIP
        elif spec.compression == "zstd-fake":
            stored, media = b"\x28\xb5\x2f\xfd" + layer, LAYER_ZSTD
        else:
            stored, media = layer, LAYER_TAR
        layers.append({"mediaType": media, "digest": out.blob(stored), "size": len(stored)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": out.blob(config_bytes), "size": len(config_bytes)},
        "layers": layers,
    }
    data = _canonical(manifest)
    platform = spec.platform or {
        k: v
        for k, v in (("architecture", config["architecture"]), ("os", config["os"]), ("variant", config.get("variant")))
        if v
    }
    descriptor: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "digest": out.blob(data),
        "size": len(data),
        "platform": platform,
    }
    if spec.annotations:
        descriptor["annotations"] = dict(spec.annotations)
    return descriptor


def oci_layout(dest: Path, specs: Sequence[Spec], *, index: bool = True, as_tar: bool = False, ref: str = "") -> Path:
    """An OCI image layout: index.json names one image index (index=True) or the single manifest."""
    out = _Out()
    descriptors = [_manifest(out, spec) for spec in specs]
    if index:
        nested = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
        top: dict[str, Any] = {"mediaType": OCI_INDEX, "digest": out.blob(nested), "size": len(nested)}
    else:
        assert len(descriptors) == 1
        top = {k: v for k, v in descriptors[0].items() if k != "platform"}
    if ref:
        top["annotations"] = {"org.opencontainers.image.ref.name": ref}
    out.files["oci-layout"] = _canonical({"imageLayoutVersion": "1.0.0"})
    out.files["index.json"] = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    if not as_tar:
        dest.mkdir(parents=True, exist_ok=True)
    return out.write(dest, as_tar)


def attestation_for(subject: Spec, digest_hint: str = "") -> Spec:
    """An attestation manifest as buildx writes it: platform unknown/unknown, in-toto layer."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document"})
    return Spec(
        image_config("unknown", os_name="unknown"),
        [statement.encode()],
        platform={"architecture": "unknown", "os": "unknown"},
        annotations={
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": digest_hint or "sha256:" + "0" * 64,
        },
    )


def docker_archive(dest: Path, config: Mapping[str, Any], layers: Sequence[bytes], tag: str = "test/image:1") -> Path:
    """A `docker save` archive (Docker 20.10's format): manifest.json, <id>.json, <n>/layer.tar."""
    full = json.loads(json.dumps(config))
    full["rootfs"] = {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]}
    config_bytes = _canonical(full)
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    names = [f"{hashlib.sha256(layer).hexdigest()}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    with tarfile.open(dest, "w") as tar:
        for name, data in [(config_name, config_bytes), *zip(names, layers, strict=True)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return dest


# ---------------------------------------------------------------------------------------------
# Debian's static busybox


def busybox_binary(arch: str) -> bytes:
    """/bin/busybox of Debian's busybox-static for arch (amd64, arm64), cached under the harness cache.

    The .deb comes through hermetic.images.debimage.fetch_debs (private apt lists: no dpkg change).
    """
    from harness.tools import cache_dir
    from hermetic.images.debimage import deb_data_tar, fetch_debs

    deb = fetch_debs(["busybox-static"], f"linux/{arch}")["busybox-static"]
    cached = cache_dir() / "test-binaries" / f"busybox-{deb.stem}"
    if cached.is_file():
        return cached.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(deb_data_tar(deb)), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.name.lstrip("./") in {"bin/busybox", "usr/bin/busybox"} and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                binary = handle.read()
                break
        else:
            raise AssertionError(f"no bin/busybox in {deb}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(binary)
    os.replace(tmp, cached)
    return binary
