"""Know before you deploy: what an image's entrypoint is, byte for byte, and what exec will do with it.

For each manifest of an image (each entry of an index; attestations are named, not judged) the
facts are read from the layers (harness.layers), never by running anything, so a foreign image
is inspected on any host:

- the config platform (the label);
- the process the runtime starts: ENTRYPOINT + CMD (or a container's command/args), argv[0]
  looked up in PATH as runc does (Go's exec.LookPath: the first executable file), then each
  exec the kernel makes: symlinks (in every path component) and whiteouts across layers, the
  ELF header (machine, class, byte order, static or dynamic, PT_INTERP and whether that
  interpreter exists for the same machine), a script's ``#!`` interpreter, recursively, with
  any CR on that line;
- whether the label and the bytes agree.

predict() turns those facts, a node platform and the host's emulation state into what the
kernel will answer (runs, runs emulated, exec format error, no such file or directory, ...),
with a one-line reason. For an index it first picks the entry the node's containerd would
(same OS and architecture; amd64 also takes 386, arm64 also arm/v8..v5), and an index with
no such entry "cannot be pulled for this platform".

gate_problems() is the CI gate of ``inspect --require-platform P``: one line per problem, when
the entry a P node runs would not run natively there, or when any entry's bytes contradict its
label. With ``--manifest FILE`` every container and init container of the file's workloads is
checked, with its command, args, env, workingDir and runAsUser applied: a container takes the
image argument equal to its image (``${VAR}`` placeholders rendered from the environment), or,
while a placeholder is unset, the one argument of the same repository; a container matched by
no argument, and an argument no container uses, are problems too. With no image arguments each
container's own image is inspected.

Local images are read with ``docker save``; layer indexes are cached by diff_id under the
harness cache (harness.layers.LayerCache), so a second look at an image is a ``docker image
inspect`` and a few cached files.

What the facts cannot decide is "unknown, because ...", never a guess: a variable in argv[0]
that nothing expands, a shell command line with shell syntax, a file whose bytes were not kept.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import posixpath
import shlex
import string
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import yaml

from harness import elf, layers
from harness.errors import HarnessError
from harness.platforms import EmulationState, Expectation, Platform, PlatformError, expected_outcome, parse_platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # containerd's and Docker's
MAX_INTERPRETER_DEPTH = 5  # the kernel's binfmt nesting limit (ELOOP beyond)
BINPRM_BUF_SIZE = 256  # the kernel reads the #! line from the first 256 bytes
SHELL_SYNTAX = set("$`|&;<>()*?[]{}~\\\"'\n")
ATTESTATION_TYPE = "attestation-manifest"


class InspectError(HarnessError):
    """Bad input to inspect: a manifest file or option that cannot be used."""


# ---------------------------------------------------------------------------------------------
# Facts


class FileKind(enum.Enum):
    """What one exec step found at its path."""

    ELF = "ELF"
    SCRIPT = "script"
    NO_MAGIC = "neither ELF nor #! script"
    MISSING = "missing"
    NOT_IN_PATH = "not found in PATH"
    NOT_EXECUTABLE = "not executable"
    DIRECTORY = "directory"
    LOOP = "symlink loop"
    NOT_A_DIRECTORY = "a path component is not a directory"
    BAD_ELF = "damaged ELF header"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Hop:
    """One exec (by the kernel or by a program such as env) and what it found."""

    requested: str  # as written: argv[0], the #! interpreter, env's argument, PT_INTERP
    via: str  # "argv[0]", "#! of /x", "PT_INTERP of /x", "env", "sh -c"
    by_kernel: bool  # False when a program (env, sh) makes this exec: errors become its exit status
    kind: FileKind
    path: str | None = None  # the absolute path tried (after the PATH search), before symlinks
    resolved: str | None = None  # after symlinks
    links: tuple[str, ...] = ()
    mode: int | None = None
    elf: elf.ElfInfo | None = None
    shebang: str | None = None  # the #! line as read (repr), scripts only
    cr_in_shebang: bool = False
    detail: str = ""  # one line for people


@dataclass(frozen=True)
class Entrypoint:
    """The process an image's container starts, and every exec on its way."""

    argv: tuple[str, ...]
    source: str  # "ENTRYPOINT + CMD", "CMD", "command", ...
    hops: tuple[Hop, ...]
    unknown: str | None = None  # "unknown, because ..." when the facts do not decide

    @property
    def loaded_elf(self) -> Hop | None:
        """The ELF the kernel finally loads (the main program, not its PT_INTERP)."""
        found = None
        for hop in self.hops:
            if hop.kind is FileKind.ELF and not hop.via.startswith("PT_INTERP"):
                found = hop
        return found


@dataclass(frozen=True)
class ManifestFacts:
    digest: str | None
    role: str  # "image" or "attestation"
    label: str  # the config platform as written: "linux/arm64", "unknown/unknown"
    platform: Platform | None  # the label, normalised; None when not a known platform
    descriptor_platform: str | None  # the index entry's platform, when in an index
    attests: str | None = None  # for attestations: the manifest they describe
    entrypoint: Entrypoint | None = None
    agreement: str = "unknown"  # "agree", "disagree", "unknown"
    agreement_detail: str = ""
    problem: str | None = None  # this manifest could not be read


@dataclass(frozen=True)
class ImageFacts:
    name: str
    origin: str
    is_index: bool
    index_digest: str | None
    manifests: tuple[ManifestFacts, ...]
    container: str | None = None  # when inspected for a container of a manifest file
    seconds: float = 0.0

    @property
    def runnable(self) -> tuple[ManifestFacts, ...]:
        return tuple(m for m in self.manifests if m.role == "image")


