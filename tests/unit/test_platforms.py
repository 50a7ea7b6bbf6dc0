"""Platform names, binfmt_misc parsing and the expected outcome of an image on a node.

The binfmt_misc trees under data/binfmt were recorded from a real kernel (see its README).
"""

from __future__ import annotations

import os
import platform as platform_module
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import platforms
from harness.errors import HarnessError
from harness.platforms import (
    BinfmtHandler,
    EmulationState,
    Expectation,
    Platform,
    PlatformError,
    elf_magic,
    emulation_registered,
    expected_outcome,
    explain,
    image_platform,
    node_platform,
    parse_handler,
    parse_platform,
    qemu_name,
    read_binfmt,
    register_line,
    snapshot_binfmt,
)

DATA = Path(__file__).parent / "data" / "binfmt"
KERNEL_ROOT = "/proc/sys/fs/binfmt_misc"

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
ARMV7 = Platform("linux", "arm", "v7")
ARMV6 = Platform("linux", "arm", "v6")
I386 = Platform("linux", "386")
S390X = Platform("linux", "s390x")


# --- platform names -------------------------------------------------------------------------

ACCEPTED = [
    ("linux/amd64", "linux/amd64"),
    ("amd64", "linux/amd64"),
    ("x86_64", "linux/amd64"),
    ("x86-64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("AMD64", "linux/amd64"),
    ("amd64/v1", "linux/amd64"),
    ("amd64/v3", "linux/amd64/v3"),
    ("arm64", "linux/arm64"),
    ("aarch64", "linux/arm64"),
    ("arm64/v8", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("Linux/AArch64", "linux/arm64"),
    ("armhf", "linux/arm/v7"),
    ("arm", "linux/arm/v7"),
    ("arm/v7", "linux/arm/v7"),
    ("linux/arm/v7", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("armv7l", "linux/arm/v7"),
    ("arm/v6", "linux/arm/v6"),
    ("armel", "linux/arm/v6"),
    ("armv6l", "linux/arm/v6"),
    ("arm/v5", "linux/arm/v5"),
    ("386", "linux/386"),
    ("i386", "linux/386"),
    ("i686", "linux/386"),
    ("linux/386", "linux/386"),
    ("ppc64le", "linux/ppc64le"),
    ("s390x", "linux/s390x"),
    ("riscv64", "linux/riscv64"),
    ("  linux/riscv64 ", "linux/riscv64"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_parse_platform_accepts(text: str, expected: str) -> None:
    assert str(parse_platform(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mips",
        "sparc64",
        "windows/amd64",
        "darwin/arm64",
        "linux",
        "linux/",
        "linux//amd64",
        "arm64/v9",
        "arm/v8",
        "armhf/v6",
        "amd64/v7",
        "386/v2",
        "linux/amd64/v3/extra",
    ],
)
def test_parse_platform_rejects_naming_the_input_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(PlatformError) as caught:
        parse_platform(text)
    assert isinstance(caught.value, HarnessError)
    assert repr(text) in caught.value.cause
    message = str(caught.value)
    for form in ("linux/amd64", "x86_64", "aarch64", "arm64/v8", "armhf", "arm/v6", "i386"):
        assert form in message
    assert "what to do" in message


def test_platform_normalises_like_containerd() -> None:
    assert Platform("linux", "arm64", "v8") == ARM64
    assert str(Platform("Linux", "ARM64", "8")) == "linux/arm64"
    assert Platform("linux", "arm") == ARMV7
    assert str(Platform("linux", "arm", "6")) == "linux/arm/v6"
    assert str(Platform("linux", "amd64", "v1")) == "linux/amd64"
    assert parse_platform("aarch64") == ARM64  # values compare equal whatever the spelling


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64"), ("armv7l", "linux/arm/v7")],
)
def test_host_platform_from_machine(monkeypatch: pytest.MonkeyPatch, machine: str, expected: str) -> None:
    monkeypatch.setattr(platform_module, "machine", lambda: machine)
    monkeypatch.setattr(platform_module, "system", lambda: "Linux")
    assert str(platforms.host_platform()) == expected


def test_host_platform_unknown_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_module, "machine", lambda: "sparc64")
    with pytest.raises(PlatformError, match="sparc64"):
        platforms.host_platform()


def _node(arch: str, os_name: str = "linux") -> dict[str, object]:
    # The fields of a kind node object (kubectl get node -o json) that matter here.
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "incident-control-plane",
            "labels": {"kubernetes.io/arch": arch, "kubernetes.io/os": os_name},
        },
        "status": {"nodeInfo": {"architecture": arch, "operatingSystem": os_name}},
    }


def test_node_platform() -> None:
    assert node_platform(_node("amd64")) == AMD64
    assert node_platform(_node("arm64")) == ARM64
    assert node_platform(_node("arm")) == ARMV7  # a Node carries no variant: containerd's v7


def test_node_platform_falls_back_to_labels_and_names_missing_fields() -> None:
    node = _node("arm64")
    del node["status"]
    assert node_platform(node) == ARM64
    with pytest.raises(PlatformError, match=r"incident-control-plane.*status\.nodeInfo"):
        node_platform({"metadata": {"name": "incident-control-plane"}, "status": {}})


def test_image_platform() -> None:
    # Trimmed from `docker image inspect` (Docker 20.10) of a FROM scratch arm64 image built
    # with DOCKER_BUILDKIT=0 docker build --platform linux/arm64: it carries no Variant.
    inspect = {
        "Id": "sha256:add6b622b9ff76e781dee7b559e7973b6620f408ceb6ed80c41fe9dc90b99468",
        "RepoTags": ["probe:arm64"],
        "Architecture": "arm64",
        "Os": "linux",
    }
    assert image_platform(inspect) == ARM64
    assert image_platform([inspect]) == ARM64
    assert image_platform({**inspect, "Variant": "v8"}) == ARM64
    assert image_platform({**inspect, "Architecture": "arm", "Variant": "v6"}) == ARMV6
    assert image_platform({**inspect, "Architecture": "amd64"}) == AMD64


def test_image_platform_errors_name_the_image_and_field() -> None:
    with pytest.raises(PlatformError, match=r"probe:arm64.*Architecture"):
        image_platform({"RepoTags": ["probe:arm64"], "Os": "linux"})
    with pytest.raises(PlatformError, match="2 images"):
        image_platform([{"Os": "linux"}, {"Os": "linux"}])
    with pytest.raises(PlatformError, match="mips"):
        image_platform({"Os": "linux", "Architecture": "mips"})


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        (AMD64, "x86_64"),
        (ARM64, "aarch64"),
        (ARMV7, "arm"),
        (ARMV6, "arm"),
        (I386, "i386"),
        (Platform("linux", "ppc64le"), "ppc64le"),
        (S390X, "s390x"),
        (Platform("linux", "riscv64"), "riscv64"),
    ],
)
def test_qemu_name(platform: Platform, name: str) -> None:
    assert qemu_name(platform) == name


