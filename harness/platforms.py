"""Platform names, the host kernel's binfmt_misc emulation state, and what a pod's exec will do.

Facts this module relies on, measured on the project's machines (Debian 12, kernel 6.18, x86_64):

- binfmt_misc handlers are tried before the kernel's own ELF loader, so a handler that matches
  a binary wins even when the CPU could run it natively (a qemu-i386 handler on amd64 makes 386
  binaries run under QEMU).
- A handler without the F ("fix binary") flag opens its interpreter at exec time, in the mount
  namespace of the process calling exec. In a container that path usually does not exist and
  exec fails with "no such file or directory" (not "exec format error"). With F the kernel opens
  the interpreter once, at registration, and containers can use it.
- Unmounting binfmt_misc drops every handler registered through that mount.
- Writing "0" to the status file disables all handlers ("exec format error" again); "1" enables.
- Kind nodes are containers on the host kernel, so the host's registrations apply to them.
"""

from __future__ import annotations

import enum
import json
import os
import platform as _platform
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError
from harness.signals import deferred, interrupting
from harness.tools import cache_dir, run, write_text_atomic

BINFMT_ROOT = Path("/proc/sys/fs/binfmt_misc")
MOUNTS_FILE = Path("/proc/self/mounts")
QEMU_STATIC_DIR = Path("/usr/bin")  # where Debian's qemu-user-static installs qemu-<name>-static


class PlatformError(HarnessError):
    """A platform name, Node or image that does not describe a platform the harness knows."""


# ---------------------------------------------------------------------------------------------
# Platform names

# Every spelling accepted for an architecture, with the variant the spelling implies.
_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "amd64": ("amd64", ""),
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "arm64": ("arm64", ""),
    "aarch64": ("arm64", ""),
    "arm": ("arm", ""),
    "armhf": ("arm", "v7"),
    "armv7l": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv6l": ("arm", "v6"),
    "386": ("386", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}

# Variants each architecture may carry, after normalisation ("" is the default).
_VARIANTS: dict[str, frozenset[str]] = {
    "amd64": frozenset({"", "v2", "v3", "v4"}),
    "arm64": frozenset({""}),
    "arm": frozenset({"v5", "v6", "v7"}),
}

_KNOWN_OS = frozenset({"linux"})

ACCEPTED_FORMS = (
    "linux/amd64 (also amd64, x86_64, x86-64, amd64/v2..v4), "
    "linux/arm64 (also arm64, aarch64, arm64/v8), "
    "linux/arm/v7 (also arm, armhf, arm/v7, armv7l), "
    "linux/arm/v6 (also arm/v6, armel, armv6l), linux/arm/v5, "
    "linux/386 (also 386, i386, i686), linux/ppc64le, linux/s390x, linux/riscv64; "
    "the 'linux/' prefix is optional and case does not matter"
)


@dataclass(frozen=True)
class Platform:
    """An OS/architecture/variant triple in containerd's normal form.

    Construction lower-cases the fields and applies containerd's default variants: arm64's v8
    and amd64's v1 are dropped, a bare arm means arm/v7, a bare digit becomes "v<digit>".
    Spellings such as x86_64 or aarch64 are translated by parse_platform, not here.
    """

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        arch = self.architecture.strip().lower()
        variant = self.variant.strip().lower()
        if variant.isdigit():
            variant = "v" + variant
        if (arch, variant) in {("arm64", "v8"), ("amd64", "v1")}:
            variant = ""
        if arch == "arm" and not variant:
            variant = "v7"
        object.__setattr__(self, "os", self.os.strip().lower())
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def _bad_platform(text: str, why: str = "") -> PlatformError:
    detail = f" ({why})" if why else ""
    return PlatformError(f"unknown platform {text!r}{detail}", f"use one of: {ACCEPTED_FORMS}")


def _known(os_name: str, arch_text: str, variant_text: str, original: str) -> Platform:
    """The normal Platform for an architecture spelling and variant; PlatformError if unknown."""
    alias = _ARCH_ALIASES.get(arch_text.strip().lower())
    if alias is None:
        raise _bad_platform(original, f"architecture {arch_text!r} is not known")
    arch, implied = alias
    given = Platform(os_name, arch, variant_text).variant if variant_text.strip() else ""
    if implied and given and given != implied:
        raise _bad_platform(original, f"{arch_text} means {arch}/{implied}, not {given}")
    result = Platform(os_name, arch, given or implied)
    if result.variant not in _VARIANTS.get(arch, frozenset({""})):
        raise _bad_platform(original, f"variant {variant_text!r} is not known for {arch}")
    return result