@dataclass(frozen=True)
class Process:
    """What a pod spec's container overrides of the image config (None: the image's own)."""

    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: Mapping[str, str | None] = field(default_factory=dict)  # None: set from a source not known here
    working_dir: str | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None


# ---------------------------------------------------------------------------------------------
# Reading the facts


def inspect(
    target: str,
    process: Process | None = None,
    container: str | None = None,
    *,
    cache: layers.LayerCache | None = None,
) -> list[ImageFacts]:
    """The facts of every image target names (an OCI layout, an archive or a local image)."""
    return inspect_for(target, [(process, container)], cache=cache)


def inspect_for(
    target: str,
    uses: Sequence[tuple[Process | None, str | None]],
    *,
    cache: layers.LayerCache | None = None,
) -> list[ImageFacts]:
    """inspect() once per (process, container) use of the same target, reading its layers once."""
    started = time.monotonic()
    results: list[ImageFacts] = []
    with layers.open_images(target, cache) as images:
        for image in images:
            filesystems: dict[int, layers.RootFS] = {}
            for process, container in uses:
                manifests = tuple(
                    _manifest_facts(image, m, process or Process(), filesystems, position, cache)
                    for position, m in enumerate(image.manifests)
                )
                results.append(
                    ImageFacts(image.name, image.origin, image.is_index, image.index_digest, manifests, container)
                )
    elapsed = time.monotonic() - started
    return [replace(r, seconds=elapsed) for r in results]


def _platform_text(fields: Mapping[str, Any]) -> str:
    parts = [str(fields.get("os") or "?"), str(fields.get("architecture") or "?")]
    if fields.get("variant"):
        parts.append(str(fields["variant"]))
    return "/".join(parts)


def _known_platform(fields: Mapping[str, Any]) -> Platform | None:
    try:
        return parse_platform(_platform_text(fields))
    except PlatformError:
        return None


def _manifest_facts(
    image: layers.Image,
    manifest: layers.Manifest,
    process: Process,
    filesystems: dict[int, layers.RootFS],
    position: int,
    cache: layers.LayerCache | None,
) -> ManifestFacts:
    descriptor = _platform_text(manifest.descriptor_platform) if manifest.descriptor_platform else None
    attestation = manifest.annotations.get("vnd.docker.reference.type") == ATTESTATION_TYPE or (
        descriptor == "unknown/unknown"
    )
    label = _platform_text(manifest.config) if manifest.config else (descriptor or "?")
    platform = _known_platform(manifest.config) if manifest.config else None
    base = ManifestFacts(manifest.digest, "attestation" if attestation else "image", label, platform, descriptor)
    if attestation:
        return replace(base, attests=manifest.annotations.get("vnd.docker.reference.digest"))
    if manifest.problem:
        return replace(base, problem=manifest.problem)
    where = image.name + (f" ({label} entry)" if image.is_index else "")
    if position not in filesystems:
        filesystems[position] = layers.read_rootfs(manifest.layers, where, cache)
    fs = filesystems[position]
    entrypoint = resolve_entrypoint(fs, manifest.config.get("config") or {}, process)
    agreement, detail = _agreement(platform, label, descriptor, entrypoint)
    return replace(base, entrypoint=entrypoint, agreement=agreement, agreement_detail=detail)


def _agreement(platform: Platform | None, label: str, descriptor: str | None, ep: Entrypoint) -> tuple[str, str]:
    if descriptor is not None and platform is not None:
        entry = _known_platform(dict(zip(("os", "architecture", "variant"), descriptor.split("/"), strict=False)))
        if entry is not None and (entry.os, entry.architecture) != (platform.os, platform.architecture):
            return "disagree", f"the index entry says {descriptor}, its config says {label}"
    loaded = ep.loaded_elf
    if loaded is None or loaded.elf is None:
        return "unknown", "no ELF is loaded on the way (see the entrypoint)"
    arch = loaded.elf.architecture or loaded.elf.machine_name
    if platform is None:
        return "unknown", f"the label {label} is not a platform the harness knows; the bytes are {arch}"
    for hop in ep.hops:  # every ELF on the way (programs, their interpreters) must be for the label
        if hop.elf is not None and hop.elf.architecture != platform.architecture:
            found = hop.elf.architecture or "an unknown architecture"
            return "disagree", f"label {platform}, but {hop.resolved} is an ELF for {found} ({hop.elf.machine_name})"
    return "agree", f"label {platform}, {loaded.resolved} is {arch}"


