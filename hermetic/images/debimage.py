"""Registry-free images from Debian packages, for any architecture, without running a foreign binary.

How an image is made (the shared engine behind python_base.py and busybox_httpd.py):

1. A private apt state per (suite, architecture) under ``cache_dir()/apt/``: its own sources
   (deb.debian.org, the suite from hermetic/versions.env), lists and archive cache, and an empty
   dpkg status. apt-get and apt-cache only *read metadata and download* there, so the host's
   package configuration is never changed: no ``dpkg --add-architecture``, no root needed.
2. The recipe's root packages are resolved to a closure through Depends/Pre-Depends (first
   alternative that exists; a recipe may prune packages that only matter to a package manager,
   such as dpkg or perl-base). The resolved names, versions and SHA-256 sums, the suite, the
   architecture and the source of the recipe modules form the *content key*.
3. ``apt-get download`` fetches the .debs (apt checks their hashes); each .deb is read in Python
   (ar archive, data.tar.*) and its files go straight into one layer tarball with the merged-/usr
   layout (/bin, /lib, ... become symlinks into /usr), documentation dropped as in slim images.
   Nothing from the packages is executed, so an arm64 image builds on an amd64 host.
4. The layer, an image config (os/architecture/variant, Env, Cmd, User, labels) and a manifest
   are written as a ``docker save``-format archive and loaded with ``docker load``. (``docker
   import --platform`` is ignored by Docker 20.10: the image would claim the host's architecture.)
   Entries are sorted and time-stamped from the packages, so the same key gives the same image ID.

The tag is ``<repository>:<prefix>-<arch>-<first 12 hex of the key>``, never ``latest``.
Everything built is kept under ``cache_dir()/images/<name>/<arch>-<key>/``, written to a temporary
directory and renamed into place, so an interrupted build never passes for complete; a rerun with
nothing changed only resolves the key and finds the image with ``docker image inspect``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, ToolError
from harness.tools import cache_dir, docker_binary, run, versions

DEBIAN_MIRROR_ENV = "HARNESS_DEBIAN_MIRROR"
DEBIAN_SECURITY_MIRROR_ENV = "HARNESS_DEBIAN_SECURITY_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# OCI platform -> (Debian architecture, image config architecture, variant)
_PLATFORMS: dict[str, tuple[str, str, str]] = {
    "linux/amd64": ("amd64", "amd64", ""),
    "linux/arm64": ("arm64", "arm64", "v8"),
    "linux/arm64/v8": ("arm64", "arm64", "v8"),
    "linux/arm/v7": ("armhf", "arm", "v7"),
    "linux/ppc64le": ("ppc64el", "ppc64le", ""),
    "linux/s390x": ("s390x", "s390x", ""),
    "linux/386": ("i386", "386", ""),
}

# Top-level directories that are symlinks into /usr in a merged-/usr root (Debian 12's default).
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# Dropped from every image, as the slim images do (copyright files are kept).
_EXCLUDED_PREFIXES = (
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
    "usr/share/linda/",
    "usr/share/doc-base/",
    "usr/share/bug/",
    "usr/share/menu/",
    "usr/share/common-licenses/",
)

_ROOT_ENTRIES_MTIME = 1_700_000_000  # fixed time stamp for entries the recipe adds itself


@dataclass(frozen=True)
class DebPlatform:
    """A target platform as Debian and an image config name it."""

    oci: str  # "linux/arm64"
    deb_arch: str  # "arm64"
    architecture: str  # image config "architecture"
    variant: str  # image config "variant" ("" when none)

    @property
    def slug(self) -> str:
        return self.deb_arch


def deb_platform(platform: str) -> DebPlatform:
    """Map "linux/arm64" (or "arm64") to the Debian architecture and image config fields."""
    text = platform.strip().lower()
    if "/" not in text:
        text = f"linux/{text}"
    text = {"linux/x86_64": "linux/amd64", "linux/aarch64": "linux/arm64"}.get(text, text)
    if text not in _PLATFORMS:
        raise HarnessError(
            f"no Debian architecture known for platform {platform!r}",
            "use one of: " + ", ".join(sorted(_PLATFORMS)),
        )
    deb_arch, arch, variant = _PLATFORMS[text]
    canonical = "linux/arm64" if text == "linux/arm64/v8" else text
    return DebPlatform(canonical, deb_arch, arch, variant)


@dataclass(frozen=True)
class DebPackage:
    """One resolved binary package."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str  # pool path; its basename is the .deb's file name