def parse_platform(text: str) -> Platform:
    """Parse a platform as users write it (see ACCEPTED_FORMS); raise PlatformError otherwise."""
    parts = text.strip().lower().split("/")
    if any(not part for part in parts) or len(parts) > 3:
        raise _bad_platform(text)
    if parts[0] in _KNOWN_OS:
        os_name, rest = parts[0], parts[1:]
    elif parts[0] in _ARCH_ALIASES:
        os_name, rest = "linux", parts
    else:
        raise _bad_platform(text, f"{parts[0]!r} is neither a known OS nor an architecture")
    if not 1 <= len(rest) <= 2:
        raise _bad_platform(text)
    return _known(os_name, rest[0], rest[1] if len(rest) == 2 else "", text)


def host_platform() -> Platform:
    """The platform of the machine running the harness (its kernel and CPU)."""
    machine = _platform.machine()
    try:
        arch = parse_platform(machine)
    except PlatformError as exc:
        raise PlatformError(
            f"this host's CPU architecture {machine!r} (from platform.machine()) is not known",
            "run the harness on one of: amd64, arm64, arm, 386, ppc64le, s390x, riscv64",
        ) from exc
    return Platform(_platform.system().lower() or "linux", arch.architecture, arch.variant)


def _field(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def node_platform(node: Mapping[str, Any]) -> Platform:
    """The platform of a Kubernetes Node (a dict as `kubectl get node -o json` prints it).

    Reads status.nodeInfo.operatingSystem/architecture (what the kubelet reports), falling back
    to the kubernetes.io/os and kubernetes.io/arch labels.
    """
    name = _field(node, ["metadata", "name"]) or "(unnamed)"
    os_name = _field(node, ["status", "nodeInfo", "operatingSystem"]) or _field(
        node, ["metadata", "labels", "kubernetes.io/os"]
    )
    arch = _field(node, ["status", "nodeInfo", "architecture"]) or _field(
        node, ["metadata", "labels", "kubernetes.io/arch"]
    )
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise PlatformError(
            f"node {name}: status.nodeInfo.operatingSystem/architecture are missing",
            "pass the whole Node object (kubectl get node NAME -o json)",
        )
    return _known(os_name, arch, "", f"{os_name}/{arch} (node {name})")


def image_platform(inspect: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Platform:
    """The platform of an image from `docker image inspect` JSON (the list or its one element)."""
    if isinstance(inspect, Sequence):
        if len(inspect) != 1:
            raise PlatformError(
                f"docker image inspect output holds {len(inspect)} images, expected 1",
                "inspect exactly one image",
            )
        inspect = inspect[0]
    ref = (inspect.get("RepoTags") or [inspect.get("Id", "(no id)")])[0]
    os_name, arch = inspect.get("Os"), inspect.get("Architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        raise PlatformError(
            f"image {ref}: the Os or Architecture field is missing from its inspect output",
            "pass the JSON of `docker image inspect IMAGE`",
        )
    variant = str(inspect.get("Variant") or "")
    spelled = f"{os_name}/{arch}/{variant}" if variant else f"{os_name}/{arch}"
    return _known(os_name, arch, variant, f"{spelled} (image {ref})")


# QEMU's name for each architecture: the suffix of qemu-<name>.
_QEMU_NAMES: dict[str, str] = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm": "arm",
    "386": "i386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# Architectures of QEMU user emulators (as GOARCH names), for reading handlers others made.
_QEMU_TO_ARCH: dict[str, str] = {
    **{qemu: arch for arch, qemu in _QEMU_NAMES.items()},
    "ppc64": "ppc64",
    "mips": "mips",
    "mipsel": "mipsle",
    "mips64": "mips64",
    "mips64el": "mips64le",
    "loongarch64": "loong64",
}


def qemu_name(p: Platform) -> str:
    """QEMU's name for p's architecture (aarch64, arm, x86_64, i386, ...): qemu-<name>."""
    try:
        return _QEMU_NAMES[p.architecture]
    except KeyError:
        raise PlatformError(f"no QEMU emulator is known for {p}", f"use one of: {', '.join(_QEMU_NAMES)}") from None


# ---------------------------------------------------------------------------------------------
# ELF identification (System V ABI, ELF header): e_ident[16], e_type (2 bytes), e_machine (2).

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_EXEC = 2  # ET_DYN (3) differs in the lowest bit only
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
EM_PPC64, EM_S390, EM_RISCV = 21, 22, 243

# architecture -> (e_machine, EI_CLASS, EI_DATA)
_ELF_IDS: dict[str, tuple[int, int, int]] = {
    "amd64": (EM_X86_64, ELFCLASS64, ELFDATA2LSB),
    "386": (EM_386, ELFCLASS32, ELFDATA2LSB),
    "arm64": (EM_AARCH64, ELFCLASS64, ELFDATA2LSB),
    "arm": (EM_ARM, ELFCLASS32, ELFDATA2LSB),
    "ppc64le": (EM_PPC64, ELFCLASS64, ELFDATA2LSB),
    "ppc64": (EM_PPC64, ELFCLASS64, ELFDATA2MSB),
    "s390x": (EM_S390, ELFCLASS64, ELFDATA2MSB),
    "riscv64": (EM_RISCV, ELFCLASS64, ELFDATA2LSB),
}
_ARCH_BY_ELF_ID = {ident: arch for arch, ident in _ELF_IDS.items()}
_ELF_HEADER_PREFIX = 20  # bytes of the header the magic covers: e_ident, e_type, e_machine


def _byte_order(ei_data: int) -> Literal["little", "big"]:
    return "little" if ei_data == ELFDATA2LSB else "big"


def elf_magic(p: Platform) -> tuple[bytes, bytes]:
    """The binfmt_misc magic and mask (offset 0) matching executables and PIEs for p.

    Matched exactly: "\\x7fELF", EI_CLASS, EI_DATA, EI_VERSION, the zero padding, e_machine.
    Ignored: EI_OSABI and EI_ABIVERSION (Debian's binaries carry OSABI 3, GNU/Linux) and the
    lowest bit of e_type (ET_EXEC=2 and ET_DYN=3 both match).
    """
    try:
        machine, elf_class, data = _ELF_IDS[p.architecture]
    except KeyError:
        raise PlatformError(f"no ELF identification is known for {p}", "") from None
    order = _byte_order(data)
    ident = b"\x7fELF" + bytes([elf_class, data, EV_CURRENT]) + bytes(9)
    magic = ident + ET_EXEC.to_bytes(2, order) + machine.to_bytes(2, order)
    ident_mask = b"\xff" * 7 + b"\x00\x00" + b"\xff" * 7
    mask = ident_mask + (0xFFFE).to_bytes(2, order) + b"\xff\xff"
    return magic, mask


def _elf_architecture(offset: int | None, magic: bytes | None, mask: bytes | None) -> str | None:
    """The architecture an ELF magic selects, when its class, data and e_machine are unmasked."""
    if offset != 0 or magic is None or len(magic) < _ELF_HEADER_PREFIX:
        return None
    full_mask = mask if mask is not None else b"\xff" * len(magic)
    if magic[:4] != b"\x7fELF" or full_mask[:4] != b"\xff" * 4:
        return None
    if any(full_mask[i] != 0xFF for i in (4, 5, 18, 19)):
        return None
    elf_class, data = magic[4], magic[5]
    machine = int.from_bytes(magic[18:20], _byte_order(data))
    return _ARCH_BY_ELF_ID.get((machine, elf_class, data))


_INTERPRETER_PATTERNS = (
    re.compile(r"^qemu-(?P<name>[a-z0-9_]+?)(?:-static)?$"),  # qemu-aarch64[-static]
    re.compile(r"^(?P<name>[a-z0-9_]+?)-binfmt(?:-p)?$"),  # Debian's aarch64-binfmt-P
)


def _interpreter_architecture(interpreter: str) -> str | None:
    base = Path(interpreter).name.lower()
    if base == "rosetta":  # Apple's Rosetta 2 for Linux (Docker Desktop, Lima): runs amd64
        return "amd64"
    for pattern in _INTERPRETER_PATTERNS:
        found = pattern.match(base)
        if found:
            return _QEMU_TO_ARCH.get(found.group("name"))
    return None


# ---------------------------------------------------------------------------------------------
# binfmt_misc state


@dataclass(frozen=True)
class BinfmtHandler:
    """One entry of /proc/sys/fs/binfmt_misc as the kernel prints it.

    architecture is the GOARCH name of what the handler emulates: from the ELF e_machine in its
    magic (what the kernel matches on) when readable, else from the interpreter's name
    (qemu-aarch64[-static], aarch64-binfmt-P, rosetta); None when neither says.
    """

    name: str
    enabled: bool
    interpreter: str
    flags: str  # the kernel's letters, in its order: P, O, C, F
    offset: int | None = None
    magic: bytes | None = None
    mask: bytes | None = None
    extension: str | None = None
    architecture: str | None = None

    @property
    def fix_binary(self) -> bool:
        """F: the kernel opened the interpreter at registration; containers can use it."""
        return "F" in self.flags

    def describe(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        arch = self.architecture or "unknown architecture"
        flags = self.flags or "no flags"
        return f"{self.name} ({arch}, {self.interpreter}, {flags}, {state})"


def parse_handler(name: str, text: str) -> BinfmtHandler:
    """Parse the text of one handler file (`enabled`, `interpreter ...`, `flags: ...`, ...)."""
    lines = text.splitlines()
    enabled = bool(lines) and lines[0].strip() == "enabled"
    interpreter, flags = "", ""
    offset: int | None = None
    magic: bytes | None = None
    mask: bytes | None = None
    extension: str | None = None
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "interpreter":
            interpreter = value
        elif key == "flags:":
            flags = value
        elif key == "offset":
            offset = int(value)
        elif key == "magic":
            magic = bytes.fromhex(value)
        elif key == "mask":
            mask = bytes.fromhex(value)
        elif key == "extension":
            extension = value.removeprefix(".")
    arch = _elf_architecture(offset, magic, mask) or _interpreter_architecture(interpreter)
    return BinfmtHandler(name, enabled, interpreter, flags, offset, magic, mask, extension, arch)


@dataclass(frozen=True)
class EmulationState:
    """What the host kernel's binfmt_misc would do with foreign binaries.

    When binfmt_misc is not mounted no handler can be seen; on the kernels measured, unmounting
    drops every handler, so none exists either.
    """

    mounted: bool
    enabled: bool
    handlers: tuple[BinfmtHandler, ...] = ()
    mount_point: str | None = None

    def handler_for(self, p: Platform) -> BinfmtHandler | None:
        """The enabled handler the kernel would use for p's binaries, if any.

        When several enabled handlers match one architecture the kernel uses the newest, which
        /proc does not show; this picks one with F first.
        """
        if not (self.mounted and self.enabled):
            return None
        matching = [h for h in self.handlers if h.enabled and h.architecture == p.architecture]
        matching.sort(key=lambda h: not h.fix_binary)
        return matching[0] if matching else None

    def can_run(self, p: Platform) -> bool:
        """True if an enabled handler for p's architecture exists in an enabled binfmt_misc."""
        return self.handler_for(p) is not None

    def can_run_in_containers(self, p: Platform) -> bool:
        """True if that handler also works in containers: it has the F flag.

        Without F the interpreter path is looked up in the container's mount namespace at exec
        time, where it usually does not exist; exec then fails with ENOENT.
        """
        handler = self.handler_for(p)
        return handler is not None and handler.fix_binary

    def describe(self) -> str:
        """One line: mounted/enabled and the handlers with their architectures and flags."""
        if not self.mounted:
            return "binfmt_misc is not mounted: no emulator is registered"
        where = f"binfmt_misc at {self.mount_point}, {'enabled' if self.enabled else 'disabled'}"
        if not self.handlers:
            return f"{where}, no handlers"
        return f"{where}, handlers: " + "; ".join(h.describe() for h in self.handlers)


def _unescape_mount_field(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _binfmt_mount_points(mounts: Path) -> list[str]:
    """Mount points of binfmt_misc file systems listed in a mounts file (fstab format)."""
    try:
        text = mounts.read_text()
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "binfmt_misc":
            points.append(_unescape_mount_field(fields[1]))
    return points


def _is_mounted(root: Path, mounts: Path) -> bool:
    return str(root) in _binfmt_mount_points(mounts)


def read_binfmt(root: Path = BINFMT_ROOT, mounts: Path = MOUNTS_FILE) -> EmulationState:
    """Read the binfmt_misc state: mounted, globally enabled, and each handler.

    root is read when the mounts file lists a binfmt_misc mount there; otherwise another
    binfmt_misc mount listed is read (same kernel instance); otherwise it is not mounted.
    """
    points = _binfmt_mount_points(mounts)
    where = str(root) if str(root) in points else (points[0] if points else None)
    if where is None:
        return EmulationState(mounted=False, enabled=False)
    directory = Path(where)
    try:
        status = (directory / "status").read_text().strip()
        names = sorted(p.name for p in directory.iterdir() if p.name not in {"register", "status"})
    except OSError:
        return EmulationState(mounted=False, enabled=False, mount_point=where)
    handlers = []
    for name in names:
        try:
            handlers.append(parse_handler(name, (directory / name).read_text()))
        except (OSError, ValueError):
            continue  # removed while reading, or not a handler
    return EmulationState(mounted=True, enabled=status == "enabled", handlers=tuple(handlers), mount_point=where)


@dataclass(frozen=True)
class BinfmtSnapshot:
    """The exact binfmt_misc state (mount point, status, each handler file's text), comparable."""

    mount_point: str | None
    status: str | None
    entries: tuple[tuple[str, str], ...]


def snapshot_binfmt(root: Path = BINFMT_ROOT, mounts: Path = MOUNTS_FILE) -> BinfmtSnapshot:
    """Record the state so a test can assert that it is the same afterwards."""
    point = str(root) if _is_mounted(root, mounts) else None
    if point is None:
        return BinfmtSnapshot(None, None, ())
    entries = []
    status = (root / "status").read_text()
    for path in sorted(root.iterdir()):
        if path.name not in {"register", "status"}:
            entries.append((path.name, path.read_text()))
    return BinfmtSnapshot(point, status, tuple(entries))


# ---------------------------------------------------------------------------------------------
# Expected outcome of running an image on a node


class Expectation(enum.Enum):
    """What exec of an image's entrypoint does on a node."""

    NATIVE = "native"
    EMULATED = "emulated"
    EXEC_FORMAT_ERROR = "exec format error"  # ENOEXEC: `exec ...: exec format error`
    INTERPRETER_MISSING = "no such file or directory"  # ENOENT: handler without F


def _runs_natively(image: Platform, node: Platform, aarch32: bool) -> bool:
    if image.architecture == node.architecture:
        return True
    if (image.architecture, node.architecture) == ("386", "amd64"):
        return True  # 32-bit compat mode; needs CONFIG_IA32_EMULATION, as Debian's kernels have
    return (image.architecture, node.architecture) == ("arm", "arm64") and aarch32


def expected_outcome(
    image: Platform, node: Platform, emulation: EmulationState, *, aarch32: bool = False
) -> Expectation:
    """What happens when a container of `image` starts on `node` whose kernel has `emulation`.

    - A container-usable (F) handler for the image's architecture: EMULATED, even when the CPU
      could run it natively (binfmt_misc is consulted before the ELF loader; measured with
      qemu-i386 on amd64).
    - An enabled handler without F: INTERPRETER_MISSING (exec fails with "no such file or
      directory", unless the image itself holds the interpreter at that path).
    - Same architecture: NATIVE. An arm/v7 image on an arm/v6 node is also NATIVE: the kernel
      loads it (same e_machine), though newer instructions may then die with SIGILL.
    - 386 on amd64: NATIVE (32-bit compat mode; measured on this project's kernels).
    - arm on arm64: NATIVE only when the caller says aarch32=True. It is not certain: running
      32-bit code needs AArch32 at EL0, which many arm64 CPUs lack (Apple M-series, Neoverse
      V2/N2, Cortex-X2 and later), and a kernel with CONFIG_COMPAT. Without them exec fails with
      "exec format error", which is what the default predicts.
    - Anything else: EXEC_FORMAT_ERROR.
    """
    for p, role in ((image, "image"), (node, "node")):
        if p.os != "linux":
            raise PlatformError(
                f"{role} platform {p}: only linux images on linux nodes are modelled",
                "use a linux image and linux nodes",
            )
    handler = emulation.handler_for(image)
    if handler is not None:
        return Expectation.EMULATED if handler.fix_binary else Expectation.INTERPRETER_MISSING
    if _runs_natively(image, node, aarch32):
        return Expectation.NATIVE
    return Expectation.EXEC_FORMAT_ERROR


def _why_no_handler(image: Platform, emulation: EmulationState) -> str:
    name = _QEMU_NAMES.get(image.architecture, image.architecture)
    if not emulation.mounted:
        return f"binfmt_misc is not mounted (no emulator for {name} is registered)"
    if not emulation.enabled:
        return "binfmt_misc is disabled (its status file says 'disabled')"
    disabled = [h.name for h in emulation.handlers if h.architecture == image.architecture]
    if disabled:
        return f"binfmt_misc handler {disabled[0]!r} for {name} is disabled"
    return f"no binfmt_misc handler for {name}"


def explain(image: Platform, node: Platform, emulation: EmulationState, *, aarch32: bool = False) -> str:
    """One line saying what happens and why, for reports and failed assertions."""
    outcome = expected_outcome(image, node, emulation, aarch32=aarch32)
    head = f"{image} image on {node} node"
    handler = emulation.handler_for(image)
    if outcome is Expectation.EMULATED and handler is not None:
        return (
            f"{head}: binfmt_misc handler {handler.name!r} runs it with {handler.interpreter} "
            "(flag F), so it starts under emulation instead of failing with 'exec format error'"
        )
    if outcome is Expectation.INTERPRETER_MISSING and handler is not None:
        return (
            f"{head}: binfmt_misc handler {handler.name!r} lacks the F flag, so the kernel looks "
            f"for {handler.interpreter} inside the container, where it is absent: exec fails "
            "with 'no such file or directory'"
        )
    if outcome is Expectation.NATIVE:
        if image.architecture != node.architecture:
            return f"{head}: the node's CPU runs {image.architecture} code natively, no emulation"
        if image.variant > node.variant:  # "v7" > "v6", "v3" > "" (amd64 of unknown level)
            return (
                f"{head}: same architecture, the kernel runs it natively "
                f"(on a CPU older than {image.architecture}/{image.variant} it may die with SIGILL)"
            )
        return f"{head}: same architecture, runs natively"
    line = f"{head}: {_why_no_handler(image, emulation)}, so exec fails with 'exec format error'"
    if (image.architecture, node.architecture) == ("arm", "arm64"):
        line += " (assuming the node's CPU lacks AArch32; pass aarch32=True if it has it)"
    return line


# ---------------------------------------------------------------------------------------------
# Registering a QEMU handler on purpose


def register_line(name: str, p: Platform, interpreter: Path, flags: str = "F") -> str:
    """The text to write to binfmt_misc's register file for a handler running p's binaries."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise HarnessError(f"binfmt_misc handler name {name!r} is not valid", "use [A-Za-z0-9_.+-]")
    if ":" in str(interpreter) or not re.fullmatch(r"[POCF]*", flags):
        raise HarnessError(
            f"cannot register {interpreter} with flags {flags!r}",
            "use an interpreter path without ':' and flags among P, O, C, F",
        )
    magic, mask = elf_magic(p)
    hexed = ["".join(f"\\x{byte:02x}" for byte in field) for field in (magic, mask)]
    return f":{name}:M:0:{hexed[0]}:{hexed[1]}:{interpreter}:{flags}"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError(
            f"registering a binfmt_misc handler needs root (effective uid is {os.geteuid()})",
            "run the emulation tests as root, or leave them out (-m 'not emulation')",
        )


def _kernel_write(path: Path, data: str) -> None:
    """One write(2) of data to a binfmt_misc control file."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise HarnessError(
            f"writing {data!r} to {path} failed: {exc.strerror}",
            "check that binfmt_misc is mounted there and that you are root",
        ) from exc


def _mount(root: Path) -> None:
    run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)],
        timeout=30,
        remedy="the kernel needs CONFIG_BINFMT_MISC and the harness needs root (CAP_SYS_ADMIN)",
    )