def _config_env(config: Mapping[str, Any]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def _user(config: Mapping[str, Any], process: Process, fs: layers.RootFS) -> tuple[int | None, int | None, str]:
    """uid and gid the process runs as (None when not known) and a note on how they were found."""
    text = str(config.get("User") or "")
    user, _, group = text.partition(":")
    uid: int | None = 0 if not user else None
    gid: int | None = 0 if not group else None
    note = ""
    if user.isdigit():
        uid = int(user)
    elif user:
        uid = _lookup_id(fs, "etc/passwd", user)
        note = (
            ""
            if uid is not None
            else f"user {user!r} is not in the image's /etc/passwd (the runtime refuses to create the container)"
        )
    if group.isdigit():
        gid = int(group)
    elif group:
        gid = _lookup_id(fs, "etc/group", group)
    if process.run_as_user is not None:
        uid = process.run_as_user
    if process.run_as_group is not None:
        gid = process.run_as_group
    return uid, gid, note


def _lookup_id(fs: layers.RootFS, path: str, name: str) -> int | None:
    entry = fs.resolve("/" + path).entry
    if entry is None or entry.head is None:
        return None
    for line in entry.head.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def _can_execute(entry: layers.FileEntry, uid: int | None, gid: int | None) -> bool:
    if uid == 0 or uid is None:
        return bool(entry.mode & 0o111)  # root: any x bit
    if uid == entry.uid:
        return bool(entry.mode & 0o100)
    if gid == entry.gid:
        return bool(entry.mode & 0o010)
    return bool(entry.mode & 0o001)


def _argv(config: Mapping[str, Any], process: Process) -> tuple[tuple[str, ...], str]:
    entrypoint = [str(a) for a in config.get("Entrypoint") or []]
    cmd = [str(a) for a in config.get("Cmd") or []]
    if process.command is not None:
        return tuple(process.command) + tuple(process.args or ()), "command" + (" + args" if process.args else "")
    if process.args is not None:
        return tuple(entrypoint) + tuple(process.args), ("ENTRYPOINT + " if entrypoint else "") + "args"
    if entrypoint:
        return tuple(entrypoint + cmd), "ENTRYPOINT + CMD" if cmd else "ENTRYPOINT"
    return tuple(cmd), "CMD"


def _expand_kubernetes(word: str, env: Mapping[str, str | None]) -> str | None:
    """$(VAR) as the kubelet expands it in command/args; None when VAR's value is not known here."""
    out, i = [], 0
    while i < len(word):
        if word.startswith("$$", i):
            out.append("$")
            i += 2
        elif word.startswith("$(", i) and ")" in word[i:]:
            end = word.index(")", i)
            name = word[i + 2 : end]
            if name not in env:
                out.append(word[i : end + 1])  # the kubelet leaves unknown references as written
            elif env[name] is None:
                return None
            else:
                out.append(str(env[name]))
            i = end + 1
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


class _Walker:
    """Follows one exec chain through a RootFS."""

    def __init__(self, fs: layers.RootFS, env: Mapping[str, str | None], cwd: str, uid: int | None, gid: int | None):
        self.fs, self.env, self.cwd, self.uid, self.gid = fs, env, cwd, uid, gid
        self.hops: list[Hop] = []
        self.unknown: str | None = None

    def search(self, name: str, via: str, by_kernel: bool) -> tuple[str | None, Hop | None]:
        """argv[0] without a slash: the first executable file of that name in PATH (exec.LookPath)."""
        path_value = self.env.get("PATH", DEFAULT_PATH)
        if path_value is None:
            self.unknown = "PATH is set from a source not known here (valueFrom), so the lookup cannot be done"
            return None, None
        first_seen: tuple[str, layers.Resolution] | None = None
        for directory in path_value.split(":"):
            candidate = posixpath.join(directory or ".", name)
            resolution = self.fs.resolve(candidate, self.cwd)
            entry = resolution.entry
            if entry is not None and entry.kind == "file":
                if _can_execute(entry, self.uid, self.gid):
                    return candidate, None
                first_seen = first_seen or (candidate, resolution)
        note = f" ({first_seen[0]} exists but is not executable for this user)" if first_seen else ""
        hop = Hop(
            name,
            via,
            by_kernel,
            FileKind.NOT_IN_PATH,
            detail=f"{name!r}: executable file not found in $PATH={path_value}{note}",
        )
        return None, hop

    def exec(self, name: str, via: str, by_kernel: bool, args: Sequence[str], depth: int = 0) -> Hop | None:
        """Exec name as the kernel (or, by_kernel False, a program) would; return the hop of the file found."""
        if "/" in name:
            path: str | None = posixpath.normpath(posixpath.join(self.cwd, name))
        else:
            path, missing = self.search(name, via, by_kernel)
            if missing is not None:
                self.hops.append(missing)
                return missing
            if path is None:
                return None
        assert path is not None
        hop = self._file(name, via, by_kernel, path, args, depth)
        return hop

    def _file(self, name: str, via: str, by_kernel: bool, path: str, args: Sequence[str], depth: int) -> Hop:
        resolution = self.fs.resolve(path, self.cwd)
        entry = resolution.entry
        hop = Hop(name, via, by_kernel, FileKind.UNKNOWN, path, resolution.path, resolution.links)
        if resolution.error == "missing":
            return self._add(replace(hop, kind=FileKind.MISSING, detail=f"{resolution.path} does not exist"))
        if resolution.error == "loop":
            return self._add(replace(hop, kind=FileKind.LOOP, detail=f"more than {layers.MAX_SYMLINKS} symlinks"))
        if resolution.error or entry is None:
            return self._add(
                replace(hop, kind=FileKind.NOT_A_DIRECTORY, detail=f"{resolution.path} is not a directory")
            )
        hop = replace(hop, mode=entry.mode)
        if entry.kind == "dir":
            return self._add(replace(hop, kind=FileKind.DIRECTORY, detail=f"{resolution.path} is a directory"))
        if entry.kind != "file":
            return self._add(
                replace(hop, kind=FileKind.NOT_EXECUTABLE, detail=f"{resolution.path} is not a regular file")
            )
        if not _can_execute(entry, self.uid, self.gid):
            who = "root" if not self.uid else f"uid {self.uid}"
            detail = (
                f"{resolution.path} has mode {entry.mode:04o} (owner {entry.uid}:{entry.gid}): not executable for {who}"
            )
            return self._add(replace(hop, kind=FileKind.NOT_EXECUTABLE, detail=detail))
        head = entry.head
        if head is None:
            self.unknown = f"the bytes of {resolution.path} were not read"
            return self._add(replace(hop, detail="bytes not read"))
        if elf.is_elf(head):
            return self._elf(hop, head)
        if head.startswith(b"#!"):
            return self._script(hop, head, args, depth)
        what = "an empty file" if not head else f"starts with {head[:8]!r}"
        added = self._add(
            replace(hop, kind=FileKind.NO_MAGIC, detail=f"{resolution.path}: no #! and no ELF magic ({what})")
        )
        if not by_kernel:
            # execvp's ENOEXEC fallback (glibc, busybox, dash): the file is run by /bin/sh.
            self.exec("/bin/sh", f"execvp fallback for {resolution.path}", False, [], depth + 1)
        return added

    def _add(self, hop: Hop) -> Hop:
        self.hops.append(hop)
        return hop

    def _elf(self, hop: Hop, head: bytes) -> Hop:
        try:
            info = elf.parse(head)
        except elf.ElfFormatError as exc:
            return self._add(replace(hop, kind=FileKind.BAD_ELF, detail=f"{hop.resolved}: {exc}"))
        added = self._add(replace(hop, kind=FileKind.ELF, elf=info, detail=f"{hop.resolved}: {info.describe()}"))
        if info.interpreter is not None and info.interpreter != "?":
            self.interpreter(info.interpreter, f"PT_INTERP of {hop.resolved}")
        return added

    def interpreter(self, path: str, via: str) -> None:
        resolution = self.fs.resolve(path, "/")
        entry = resolution.entry
        hop = Hop(path, via, True, FileKind.UNKNOWN, path, resolution.path, resolution.links)
        if entry is None or entry.kind != "file":
            self.hops.append(replace(hop, kind=FileKind.MISSING, detail=f"ELF interpreter {path} is not in the image"))
            return
        if entry.head is None:
            self.hops.append(replace(hop, detail="bytes not read (the interpreter is not executable)"))
            return
        try:
            info = elf.parse(entry.head)
        except elf.ElfFormatError as exc:
            self.hops.append(replace(hop, kind=FileKind.BAD_ELF, detail=f"{resolution.path}: {exc}"))
            return
        self.hops.append(
            replace(hop, kind=FileKind.ELF, elf=info, mode=entry.mode, detail=f"{resolution.path}: {info.describe()}")
        )

    def _script(self, hop: Hop, head: bytes, args: Sequence[str], depth: int) -> Hop:
        line = head[:BINPRM_BUF_SIZE].split(b"\n", 1)[0]
        text = line[2:].decode("utf-8", "surrogateescape")
        # As the kernel reads it: blanks skipped, the interpreter ends at a blank, the rest (blanks
        # trimmed, a CR is not a blank) is one optional argument.
        rest = text.lstrip(" \t")
        end = next((i for i, ch in enumerate(rest) if ch in " \t\0"), len(rest))
        interpreter, argument = rest[:end], rest[end:].strip(" \t")
        cr = "\r" in text
        shebang = repr(line.decode("utf-8", "replace"))
        cr_note = " (CR in the #! line: CRLF line endings)" if cr else ""
        hop = replace(
            hop,
            kind=FileKind.SCRIPT,
            shebang=shebang,
            cr_in_shebang=cr,
            detail=f"{hop.resolved}: script {shebang}{cr_note}",
        )
        if not interpreter:
            return self._add(replace(hop, kind=FileKind.NO_MAGIC, detail=f"{hop.resolved}: #! names no interpreter"))
        self._add(hop)
        via = f"#! of {hop.resolved}"
        if depth + 1 > MAX_INTERPRETER_DEPTH:
            self._add(Hop(interpreter, via, True, FileKind.LOOP, detail="interpreters nested too deep"))
            return hop
        found = self.exec(interpreter, via, True, [argument] if argument else [], depth + 1)
        if found is not None and found.kind is FileKind.ELF and posixpath.basename(interpreter) == "env" and argument:
            if argument.startswith("-"):
                self.unknown = f"env is given options ({argument!r}); what it runs is not followed"
            else:
                self.exec(argument, f"env (from {via})", False, [hop.resolved or "", *args], depth + 1)
        return hop

    def shell_command(self, command: str, depth: int) -> None:
        """sh -c COMMAND: follow a simple command (no shell syntax); otherwise say unknown."""
        if any(ch in SHELL_SYNTAX for ch in command):
            self.unknown = f"the shell command {command!r} uses shell syntax, which is not evaluated here"
            return
        words = shlex.split(command)
        if words and words[0] == "exec":
            words = words[1:]
        if not words:
            return
        if "=" in words[0]:
            self.unknown = f"the shell command {command!r} sets variables first, which is not evaluated here"
            return
        self.exec(words[0], "sh -c", False, words[1:], depth + 1)


def resolve_entrypoint(fs: layers.RootFS, config: Mapping[str, Any], process: Process | None = None) -> Entrypoint:
    """Follow the container's process from argv[0] to the ELF the kernel loads (see the module docstring)."""
    process = process or Process()
    argv, source = _argv(config, process)
    env = {**_config_env(config), **process.env}
    if not argv:
        return Entrypoint(
            (), source, (), "unknown, because the image has neither ENTRYPOINT nor CMD (and no command is given)"
        )
    if process.command is not None or process.args is not None:
        expanded = [_expand_kubernetes(a, env) for a in argv]
        if any(a is None for a in expanded):
            return Entrypoint(
                argv, source, (), "unknown, because command/args use a variable set from a source not known here"
            )
        argv = tuple(a for a in expanded if a is not None)
    if "$" in argv[0]:
        return Entrypoint(
            argv,
            source,
            (),
            f"unknown, because argv[0] {argv[0]!r} holds a variable: in exec form nothing expands it",
        )
    cwd = process.working_dir or str(config.get("WorkingDir") or "/")
    uid, gid, note = _user(config, process, fs)
    walker = _Walker(fs, env, cwd, uid, gid)
    found = walker.exec(argv[0], "argv[0]", True, argv[1:])
    shells = {"sh", "bash", "dash", "ash"}
    if (
        found is not None
        and found.kind is FileKind.ELF
        and posixpath.basename(argv[0]) in shells
        and argv[1:2] == ("-c",)
    ):
        walker.shell_command(argv[2] if len(argv) > 2 else "", 0)
    unknown = f"unknown, because {walker.unknown}" if walker.unknown else None
    if note and unknown is None:
        unknown = f"unknown, because {note}"
    return Entrypoint(argv, source, tuple(walker.hops), unknown)


# ---------------------------------------------------------------------------------------------
# Prediction


class Expected(enum.Enum):
    """What starting the container's process will do on a node."""

    RUNS = "runs"
    RUNS_EMULATED = "runs emulated"
    EXEC_FORMAT_ERROR = "exec format error"
    NO_SUCH_FILE = "no such file or directory"
    PERMISSION_DENIED = "permission denied"
    BAD_INTERPRETER = "accessing a corrupted shared library"  # ELIBBAD: PT_INTERP for another machine
    EXEC_FAILS = "exec fails"  # ELOOP, ENOTDIR
    EXITS = "exits at once"  # a program on the way (env, sh) cannot exec the next one: exit 126/127
    CANNOT_PULL = "cannot be pulled for this platform"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    image: str
    container: str | None
    node: Platform
    outcome: Expected
    reason: str
    manifest: str | None = None  # the label of the index entry (or single manifest) judged


NO_EMULATION = EmulationState(mounted=False, enabled=False)


def _fallbacks(node: Platform) -> list[tuple[str, str]]:
    """(architecture, variant) a node's containerd also accepts from an index, best first
    (containerd's platforms.Only: amd64 takes 386; arm64 takes arm/v8..v5)."""
    if node.architecture == "amd64":
        return [("386", "")]
    if node.architecture == "arm64":
        return [("arm", v) for v in ("v8", "v7", "v6", "v5")]
    if node.architecture == "arm":
        order = ["v8", "v7", "v6", "v5"]
        start = order.index(node.variant) if node.variant in order else 1
        return [("arm", v) for v in order[start + 1 :]]
    return []


def _entry_platform(m: ManifestFacts) -> Platform | None:
    if m.descriptor_platform:
        fields = dict(zip(("os", "architecture", "variant"), m.descriptor_platform.split("/"), strict=False))
        return _known_platform(fields)
    return m.platform


def select_manifest(facts: ImageFacts, node: Platform) -> ManifestFacts | None:
    """The manifest a node of this platform runs: the single one, or the index entry containerd picks."""
    runnable = facts.runnable
    if not facts.is_index:
        return runnable[0] if runnable else None
    entries = [(m, _entry_platform(m)) for m in runnable]
    same = [m for m, p in entries if p is not None and (p.os, p.architecture) == (node.os, node.architecture)]
    if same:
        exact = [m for m in same if _entry_platform(m) == node]
        return (exact or same)[0]
    for arch, variant in _fallbacks(node):
        for m, p in entries:
            if p is not None and p.os == node.os and p.architecture == arch and p.variant == variant:
                return m
    return None


def predict(facts: ImageFacts, node: Platform, emulation: EmulationState, *, aarch32: bool = False) -> Prediction:
    """What a container of this image does on a node of platform `node` whose kernel has `emulation`."""

    def result(outcome: Expected, reason: str, manifest: ManifestFacts | None = None) -> Prediction:
        return Prediction(facts.name, facts.container, node, outcome, reason, manifest.label if manifest else None)

    chosen = select_manifest(facts, node)
    if chosen is None:
        if facts.is_index:
            have = ", ".join(m.descriptor_platform or m.label for m in facts.runnable) or "no runnable entry"
            attest = sum(1 for m in facts.manifests if m.role == "attestation")
            extra = f" (and {attest} attestation{'s' if attest != 1 else ''})" if attest else ""
            return result(Expected.CANNOT_PULL, f"the index has entries for {have}{extra}, none for {node}")
        return result(Expected.UNKNOWN, "unknown, because the image holds no runnable manifest")
    if chosen.problem or chosen.entrypoint is None:
        return result(Expected.UNKNOWN, f"unknown, because {chosen.problem or 'the entrypoint was not read'}", chosen)
    outcome, reason = judge(chosen.entrypoint, node, emulation, aarch32=aarch32, label=chosen.platform)
    return result(outcome, reason, chosen)


def judge(
    ep: Entrypoint, node: Platform, emulation: EmulationState, *, aarch32: bool = False, label: Platform | None = None
) -> tuple[Expected, str]:
    """Walk the exec chain of an entrypoint on a node: the first step that fails decides."""
    emulated = False
    main: Hop | None = None
    previous: Hop | None = None
    for hop in ep.hops:
        failed = _failure(hop, previous, main, node, emulation, aarch32, label)
        if failed is not None:
            outcome, reason = failed
            if not hop.by_kernel and outcome is not Expected.UNKNOWN:
                program = main.resolved if main is not None else "the program"
                return Expected.EXITS, f"{program} cannot run the next program ({reason}): it exits with 126 or 127"
            return outcome, reason
        if hop.kind is FileKind.ELF and not hop.via.startswith("PT_INTERP"):
            main = hop
            assert hop.elf is not None and hop.elf.architecture is not None
            platform = Platform("linux", hop.elf.architecture)
            emulated = emulated or expected_outcome(platform, node, emulation, aarch32=aarch32) is Expectation.EMULATED
        previous = hop
    if ep.unknown:
        return Expected.UNKNOWN, ep.unknown
    if main is None or main.elf is None:
        return Expected.UNKNOWN, "unknown, because no ELF is loaded on the way"
    chain = " -> ".join(h.resolved or h.requested for h in ep.hops if not h.via.startswith("PT_INTERP"))
    what = f"{main.elf.architecture} ELF {main.resolved}" + (f" (via {chain})" if chain != main.resolved else "")
    if emulated:
        return Expected.RUNS_EMULATED, f"{what} on a {node} node runs under a binfmt_misc emulator"
    return Expected.RUNS, f"{what} runs natively on a {node} node"


def _named(hop: Hop) -> str:
    return hop.detail if hop.requested in hop.detail else f"{hop.requested}: {hop.detail}"


def _failure(
    hop: Hop,
    previous: Hop | None,
    main: Hop | None,
    node: Platform,
    emulation: EmulationState,
    aarch32: bool,
    label: Platform | None,
) -> tuple[Expected, str] | None:
    kind = hop.kind
    if kind is FileKind.NOT_IN_PATH:
        return Expected.NO_SUCH_FILE, hop.detail
    if kind is FileKind.MISSING:
        if hop.via.startswith("PT_INTERP"):
            return (
                Expected.NO_SUCH_FILE,
                f"{hop.via.removeprefix('PT_INTERP of ')} needs the ELF interpreter {hop.requested}, which is not in the image",
            )
        if hop.via.startswith("#!") and previous is not None and previous.cr_in_shebang:
            return (
                Expected.NO_SUCH_FILE,
                f"{previous.resolved} has CRLF line endings: the kernel looks for the interpreter {hop.requested!r}, which does not exist",
            )
        if hop.via.startswith("#!"):
            return (
                Expected.NO_SUCH_FILE,
                f"the #! interpreter {hop.requested} of {previous.resolved if previous else '?'} does not exist",
            )
        return Expected.NO_SUCH_FILE, _named(hop)
    if kind in (FileKind.LOOP, FileKind.NOT_A_DIRECTORY):
        return Expected.EXEC_FAILS, _named(hop)
    if kind in (FileKind.NOT_EXECUTABLE, FileKind.DIRECTORY):
        return Expected.PERMISSION_DENIED, hop.detail
    if kind is FileKind.NO_MAGIC:
        if not hop.by_kernel:
            return None  # run by /bin/sh, the next hop
        return Expected.EXEC_FORMAT_ERROR, f"{hop.detail}: the kernel cannot execute it"
    if kind is FileKind.BAD_ELF:
        return Expected.EXEC_FORMAT_ERROR, hop.detail
    if kind is FileKind.UNKNOWN:
        return Expected.UNKNOWN, f"unknown, because {hop.detail}"
    if kind is FileKind.ELF and hop.elf is not None:
        info = hop.elf
        if hop.via.startswith("PT_INTERP"):
            if (
                main is not None
                and main.elf is not None
                and (info.machine, info.bits) != (main.elf.machine, main.elf.bits)
            ):
                return (
                    Expected.BAD_INTERPRETER,
                    f"the ELF interpreter {hop.resolved} is {info.architecture or info.machine_name}, "
                    f"{main.resolved} is {main.elf.architecture or main.elf.machine_name}",
                )
            return None
        if not info.executable:
            return Expected.EXEC_FORMAT_ERROR, f"{hop.resolved} is an ELF {info.type_name}, not an executable"
        if info.architecture is None:
            return (
                Expected.EXEC_FORMAT_ERROR,
                f"{hop.resolved} is an ELF for {info.machine_name}, which no known node runs",
            )
        expectation = expected_outcome(Platform("linux", info.architecture), node, emulation, aarch32=aarch32)
        mislabeled = (
            f" (the image is labelled {label})" if label is not None and label.architecture != info.architecture else ""
        )
        if expectation is Expectation.EXEC_FORMAT_ERROR:
            return (
                Expected.EXEC_FORMAT_ERROR,
                f"{hop.resolved} is an ELF for {info.architecture} ({info.machine_name}){mislabeled}, "
                f"the node is {node}{' and nothing emulates it there' if emulation.mounted else ', with no emulation'}",
            )
        if expectation is Expectation.INTERPRETER_MISSING:
            handler = emulation.handler_for(Platform("linux", info.architecture))
            name = handler.interpreter if handler else "its emulator"
            return (
                Expected.NO_SUCH_FILE,
                f"{hop.resolved} is an ELF for {info.architecture}; the binfmt_misc handler lacks the F flag, "
                f"so the kernel looks for {name} inside the container",
            )
    return None


# ---------------------------------------------------------------------------------------------
# Manifests of workloads (--manifest) and the CI gate


@dataclass(frozen=True)
class ManifestContainer:
    """A container (or init container) of a workload in a Kubernetes manifest file."""

    workload: str  # "Deployment/orders-api"
    name: str
    init: bool
    image: str  # with ${VAR} placeholders substituted from the environment where set
    process: Process
    restart_policy: str = "Always"  # the pod's restartPolicy (what the kubelet does when it exits)
    pull_policy: str = "IfNotPresent"  # imagePullPolicy, with the API server's default filled in


def _pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec if isinstance(spec, Mapping) else None
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if isinstance(template, Mapping):
        pod = template.get("spec")
        return pod if isinstance(pod, Mapping) else None
    return None


def _process(container: Mapping[str, Any], pod: Mapping[str, Any]) -> Process:
    env: dict[str, str | None] = {}
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and "name" in item:
            env[str(item["name"])] = str(item["value"]) if "value" in item else None
    pod_security = pod.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}

    def words(key: str) -> tuple[str, ...] | None:
        value = container.get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else None

    user, group = security.get("runAsUser"), security.get("runAsGroup")
    return Process(
        command=words("command"),
        args=words("args"),
        env=env,
        working_dir=str(container["workingDir"]) if container.get("workingDir") else None,
        run_as_user=int(user) if isinstance(user, int) else None,
        run_as_group=int(group) if isinstance(group, int) else None,
    )