@dataclass(frozen=True)
class ExtraFile:
    """A file, directory or symlink the recipe adds on top of the packages."""

    path: str  # relative, e.g. "etc/passwd"
    kind: str = "file"  # "file", "dir" or "symlink"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlinks only


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into an image; every field is part of the content key."""

    name: str  # cache sub-directory, e.g. "python-base"
    repository: str  # e.g. "incident-harness/python-base"
    tag_prefix: str  # e.g. "3.11"
    roots: tuple[str, ...]  # packages to install, with their dependency closure
    prune: frozenset[str] = frozenset()  # packages never installed (nor their dependencies)
    keep_only: tuple[str, ...] = ()  # when set: keep only paths under these prefixes (plus parents)
    extras: tuple[ExtraFile, ...] = ()
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    user: str = ""
    workdir: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()  # recipe source files hashed into the key


@dataclass(frozen=True)
class BaseImage:
    """A registry-free image that exists in the local engine."""

    ref: str
    image_id: str
    platform: str  # "linux/arm64"
    key: str  # full content key (hex)
    packages: tuple[DebPackage, ...]
    seconds: float
    cached: bool  # True when nothing had to be built


class StaleLists(HarnessError):
    """Debian's package index and the mirror disagree (a package left the mirror, a hash differs)."""


def _log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on path (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class AptRoot:
    """A private apt state for one suite and architecture: metadata and downloads only."""

    def __init__(self, suite: str, deb_arch: str, base: Path | None = None) -> None:
        self.suite = suite
        self.arch = deb_arch
        self.root = (base or cache_dir() / "apt") / f"{suite}-{deb_arch}"
        self.lists = self.root / "lists"
        self.archives = self.root / "archives"
        self.sources = self.root / "sources.sources"

    def _options(self) -> list[str]:
        opts = {
            "Dir::State::Lists": str(self.lists),
            "Dir::State::status": str(self.root / "status"),
            "Dir::Cache": str(self.root / "cache"),
            "Dir::Cache::archives": str(self.archives),
            # Some hosts (Docker's Debian images) switch apt's binary caches off; we want them.
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": str(self.root / "sources.list.d"),
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "Acquire::Languages": "none",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
        }
        if os.geteuid() == 0:
            # Downloads land in our own directories; apt's _apt sandbox user may not reach them.
            opts["APT::Sandbox::User"] = "root"
        args: list[str] = []
        for key, value in opts.items():
            args += ["-o", f"{key}={value}"]
        return args

    def _prepare(self) -> None:
        if not KEYRING.is_file():
            raise HarnessError(
                f"the Debian archive keyring {KEYRING} is missing, so apt cannot verify Debian's packages",
                "apt-get install debian-archive-keyring",
            )
        for sub in (
            self.lists / "partial",
            self.archives / "partial",
            self.root / "cache",
            self.root / "sources.list.d",
        ):
            sub.mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        mirror = os.environ.get(DEBIAN_MIRROR_ENV) or versions().get("DEBIAN_MIRROR") or DEFAULT_MIRROR
        security = os.environ.get(DEBIAN_SECURITY_MIRROR_ENV, DEFAULT_SECURITY_MIRROR)
        text = (
            f"Types: deb\nURIs: {mirror}\nSuites: {self.suite} {self.suite}-updates\n"
            f"Components: main\nSigned-By: {KEYRING}\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {self.suite}-security\n"
            f"Components: main\nSigned-By: {KEYRING}\n"
        )
        if not self.sources.is_file() or self.sources.read_text() != text:
            self.sources.write_text(text)

    def has_lists(self) -> bool:
        return any(self.lists.glob(f"*_{self.suite}_*Packages*"))

    def update(self) -> None:
        """apt-get update into the private lists (about 9 MB per architecture)."""
        self._prepare()
        _log(f"apt-get update for Debian {self.suite} {self.arch} (private lists in {self.root})")
        with _locked(self.root / ".harness.lock"):
            run(
                ["apt-get", *self._options(), "update", "-qq"],
                timeout=900,
                remedy=f"check that Debian's mirror is reachable (set {DEBIAN_MIRROR_ENV} to use another one)",
            )

    def ensure_lists(self, refresh: bool = False) -> None:
        self._prepare()
        if refresh or not self.has_lists():
            self.update()

    def show(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """The candidate stanza of each package that exists, keyed by name (missing ones left out)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        result = run(["apt-cache", *self._options(), "show", "--no-all-versions", *wanted], check=False, timeout=120)
        stanzas = [parse_stanza(block) for block in result.stdout.split("\n\n") if block.strip()]
        found = {s["Package"]: s for s in stanzas if "Package" in s}
        if result.returncode != 0 and not found:
            raise ToolError(
                ["apt-cache", "show", *wanted],
                result.returncode,
                result.stdout,
                result.stderr,
                f"delete {self.root} and run again to refresh Debian's package lists",
            )
        return found

    def download(self, packages: Iterable[DebPackage], dest: Path) -> dict[str, Path]:
        """The .deb of each package in dest (kept between runs), checked against its SHA-256."""
        dest.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        missing: list[DebPackage] = []
        for pkg in packages:
            path = dest / Path(pkg.filename).name
            paths[pkg.name] = path
            if not (path.is_file() and _sha256_file(path) == pkg.sha256):
                missing.append(pkg)
        if missing:
            _log(f"downloading {len(missing)} .deb file(s) for {self.arch}")
            with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
                os.chmod(tmp, 0o755)
                specs = [
                    f"{p.name}:{p.arch}={p.version}" if p.arch != "all" else f"{p.name}={p.version}" for p in missing
                ]
                try:
                    run(["apt-get", *self._options(), "download", "-qq", *specs], cwd=Path(tmp), timeout=900)
                except ToolError as exc:
                    raise StaleLists(exc.cause, "run again with --refresh") from exc
                for pkg in missing:
                    got = Path(tmp) / Path(pkg.filename).name
                    if not got.is_file():
                        # apt names the file <name>_<version with ':' as %3a>_<arch>.deb like the pool.
                        candidates = list(Path(tmp).glob(f"{pkg.name}_*.deb"))
                        if len(candidates) != 1:
                            raise StaleLists(
                                f"apt-get download did not produce {Path(pkg.filename).name}",
                                "run again with --refresh",
                            )
                        got = candidates[0]
                    if _sha256_file(got) != pkg.sha256:
                        raise StaleLists(
                            f"{got.name}: SHA-256 differs from Debian's package index", "run again with --refresh"
                        )
                    os.replace(got, paths[pkg.name])
        return paths


def parse_stanza(block: str) -> dict[str, str]:
    """Parse one RFC 822 style stanza of apt-cache show (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def parse_depends(text: str) -> list[list[str]]:
    """'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']]: names only, versions and arch qualifiers dropped."""
    groups: list[list[str]] = []
    for group in text.split(","):
        names = []
        for alternative in group.split("|"):
            name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].strip()
            name = name.split(":", 1)[0]
            if name:
                names.append(name)
        if names:
            groups.append(names)
    return groups


def resolve(apt: AptRoot, roots: Iterable[str], prune: frozenset[str] = frozenset()) -> list[DebPackage]:
    """The dependency closure of roots (Depends + Pre-Depends), sorted by name.

    For each dependency the first alternative Debian has is taken; pruned names are never added and
    a dependency that any pruned alternative satisfies is dropped.
    """
    wanted_roots = sorted(set(roots) - prune)
    resolved = apt.show(wanted_roots)
    missing = [name for name in wanted_roots if name not in resolved]
    if missing:
        raise StaleLists(
            f"Debian {apt.suite} has no package {', '.join(missing)} for {apt.arch}",
            "check the recipe's package names, or run again with --refresh",
        )
    fresh = list(resolved.values())
    while fresh:
        groups: list[list[str]] = []
        for stanza in fresh:
            for fieldname in ("Pre-Depends", "Depends"):
                groups += parse_depends(stanza.get(fieldname, ""))
        groups = [g for g in groups if not any(a in resolved or a in prune for a in g)]
        candidates = apt.show({a for g in groups for a in g})
        fresh = []
        for alternatives in groups:
            if any(a in resolved for a in alternatives):
                continue
            choice = next((a for a in alternatives if a in candidates), None)
            if choice is None:
                raise HarnessError(
                    f"cannot satisfy dependency {' | '.join(alternatives)} for {apt.arch}",
                    "add one of them to the recipe's roots or prune list",
                )
            resolved[choice] = candidates[choice]
            fresh.append(candidates[choice])
    packages = [
        DebPackage(
            name=name,
            version=s["Version"],
            arch=s.get("Architecture", apt.arch),
            sha256=s.get("SHA256", ""),
            size=int(s.get("Size", "0") or 0),
            filename=s.get("Filename", ""),
        )
        for name, s in resolved.items()
    ]
    for pkg in packages:
        if not pkg.sha256 or not pkg.filename:
            raise StaleLists(f"package {pkg.name} has no SHA256/Filename in the index", "run again with --refresh")
    return sorted(packages, key=lambda p: p.name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(recipe: ImageRecipe, platform: DebPlatform, suite: str, packages: Iterable[DebPackage]) -> str:
    """SHA-256 over everything that decides the image's content."""
    digest = hashlib.sha256()

    def feed(*parts: str) -> None:
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")

    feed("debimage-v1", suite, platform.oci, platform.deb_arch, recipe.name, recipe.repository, recipe.tag_prefix)
    for pkg in packages:
        feed(pkg.name, pkg.version, pkg.arch, pkg.sha256)
    feed(*recipe.roots, "|", *sorted(recipe.prune), "|", *recipe.keep_only, "|")
    for extra in recipe.extras:
        feed(extra.path, extra.kind, oct(extra.mode), extra.target, hashlib.sha256(extra.data).hexdigest())
    feed(
        *recipe.env,
        "|",
        *recipe.cmd,
        "|",
        *recipe.entrypoint,
        "|",
        recipe.user,
        recipe.workdir,
        *recipe.exposed_ports,
        json.dumps(dict(recipe.labels), sort_keys=True),
    )
    for source in sorted({Path(__file__).resolve(), *(p.resolve() for p in recipe.sources)}):
        feed(source.name, hashlib.sha256(source.read_bytes()).hexdigest())
    return digest.hexdigest()


# --- reading .deb files ----------------------------------------------------------------------------


def deb_data_tar(deb: Path) -> bytes:
    """The data.tar.* member of a .deb (an ar archive), compressed as stored."""
    with open(deb, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise HarnessError(f"{deb} is not a Debian package (no ar header)", f"delete {deb} and run again")
        while True:
            header = handle.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = handle.read(size)
            if size % 2:
                handle.read(1)
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise HarnessError(
                        f"{deb.name} uses zstd compression, which Python 3.11 cannot read",
                        "use a suite whose packages use xz (Debian does)",
                    )
                return data
    raise HarnessError(f"{deb} has no data.tar member", f"delete {deb} and run again")


def _normalise(name: str, merged_usr: bool) -> str:
    path = name
    while path.startswith("./"):
        path = path[2:]
    path = path.strip("/")
    if path == ".":
        return ""
    if merged_usr and path:
        top = path.split("/", 1)[0]
        if top in _MERGED_USR:
            path = "usr/" + path
    return path


def _excluded(path: str) -> bool:
    if path.startswith("usr/share/doc/"):
        rest = path[len("usr/share/doc/") :]
        return "/" in rest and not rest.endswith("/copyright")
    return any(path.startswith(prefix) or path + "/" == prefix for prefix in _EXCLUDED_PREFIXES)


@dataclass
class _Entry:
    info: tarfile.TarInfo
    data: bytes | None


class LayerBuilder:
    """Collects files from .debs and extras, then writes one deterministic layer tarball."""

    def __init__(self, merged_usr: bool = True) -> None:
        self.merged_usr = merged_usr
        self.entries: dict[str, _Entry] = {}

    def add_deb(self, deb: Path) -> None:
        data = deb_data_tar(deb)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            members = archive.getmembers()
            contents: dict[str, bytes] = {}
            for member in members:
                if member.isfile():
                    extracted = archive.extractfile(member)
                    contents[member.name] = extracted.read() if extracted else b""
            for member in members:
                path = _normalise(member.name, self.merged_usr)
                if not path or _excluded(path):
                    continue
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
                info.mtime = int(member.mtime)
                payload: bytes | None = None
                if member.isdir():
                    info.type = tarfile.DIRTYPE
                    if path in self.entries:
                        continue
                elif member.issym():
                    info.type, info.linkname = tarfile.SYMTYPE, member.linkname
                elif member.islnk():
                    # Stored as a copy: hard links in a sorted layer could precede their target.
                    info.type = tarfile.REGTYPE
                    payload = contents.get(member.linkname, b"")
                elif member.isfile():
                    info.type = tarfile.REGTYPE
                    payload = contents[member.name]
                else:
                    continue  # devices and fifos have no place in an image layer
                if payload is not None:
                    info.size = len(payload)
                self.entries[path] = _Entry(info, payload)

    def add_extra(self, extra: ExtraFile) -> None:
        path = extra.path.strip("/")
        info = tarfile.TarInfo(path)
        info.mode, info.mtime = extra.mode, _ROOT_ENTRIES_MTIME
        data: bytes | None = None
        if extra.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif extra.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, extra.target
        else:
            info.type, info.size, data = tarfile.REGTYPE, len(extra.data), extra.data
        self.entries[path] = _Entry(info, data)

    def add_merged_usr_links(self) -> None:
        for top in _MERGED_USR:
            if any(p.startswith(f"usr/{top}/") for p in self.entries):
                self.add_extra(ExtraFile(top, "symlink", target=f"usr/{top}", mode=0o777))

    def keep_only(self, prefixes: Iterable[str]) -> None:
        wanted = tuple(p.strip("/") for p in prefixes)
        if not wanted:
            return
        self.entries = {
            path: entry
            for path, entry in self.entries.items()
            if any(path == w or path.startswith(w + "/") for w in wanted)
        }

    def _add_parents(self) -> None:
        for path in list(self.entries):
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                parent = "/".join(parts[:depth])
                if parent not in self.entries:
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _ROOT_ENTRIES_MTIME
                    self.entries[parent] = _Entry(info, None)

    def write(self, dest: Path) -> str:
        """Write the layer (entries sorted, owners numeric, no user names); return its sha256 hex."""
        self._add_parents()
        with open(dest, "wb") as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as layer:
            for path in sorted(self.entries, key=lambda p: p.split("/")):
                entry = self.entries[path]
                entry.info.uname = entry.info.gname = ""
                if entry.data is not None:
                    layer.addfile(entry.info, io.BytesIO(entry.data))
                else:
                    layer.addfile(entry.info)
        return _sha256_file(dest)


def image_config(
    recipe: ImageRecipe, platform: DebPlatform, layer_sha: str, key: str, packages: Iterable[DebPackage]
) -> dict[str, object]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_ROOT_ENTRIES_MTIME))
    labels = {
        **dict(recipe.labels),
        "io.incident-harness.recipe": recipe.name,
        "io.incident-harness.content-key": key,
        "org.opencontainers.image.base.name": "scratch",
    }
    config: dict[str, object] = {"Env": list(recipe.env), "Labels": labels}
    if recipe.cmd:
        config["Cmd"] = list(recipe.cmd)
    if recipe.entrypoint:
        config["Entrypoint"] = list(recipe.entrypoint)
    if recipe.user:
        config["User"] = recipe.user
    if recipe.workdir:
        config["WorkingDir"] = recipe.workdir
    if recipe.exposed_ports:
        config["ExposedPorts"] = {port: {} for port in recipe.exposed_ports}
    names = " ".join(f"{p.name}={p.version}" for p in packages)
    result: dict[str, object] = {
        "architecture": platform.architecture,
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]},
        "history": [{"created": created, "created_by": f"hermetic/images {recipe.name}: Debian packages {names}"}],
    }
    if platform.variant:
        result["variant"] = platform.variant
    return result