def _umount(root: Path) -> None:
    run(["umount", str(root)], timeout=30, remedy=f"unmount {root} yourself")


# A run that registers a handler writes what it is about to change to a state file first (one per
# process, atomically), and deletes the file once it has restored everything. A file whose process
# is gone is what a killed run left: repair_binfmt undoes it, as far as the state still matches.


def binfmt_state_dir() -> Path:
    """Where runs record their binfmt_misc changes: under the harness's cache."""
    return cache_dir() / "binfmt"


def _process_start(pid: int) -> str | None:
    """The start time of process pid (field 22 of /proc/PID/stat, in clock ticks), or None if it is gone.

    A pid is reused; pid and start time together name one process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class BinfmtChange:
    """One change a run makes to binfmt_misc, recorded before it is made.

    action: "mount" (binfmt_misc was not mounted at root), "enable" (its status was disabled;
    handlers: the names present then), "register" (handler `name` for `interpreter`, flags).
    """

    action: str
    root: str
    name: str = ""
    interpreter: str = ""
    flags: str = ""
    handlers: tuple[str, ...] = ()


@dataclass(frozen=True)
class BinfmtRecord:
    """A run's state file: the process and the changes it made (or was about to make), in order."""

    pid: int
    start: str
    changes: tuple[BinfmtChange, ...]
    path: Path

    def alive(self) -> bool:
        if not self.start:  # recorded where /proc did not tell start times: the pid alone
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return _process_start(self.pid) == self.start

    def describe(self) -> str:
        done = ", ".join(c.name or c.action for c in self.changes) or "nothing"
        return f"binfmt_misc changes of process {self.pid} ({done}), recorded in {self.path}"

    def to_json(self) -> str:
        return json.dumps(
            {"pid": self.pid, "start": self.start, "changes": [asdict(c) for c in self.changes]}, indent=2
        )