# --- ELF magic and registration lines -------------------------------------------------------


def _elf_header(elf_class: int, data: int, e_type: int, machine: int, osabi: int = 3) -> bytes:
    """The first 20 bytes of an ELF file (e_ident, e_type, e_machine) per the ELF spec."""
    ident = b"\x7fELF" + bytes([elf_class, data, 1, osabi, 0]) + bytes(7)
    order = "<" if data == 1 else ">"
    return ident + struct.pack(order + "HH", e_type, machine)


HEADERS = {
    "amd64": _elf_header(2, 1, 2, 62),
    "386": _elf_header(1, 1, 2, 3),
    "arm64": _elf_header(2, 1, 2, 183),
    "arm": _elf_header(1, 1, 2, 40),
    "ppc64le": _elf_header(2, 1, 2, 21),
    "s390x": _elf_header(2, 2, 2, 22),
    "riscv64": _elf_header(2, 1, 2, 243),
}


def _matches(header: bytes, magic: bytes, mask: bytes) -> bool:
    return all((h & m) == (g & m) for h, g, m in zip(header, magic, mask, strict=True))


@pytest.mark.parametrize("arch", sorted(HEADERS))
def test_elf_magic_matches_its_architecture_only(arch: str) -> None:
    magic, mask = elf_magic(Platform("linux", arch))
    assert len(magic) == len(mask) == 20
    assert _matches(HEADERS[arch], magic, mask)
    if arch != "s390x":  # little-endian e_type: ET_DYN = 03 00
        pie = HEADERS[arch][:16] + b"\x03\x00" + HEADERS[arch][18:]
    else:
        pie = HEADERS[arch][:16] + b"\x00\x03" + HEADERS[arch][18:]
    assert _matches(pie, magic, mask), "position-independent executables must match too"
    sysv = HEADERS[arch][:7] + b"\x00" + HEADERS[arch][8:]
    assert _matches(sysv, magic, mask), "EI_OSABI must not matter"
    for other, header in HEADERS.items():
        if other != arch:
            assert not _matches(header, magic, mask), f"{arch} magic matches {other} binaries"


