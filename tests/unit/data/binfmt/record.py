"""Re-record the binfmt_misc sample trees next to this file from the running kernel (root only).

    sudo python3 tests/unit/data/binfmt/record.py

Needs Debian's qemu-user-static (apt-get install --no-install-recommends qemu-user-static).
Every handler it registers is removed again, and binfmt_misc is unmounted if it was not mounted
before; the script checks that the state afterwards equals the state before.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.platforms import (
    BINFMT_ROOT,
    emulation_registered,
    parse_platform,
    read_binfmt,
    register_line,
    snapshot_binfmt,
)
from harness.tools import run

HERE = Path(__file__).resolve().parent
ARM64 = parse_platform("linux/arm64")
DEBIAN_CONFS = ("qemu-aarch64.conf", "qemu-arm.conf", "python3.11.conf")


def _kernel_write(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


@contextmanager
def binfmt_mounted() -> Iterator[None]:
    was_mounted = read_binfmt().mounted
    if not was_mounted:
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_ROOT)])
    try:
        yield
    finally:
        if not was_mounted:
            run(["umount", str(BINFMT_ROOT)])


def copy_tree(case: str, edit: dict[str, str] | None = None) -> None:
    """Copy the live binfmt_misc directory's text into HERE/case (register becomes empty)."""
    target = HERE / case
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for path in sorted(BINFMT_ROOT.iterdir()):
        text = "" if path.name == "register" else path.read_text()
        for old, new in (edit or {}).items():
            text = text.replace(old, new)
        (target / path.name).write_text(text)
    print(f"recorded {case}: {sorted(p.name for p in target.iterdir())}")


def main() -> None:
    before = snapshot_binfmt()
    with emulation_registered(ARM64):
        copy_tree("harness-f")
        _kernel_write(BINFMT_ROOT / "qemu-aarch64", "0")
        copy_tree("disabled-handler")
        _kernel_write(BINFMT_ROOT / "qemu-aarch64", "1")
        _kernel_write(BINFMT_ROOT / "status", "0")
        copy_tree("globally-disabled")
        _kernel_write(BINFMT_ROOT / "status", "1")
    with emulation_registered(ARM64, fix_binary=False):
        copy_tree("no-fix-binary")
    with binfmt_mounted():
        # A handler whose interpreter name says nothing: its architecture comes from the magic.
        line = register_line("mystery", ARM64, Path("/opt/emulators/run"), flags="")
        _kernel_write(BINFMT_ROOT / "register", line)
        # Rosetta as Docker Desktop and Lima register it: F, so the file must exist here.
        with tempfile.TemporaryDirectory() as tmp:
            rosetta = Path(tmp) / "rosetta"
            shutil.copy("/bin/true", rosetta)
            line = register_line("rosetta", parse_platform("amd64"), rosetta, flags="OCF")
            _kernel_write(BINFMT_ROOT / "register", line)
            try:
                copy_tree("unknown-interpreter", {str(rosetta): "/run/rosetta/rosetta"})
            finally:
                _kernel_write(BINFMT_ROOT / "mystery", "-1")
                _kernel_write(BINFMT_ROOT / "rosetta", "-1")
    with binfmt_mounted():
        # What Debian's qemu-user-static registers where systemd-binfmt applies its configs.
        names = []
        for conf in DEBIAN_CONFS:
            line = (Path("/usr/lib/binfmt.d") / conf).read_text().strip()
            names.append(line.split(":")[1])
            _kernel_write(BINFMT_ROOT / "register", line)
        try:
            copy_tree("debian-qemu-user-static")
        finally:
            for name in names:
                _kernel_write(BINFMT_ROOT / name, "-1")
    after = snapshot_binfmt()
    if after != before:
        sys.exit(f"binfmt_misc state changed!\nbefore: {before}\nafter:  {after}")
    print("binfmt_misc state restored:", after)


if __name__ == "__main__":
    main()