def manifest_containers(path: Path, environ: Mapping[str, str] | None = None) -> list[ManifestContainer]:
    """Every container and init container of the workloads in a manifest file (YAML, several documents)."""
    environ = os.environ if environ is None else environ
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except OSError as exc:
        raise InspectError(
            f"--manifest {path}: {exc.strerror or exc}", "pass an existing Kubernetes manifest file"
        ) from exc
    except yaml.YAMLError as exc:
        raise InspectError(f"--manifest {path} is not valid YAML ({exc})", "fix the file") from exc
    found = containers_of(docs, environ)
    if not found:
        raise InspectError(
            f"--manifest {path} holds no workload with containers", "pass the file of a Deployment, Pod, Job, ..."
        )
    return found


def containers_of(docs: Iterable[Any], environ: Mapping[str, str] | None = None) -> list[ManifestContainer]:
    """Every container and init container of the workloads among Kubernetes objects (parsed YAML)."""
    environ = {} if environ is None else environ
    found = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            continue
        pod = _pod_spec(doc)
        if pod is None:
            continue
        workload = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
        policy = str(pod.get("restartPolicy") or "Always")
        for key, init in (("initContainers", True), ("containers", False)):
            for container in pod.get(key) or []:
                image = string.Template(str(container.get("image", ""))).safe_substitute(environ)
                pull = str(container.get("imagePullPolicy") or default_pull_policy(image))
                found.append(
                    ManifestContainer(
                        workload, str(container.get("name")), init, image, _process(container, pod), policy, pull
                    )
                )
    return found