class _Journal:
    """This process's state file: each change is added (and the file rewritten) before it is made."""

    def __init__(self, state_dir: Path) -> None:
        pid = os.getpid()
        self.path = state_dir / f"{pid}.json"
        self.record = BinfmtRecord(pid, _process_start(pid) or "", (), self.path)

    def before(self, change: BinfmtChange) -> None:
        self.record = BinfmtRecord(self.record.pid, self.record.start, (*self.record.changes, change), self.path)
        write_text_atomic(self.path, self.record.to_json())

    def undone(self, change: BinfmtChange) -> None:
        """change is restored: drop it; the file goes when nothing is left to restore."""
        left = tuple(c for c in self.record.changes if c != change)
        self.record = BinfmtRecord(self.record.pid, self.record.start, left, self.path)
        if left:
            write_text_atomic(self.path, self.record.to_json())
        else:
            self.path.unlink(missing_ok=True)


def read_binfmt_records(state_dir: Path | None = None) -> list[BinfmtRecord]:
    """Every state file in state_dir (unreadable ones are skipped: they were never complete)."""
    directory = state_dir or binfmt_state_dir()
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            changes = tuple(BinfmtChange(**{**c, "handlers": tuple(c.get("handlers") or ())}) for c in data["changes"])
            records.append(BinfmtRecord(int(data["pid"]), str(data["start"]), changes, path))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def binfmt_leftovers(state_dir: Path | None = None) -> list[BinfmtRecord]:
    """State files of runs that ended without restoring binfmt_misc (killed): what repair_binfmt would undo."""
    return [r for r in read_binfmt_records(state_dir) if not r.alive()]