@pytest.mark.parametrize(("arch", "handler"), [("arm64", "qemu-aarch64"), ("arm", "qemu-arm")])
def test_elf_magic_agrees_with_debian_qemu_user_static(arch: str, handler: str) -> None:
    recorded = parse_handler(handler, (DATA / "debian-qemu-user-static" / handler).read_text())
    magic, _ = elf_magic(Platform("linux", arch))
    assert recorded.magic == magic


def test_register_line_round_trips_through_the_kernel_format() -> None:
    line = register_line("qemu-aarch64", ARM64, Path("/usr/bin/qemu-aarch64-static"))
    _, name, kind, offset, magic, mask, interpreter, flags = line.split(":")
    assert (name, kind, offset, interpreter, flags) == (
        "qemu-aarch64",
        "M",
        "0",
        "/usr/bin/qemu-aarch64-static",
        "F",
    )
    assert (_unescape(magic), _unescape(mask)) == elf_magic(ARM64)
    recorded = parse_handler("qemu-aarch64", (DATA / "harness-f" / "qemu-aarch64").read_text())
    assert (recorded.magic, recorded.mask) == elf_magic(ARM64)


@pytest.mark.parametrize(
    ("name", "interpreter", "flags"),
    [("bad/name", "/q", "F"), ("", "/q", "F"), ("ok", "/a:b", "F"), ("ok", "/q", "X")],
)
def test_register_line_rejects_what_the_kernel_would_misread(name: str, interpreter: str, flags: str) -> None:
    with pytest.raises(HarnessError):
        register_line(name, ARM64, Path(interpreter), flags)


def _unescape(field: str) -> bytes:
    """The bytes of a register field written entirely as \\xHH escapes."""
    assert field.startswith("\\x")
    return bytes.fromhex(field.replace("\\x", ""))


# --- reading binfmt_misc ----------------------------------------------------------------------


def _tree(tmp_path: Path, case: str | None, mounted: bool = True) -> tuple[Path, Path]:
    """A copy of a recorded tree at tmp_path/binfmt_misc and a mounts file that lists it."""
    root = tmp_path / "binfmt_misc"
    if case is None:
        root.mkdir(parents=True)
    else:
        shutil.copytree(DATA / case, root)
    sample = "mounts-with-binfmt" if mounted else "mounts-without-binfmt"
    mounts = tmp_path / "mounts"
    mounts.write_text((DATA / sample).read_text().replace(KERNEL_ROOT, str(root)))
    return root, mounts


def test_read_harness_registration(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "harness-f"))
    assert state.mounted and state.enabled
    (handler,) = state.handlers
    assert handler == BinfmtHandler(
        name="qemu-aarch64",
        enabled=True,
        interpreter="/usr/bin/qemu-aarch64-static",
        flags="F",
        offset=0,
        magic=elf_magic(ARM64)[0],
        mask=elf_magic(ARM64)[1],
        architecture="arm64",
    )
    assert state.can_run(ARM64) and state.can_run_in_containers(ARM64)
    assert not state.can_run(ARMV7) and not state.can_run(AMD64)