def write_docker_archive(layer: Path, layer_sha: str, config: Mapping[str, object], repo_tag: str, dest: Path) -> str:
    """A `docker save`-format archive of a one-layer image; return the image ID (sha256 of config)."""
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_sha = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_sha}.json", "RepoTags": [repo_tag], "Layers": [f"{layer_sha}/layer.tar"]}]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as archive:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _ROOT_ENTRIES_MTIME, 0o644
            archive.addfile(info, io.BytesIO(data))

        add_bytes(f"{config_sha}.json", config_bytes)
        archive.add(str(layer), arcname=f"{layer_sha}/layer.tar", recursive=False)
        add_bytes("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        add_bytes(
            "repositories", json.dumps({repo_tag.rsplit(":", 1)[0]: {repo_tag.rsplit(":", 1)[1]: layer_sha}}).encode()
        )
    return f"sha256:{config_sha}"


def _local_image_id(ref: str) -> str | None:
    result = run([docker_binary(), "image", "inspect", "--format", "{{.Id}}", ref], check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_image(recipe: ImageRecipe, platform: str, *, refresh: bool = False, force: bool = False) -> BaseImage:
    """Build (or find) the recipe's image for platform in the local engine; see the module docstring."""
    started = time.monotonic()
    target = deb_platform(platform)
    suite = versions().get("DEBIAN_SUITE", "bookworm")
    apt = AptRoot(suite, target.deb_arch)
    apt.ensure_lists(refresh=refresh)
    refreshed = refresh
    while True:
        try:
            return _ensure(recipe, target, suite, apt, force, started)
        except StaleLists as exc:
            if refreshed:
                raise
            # Stale lists: a package was superseded (security update) and left the mirror.
            _log(f"{exc.cause.splitlines()[0]}; refreshing Debian's package lists once")
            apt.update()
            refreshed = True


def fetch_debs(names: Iterable[str], platform: str, *, refresh: bool = False) -> dict[str, Path]:
    """The .deb files of packages (without their dependencies) for platform, via the private apt lists.

    Works for any architecture without touching the host's dpkg (no `dpkg --add-architecture`):
    the lists and downloads live under the harness cache, checked against Debian's SHA-256.
    """
    target = deb_platform(platform)
    suite = versions().get("DEBIAN_SUITE", "bookworm")
    apt = AptRoot(suite, target.deb_arch)
    apt.ensure_lists(refresh=refresh)
    dest = cache_dir() / "debs" / f"{suite}-{target.deb_arch}"
    wanted = sorted(set(names))
    for attempt in range(2):
        found = apt.show(wanted)
        missing = [n for n in wanted if n not in found]
        try:
            if missing:
                raise StaleLists(
                    f"Debian {suite} has no package {', '.join(missing)} for {target.deb_arch}",
                    "check the package names",
                )
            packages = [
                DebPackage(
                    name=n,
                    version=found[n]["Version"],
                    arch=found[n].get("Architecture", target.deb_arch),
                    sha256=found[n].get("SHA256", ""),
                    size=int(found[n].get("Size", "0") or 0),
                    filename=found[n].get("Filename", ""),
                )
                for n in wanted
            ]
            return apt.download(packages, dest)
        except StaleLists:
            if attempt:
                raise
            apt.update()  # a package superseded since the lists were fetched: refresh once
    raise AssertionError("unreachable")


def _resolve_cached(recipe: ImageRecipe, apt: AptRoot, store: Path) -> list[DebPackage]:
    """resolve(), remembered until the private package lists or the recipe's package sets change."""
    stamp = hashlib.sha256(
        json.dumps(
            [
                sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in apt.lists.iterdir() if p.is_file()),
                sorted(recipe.roots),
                sorted(recipe.prune),
            ]
        ).encode()
    ).hexdigest()
    memo = store / f"resolved-{apt.suite}-{apt.arch}.json"
    try:
        saved = json.loads(memo.read_text())
        if saved["stamp"] == stamp:
            return [DebPackage(**p) for p in saved["packages"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    packages = resolve(apt, recipe.roots, recipe.prune)
    store.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "packages": [p.__dict__ for p in packages]}, indent=1))
    os.replace(tmp, memo)
    return packages


