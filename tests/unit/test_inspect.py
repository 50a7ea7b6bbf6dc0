"""harness.inspect, harness.layers and harness.elf on small images the tests write themselves.

No emulator and no engine: OCI layouts and `docker save` archives are written here (tarfile,
json, sha256); binaries are hand-made ELF headers or Debian's static busybox (fetched with the
private apt state of hermetic.images.debimage, cached; those tests skip when Debian's mirror
cannot be reached).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from imagebuild import (
    INTERPRETERS,
    F,
    Spec,
    attestation_for,
    busybox_binary,
    directory,
    docker_archive,
    elf_header,
    image_config,
    layer_tar,
    link,
    oci_layout,
)

from harness import elf, inspect, layers
from harness.cli import main
from harness.errors import HarnessError
from harness.inspect import Expected, FileKind, Process
from harness.platforms import BinfmtHandler, EmulationState, Platform, elf_magic, parse_platform

AMD64 = parse_platform("linux/amd64")
ARM64 = parse_platform("linux/arm64")
NONE = EmulationState(mounted=False, enabled=False)


def dynamic_rootfs(arch: str, extra: list[F] | None = None) -> list[F]:
    """A merged-/usr root with a dynamic ELF /usr/bin/app and its ELF interpreter."""
    interp = INTERPRETERS[arch]
    return [
        directory("usr"),
        directory("usr/bin"),
        directory("usr/lib"),
        link("bin", "usr/bin"),
        link("lib", "usr/lib"),
        directory("lib64") if arch == "amd64" else directory("usr/lib/aarch64-linux-gnu"),
        F(interp.lstrip("/"), elf_header(arch, elf_type=elf.ET_DYN)),
        F("usr/bin/app", elf_header(arch, interpreter=interp)),
        *(extra or []),
    ]


def single(tmp_path: Path, config: dict[str, Any], *layer_entries: list[F], name: str = "img") -> str:
    dest = tmp_path / name
    oci_layout(dest, [Spec(config, [layer_tar(e) for e in layer_entries])], index=False)
    return str(dest)


def facts_of(target: str, process: Process | None = None) -> inspect.ImageFacts:
    (facts,) = inspect.inspect(target, process)
    return facts


def only(target: str, process: Process | None = None) -> inspect.ManifestFacts:
    (m,) = facts_of(target, process).manifests
    return m


def kinds(m: inspect.ManifestFacts) -> list[FileKind]:
    assert m.entrypoint is not None
    return [h.kind for h in m.entrypoint.hops]


def verdict(target: str, node: Platform = AMD64, emulation: EmulationState = NONE) -> inspect.Prediction:
    return inspect.predict(facts_of(target), node, emulation)


# ---------------------------------------------------------------------------------------------
# ELF headers


@pytest.mark.parametrize(
    ("arch", "machine_name", "bits", "endianness"),
    [
        ("amd64", "x86-64", 64, "little"),
        ("arm64", "AArch64", 64, "little"),
        ("arm", "ARM", 32, "little"),
        ("386", "Intel 80386", 32, "little"),
        ("s390x", "IBM S/390", 64, "big"),
        ("ppc64le", "PowerPC64", 64, "little"),
        ("riscv64", "RISC-V", 64, "little"),
    ],
)
def test_elf_identification(arch: str, machine_name: str, bits: int, endianness: str) -> None:
    info = elf.parse(elf_header(arch))
    assert (info.architecture, info.machine_name, info.bits, info.endianness) == (arch, machine_name, bits, endianness)
    assert info.linking == "static" and info.interpreter is None and info.executable


@pytest.mark.parametrize("bits", [64, 32])
def test_elf_pt_interp_is_read_for_both_classes(bits: int) -> None:
    arch = "amd64" if bits == 64 else "386"
    info = elf.parse(elf_header(arch, interpreter="/lib/ld-musl-x86_64.so.1"))
    assert info.interpreter == "/lib/ld-musl-x86_64.so.1" and info.linking == "dynamic"
    assert "dynamic, interpreter /lib/ld-musl-x86_64.so.1" in info.describe()


def test_elf_big_endian_ppc64_is_not_ppc64le() -> None:
    assert elf.parse(elf_header("ppc64le", big_endian=True)).architecture == "ppc64"


def test_elf_header_matches_the_binfmt_magic_of_platforms() -> None:
    """The ELF header written here is what platforms.elf_magic says the kernel matches."""
    for arch in ("amd64", "arm64", "arm", "s390x"):
        magic, mask = elf_magic(parse_platform(arch))
        head = elf_header(arch)[: len(magic)]
        assert bytes(h & m for h, m in zip(head, mask, strict=True)) == bytes(
            a & m for a, m in zip(magic, mask, strict=True)
        )


@pytest.mark.parametrize(
    ("head", "message"),
    [(b"\x7fELF\x02\x01", "cut short"), (b"\x7fELF\x07\x01\x01" + bytes(60), "EI_CLASS"), (b"#!/bin/sh", "magic")],
)
def test_elf_damaged_headers(head: bytes, message: str) -> None:
    with pytest.raises(elf.ElfFormatError, match=message):
        elf.parse(head)


def test_elf_relocatable_object_is_not_executable() -> None:
    assert not elf.parse(elf_header("amd64", elf_type=elf.ET_REL)).executable


# ---------------------------------------------------------------------------------------------
# The root file system: symlinks, whiteouts, hard links


def rootfs(*layer_entries: list[F]) -> layers.RootFS:
    stored = [layer_tar(e) for e in layer_entries]
    return layers.read_rootfs(
        [layers.Layer(f"layer{i}", "", None, _opener(data)) for i, data in enumerate(stored)], "test image"
    )


def _opener(data: bytes) -> layers.Opener:
    from contextlib import contextmanager

    @contextmanager
    def opener() -> Any:
        yield io.BytesIO(data)

    return opener


def test_symlinks_absolute_relative_chained_and_in_directories() -> None:
    fs = rootfs(
        [
            directory("usr/bin"),
            link("bin", "usr/bin"),
            F("usr/bin/real", b"#!/bin/sh\n"),
            link("usr/bin/rel", "real"),
            link("usr/bin/abs", "/usr/bin/rel"),
            link("opt/up", "../bin/abs"),
        ]
    )
    resolution = fs.resolve("/opt/up")
    assert resolution.error is None and resolution.path == "/usr/bin/real"
    assert resolution.links == (
        "/opt/up -> ../bin/abs",
        "/bin -> usr/bin",
        "/usr/bin/abs -> /usr/bin/rel",
        "/usr/bin/rel -> real",
    )
    assert fs.resolve("/bin/real").path == "/usr/bin/real"
    assert fs.resolve("/../../bin/real").path == "/usr/bin/real", ".. stops at the image's root"


def test_symlink_loop_is_bounded() -> None:
    fs = rootfs([link("a", "b"), link("b", "/a")])
    resolution = fs.resolve("/a")
    assert resolution.error == "loop" and len(resolution.links) == layers.MAX_SYMLINKS


def test_missing_and_not_a_directory() -> None:
    fs = rootfs([F("etc/file", b"x", 0o644)])
    assert fs.resolve("/usr/bin/x").error == "missing"
    assert fs.resolve("/etc/file/x").error == "not a directory"


def test_whiteout_removes_a_lower_file_and_a_later_layer_brings_it_back() -> None:
    lower = [F("usr/bin/tool", elf_header("amd64")), F("usr/bin/keep", elf_header("amd64"))]
    fs = rootfs(lower, [F("usr/bin/.wh.tool", b"", 0o644)])
    assert fs.lookup("usr/bin/tool") is None and fs.lookup("usr/bin/keep") is not None
    fs = rootfs(lower, [F("usr/bin/.wh.tool", b"", 0o644)], [F("usr/bin/tool", b"#!/bin/sh\n")])
    entry = fs.lookup("usr/bin/tool")
    assert entry is not None and entry.layer == 2 and entry.head == b"#!/bin/sh\n"


def test_whiteout_of_a_directory_removes_its_subtree() -> None:
    fs = rootfs([F("opt/app/bin/run", b"x")], [F("opt/.wh.app", b"", 0o644)])
    assert fs.lookup("opt/app") is None and fs.lookup("opt/app/bin/run") is None and fs.lookup("opt") is not None


def test_opaque_directory_hides_lower_entries_but_keeps_its_own_layer() -> None:
    lower = [F("app/old", b"x"), F("app/sub/deep", b"x")]
    upper = [F("app/new", b"y"), F("app/.wh..wh..opq", b"", 0o644)]  # marker after the entry: order is irrelevant
    fs = rootfs(lower, upper)
    assert fs.lookup("app/old") is None and fs.lookup("app/sub/deep") is None
    assert fs.lookup("app/new") is not None


def test_a_file_replacing_a_directory_hides_its_children() -> None:
    fs = rootfs([F("srv/app/main", b"x")], [F("srv/app", b"file now", 0o644)])
    assert fs.lookup("srv/app/main") is None
    entry = fs.lookup("srv/app")
    assert entry is not None and entry.kind == "file"


def test_hard_link_takes_its_targets_bytes() -> None:
    fs = rootfs([F("usr/bin/busybox", elf_header("arm64")), F("usr/bin/sh", kind="hardlink", target="usr/bin/busybox")])
    entry = fs.lookup("usr/bin/sh")
    assert entry is not None and entry.head is not None and elf.parse(entry.head).architecture == "arm64"


# ---------------------------------------------------------------------------------------------
# Entrypoints


def test_dynamic_elf_found_through_path_with_its_interpreter(tmp_path: Path) -> None:
    m = only(single(tmp_path, image_config("amd64", cmd=["app", "--serve"]), dynamic_rootfs("amd64")))
    assert m.entrypoint is not None and m.entrypoint.argv == ("app", "--serve") and m.entrypoint.source == "CMD"
    main_hop, interp = m.entrypoint.hops
    assert main_hop.kind is FileKind.ELF and main_hop.path == "/usr/bin/app"
    assert main_hop.resolved == "/usr/bin/app"
    assert interp.via == "PT_INTERP of /usr/bin/app" and interp.kind is FileKind.ELF
    assert interp.resolved == "/lib64/ld-linux-x86-64.so.2"
    assert m.agreement == "agree"
    assert verdict(single(tmp_path, image_config("amd64", cmd=["app"]), dynamic_rootfs("amd64"), name="b")).outcome is (
        Expected.RUNS
    )


def test_path_lookup_skips_a_non_executable_file_as_runc_does(tmp_path: Path) -> None:
    entries = [
        F("usr/local/bin/app", b"#!/bin/sh\n", 0o644),
        F("usr/bin/app", elf_header("amd64")),
    ]
    m = only(single(tmp_path, image_config("amd64", entrypoint=["app"]), entries))
    assert m.entrypoint is not None and m.entrypoint.hops[0].resolved == "/usr/bin/app"


def test_not_in_path(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64", entrypoint=["uvicorn"]), [F("usr/bin/other", elf_header("amd64"))])
    m = only(target)
    assert kinds(m) == [FileKind.NOT_IN_PATH]
    p = verdict(target)
    assert p.outcome is Expected.NO_SUCH_FILE and "executable file not found in $PATH" in p.reason


def test_mislabeled_image_amd64_bytes_under_an_arm64_label(tmp_path: Path) -> None:
    config = image_config("arm64", entrypoint=["/usr/bin/app"])
    target = single(tmp_path, config, dynamic_rootfs("amd64"))
    m = only(target)
    assert m.label == "linux/arm64" and m.agreement == "disagree"
    assert "label linux/arm64, but /usr/bin/app is an ELF for amd64" in m.agreement_detail
    on_arm = verdict(target, ARM64)
    assert on_arm.outcome is Expected.EXEC_FORMAT_ERROR
    assert "ELF for amd64 (x86-64) (the image is labelled linux/arm64)" in on_arm.reason
    assert verdict(target, AMD64).outcome is Expected.RUNS, "the bytes decide, not the label"


def test_script_without_shebang_is_exec_format_error(tmp_path: Path) -> None:
    entries = [F("app/entrypoint.sh", b"echo hello\nexec app\n")]
    target = single(tmp_path, image_config("amd64", entrypoint=["/app/entrypoint.sh"]), entries)
    assert kinds(only(target)) == [FileKind.NO_MAGIC]
    p = verdict(target)
    assert p.outcome is Expected.EXEC_FORMAT_ERROR and "no #! and no ELF magic" in p.reason


def test_empty_file_is_exec_format_error(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64", entrypoint=["/run"]), [F("run", b"")])
    assert verdict(target).outcome is Expected.EXEC_FORMAT_ERROR


def test_script_resolved_recursively_to_its_interpreter(tmp_path: Path) -> None:
    entries = dynamic_rootfs(
        "arm64",
        [
            F("usr/bin/python3.11", elf_header("arm64", interpreter=INTERPRETERS["arm64"])),
            link("usr/bin/python3", "python3.11"),
            F("usr/local/bin/uvicorn", b"#!/usr/bin/python3\nimport uvicorn\n"),
        ],
    )
    target = single(tmp_path, image_config("arm64", cmd=["/usr/local/bin/uvicorn", "app:app"]), entries)
    m = only(target)
    assert kinds(m) == [FileKind.SCRIPT, FileKind.ELF, FileKind.ELF]
    assert m.entrypoint is not None
    script, python, _ = m.entrypoint.hops
    assert script.shebang == "'#!/usr/bin/python3'" and not script.cr_in_shebang
    assert python.via == "#! of /usr/local/bin/uvicorn" and python.resolved == "/usr/bin/python3.11"
    assert python.links == ("/usr/bin/python3 -> python3.11",)
    assert m.agreement == "agree"
    p = verdict(target, AMD64)  # the seed incident: an arm64 image on amd64 nodes
    assert p.outcome is Expected.EXEC_FORMAT_ERROR and "/usr/bin/python3.11 is an ELF for arm64" in p.reason
    assert verdict(target, ARM64).outcome is Expected.RUNS


def test_crlf_shebang_is_no_such_file(tmp_path: Path) -> None:
    entries = [F("bin/sh", elf_header("amd64")), F("entrypoint.sh", b"#!/bin/sh\r\necho hi\r\n")]
    target = single(tmp_path, image_config("amd64", entrypoint=["/entrypoint.sh"]), entries)
    m = only(target)
    assert m.entrypoint is not None
    script, missing = m.entrypoint.hops
    assert script.cr_in_shebang and missing.kind is FileKind.MISSING and missing.requested == "/bin/sh\r"
    p = verdict(target)
    assert p.outcome is Expected.NO_SUCH_FILE and "CRLF line endings" in p.reason and "'/bin/sh\\r'" in p.reason


def test_env_shebang_follows_its_argument_and_a_cr_makes_env_exit(tmp_path: Path) -> None:
    interp = INTERPRETERS["amd64"]
    base = [
        F(interp.lstrip("/"), elf_header("amd64", elf_type=elf.ET_DYN)),
        F("usr/bin/env", elf_header("amd64", interpreter=interp)),
        F("usr/bin/bash", elf_header("amd64")),
    ]
    good = single(
        tmp_path, image_config("amd64", entrypoint=["/run.sh"]), [*base, F("run.sh", b"#!/usr/bin/env bash\n")]
    )
    assert kinds(only(good)) == [FileKind.SCRIPT, FileKind.ELF, FileKind.ELF, FileKind.ELF]
    assert verdict(good).outcome is Expected.RUNS
    bad = single(
        tmp_path,
        image_config("amd64", entrypoint=["/run.sh"]),
        [*base, F("run.sh", b"#!/usr/bin/env bash\r\n")],
        name="crlf",
    )
    assert kinds(only(bad)) == [FileKind.SCRIPT, FileKind.ELF, FileKind.ELF, FileKind.NOT_IN_PATH]
    p = verdict(bad)
    assert p.outcome is Expected.EXITS and "'bash\\r'" in p.reason and p.reason.startswith("/usr/bin/env cannot run")


def test_foreign_shebang_interpreter(tmp_path: Path) -> None:
    entries = [F("bin/sh", elf_header("arm64")), F("run.sh", b"#!/bin/sh\necho\n")]
    target = single(tmp_path, image_config("amd64", entrypoint=["/run.sh"]), entries)
    m = only(target)
    assert m.agreement == "disagree" and "/bin/sh is an ELF for arm64" in m.agreement_detail
    assert verdict(target).outcome is Expected.EXEC_FORMAT_ERROR


def test_missing_elf_interpreter_is_no_such_file(tmp_path: Path) -> None:
    entries = [F("app", elf_header("amd64", interpreter="/lib/ld-musl-x86_64.so.1"))]
    target = single(tmp_path, image_config("amd64", entrypoint=["/app"]), entries)
    p = verdict(target)
    assert p.outcome is Expected.NO_SUCH_FILE and "ELF interpreter /lib/ld-musl-x86_64.so.1" in p.reason


def test_elf_interpreter_for_another_machine(tmp_path: Path) -> None:
    interp = INTERPRETERS["amd64"]
    entries = [F(interp.lstrip("/"), elf_header("arm64")), F("app", elf_header("amd64", interpreter=interp))]
    target = single(tmp_path, image_config("amd64", entrypoint=["/app"]), entries)
    p = verdict(target)
    assert p.outcome is Expected.BAD_INTERPRETER and "arm64" in p.reason
    m = only(target)
    assert m.agreement == "disagree" and "ld-linux-x86-64.so.2 is an ELF for arm64" in m.agreement_detail


def test_not_executable_by_mode_bits_and_user(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64", entrypoint=["/app"]), [F("app", elf_header("amd64"), 0o644)])
    p = verdict(target)
    assert p.outcome is Expected.PERMISSION_DENIED and "mode 0644" in p.reason
    owner_only = [F("app", elf_header("amd64"), 0o700, uid=0)]
    as_root = single(tmp_path, image_config("amd64", entrypoint=["/app"]), owner_only, name="root")
    assert verdict(as_root).outcome is Expected.RUNS
    as_user = single(tmp_path, image_config("amd64", entrypoint=["/app"], user="10001:10001"), owner_only, name="u")
    assert verdict(as_user).outcome is Expected.PERMISSION_DENIED
    named = [*owner_only, F("etc/passwd", b"root:x:0:0::/root:/bin/sh\napp:x:0:0::/:/bin/sh\n", 0o644)]
    by_name = single(tmp_path, image_config("amd64", entrypoint=["/app"], user="app"), named, name="n")
    assert verdict(by_name).outcome is Expected.RUNS, "user app is uid 0 in /etc/passwd"
    nobody = single(tmp_path, image_config("amd64", entrypoint=["/app"], user="ghost"), named, name="g")
    p = verdict(nobody)
    assert p.outcome is Expected.UNKNOWN and "user 'ghost' is not in the image's /etc/passwd" in p.reason


def test_entrypoint_is_a_directory(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64", entrypoint=["/app"]), [directory("app")])
    assert verdict(target).outcome is Expected.PERMISSION_DENIED


def test_shell_form_needs_a_shell(tmp_path: Path) -> None:
    config = image_config("amd64", cmd=["/bin/sh", "-c", "exec app --port 80"])
    without = single(tmp_path, config, [F("usr/bin/app", elf_header("amd64"))])
    p = verdict(without)
    assert p.outcome is Expected.NO_SUCH_FILE and "/bin/sh" in p.reason
    with_shell = single(
        tmp_path, config, [F("bin/sh", elf_header("amd64")), F("usr/bin/app", elf_header("arm64"))], name="sh"
    )
    assert kinds(only(with_shell)) == [FileKind.ELF, FileKind.ELF]
    p = verdict(with_shell)
    assert p.outcome is Expected.EXITS and "arm64" in p.reason, "the shell starts, then cannot exec app"


def test_shell_syntax_is_unknown_never_guessed(tmp_path: Path) -> None:
    config = image_config("amd64", cmd=["/bin/sh", "-c", "app --port $PORT"])
    target = single(tmp_path, config, [F("bin/sh", elf_header("amd64"))])
    p = verdict(target)
    assert p.outcome is Expected.UNKNOWN and p.reason.startswith("unknown, because the shell command")


def test_variable_in_entrypoint_is_unknown(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64", entrypoint=["$APP_HOME/bin/app"]), [F("x", b"")])
    p = verdict(target)
    assert p.outcome is Expected.UNKNOWN and "holds a variable" in p.reason


def test_no_entrypoint_and_no_cmd_is_unknown(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("amd64"), [F("x", b"")])
    assert verdict(target).outcome is Expected.UNKNOWN


def test_container_command_and_args_override_the_image(tmp_path: Path) -> None:
    entries = [F("usr/bin/app", elf_header("amd64")), F("usr/bin/other", b"no shebang")]
    target = single(tmp_path, image_config("amd64", entrypoint=["/usr/bin/other"], cmd=["x"]), entries)
    assert verdict(target).outcome is Expected.EXEC_FORMAT_ERROR
    m = only(target, Process(command=("$(TOOL)",), args=("--flag",), env={"TOOL": "app"}))
    assert m.entrypoint is not None and m.entrypoint.argv == ("app", "--flag")
    assert m.entrypoint.source == "command + args" and kinds(m) == [FileKind.ELF]
    unknown = only(target, Process(command=("$(TOOL)",), env={"TOOL": None}))
    assert unknown.entrypoint is not None and unknown.entrypoint.unknown is not None


def test_relative_argv0_uses_the_working_directory(tmp_path: Path) -> None:
    entries = [F("srv/run", elf_header("amd64"))]
    target = single(tmp_path, image_config("amd64", entrypoint=["./run"], workdir="/srv"), entries)
    m = only(target)
    assert m.entrypoint is not None and m.entrypoint.hops[0].resolved == "/srv/run"


def test_symlinked_entrypoint_across_layers_with_a_whiteout(tmp_path: Path) -> None:
    lower = [
        F("opt/v1/app", elf_header("amd64")),
        link("usr/local/bin/app", "/opt/current/app"),
        link("opt/current", "v1"),
    ]
    upper = [F("opt/.wh.v1", b"", 0o644), F("opt/v2/app", elf_header("arm64")), link("opt/current", "v2")]
    target = single(tmp_path, image_config("amd64", entrypoint=["app"]), lower, upper)
    m = only(target)
    assert m.entrypoint is not None and m.entrypoint.hops[0].resolved == "/opt/v2/app"
    assert m.agreement == "disagree"


# ---------------------------------------------------------------------------------------------
# Sources: OCI layouts (directory and tar), docker save archives, indexes, compression


def test_docker_save_archive(tmp_path: Path) -> None:
    archive = docker_archive(
        tmp_path / "img.tar",
        image_config("arm64", variant="v8", cmd=["/usr/bin/app"]),
        [layer_tar(dynamic_rootfs("arm64"))],
    )
    facts = facts_of(str(archive))
    assert facts.origin == "docker save archive" and not facts.is_index
    (m,) = facts.manifests
    assert m.label == "linux/arm64/v8" and m.platform == ARM64 and m.agreement == "agree"


def test_oci_tarball_with_gzip_layers(tmp_path: Path) -> None:
    spec = Spec(image_config("amd64", cmd=["/usr/bin/app"]), [layer_tar(dynamic_rootfs("amd64"))], compression="gzip")
    dest = oci_layout(tmp_path / "img.oci.tar", [spec], index=False, as_tar=True)
    facts = facts_of(str(dest))
    assert facts.origin == "OCI layout (tar)" and facts.manifests[0].agreement == "agree"


def test_index_with_attestation_entry(tmp_path: Path) -> None:
    amd = Spec(image_config("amd64", cmd=["/usr/bin/app"]), [layer_tar(dynamic_rootfs("amd64"))])
    arm = Spec(image_config("arm64", cmd=["/usr/bin/app"]), [layer_tar(dynamic_rootfs("arm64"))])
    dest = oci_layout(tmp_path / "idx", [amd, arm, attestation_for(amd)], ref="v1")
    facts = facts_of(str(dest))
    assert facts.is_index and [m.role for m in facts.manifests] == ["image", "image", "attestation"]
    assert facts.manifests[2].label == "unknown/unknown" and facts.manifests[2].entrypoint is None
    assert inspect.predict(facts, AMD64, NONE).manifest == "linux/amd64"
    assert inspect.predict(facts, ARM64, NONE).outcome is Expected.RUNS
    riscv = inspect.predict(facts, parse_platform("linux/riscv64"), NONE)
    assert riscv.outcome is Expected.CANNOT_PULL
    assert (
        riscv.reason == "the index has entries for linux/amd64, linux/arm64 (and 1 attestation), none for linux/riscv64"
    )
    text = inspect.render([facts], [riscv])
    assert "attestation manifest for sha256:" in text and "CANNOT BE PULLED FOR THIS PLATFORM" in text


def test_index_without_the_nodes_platform_cannot_be_pulled(tmp_path: Path) -> None:
    arm = Spec(image_config("arm64", cmd=["/usr/bin/app"]), [layer_tar(dynamic_rootfs("arm64"))])
    dest = oci_layout(tmp_path / "idx", [arm, attestation_for(arm)])
    p = inspect.predict(facts_of(str(dest)), AMD64, NONE)
    assert p.outcome is Expected.CANNOT_PULL


def test_index_entry_selection_uses_the_descriptor_and_containerd_fallbacks(tmp_path: Path) -> None:
    i386 = Spec(image_config("386", cmd=["/app"]), [layer_tar([F("app", elf_header("386"))])])
    dest = oci_layout(tmp_path / "idx", [i386])
    p = inspect.predict(facts_of(str(dest)), AMD64, NONE)
    assert p.outcome is Expected.RUNS and p.manifest == "linux/386", "amd64 nodes take 386 entries, run natively"


def test_index_entry_and_config_disagree(tmp_path: Path) -> None:
    spec = Spec(
        image_config("amd64", cmd=["/app"]),
        [layer_tar([F("app", elf_header("amd64"))])],
        platform={"os": "linux", "architecture": "arm64"},
    )
    (m,) = facts_of(str(oci_layout(tmp_path / "idx", [spec]))).manifests
    assert m.agreement == "disagree" and "index entry says linux/arm64" in m.agreement_detail


def test_zstd_layer_without_zstandard_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("harness.layers")
    try:
        import zstandard  # type: ignore[import-not-found]  # noqa: F401

        pytest.skip("zstandard is installed: the layer would be read")
    except ImportError:
        pass
    spec = Spec(
        image_config("amd64", cmd=["/app"]), [layer_tar([F("app", elf_header("amd64"))])], compression="zstd-fake"
    )
    dest = oci_layout(tmp_path / "z", [spec], index=False)
    with pytest.raises(layers.ImageUnreadable, match="zstd-compressed, which this Python cannot read"):
        inspect.inspect(str(dest))


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line naming it


def test_truncated_layer_is_named(tmp_path: Path) -> None:
    layer = layer_tar([F("app", elf_header("amd64") + bytes(20000))])
    spec = Spec(image_config("amd64", cmd=["/app"]), [layer])
    dest = oci_layout(tmp_path / "t", [spec], index=False)
    blob = next(p for p in (dest / "blobs" / "sha256").iterdir() if p.stat().st_size == len(layer))
    blob.write_bytes(layer[:9000])
    with pytest.raises(layers.ImageUnreadable) as caught:
        inspect.inspect(str(dest))
    assert f"layer sha256:{blob.name}" in caught.value.cause and "truncated or corrupt" in caught.value.cause


def test_truncated_gzip_layer_is_named(tmp_path: Path) -> None:
    layer = layer_tar([F("app", elf_header("amd64") + bytes(20000))])
    spec = Spec(image_config("amd64", cmd=["/app"]), [layer], compression="gzip")
    dest = oci_layout(tmp_path / "t", [spec], index=False)
    stored = gzip.compress(layer, mtime=0)
    blob = next(p for p in (dest / "blobs" / "sha256").iterdir() if p.stat().st_size == len(stored))
    blob.write_bytes(stored[: len(stored) // 2])
    with pytest.raises(layers.ImageUnreadable, match="truncated or corrupt"):
        inspect.inspect(str(dest))


def test_unreadable_archive(tmp_path: Path) -> None:
    bad = tmp_path / "image.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(layers.ImageUnreadable, match="not a readable tar archive"):
        inspect.inspect(str(bad))
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(layers.ImageUnreadable, match=r"neither index\.json nor manifest\.json"):
        inspect.inspect(str(other))


def test_missing_image_and_registry_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "engine_inspect", lambda ref: None)
    with pytest.raises(layers.ImageNotFound, match=r"image orders-api:nope is not in the local engine"):
        inspect.inspect("orders-api:nope")
    # A registry reference the engine does not hold is read from its registry: one that does not answer is named.
    with pytest.raises(
        layers.ImageUnreadable, match=r"127\.0\.0\.1:9/orders-api: the registry at http://127\.0\.0\.1:9"
    ):
        inspect.inspect("127.0.0.1:9/orders-api:abc")
    with pytest.raises(layers.ImageUnreadable, match="does not answer"):
        inspect.inspect("registry://localhost:9/busybox:1.36")
    with pytest.raises(layers.RegistryNotSupported, match="oci://"):
        inspect.inspect("oci://busybox:1.36")
    with pytest.raises(layers.ImageNotFound, match="no such file"):
        inspect.inspect("./missing/layout")


def test_bad_input_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(layers, "engine_inspect", lambda ref: None)
    assert main(["inspect", "orders-api:nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: image orders-api:nope is not in the local engine (docker image ls) and is not a file"
    assert err[1].strip().startswith("what to do:")


def test_errors_are_harness_errors() -> None:
    for cls in (layers.ImageNotFound, layers.ImageUnreadable, layers.RegistryNotSupported, inspect.InspectError):
        assert issubclass(cls, HarnessError)


# ---------------------------------------------------------------------------------------------
# Emulation and the prediction


def _emulation(arch: str, flags: str) -> EmulationState:
    magic, mask = elf_magic(parse_platform(arch))
    handler = BinfmtHandler(f"qemu-{arch}", True, f"/usr/bin/qemu-{arch}-static", flags, 0, magic, mask, None, arch)
    return EmulationState(mounted=True, enabled=True, handlers=(handler,))


def test_prediction_with_emulation(tmp_path: Path) -> None:
    target = single(tmp_path, image_config("arm64", entrypoint=["/app"]), [F("app", elf_header("arm64"))])
    assert verdict(target, AMD64, _emulation("arm64", "F")).outcome is Expected.RUNS_EMULATED
    p = verdict(target, AMD64, _emulation("arm64", ""))
    assert p.outcome is Expected.NO_SUCH_FILE and "lacks the F flag" in p.reason


# ---------------------------------------------------------------------------------------------
# The command: table, JSON, the CI gate, --manifest


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = single(tmp_path, image_config("arm64", entrypoint=["/usr/bin/app"]), dynamic_rootfs("amd64"))
    assert main(["inspect", target]) == 0
    out = capsys.readouterr().out
    assert "label linux/arm64" in out and "label vs bytes  DISAGREE" in out
    assert main(["inspect", "--json", target]) == 0
    data = json.loads(capsys.readouterr().out)
    (m,) = data["images"][0]["manifests"]
    assert m["agreement"] == "disagree" and m["entrypoint"]["hops"][0]["elf"]["architecture"] == "amd64"


def test_gate_fails_the_seed_laptop_build_and_passes_the_ci_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def service(arch: str, name: str) -> str:
        entries = dynamic_rootfs(
            arch,
            [
                F("usr/local/bin/python3", elf_header(arch, interpreter=INTERPRETERS[arch])),
                F("usr/local/bin/uvicorn", b"#!/usr/local/bin/python3\n"),
            ],
        )
        config = image_config(arch, cmd=["/usr/local/bin/uvicorn", "app.main:app"], user="10001:10001")
        return single(tmp_path, config, entries, name=name)

    laptop, ci = service("arm64", "laptop"), service("amd64", "ci")
    assert main(["inspect", "--require-platform", "linux/amd64", laptop]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(
        f"inspect: {laptop}: exec format error on linux/amd64: /usr/local/bin/python3 is an ELF for arm64"
    )
    assert err[-1] == "inspect: 1 problem(s): not releasable for linux/amd64"
    assert main(["inspect", "--require-platform", "linux/amd64", ci]) == 0
    assert capsys.readouterr().err.strip() == "inspect: every entrypoint runs natively on linux/amd64"


def test_gate_fails_a_mislabeled_image_even_where_its_bytes_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = single(tmp_path, image_config("arm64", entrypoint=["/usr/bin/app"]), dynamic_rootfs("amd64"))
    assert main(["inspect", "--require-platform", "linux/amd64", target]) == 1
    (line, _) = capsys.readouterr().err.splitlines()
    assert "label and bytes disagree: label linux/arm64, but /usr/bin/app is an ELF for amd64" in line


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders-api}
spec:
  template:
    spec:
      securityContext: {runAsUser: 10001}
      initContainers:
        - name: migrate
          image: registry.example.com/orders-api:${GIT_SHA}
          command: ["/usr/bin/app", "migrate"]
      containers:
        - name: orders-api
          image: registry.example.com/orders-api:${GIT_SHA}
        - name: sidecar
          image: registry.example.com/sidecar:1.0
---
apiVersion: v1
kind: Service
metadata: {name: orders-api}
"""