def test_handler_without_f_runs_on_the_host_but_not_in_containers(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "no-fix-binary"))
    assert state.handlers[0].flags == "" and not state.handlers[0].fix_binary
    assert state.can_run(ARM64)
    assert not state.can_run_in_containers(ARM64)


def test_disabled_handler(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "disabled-handler"))
    assert state.mounted and state.enabled
    assert not state.handlers[0].enabled
    assert not state.can_run(ARM64) and not state.can_run_in_containers(ARM64)


def test_globally_disabled(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "globally-disabled"))
    assert state.mounted and not state.enabled
    assert state.handlers[0].enabled
    assert not state.can_run(ARM64)


def test_unmounted_binfmt_misc_shows_no_handlers(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, None, mounted=False))
    assert state == EmulationState(mounted=False, enabled=False)
    assert not state.can_run(ARM64)
    # Files under the directory do not count when the mounts file does not list a mount there.
    state = read_binfmt(*_tree(tmp_path / "other", "harness-f", mounted=False))
    assert not state.mounted and not state.can_run(ARM64)
    assert "not mounted" in state.describe()


def test_handlers_identified_by_magic_or_interpreter(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "unknown-interpreter"))
    by_name = {h.name: h for h in state.handlers}
    assert by_name["mystery"].architecture == "arm64"  # from the ELF e_machine in its magic
    assert by_name["rosetta"].architecture == "amd64"
    assert by_name["rosetta"].flags == "OCF"
    assert state.can_run_in_containers(AMD64)
    assert state.can_run(ARM64) and not state.can_run_in_containers(ARM64)


def test_debian_qemu_user_static_registrations(tmp_path: Path) -> None:
    state = read_binfmt(*_tree(tmp_path, "debian-qemu-user-static"))
    by_name = {h.name: h for h in state.handlers}
    assert set(by_name) == {"python3.11", "qemu-aarch64", "qemu-arm"}
    assert by_name["qemu-aarch64"].interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert by_name["qemu-aarch64"].flags == "POF"
    assert by_name["qemu-arm"].architecture == "arm"
    assert by_name["python3.11"].architecture is None
    assert by_name["python3.11"].mask is None
    assert state.can_run_in_containers(ARM64)
    assert state.can_run_in_containers(ARMV7) and state.can_run_in_containers(ARMV6)
    assert not state.can_run(S390X)


@pytest.mark.parametrize(
    ("interpreter", "arch"),
    [
        ("/usr/bin/qemu-aarch64-static", "arm64"),
        ("/usr/bin/qemu-aarch64", "arm64"),
        ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "arm64"),
        ("/usr/bin/qemu-arm-static", "arm"),
        ("/usr/bin/qemu-x86_64", "amd64"),
        ("/usr/bin/qemu-i386-static", "386"),
        ("/usr/bin/qemu-s390x-static", "s390x"),
        ("/usr/bin/qemu-mips64el-static", "mips64le"),
        ("/mnt/lima-rosetta/rosetta", "amd64"),
        ("/usr/bin/qemu-armeb-static", None),
        ("/usr/bin/wine", None),
    ],
)
def test_architecture_from_interpreter_name(interpreter: str, arch: str | None) -> None:
    # No magic readable as ELF (an extension handler), so the interpreter's name decides.
    text = f"enabled\ninterpreter {interpreter}\nflags: F\nextension .bin\n"
    handler = parse_handler("h", text)
    assert handler.extension == "bin"
    assert handler.architecture == arch


def test_masked_e_machine_falls_back_to_interpreter_name() -> None:
    magic = elf_magic(ARM64)[0].hex()
    text = (
        "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: F\noffset 0\n"
        f"magic {magic}\nmask ffffffffffffff0000fffffffffffffffeff0000\n"
    )
    assert parse_handler("h", text).architecture == "riscv64"


def test_mount_point_with_escaped_space_and_mount_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "binfmt misc"
    shutil.copytree(DATA / "harness-f", root)
    mounts = tmp_path / "mounts"
    escaped = str(root).replace(" ", "\\040")
    mounts.write_text(f"binfmt_misc {escaped} binfmt_misc rw,relatime 0 0\n")
    assert read_binfmt(root, mounts).can_run(ARM64)
    # Mounted somewhere else only: the same kernel instance is read there.
    state = read_binfmt(tmp_path / "not-here", mounts)
    assert state.mount_point == str(root) and state.can_run(ARM64)