def default_pull_policy(image: str) -> str:
    """The API server's default imagePullPolicy: Always for the tag latest or no tag (and no digest), else IfNotPresent."""
    name = image.split("@", 1)[0]
    tail = name.rpartition("/")[2]
    tag = tail.rpartition(":")[2] if ":" in tail else ""
    return "Always" if "@" not in image and tag in ("", "latest") else "IfNotPresent"


def repository(ref: str) -> str:
    """A reference without its tag and digest: registry.example.com/orders-api:abc -> registry.example.com/orders-api."""
    name = ref.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


@dataclass(frozen=True)
class Target:
    """One thing to inspect: an image argument, with the container it stands for when from a manifest."""

    image: str
    container: ManifestContainer | None = None


def pair_targets(
    images: Sequence[str], containers: Sequence[ManifestContainer], manifest: Path
) -> tuple[list[Target], list[str]]:
    """Match each container of a manifest with an image from the command line.

    A container takes the image argument equal to its (substituted) image; when a placeholder
    is left unset (${GIT_SHA} not in the environment), the one argument of the same repository
    (tag ignored). With no image
    arguments, each container's own image is inspected. Returned problems: a container no
    argument matches, an argument no container uses.
    """
    targets: list[Target] = []
    problems: list[str] = []
    used: set[str] = set()
    for container in containers:
        label = f"{container.workload} {'init container' if container.init else 'container'} {container.name}"
        if not images:
            targets.append(Target(container.image, container))
            continue
        exact = [i for i in images if i == container.image]
        unresolved = "$" in container.image  # a placeholder not set here: the tag is not known
        same_repo = [i for i in images if unresolved and repository(i) == repository(container.image)]
        choice = exact or same_repo
        if len(choice) == 1 or exact:
            targets.append(Target(choice[0], container))
            used.add(choice[0])
        elif same_repo:
            problems.append(f"{label}: image {container.image} matches several arguments: {', '.join(same_repo)}")
        else:
            problems.append(f"{label}: image {container.image} is none of the images given, so it was not checked")
            continue
    for image in images:
        if image not in used:
            problems.append(
                f"{image}: no container in {manifest} uses this image (its repository is {repository(image)})"
            )
    return targets, problems


