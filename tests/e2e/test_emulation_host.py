"""Real binfmt_misc registration on this host: a foreign binary fails, runs under QEMU, fails again.

Needs root, Debian's qemu-user-static and the arm64 busybox-static package (downloaded once into
the harness cache through its private apt lists; the host's dpkg architectures are not touched).
The handler is kernel-wide while registered: other tests running at the same time see arm64
emulation, hence the emulation marker (run these alone).
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.platforms import (
    QEMU_STATIC_DIR,
    Expectation,
    emulation_registered,
    expected_outcome,
    host_platform,
    parse_platform,
    read_binfmt,
    snapshot_binfmt,
)
from harness.tools import docker_binary, ensure_engine, run
from hermetic.images.debimage import fetch_debs

pytestmark = [pytest.mark.e2e, pytest.mark.emulation]

ARM64 = parse_platform("linux/arm64")
EXEC_FORMAT_ERROR = "exec format error"


@pytest.fixture(scope="module", autouse=True)
def _preconditions() -> None:
    if os.geteuid() != 0:
        pytest.skip("registering a binfmt_misc handler needs root")
    if host_platform().architecture == "arm64":
        pytest.skip("this host is arm64: the test emulates arm64 on another architecture")
    if not (QEMU_STATIC_DIR / "qemu-aarch64-static").is_file():
        pytest.skip("qemu-aarch64-static missing: apt-get install --no-install-recommends qemu-user-static")
    if read_binfmt().can_run(ARM64):
        pytest.skip(f"this host already emulates arm64 ({read_binfmt().describe()}); nothing to show")


@pytest.fixture(scope="module")
def arm64_busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's static arm64 busybox, extracted into a temporary directory."""
    # Through the harness's private apt lists: no `dpkg --add-architecture arm64` on the host.
    deb = fetch_debs(["busybox-static"], "linux/arm64")["busybox-static"]
    target = tmp_path_factory.mktemp("busybox-arm64")
    run(["dpkg-deb", "-x", str(deb), str(target)])
    return target / "bin" / "busybox"


def _exec(binary: Path, *args: str) -> tuple[int | None, str]:
    """Exec binary directly; (None, error) when execve fails. (env(1) or a shell would not do:
    execvp falls back to /bin/sh on ENOEXEC.)"""
    try:
        result = run([str(binary), *args], check=False, timeout=60)
    except OSError as exc:
        return None, f"{exc.strerror} (errno {exc.errno})"
    return result.returncode, (result.stdout + result.stderr).strip()


def test_foreign_binary_runs_only_while_a_handler_is_registered(arm64_busybox: Path) -> None:
    host = host_platform()
    before = snapshot_binfmt()
    state = read_binfmt()
    assert expected_outcome(ARM64, host, state) is Expectation.EXEC_FORMAT_ERROR

    code, output = _exec(arm64_busybox, "echo", "hello from arm64")
    assert code is None and f"errno {errno.ENOEXEC}" in output, output

    with emulation_registered(ARM64) as registered:
        assert registered.can_run_in_containers(ARM64), registered.describe()
        assert expected_outcome(ARM64, host, registered) is Expectation.EMULATED
        code, output = _exec(arm64_busybox, "echo", "hello from arm64")
        assert (code, output) == (0, "hello from arm64")

    assert snapshot_binfmt() == before
    code, output = _exec(arm64_busybox, "true")
    assert code is None and f"errno {errno.ENOEXEC}" in output, output


@pytest.fixture(scope="module")
def arm64_image(arm64_busybox: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A FROM scratch linux/arm64 image holding only busybox; removed afterwards."""
    try:
        ensure_engine()
    except HarnessError as exc:
        pytest.skip(f"no Docker engine: {exc.cause}")
    context = tmp_path_factory.mktemp("arm64-image")
    (context / "busybox").write_bytes(arm64_busybox.read_bytes())
    (context / "busybox").chmod(0o755)
    (context / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n')
    tag = f"harness-test/emulation-probe:{uuid.uuid4().hex[:12]}"
    docker = docker_binary()
    run(
        [docker, "build", "-q", "--platform", "linux/arm64", "-t", tag, str(context)],
        env={"DOCKER_BUILDKIT": "0"},  # the legacy builder needs no buildx and no registry
        timeout=300,
    )
    try:
        yield tag
    finally:
        run([docker, "rmi", "-f", tag], check=False, timeout=120)


def _docker_run(image: str, *args: str) -> tuple[int, str]:
    cmd = [docker_binary(), "run", "--rm", "--network", "none", "--platform", "linux/arm64", image, *args]
    result = run(cmd, check=False, timeout=120)
    return result.returncode, (result.stdout + result.stderr).strip()


def test_only_a_handler_with_f_works_inside_containers(arm64_image: str) -> None:
    before = snapshot_binfmt()
    code, output = _docker_run(arm64_image, "echo", "in container")
    assert code != 0 and EXEC_FORMAT_ERROR in output, output

    with emulation_registered(ARM64) as registered:
        assert registered.can_run_in_containers(ARM64)
        assert _docker_run(arm64_image, "echo", "in container") == (0, "in container")

    with emulation_registered(ARM64, fix_binary=False) as registered:
        assert registered.can_run(ARM64) and not registered.can_run_in_containers(ARM64)
        assert expected_outcome(ARM64, host_platform(), registered) is Expectation.INTERPRETER_MISSING
        code, output = _docker_run(arm64_image, "echo", "in container")
        assert code != 0 and Expectation.INTERPRETER_MISSING.value in output, output

    assert snapshot_binfmt() == before