def test_snapshot_compares_exact_state(tmp_path: Path) -> None:
    root, mounts = _tree(tmp_path, "harness-f")
    before = snapshot_binfmt(root, mounts)
    assert before == snapshot_binfmt(root, mounts)
    assert before.mount_point == str(root) and before.status == "enabled\n"
    (root / "qemu-aarch64").write_text((DATA / "disabled-handler" / "qemu-aarch64").read_text())
    assert snapshot_binfmt(root, mounts) != before
    unmounted = snapshot_binfmt(*_tree(tmp_path / "u", None, mounted=False))
    assert unmounted == platforms.BinfmtSnapshot(None, None, ())


# --- expected outcome -------------------------------------------------------------------------


def _state(case: str | None, tmp_path: Path) -> EmulationState:
    return read_binfmt(*_tree(tmp_path / (case or "none"), case, mounted=case is not None))


NOTHING = None  # binfmt_misc not mounted (this project's machines as they boot)

TRUTH_TABLE = [
    # image, node, binfmt tree, expected
    (AMD64, AMD64, NOTHING, Expectation.NATIVE),
    (ARM64, ARM64, NOTHING, Expectation.NATIVE),
    (ARM64, AMD64, NOTHING, Expectation.EXEC_FORMAT_ERROR),  # the seed incident
    (ARM64, AMD64, "harness-f", Expectation.EMULATED),  # emulation masks the incident
    (ARM64, AMD64, "debian-qemu-user-static", Expectation.EMULATED),
    (ARM64, AMD64, "no-fix-binary", Expectation.INTERPRETER_MISSING),
    (ARM64, AMD64, "disabled-handler", Expectation.EXEC_FORMAT_ERROR),
    (ARM64, AMD64, "globally-disabled", Expectation.EXEC_FORMAT_ERROR),
    (ARM64, AMD64, "unknown-interpreter", Expectation.INTERPRETER_MISSING),  # mystery, no F
    (AMD64, ARM64, NOTHING, Expectation.EXEC_FORMAT_ERROR),
    (AMD64, ARM64, "unknown-interpreter", Expectation.EMULATED),  # rosetta
    (AMD64, AMD64, "unknown-interpreter", Expectation.EMULATED),  # handlers come first
    (I386, AMD64, NOTHING, Expectation.NATIVE),
    (AMD64, I386, NOTHING, Expectation.EXEC_FORMAT_ERROR),
    (ARMV7, ARM64, NOTHING, Expectation.EXEC_FORMAT_ERROR),  # unless aarch32=True
    (ARMV7, ARM64, "debian-qemu-user-static", Expectation.EMULATED),
    (ARMV7, AMD64, "harness-f", Expectation.EXEC_FORMAT_ERROR),  # aarch64 is not arm
    (ARMV6, ARMV7, NOTHING, Expectation.NATIVE),
    (ARMV7, ARMV6, NOTHING, Expectation.NATIVE),  # same e_machine; may die with SIGILL
    (ARM64, ARMV7, NOTHING, Expectation.EXEC_FORMAT_ERROR),
    (S390X, AMD64, "debian-qemu-user-static", Expectation.EXEC_FORMAT_ERROR),
]


@pytest.mark.parametrize(("image", "node", "case", "expected"), TRUTH_TABLE)
def test_expected_outcome(
    tmp_path: Path, image: Platform, node: Platform, case: str | None, expected: Expectation
) -> None:
    state = _state(case, tmp_path)
    assert expected_outcome(image, node, state) is expected
    line = explain(image, node, state)
    assert "\n" not in line and line.startswith(f"{image} image on {node} node: ")


def test_arm_on_arm64_is_native_only_when_the_caller_knows_aarch32(tmp_path: Path) -> None:
    state = _state(NOTHING, tmp_path)
    assert expected_outcome(ARMV7, ARM64, state, aarch32=True) is Expectation.NATIVE
    assert "aarch32=True" in explain(ARMV7, ARM64, state)