def repair_binfmt(state_dir: Path | None = None, mounts: Path = MOUNTS_FILE, *, root: Path | None = None) -> list[str]:
    """Undo what killed runs left in binfmt_misc, in reverse order; one line per action taken or declined.

    Only what still matches the record is undone: the handler of the recorded name with the
    recorded interpreter; the status switched off again only while no handler exists that was
    not there when the run enabled it; binfmt_misc unmounted only while no handler is registered.
    Anything else belongs to someone else now and is left alone (and said so). With root: only
    records of changes at that mount point.
    """
    said: list[str] = []
    for record in binfmt_leftovers(state_dir):
        if root is not None and any(Path(c.root) != root for c in record.changes):
            continue  # another binfmt_misc mount than the one asked about
        for change in reversed(record.changes):
            said.append(_repair_one(change, mounts))
        record.path.unlink(missing_ok=True)
    return said


def _repair_one(change: BinfmtChange, mounts: Path) -> str:
    root = Path(change.root)
    mounted = _is_mounted(root, mounts)
    handlers = {h.name: h for h in read_binfmt(root, mounts).handlers} if mounted else {}
    if change.action == "register":
        handler = handlers.get(change.name)
        if handler is None:
            return f"handler {change.name}: not registered (nothing to undo)"
        if handler.interpreter != change.interpreter:
            return f"handler {change.name}: left alone, its interpreter is now {handler.interpreter}"
        _kernel_write(root / change.name, "-1")
        return f"handler {change.name}: removed (a killed run had registered it)"
    if change.action == "enable":
        others = sorted(set(handlers) - set(change.handlers))
        if not mounted or (root / "status").read_text().strip() != "enabled":
            return f"{root}: already disabled"
        if others:
            return f"{root}: left enabled, handlers were registered since: {', '.join(others)}"
        _kernel_write(root / "status", "0")
        return f"{root}: disabled again (a killed run had enabled it)"
    if change.action == "mount":
        if not mounted:
            return f"{root}: not mounted (nothing to undo)"
        if handlers:
            return f"{root}: left mounted, handlers are registered: {', '.join(sorted(handlers))}"
        _umount(root)
        return f"{root}: unmounted again (a killed run had mounted it)"
    return f"unknown change {change.action!r}: left alone"