def gate_problems(all_facts: Iterable[ImageFacts], required: Platform) -> list[str]:
    """One line per problem that stops a release for nodes of platform `required` (no emulation):
    the entry a node would run does not run natively there (an entry that cannot be read is
    unknown, which fails too), or any entry's bytes contradict its label."""
    problems = []
    for facts in all_facts:
        name = facts.name + (f" (container {facts.container})" if facts.container else "")
        prediction = predict(facts, required, NO_EMULATION)
        if prediction.outcome is not Expected.RUNS:
            entry = f" [{prediction.manifest}]" if prediction.manifest and facts.is_index else ""
            problems.append(f"{name}{entry}: {prediction.outcome.value} on {required}: {prediction.reason}")
        for m in facts.runnable:
            if m.agreement == "disagree":
                problems.append(f"{name} [{m.label}]: label and bytes disagree: {m.agreement_detail}")
    return problems


# ---------------------------------------------------------------------------------------------
# Output and the command


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Platform):
        return str(value)
    if isinstance(value, elf.ElfInfo):
        return {
            "machine": value.machine,
            "machine_name": value.machine_name,
            "architecture": value.architecture,
            "bits": value.bits,
            "endianness": value.endianness,
            "type": value.type_name,
            "linking": value.linking,
            "interpreter": value.interpreter,
        }
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_json(all_facts: Sequence[ImageFacts], predictions: Sequence[Prediction], problems: Sequence[str]) -> str:
    """The machine-readable report: facts of every image, the predictions, the gate's problems."""
    return json.dumps(
        {"images": _plain(list(all_facts)), "predictions": _plain(list(predictions)), "problems": list(problems)},
        indent=2,
    )


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {13: "\\r", 9: "\\t", 10: "\\n"}


