"""binfmt_misc changes are recorded before they are made, restored on every exit, repaired after a kill.

Against a simulated kernel in tmp_path (a folder standing for binfmt_misc, a mounts file listing
it, and the kernel's answers to writes as measured, see test_platforms.py); no handler is ever
registered with the real kernel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import platforms
from harness.errors import HarnessError, Interrupted
from harness.platforms import (
    BinfmtChange,
    Platform,
    binfmt_leftovers,
    emulation_registered,
    read_binfmt,
    repair_binfmt,
    snapshot_binfmt,
)

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


class Kernel:
    """binfmt_misc as the kernel answers writes; asserts that each change was recorded first."""

    def __init__(self, tmp_path: Path, states: Path, *, mounted: bool = True, enabled: bool = True) -> None:
        self.root = tmp_path / "binfmt_misc"
        self.root.mkdir()
        self.mounts = tmp_path / "mounts"
        self.mounts.write_text("proc /proc proc rw 0 0\n")
        self.states = states
        self.writes: list[tuple[str, str]] = []
        if mounted:
            self._mount_files(enabled)

    def _mount_files(self, enabled: bool = True) -> None:
        (self.root / "status").write_text("enabled\n" if enabled else "disabled\n")
        (self.root / "register").write_text("")
        self.mounts.write_text(self.mounts.read_text() + f"binfmt_misc {self.root} binfmt_misc rw 0 0\n")

    def recorded(self) -> list[BinfmtChange]:
        """The changes in this process's record now."""
        path = self.states / f"{os.getpid()}.json"
        if not path.exists():
            return []
        return [
            BinfmtChange(**{**c, "handlers": tuple(c["handlers"])}) for c in json.loads(path.read_text())["changes"]
        ]

    def mount(self, root: Path) -> None:
        assert any(c.action == "mount" for c in self.recorded()), "mounted before the record said so"
        self._mount_files()

    def umount(self, root: Path) -> None:
        for path in root.iterdir():
            path.unlink()
        kept = [line for line in self.mounts.read_text().splitlines() if "binfmt_misc " not in line]
        self.mounts.write_text("".join(f"{line}\n" for line in kept))

    def write(self, path: Path, data: str) -> None:
        self.writes.append((path.name, data))
        if path.name == "register":
            _, name, _, _, magic, mask, interpreter, flags = data.split(":")
            assert any(c.action == "register" and c.name == name for c in self.recorded()), "not recorded first"
            (self.root / name).write_text(
                f"enabled\ninterpreter {interpreter}\nflags: {flags}\noffset 0\n"
                f"magic {bytes.fromhex(magic.replace(chr(92) + 'x', '')).hex()}\n"
                f"mask {bytes.fromhex(mask.replace(chr(92) + 'x', '')).hex()}\n"
            )
        elif path.name == "status":
            if data == "1":
                assert any(c.action == "enable" for c in self.recorded()), "enabled before the record said so"
            path.write_text("enabled\n" if data == "1" else "disabled\n")
        elif data == "-1":
            path.unlink()


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return tmp_path / "records"


@pytest.fixture
def qemu(tmp_path: Path) -> Path:
    binary = tmp_path / "qemu-aarch64-static"
    binary.write_text("")
    return binary


def _install(monkeypatch: pytest.MonkeyPatch, kernel: Kernel) -> Kernel:
    monkeypatch.setattr(platforms, "_require_root", lambda: None)
    monkeypatch.setattr(platforms, "host_platform", lambda: AMD64)
    monkeypatch.setattr(platforms, "_mount", kernel.mount)
    monkeypatch.setattr(platforms, "_umount", kernel.umount)
    monkeypatch.setattr(platforms, "_kernel_write", kernel.write)
    return kernel


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, states: Path) -> Kernel:
    return _install(monkeypatch, Kernel(tmp_path, states))


def test_each_change_is_recorded_before_it_is_made_and_the_record_goes_after(
    kernel: Kernel, qemu: Path, states: Path
) -> None:
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states):
        (change,) = kernel.recorded()
        assert change == BinfmtChange("register", str(kernel.root), "qemu-aarch64", str(qemu), "F")
    assert not (kernel.root / "qemu-aarch64").exists()
    assert list(states.iterdir()) == []  # nothing left to repair, and no temporary file either


def test_unmounted_and_disabled_kernels_are_recorded_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, states: Path, qemu: Path
) -> None:
    kernel = _install(monkeypatch, Kernel(tmp_path, states, mounted=False))
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states):
        assert [c.action for c in kernel.recorded()] == ["mount", "register"]
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before and list(states.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_inside_the_block_restore_and_raise_interrupted(
    kernel: Kernel, qemu: Path, states: Path, signum: signal.Signals
) -> None:
    if signal.getsignal(signum) is not signal.SIG_DFL:
        pytest.skip(f"{signum.name} has a handler in this test process")
    with (
        pytest.raises(Interrupted) as caught,
        emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states),
    ):
        signal.raise_signal(signum)
        pytest.fail("the signal did not interrupt")
    assert caught.value.signum == signum and caught.value.exit_status == 128 + signum
    assert not (kernel.root / "qemu-aarch64").exists() and list(states.iterdir()) == []
    assert signal.getsignal(signum) is signal.SIG_DFL  # the default action is back