@contextmanager
def emulation_registered(
    platform: Platform,
    qemu_path: Path | None = None,
    *,
    fix_binary: bool = True,
    root: Path = BINFMT_ROOT,
    mounts: Path = MOUNTS_FILE,
    state_dir: Path | None = None,
) -> Iterator[EmulationState]:
    """Make the host kernel run `platform` binaries with QEMU, then restore the exact state.

    Mounts binfmt_misc if needed, enables it if disabled, and registers qemu-<name> (with the F
    flag unless fix_binary=False) for Debian's qemu-user-static binary, unless a handler of that
    name exists (left untouched) or another usable handler already covers the architecture. On
    exit it undoes exactly those steps, in reverse order. Yields the state with the handler.

    Every exit path restores: an exception, Ctrl-C, and SIGTERM or SIGHUP (raised as
    Interrupted within the block). Each change is recorded in a state file under the harness's
    cache before it is made, so a later call repairs what a killed run (SIGKILL) left first.
    """
    _require_root()
    name = f"qemu-{qemu_name(platform)}"
    interpreter = qemu_path or QEMU_STATIC_DIR / f"{name}-static"
    if not interpreter.is_file():
        raise HarnessError(
            f"{interpreter} not found: no QEMU user emulator for {platform}",
            "apt-get install qemu-user-static (its binfmt configs stay inactive without "
            "systemd-binfmt or binfmt-support)",
        )
    if platform.architecture == host_platform().architecture:
        raise HarnessError(
            f"refusing to register QEMU for {platform}: it is this host's own architecture and "
            "the handler would take over every program",
            "emulate a foreign platform",
        )
    if not root.is_dir():
        raise HarnessError(f"{root} does not exist", "use a kernel with CONFIG_BINFMT_MISC")
    states = state_dir or binfmt_state_dir()
    repair_binfmt(states, mounts, root=root)
    journal = _Journal(states)
    undo: list[tuple[BinfmtChange, Callable[[], None]]] = []
    with interrupting():
        try:
            if not _is_mounted(root, mounts):
                change = BinfmtChange("mount", str(root))
                journal.before(change)
                _mount(root)
                undo.append((change, lambda: _umount(root)))
            if (root / "status").read_text().strip() != "enabled":
                present = tuple(h.name for h in read_binfmt(root, mounts).handlers)
                change = BinfmtChange("enable", str(root), handlers=present)
                journal.before(change)
                _kernel_write(root / "status", "1")
                undo.append((change, lambda: _kernel_write(root / "status", "0")))
            before = read_binfmt(root, mounts)
            covered = before.can_run_in_containers(platform) if fix_binary else before.can_run(platform)
            if not covered and not any(h.name == name for h in before.handlers):
                flags = "F" if fix_binary else ""
                change = BinfmtChange("register", str(root), name=name, interpreter=str(interpreter), flags=flags)
                journal.before(change)
                _kernel_write(root / "register", register_line(name, platform, interpreter, flags))
                undo.append((change, lambda: _kernel_write(root / name, "-1")))
            state = read_binfmt(root, mounts)
            usable = state.can_run_in_containers(platform) if fix_binary else state.can_run(platform)
            if not usable:
                raise HarnessError(
                    f"binfmt_misc cannot emulate {platform}: {state.describe()}",
                    f"the existing handler {name!r} was left untouched; fix or remove it yourself",
                )
            yield state
        finally:
            _undo_all(undo, journal, mounts)