def _ensure(
    recipe: ImageRecipe, target: DebPlatform, suite: str, apt: AptRoot, force: bool, started: float
) -> BaseImage:
    store = cache_dir() / "images" / recipe.name
    packages = _resolve_cached(recipe, apt, store)
    key = content_key(recipe, target, suite, packages)
    ref = f"{recipe.repository}:{recipe.tag_prefix}-{target.slug}-{key[:12]}"
    final = store / f"{target.slug}-{key[:32]}"
    meta_path = final / "image.json"

    if not force and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if _local_image_id(ref) == meta["image_id"]:
            return BaseImage(
                ref, meta["image_id"], target.oci, key, tuple(packages), time.monotonic() - started, cached=True
            )

    with _locked(store / ".lock"):
        if force and final.exists():
            shutil.rmtree(final)
        if not meta_path.is_file():
            debs = apt.download(packages, cache_dir() / "debs" / f"{suite}-{target.deb_arch}")
            _build_into(recipe, target, suite, packages, key, ref, debs, store, final)
        meta = json.loads(meta_path.read_text())
        _log(f"loading {ref} into the engine")
        run(
            [docker_binary(), "load", "-i", str(final / "image.tar")],
            timeout=600,
            remedy=f"delete {final} and run again",
        )
    image_id = _local_image_id(ref)
    if image_id != meta["image_id"]:
        raise HarnessError(
            f"after docker load, {ref} has ID {image_id}, expected {meta['image_id']}", f"delete {final} and run again"
        )
    return BaseImage(
        ref, str(meta["image_id"]), target.oci, key, tuple(packages), time.monotonic() - started, cached=False
    )