def test_386_handler_takes_over_from_native_compat_mode() -> None:
    magic, mask = elf_magic(I386)
    handler = BinfmtHandler("qemu-i386", True, "/usr/bin/qemu-i386-static", "F", 0, magic, mask, None, "386")
    state = EmulationState(True, True, (handler,), KERNEL_ROOT)
    assert expected_outcome(I386, AMD64, state) is Expectation.EMULATED


def test_non_linux_platforms_are_refused() -> None:
    windows = Platform("windows", "amd64")
    with pytest.raises(PlatformError, match="windows/amd64"):
        expected_outcome(windows, AMD64, EmulationState(False, False))


def test_explain_lines(tmp_path: Path) -> None:
    mounted_empty = EmulationState(True, True, (), KERNEL_ROOT)
    assert explain(ARM64, AMD64, mounted_empty) == (
        "linux/arm64 image on linux/amd64 node: no binfmt_misc handler for aarch64, "
        "so exec fails with 'exec format error'"
    )
    assert "not mounted" in explain(ARM64, AMD64, _state(NOTHING, tmp_path))
    assert "'qemu-aarch64' for aarch64 is disabled" in explain(ARM64, AMD64, _state("disabled-handler", tmp_path))
    assert "status file says 'disabled'" in explain(ARM64, AMD64, _state("globally-disabled", tmp_path))
    emulated = explain(ARM64, AMD64, _state("harness-f", tmp_path))
    assert "/usr/bin/qemu-aarch64-static (flag F)" in emulated and "emulation" in emulated
    missing = explain(ARM64, AMD64, _state("no-fix-binary", tmp_path))
    assert "lacks the F flag" in missing and "'no such file or directory'" in missing
    assert explain(AMD64, AMD64, mounted_empty).endswith("same architecture, runs natively")
    assert "SIGILL" in explain(ARMV7, ARMV6, mounted_empty)
    assert "SIGILL" not in explain(ARMV6, ARMV7, mounted_empty)
    assert "runs 386 code natively" in explain(I386, AMD64, mounted_empty)


# --- emulation_registered against a simulated kernel -----------------------------------------


class FakeKernel:
    """binfmt_misc's control files as the kernel behaves (as measured; see the module docs)."""

    def __init__(self, tmp_path: Path, case: str | None) -> None:
        self.root, self.mounts = _tree(tmp_path, case, mounted=case is not None)
        self.writes: list[tuple[str, str]] = []
        self.mount_calls = 0

    def mount(self, root: Path) -> None:
        assert root == self.root
        self.mount_calls += 1
        (root / "status").write_text("enabled\n")
        (root / "register").write_text("")
        line = f"binfmt_misc {root} binfmt_misc rw,relatime 0 0\n"
        self.mounts.write_text(self.mounts.read_text() + line)

    def umount(self, root: Path) -> None:
        for path in root.iterdir():  # unmounting drops every handler
            path.unlink()
        kept = [line for line in self.mounts.read_text().splitlines() if "binfmt_misc " not in line]
        self.mounts.write_text("".join(f"{line}\n" for line in kept))

    def write(self, path: Path, data: str) -> None:
        self.writes.append((path.name, data))
        if path.name == "register":
            _, name, _, offset, magic, mask, interpreter, flags = data.split(":")
            if (self.root / name).exists():
                raise HarnessError(f"writing to {path} failed: File exists")
            (self.root / name).write_text(
                f"enabled\ninterpreter {interpreter}\nflags: {flags}\noffset {offset or 0}\n"
                f"magic {_unescape(magic).hex()}\nmask {_unescape(mask).hex()}\n"
            )
        elif path.name == "status":
            path.write_text("enabled\n" if data == "1" else "disabled\n")
        elif data == "-1":
            path.unlink()
        else:
            lines = path.read_text().splitlines(keepends=True)
            path.write_text(("enabled\n" if data == "1" else "disabled\n") + "".join(lines[1:]))


@pytest.fixture
def qemu(tmp_path: Path) -> Path:
    binary = tmp_path / "qemu-aarch64-static"
    binary.write_text("")
    return binary