def _undo_all(undo: list[tuple[BinfmtChange, Callable[[], None]]], journal: _Journal, mounts: Path) -> None:
    """Restore every recorded change in reverse order; every step runs even if an earlier one fails.

    A change recorded but not known to be made (the run stopped between the record and the
    kernel's answer) is repaired as a killed run's would be: undone if the state shows it.
    SIGINT, SIGTERM and SIGHUP wait until the few writes are done.
    """
    failures: list[HarnessError] = []
    made = dict(undo)
    with deferred():
        for change in reversed(journal.record.changes):
            try:
                step = made.get(change)
                if step is not None:
                    step()
                else:
                    _repair_one(change, mounts)
                journal.undone(change)
            except HarnessError as exc:
                failures.append(exc)
    if failures:
        raise HarnessError(
            "restoring binfmt_misc failed: " + " | ".join(f.cause for f in failures),
            f"inspect {BINFMT_ROOT} and remove leftover qemu-* handlers with: echo -1 > FILE",
        )


# ---------------------------------------------------------------------------------------------
# "native" and "foreign": the one place that computes them


def foreign_of(node: Platform) -> Platform:
    """The platform the nodes are not, of the pair the incident is about: arm64 for amd64 nodes, else amd64."""
    return Platform(node.os, "arm64" if node.architecture == "amd64" else "amd64")


def resolve_platform_word(word: str, node: Platform) -> Platform:
    """A platform as scenario files write it: "native" (the nodes'), "foreign" (foreign_of) or a platform string."""
    if word == "native":
        return node
    if word == "foreign":
        return foreign_of(node)
    return parse_platform(word)