def _hop_line(hop: Hop) -> str:
    label = {"argv[0]": "argv[0]", "#!": "#! interpreter", "PT_INTERP": "ELF interpreter", "env": "env runs"}.get(
        hop.via.split(" ", 1)[0], hop.via
    )
    links = f" (symlinks: {'; '.join(hop.links)})" if hop.links else ""
    return f"    {label:<16}{hop.detail}{links}"


def render(all_facts: Sequence[ImageFacts], predictions: Sequence[Prediction], node_note: str = "") -> str:
    """The report for people: per image, per manifest, the label, the exec chain, agreement, prediction."""
    lines = []
    by_image: dict[tuple[str, str | None], list[Prediction]] = {}
    for p in predictions:
        by_image.setdefault((p.image, p.container), []).append(p)
    for facts in all_facts:
        kind = f"index of {len(facts.manifests)} entries" if facts.is_index else "single manifest"
        container = f", for container {facts.container}" if facts.container else ""
        lines.append(f"{facts.name}  ({facts.origin}, {kind}{container}; read in {facts.seconds:.2f} s)")
        for m in facts.manifests:
            digest = f"  {m.digest[:19]}…" if m.digest else ""
            if m.role == "attestation":
                lines.append(
                    f"  {m.descriptor_platform or m.label}{digest}  attestation manifest for {m.attests or '?'} (not judged)"
                )
                continue
            entry = (
                f" (index entry: {m.descriptor_platform})"
                if m.descriptor_platform and m.descriptor_platform != m.label
                else ""
            )
            lines.append(f"  label {m.label}{entry}{digest}")
            if m.problem:
                lines.append(f"    not read: {m.problem}")
                continue
            ep = m.entrypoint
            assert ep is not None
            lines.append(f"    {'process':<16}{shlex.join(ep.argv) if ep.argv else '(none)'}  ({ep.source})")
            lines.extend(_hop_line(hop) for hop in ep.hops)
            if ep.unknown:
                lines.append(f"    {'':<16}{ep.unknown}")
            lines.append(f"    {'label vs bytes':<16}{m.agreement.upper()}: {m.agreement_detail}")
        for p in by_image.get((facts.name, facts.container), []):
            entry = f" [{p.manifest} entry]" if p.manifest and facts.is_index else ""
            lines.append(f"  on {p.node}{node_note}{entry}: {p.outcome.value.upper()}: {p.reason}")
        lines.append("")
    return "\n".join(line.translate(_CONTROL) for line in lines).rstrip() + "\n"