def test_manifest_containers_and_pairing(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yaml"
    path.write_text(MANIFEST)
    containers = inspect.manifest_containers(path, {"GIT_SHA": "abc123"})
    assert [(c.name, c.init, c.image) for c in containers] == [
        ("migrate", True, "registry.example.com/orders-api:abc123"),
        ("orders-api", False, "registry.example.com/orders-api:abc123"),
        ("sidecar", False, "registry.example.com/sidecar:1.0"),
    ]
    assert containers[0].process.command == ("/usr/bin/app", "migrate") and containers[0].process.run_as_user == 10001
    targets, problems = inspect.pair_targets(["registry.example.com/orders-api:abc123", "other:1"], containers, path)
    assert [t.image for t in targets] == ["registry.example.com/orders-api:abc123"] * 2
    assert problems == [
        "Deployment/orders-api container sidecar: image registry.example.com/sidecar:1.0 is none of the images given, so it was not checked",
        f"other:1: no container in {path} uses this image (its repository is other)",
    ]
    unset = inspect.manifest_containers(path, {})
    assert unset[1].image == "registry.example.com/orders-api:${GIT_SHA}"
    targets, _ = inspect.pair_targets(["registry.example.com/orders-api:local"], unset, path)
    assert len(targets) == 2, "same repository, tag ignored while ${GIT_SHA} is unset"
    _, problems = inspect.pair_targets(["registry.example.com/orders-api:other"], containers, path)
    assert problems[0].startswith(
        "Deployment/orders-api init container migrate: image registry.example.com/orders-api:abc123 is none"
    )


def test_gate_with_manifest_checks_every_container(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deployment.yaml"
    path.write_text(MANIFEST.split("        - name: sidecar")[0])
    image = single(tmp_path, image_config("amd64", cmd=["/usr/bin/app"]), dynamic_rootfs("amd64"))
    # The layout's path stands for the image: pair by giving the manifest's image as the argument.
    containers = inspect.manifest_containers(path, {"GIT_SHA": "x"})
    all_facts = [f for c in containers for f in inspect.inspect(image, c.process, c.name)]
    assert inspect.gate_problems(all_facts, AMD64) == []
    bad = path.read_text().replace('command: ["/usr/bin/app", "migrate"]', 'command: ["/usr/bin/missing"]')
    path.write_text(bad)
    containers = inspect.manifest_containers(path, {"GIT_SHA": "x"})
    all_facts = [f for c in containers for f in inspect.inspect(image, c.process, c.name)]
    (problem,) = inspect.gate_problems(all_facts, AMD64)
    assert problem.startswith(f"{image} (container migrate): no such file or directory on linux/amd64")


def test_manifest_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--manifest", str(tmp_path / "nope.yaml")]) == 2
    assert "--manifest" in capsys.readouterr().err
    empty = tmp_path / "svc.yaml"
    empty.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    assert main(["inspect", "--manifest", str(empty)]) == 2
    assert "holds no workload with containers" in capsys.readouterr().err


def test_bad_platform_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = single(tmp_path, image_config("amd64", cmd=["/usr/bin/app"]), dynamic_rootfs("amd64"))
    assert main(["inspect", "--require-platform", "linux/vax", target]) == 2
    assert "unknown platform 'linux/vax'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Debian's static busybox (real binaries)


@pytest.fixture(scope="module")
def busybox() -> dict[str, bytes]:
    try:
        return {arch: busybox_binary(arch) for arch in ("amd64", "arm64")}
    except HarnessError as exc:
        pytest.skip(f"Debian's busybox-static could not be fetched: {exc.cause.splitlines()[0]}")


def busybox_image(tmp_path: Path, binary: bytes, label: str, name: str) -> str:
    entries = [
        directory("usr/bin"),
        link("bin", "usr/bin"),
        F("usr/bin/busybox", binary),
        link("usr/bin/sh", "busybox"),
        F("entrypoint.sh", b"#!/bin/sh\nexec busybox httpd -f\n"),
    ]
    archive = docker_archive(
        tmp_path / f"{name}.tar", image_config(label, entrypoint=["/entrypoint.sh"]), [layer_tar(entries)]
    )
    return str(archive)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_real_static_busybox(tmp_path: Path, busybox: dict[str, bytes], arch: str) -> None:
    info = elf.parse(busybox[arch][: layers.HEAD_SIZE])
    assert info.architecture == arch and info.linking == "static" and info.executable
    target = busybox_image(tmp_path, busybox[arch], arch, arch)
    m = only(target)
    assert kinds(m) == [FileKind.SCRIPT, FileKind.ELF] and m.agreement == "agree"
    node = parse_platform(arch)
    other = ARM64 if arch == "amd64" else AMD64
    assert verdict(target, node).outcome is Expected.RUNS
    assert verdict(target, other).outcome is Expected.EXEC_FORMAT_ERROR


def test_real_busybox_mislabeled(tmp_path: Path, busybox: dict[str, bytes]) -> None:
    target = busybox_image(tmp_path, busybox["amd64"], "arm64", "mislabeled")
    m = only(target)
    assert m.agreement == "disagree" and "is an ELF for amd64" in m.agreement_detail
    assert verdict(target, ARM64).outcome is Expected.EXEC_FORMAT_ERROR
    assert verdict(target, AMD64).outcome is Expected.RUNS


# ---------------------------------------------------------------------------------------------
# The service's CI uses the gate


def test_service_ci_runs_the_gate_after_the_build_and_before_the_push() -> None:
    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[2] / ".github" / "workflows" / "ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    steps = job["steps"]

    def position(predicate: Any) -> int:
        (found,) = [i for i, s in enumerate(steps) if predicate(s)]
        return found

    build = position(lambda s: "build-push-action" in str(s.get("uses", "")))
    gate = position(lambda s: "harness inspect" in str(s.get("run", "")))
    push = position(lambda s: "docker push" in str(s.get("run", "")))
    assert build < gate < push
    run = " ".join(steps[gate]["run"].replace("\\\n", " ").split())
    assert (
        run
        == 'python -m harness inspect --require-platform "$PLATFORM" --manifest k8s/deployment.yaml "$IMAGE:$GITHUB_SHA"'
    )
    assert steps[gate]["env"] == {"GIT_SHA": "${{ github.sha }}"}, "renders the manifest's ${GIT_SHA}"
    assert workflow["env"]["PLATFORM"] == "linux/amd64"
    assert "if" not in steps[gate], "the gate runs for pull requests too"


# ---------------------------------------------------------------------------------------------
# Layer indexes cached by diff_id: a local image read once is not saved again


def test_layer_cache_serves_a_local_image_without_docker_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dynamic_rootfs("amd64", [F("usr/bin/.wh.gone", b"", 0o644), F("srv/.wh..wh..opq", b"", 0o644)])
    layer = layer_tar(entries)
    config = image_config("arm64", entrypoint=["/usr/bin/app"], user="10001")
    layout = oci_layout(tmp_path / "img", [Spec(config, [layer], compression="gzip")], index=False)
    cache = layers.LayerCache(tmp_path / "cache")
    (cold,) = inspect.inspect(str(layout), cache=cache)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    assert cache.has(diff_id), "indexed under the uncompressed digest, whatever the compression"
    cached = cache.get(diff_id)
    assert cached is not None and cached.whiteouts == ("usr/bin/gone",) and cached.opaque == ("srv",)

    engine = {
        "Id": "sha256:" + "1" * 64,
        "Os": "linux",
        "Architecture": "arm64",
        "Config": config["config"],
        "RootFS": {"Type": "layers", "Layers": [diff_id]},
    }
    monkeypatch.setattr(layers, "engine_inspect", lambda ref: engine)

    def no_save(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("docker save must not run when every layer is cached")

    monkeypatch.setattr(layers, "run", no_save)
    (warm,) = inspect.inspect("example/app:v1", cache=cache)
    assert warm.origin == "local engine, cached layer indexes"
    assert warm.manifests[0].entrypoint == cold.manifests[0].entrypoint
    assert warm.manifests[0].agreement == cold.manifests[0].agreement == "disagree"


def test_layer_cache_ignores_a_damaged_index(tmp_path: Path) -> None:
    cache = layers.LayerCache(tmp_path)
    digest = "sha256:" + "a" * 64
    (tmp_path / f"sha256-{'a' * 64}.json").write_text("{not json")
    assert cache.get(digest) is None


def test_uncompressed_digest_mismatch_is_named(tmp_path: Path) -> None:
    layer = layer_tar([F("app", elf_header("amd64"))])
    spec = Spec(image_config("amd64", cmd=["/app"]), [layer], compression="gzip")
    dest = oci_layout(tmp_path / "t", [spec], index=False)
    (config_blob,) = [
        p
        for p in (dest / "blobs" / "sha256").iterdir()
        if b'"diff_ids"' in p.read_bytes()[:4096] and p.stat().st_size < 4096
    ]
    data = json.loads(config_blob.read_bytes())
    data["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    config_blob.write_bytes(json.dumps(data).encode())  # the layout now lies about the layer (its own digest aside)
    with pytest.raises(layers.ImageUnreadable, match="uncompressed with digest"):
        inspect.inspect(str(dest))


def test_module_entry_point_is_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = single(tmp_path, image_config("arm64", entrypoint=["/usr/bin/app"]), dynamic_rootfs("amd64"))
    assert inspect.main(["--require-platform", "linux/arm64", target]) == 1
    assert "exec format error on linux/arm64" in capsys.readouterr().err
    assert inspect.main(["--json", target]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []


def test_docker_25_save_layout_and_several_named_images(tmp_path: Path) -> None:
    """`docker save` of Docker 25+ writes an OCI layout (index.json, ref annotations) next to manifest.json."""
    amd = Spec(image_config("amd64", cmd=["/usr/bin/app"]), [layer_tar(dynamic_rootfs("amd64"))])
    dest = oci_layout(tmp_path / "one", [amd], index=False, ref="v1")
    index = json.loads((dest / "index.json").read_text())
    index["manifests"].append({**index["manifests"][0], "annotations": {"io.containerd.image.name": "docker.io/x/b:2"}})
    index["manifests"][0]["annotations"] = {"io.containerd.image.name": "docker.io/x/a:1"}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "manifest.json").write_text("[]")
    archive = tmp_path / "save.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(dest, arcname=".")
    found = inspect.inspect(str(archive))
    assert [f.name for f in found] == ["docker.io/x/a:1", "docker.io/x/b:2"]
    assert all(f.origin == "OCI layout (tar)" and f.manifests[0].agreement == "agree" for f in found)


def test_no_image_and_no_manifest_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect"]) == 2
    assert capsys.readouterr().err.startswith("error: no image given")


def test_registry_references_are_parsed_as_the_engine_does() -> None:
    parse = layers.parse_registry_reference
    assert parse("localhost:5001/orders-api:abc") == ("localhost:5001", "orders-api", "abc")
    assert parse("localhost:5001/runs/x/orders-api@sha256:00") == ("localhost:5001", "runs/x/orders-api", "sha256:00")
    assert parse("registry.example.com/team/app") == ("registry.example.com", "team/app", "latest")
    assert parse("busybox:1.36") == ("registry-1.docker.io", "library/busybox", "1.36")
    assert parse("docker.io/library/python:3.11-slim") == ("registry-1.docker.io", "library/python", "3.11-slim")
    with pytest.raises(layers.ImageNotFound, match="not an image reference"):
        parse("localhost:5001/Orders:1")