def _killed_run(kernel: Kernel, qemu: Path, states: Path) -> int:
    """A process that registers the handler and dies inside the block (no clean-up runs): its pid."""
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states):
                os._exit(0)  # as SIGKILL would: no finally, no atexit
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return child


def test_a_later_run_repairs_what_a_killed_run_left(kernel: Kernel, qemu: Path, states: Path) -> None:
    dead = _killed_run(kernel, qemu, states)
    assert (kernel.root / "qemu-aarch64").exists(), "the killed run's handler should be left over"
    (leftover,) = binfmt_leftovers(states)
    assert leftover.pid == dead and leftover.changes[0].name == "qemu-aarch64"
    with emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states) as state:
        assert [h.name for h in state.handlers] == ["qemu-aarch64"]  # registered anew by this run
    assert kernel.writes.count(("qemu-aarch64", "-1")) == 2  # the leftover, then this run's own
    assert not (kernel.root / "qemu-aarch64").exists() and list(states.iterdir()) == []


def test_repair_undoes_a_killed_runs_mount_and_enable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, states: Path, qemu: Path
) -> None:
    kernel = _install(monkeypatch, Kernel(tmp_path, states, mounted=True, enabled=False))
    before = snapshot_binfmt(kernel.root, kernel.mounts)
    _killed_run(kernel, qemu, states)
    assert read_binfmt(kernel.root, kernel.mounts).enabled
    said = repair_binfmt(states, kernel.mounts)
    assert said == [
        "handler qemu-aarch64: removed (a killed run had registered it)",
        f"{kernel.root}: disabled again (a killed run had enabled it)",
    ]
    assert snapshot_binfmt(kernel.root, kernel.mounts) == before and binfmt_leftovers(states) == []


def test_repair_leaves_what_changed_hands_since(kernel: Kernel, qemu: Path, states: Path) -> None:
    _killed_run(kernel, qemu, states)
    # Someone replaced the handler with their own of the same name since.
    (kernel.root / "qemu-aarch64").unlink()
    (kernel.root / "qemu-aarch64").write_text("enabled\ninterpreter /opt/theirs\nflags: F\n")
    assert repair_binfmt(states, kernel.mounts) == [
        "handler qemu-aarch64: left alone, its interpreter is now /opt/theirs"
    ]
    assert (kernel.root / "qemu-aarch64").exists() and binfmt_leftovers(states) == []


def test_a_live_runs_record_is_not_repaired(kernel: Kernel, qemu: Path, states: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _killed_run(kernel, qemu, states)
        record = json.loads((states / f"{dead}.json").read_text())
        start = platforms._process_start(sleeper.pid)
        (states / f"{sleeper.pid}.json").write_text(json.dumps({**record, "pid": sleeper.pid, "start": start}))
        (states / f"{dead}.json").unlink()
        assert binfmt_leftovers(states) == []
        assert repair_binfmt(states, kernel.mounts) == []
        assert (kernel.root / "qemu-aarch64").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [r.pid for r in binfmt_leftovers(states)] == [sleeper.pid]  # gone now: a leftover


def test_a_reused_pid_is_not_taken_for_the_run(kernel: Kernel, qemu: Path, states: Path) -> None:
    dead = _killed_run(kernel, qemu, states)
    record = json.loads((states / f"{dead}.json").read_text())
    mine = os.getpid()  # alive, but started at another time than the record says
    (states / f"{mine}.json").write_text(json.dumps({**record, "pid": mine, "start": "1"}))
    assert sorted(r.pid for r in binfmt_leftovers(states)) == sorted([dead, mine])


def test_records_of_another_mount_point_are_left_to_it(kernel: Kernel, qemu: Path, states: Path) -> None:
    _killed_run(kernel, qemu, states)
    assert repair_binfmt(states, kernel.mounts, root=Path("/elsewhere")) == []
    assert len(binfmt_leftovers(states)) == 1


def test_a_half_written_record_is_ignored(states: Path) -> None:
    states.mkdir()
    (states / "123.json").write_text('{"pid": 123, "changes": [')
    assert binfmt_leftovers(states) == []


def test_a_failed_restore_keeps_what_is_left_in_the_record(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel, qemu: Path, states: Path
) -> None:
    def refuse_removal(path: Path, data: str) -> None:
        if data == "-1":
            raise HarnessError(f"writing {data!r} to {path} failed: Device or resource busy")
        kernel.write(path, data)

    with (
        pytest.raises(HarnessError, match="restoring binfmt_misc failed"),
        emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states),
    ):
        monkeypatch.setattr(platforms, "_kernel_write", refuse_removal)
    assert [c.name for c in kernel.recorded()] == ["qemu-aarch64"]


def test_a_second_sigterm_during_the_restore_waits_until_it_is_done(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel, qemu: Path, states: Path
) -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this test process")

    def impatient(path: Path, data: str) -> None:
        if data == "-1":
            signal.raise_signal(signal.SIGTERM)  # arrives while the handler is being removed
        kernel.write(path, data)

    with (
        pytest.raises(Interrupted),
        emulation_registered(ARM64, qemu, root=kernel.root, mounts=kernel.mounts, state_dir=states),
    ):
        monkeypatch.setattr(platforms, "_kernel_write", impatient)
    assert not (kernel.root / "qemu-aarch64").exists() and list(states.iterdir()) == []