def _build_into(
    recipe: ImageRecipe,
    target: DebPlatform,
    suite: str,
    packages: list[DebPackage],
    key: str,
    ref: str,
    debs: Mapping[str, Path],
    store: Path,
    final: Path,
) -> None:
    """Write image.tar and image.json into final, atomically (temporary directory, then rename)."""
    _log(f"assembling {ref} from {len(packages)} Debian packages")
    builder = LayerBuilder()
    for pkg in packages:
        builder.add_deb(debs[pkg.name])
    builder.keep_only(recipe.keep_only)
    builder.add_merged_usr_links()
    for extra in recipe.extras:
        builder.add_extra(extra)
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=store, prefix=f".build-{target.slug}-"))
    try:
        layer = tmp / "layer.tar"
        layer_sha = builder.write(layer)
        config = image_config(recipe, target, layer_sha, key, packages)
        image_id = write_docker_archive(layer, layer_sha, config, ref, tmp / "image.tar")
        layer.unlink()
        meta = {
            "ref": ref,
            "image_id": image_id,
            "platform": target.oci,
            "key": key,
            "suite": suite,
            "packages": [f"{p.name}={p.version}" for p in packages],
        }
        (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Archives of earlier keys for this architecture are superseded (their images stay in the engine).
    for stale in store.glob(f"{target.slug}-*"):
        if stale != final and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def main_for(recipe: ImageRecipe, argv: list[str] | None, description: str) -> int:
    """Command line shared by the recipe modules: --platform (repeatable), --refresh, --force, --json."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        help="target platform, e.g. linux/arm64 (repeatable; default: linux/amd64 and linux/arm64)",
    )
    parser.add_argument("--refresh", action="store_true", help="apt-get update the private package lists first")
    parser.add_argument("--force", action="store_true", help="rebuild even when the image is cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of the ref")
    args = parser.parse_args(argv)
    try:
        for platform in args.platform or ["linux/amd64", "linux/arm64"]:
            image = ensure_image(recipe, platform, refresh=args.refresh, force=args.force)
            state = "found (cached)" if image.cached else "built"
            _log(f"{image.ref} ({image.platform}) {state} in {image.seconds:.1f} s")
            if args.json:
                print(
                    json.dumps(
                        {
                            "ref": image.ref,
                            "image_id": image.image_id,
                            "platform": image.platform,
                            "key": image.key,
                            "seconds": round(image.seconds, 2),
                            "cached": image.cached,
                        }
                    )
                )
            else:
                print(image.ref)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