KernelFactory = Callable[[str | None], FakeKernel]


@pytest.fixture
def kernel_factory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> KernelFactory:
    """Make a FakeKernel from a recorded tree and point the module's kernel calls at it."""

    def make(case: str | None) -> FakeKernel:
        kernel = FakeKernel(tmp_path / "kernel", case)
        monkeypatch.setattr(platforms, "_require_root", lambda: None)
        monkeypatch.setattr(platforms, "host_platform", lambda: AMD64)
        monkeypatch.setattr(platforms, "_mount", kernel.mount)
        monkeypatch.setattr(platforms, "_umount", kernel.umount)
        monkeypatch.setattr(platforms, "_kernel_write", kernel.write)
        return kernel

    return make


def test_registers_on_an_unmounted_kernel_and_restores(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory(None)
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts) as state:
        assert state.can_run_in_containers(ARM64)
        handler = state.handler_for(ARM64)
        assert handler is not None and handler.interpreter == str(qemu)
        assert expected_outcome(ARM64, AMD64, state) is Expectation.EMULATED
    assert kernel.mount_calls == 1
    assert kernel.writes == [
        ("register", register_line("qemu-aarch64", ARM64, qemu, "F")),
        ("qemu-aarch64", "-1"),
    ]
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


def test_leaves_other_handlers_alone(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory("unknown-interpreter")  # mystery: arm64 without F
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts) as state:
        assert {h.name for h in state.handlers} == {"mystery", "rosetta", "qemu-aarch64"}
        assert state.can_run_in_containers(ARM64)
    assert kernel.mount_calls == 0
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


def test_existing_usable_handler_is_not_registered_twice(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory("debian-qemu-user-static")
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts) as state:
        assert state.can_run_in_containers(ARM64)
    assert kernel.writes == []
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


@pytest.mark.parametrize("case", ["disabled-handler", "no-fix-binary"])
def test_existing_unusable_handler_is_left_untouched_and_reported(
    kernel_factory: KernelFactory, qemu: Path, case: str
) -> None:
    kernel = kernel_factory(case)
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with (
        pytest.raises(HarnessError, match="left untouched"),
        emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts),
    ):
        pytest.fail("must not yield")
    assert kernel.writes == []
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


def test_globally_disabled_is_enabled_then_disabled_again(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory("globally-disabled")
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts) as state:
        assert state.enabled and state.can_run_in_containers(ARM64)
    assert kernel.writes == [("status", "1"), ("status", "0")]
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


def test_restores_when_the_body_fails(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory(None)
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with (
        pytest.raises(RuntimeError, match="boom"),
        emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts),
    ):
        raise RuntimeError("boom")
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before


def test_without_fix_binary(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory(None)
    with emulation_registered(ARM64, qemu, fix_binary=False, root=kernel.root, mounts=kernel.mounts) as state:
        assert state.can_run(ARM64) and not state.can_run_in_containers(ARM64)
        assert expected_outcome(ARM64, AMD64, state) is Expectation.INTERPRETER_MISSING
    assert kernel.writes[0] == ("register", register_line("qemu-aarch64", ARM64, qemu, ""))


def test_missing_qemu_says_how_to_install_it(kernel_factory: KernelFactory, tmp_path: Path) -> None:
    kernel = kernel_factory(None)
    with (
        pytest.raises(HarnessError) as caught,
        emulation_registered(ARM64, tmp_path / "absent", root=kernel.root, mounts=kernel.mounts),
    ):
        pass
    assert "apt-get install qemu-user-static" in caught.value.remedy
    assert kernel.writes == [] and kernel.mount_calls == 0


def test_refuses_the_host_architecture(kernel_factory: KernelFactory, qemu: Path) -> None:
    kernel = kernel_factory(None)
    with (
        pytest.raises(HarnessError, match="own architecture"),
        emulation_registered(AMD64, qemu, root=kernel.root, mounts=kernel.mounts),
    ):
        pass


def test_needs_root(monkeypatch: pytest.MonkeyPatch, qemu: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError, match="needs root"), emulation_registered(ARM64, qemu):
        pass