def run_command(
    images: Sequence[str],
    *,
    as_json: bool = False,
    require_platform: str | None = None,
    manifest: str | None = None,
    node: Platform | None = None,
    emulation: EmulationState | None = None,
    out: IO[str] | None = None,
) -> int:
    """`python -m harness inspect`: 0 when inspected (and, with require_platform, nothing stops the
    release), 1 when the gate found problems, 2 on bad input (an image or file that cannot be read)."""
    out, err = out or sys.stdout, sys.stderr
    try:
        required = parse_platform(require_platform) if require_platform else None
        targets: list[Target]
        problems: list[str] = []
        if manifest:
            path = Path(manifest)
            targets, problems = pair_targets(images, manifest_containers(path), path)
        else:
            if not images:
                raise InspectError("no image given", "name images, OCI layouts or archives, or pass --manifest FILE")
            targets = [Target(i) for i in images]
        cache = layers.LayerCache.default()
        uses: dict[str, list[tuple[Process | None, str | None]]] = {}
        for target in targets:
            c = target.container
            uses.setdefault(target.image, []).append((c.process, f"{c.workload}/{c.name}") if c else (None, None))
        all_facts: list[ImageFacts] = []
        for image, image_uses in uses.items():
            all_facts += inspect_for(image, image_uses, cache=cache)
    except (layers.ImageError, InspectError, PlatformError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    if required is not None:
        node_platform, state = required, NO_EMULATION
    else:
        from harness.platforms import host_platform, read_binfmt

        node_platform = node or host_platform()
        state = emulation if emulation is not None else read_binfmt()
    predictions = [predict(f, node_platform, state) for f in all_facts]
    if required is not None:
        problems += gate_problems(all_facts, required)
    if as_json:
        print(to_json(all_facts, predictions, problems), file=out)
    else:
        note = " (required, no emulation)" if required is not None else " (this host, its binfmt_misc)"
        print(render(all_facts, predictions, note if node is None else ""), file=out, end="")
    if required is not None:
        for line in problems:
            print(f"inspect: {line}", file=err)
        if problems:
            print(f"inspect: {len(problems)} problem(s): not releasable for {required}", file=err)
            return 1
        print(f"inspect: every entrypoint runs natively on {required}", file=err)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `inspect` (shared by `python -m harness inspect` and `python -m harness.inspect`)."""
    parser.add_argument("image", nargs="*", help="local image, OCI layout directory, OCI or docker-save tarball")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--require-platform",
        metavar="PLATFORM",
        help="CI gate: exit 1, one line per problem, unless every entrypoint runs natively on PLATFORM",
    )
    parser.add_argument(
        "--manifest",
        metavar="FILE",
        help="check each container and init container of this Kubernetes manifest (${VAR} from the environment)",
    )


def command(args: argparse.Namespace) -> int:
    return run_command(args.image, as_json=args.json, require_platform=args.require_platform, manifest=args.manifest)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m harness.inspect`: the same command without loading the rest of the harness (faster start)."""
    parser = argparse.ArgumentParser(prog="python -m harness.inspect", description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    try:
        return command(parser.parse_args(argv))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
