"""Images on the real Docker engine: registry-free bases, the service for both platforms, the platform
check, the incident's symptom, and a multi-platform OCI index that containerd 1.6 imports.

Needs a running Docker engine (hermetic/setup-host.sh engine) and network access to Debian's mirror
and PyPI the first time (everything is cached afterwards). No kind cluster. "native" is this host's
platform and "foreign" the other of amd64/arm64, so the tests mean the same on either kind of host.
When the host kernel emulates the foreign platform (a QEMU binfmt_misc handler), the exec-format-error
tests are skipped with the reason: the incident cannot show there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import images
from harness.errors import HarnessError
from harness.images import Builder, BuiltImage
from harness.platforms import (
    Expectation,
    Platform,
    expected_outcome,
    explain,
    foreign_of,
    host_platform,
    parse_platform,
    read_binfmt,
)
from harness.tools import REPO_ROOT, buildx_command, docker_binary, ensure_engine, run
from hermetic.images.busybox_httpd import ensure_busybox_httpd
from hermetic.images.python_base import ensure_python_base

pytestmark = pytest.mark.e2e

NATIVE = parse_platform(host_platform().architecture)
FOREIGN = foreign_of(NATIVE)
REPOSITORY = "incident-harness/orders-api"
SERVICE_SYMPTOM = "exec /usr/local/bin/uvicorn: exec format error"
BUSYBOX_SYMPTOM = "exec /bin/busybox: exec format error"


@pytest.fixture(scope="module", autouse=True)
def _engine() -> None:
    if NATIVE.architecture not in ("amd64", "arm64"):
        pytest.skip(f"the base image recipes cover amd64 and arm64, not {NATIVE}")
    try:
        ensure_engine()
    except HarnessError as exc:
        pytest.skip(f"no Docker engine: {exc.cause}")


@pytest.fixture(scope="module")
def bases() -> dict[Platform, str]:
    return {p: ensure_python_base(str(p)).ref for p in (NATIVE, FOREIGN)}


@pytest.fixture(scope="module")
def context() -> Path:
    return images.stage_service_context()


@pytest.fixture(scope="module", params=list(Builder), ids=lambda b: b.value)
def service(request: pytest.FixtureRequest, bases: dict[Platform, str], context: Path) -> dict[Platform, BuiltImage]:
    """The service built for both platforms with one builder."""
    builder: Builder = request.param
    if builder is Builder.BUILDX and buildx_command() is None:
        pytest.skip("buildx is not installed: run 'make setup'")
    return {
        p: images.build_image(
            context,
            p,
            dockerfile=REPO_ROOT / "docker" / "Dockerfile",
            build_args={"PYTHON_BASE": bases[p], "APP_VERSION": f"e2e-{builder.value}"},
            repository=REPOSITORY,
            builder=builder,
        )
        for p in (NATIVE, FOREIGN)
    }


# ---------------------------------------------------------------------------------------------
# helpers


def _skip_unless_exec_format_error(image: Platform) -> None:
    outcome = expected_outcome(image, NATIVE, read_binfmt())
    if outcome is not Expectation.EXEC_FORMAT_ERROR:
        pytest.skip(f"the incident cannot show on this host: {explain(image, NATIVE, read_binfmt())}")


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"incident-harness-e2e-{uuid.uuid4().hex[:10]}"
    yield name
    run([docker_binary(), "rm", "-f", name], check=False, timeout=60)


def _published_port(name: str, container_port: str) -> int:
    out = run([docker_binary(), "port", name, container_port], timeout=30).stdout
    match = re.search(r"127\.0\.0\.1:(\d+)", out)
    assert match, f"docker port {name} {container_port} printed {out!r}"
    return int(match.group(1))


def _get(url: str, deadline_seconds: float) -> tuple[int, bytes]:
    """GET url, retrying connection failures until a wall-clock deadline."""
    deadline = time.monotonic() + deadline_seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {deadline_seconds} s: {last}")


def _run_until_exit(name: str, ref: str, timeout: float = 60) -> tuple[int, str]:
    """Start ref detached, wait for it to exit (bounded), return its exit code and its log."""
    run([docker_binary(), "run", "-d", "--name", name, ref], timeout=60)
    code = run([docker_binary(), "wait", name], timeout=timeout).stdout.strip()
    logs = run([docker_binary(), "logs", name], timeout=30)
    return int(code), logs.stdout + logs.stderr


# ---------------------------------------------------------------------------------------------
# registry-free bases


def test_bases_have_the_requested_platform_and_are_cached(bases: dict[Platform, str]) -> None:
    for p, ref in bases.items():
        assert images.image_platform(ref) == p
        assert re.fullmatch(rf"incident-harness/python-base:3\.11-{p.architecture}-[0-9a-f]{{12}}", ref)
        again = ensure_python_base(str(p))
        assert again.cached and again.ref == ref
        assert again.seconds < 10, f"a cached base took {again.seconds:.1f} s"


def test_native_base_has_python_with_ssl_and_asyncio(bases: dict[Platform, str], container_name: str) -> None:
    out = run(
        [
            docker_binary(),
            "run",
            "--rm",
            "--name",
            container_name,
            "--user",
            "10001:10001",
            bases[NATIVE],
            "/usr/local/bin/python3",
            "-c",
            "import asyncio, ssl, json, logging, sqlite3, platform; print(platform.machine())",
        ],
        timeout=60,
    ).stdout
    assert out.strip() == ("x86_64" if NATIVE.architecture == "amd64" else "aarch64")


# ---------------------------------------------------------------------------------------------
# the service


def test_service_images_have_content_tags_and_the_requested_platform(service: dict[Platform, BuiltImage]) -> None:
    for p, built in service.items():
        assert built.platform == p
        assert images.image_platform(built.ref) == p, "docker image inspect must agree"
        assert re.fullmatch(rf"{REPOSITORY}:{images.platform_slug(p)}-[0-9a-f]{{12}}", built.ref)
        assert built.image_id.startswith("sha256:")
    assert service[NATIVE].ref != service[FOREIGN].ref


def test_native_service_serves_its_probes(service: dict[Platform, BuiltImage], container_name: str) -> None:
    built = service[NATIVE]
    run([docker_binary(), "run", "-d", "--name", container_name, "-p", "127.0.0.1::8000", built.ref], timeout=60)
    port = _published_port(container_name, "8000/tcp")
    status, body = _get(f"http://127.0.0.1:{port}/healthz", 30)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = _get(f"http://127.0.0.1:{port}/readyz", 10)
    assert status == 200
    status, body = _get(f"http://127.0.0.1:{port}/", 10)
    info = json.loads(body)
    assert info["platform"] == ("x86_64" if NATIVE.architecture == "amd64" else "aarch64")
    assert info["version"] == f"e2e-{built.builder.value}"
    user = run(
        [docker_binary(), "exec", container_name, "/usr/local/bin/python3", "-c", "import os; print(os.getuid())"]
    )
    assert user.stdout.strip() == "10001", "the service must not run as root"


def test_foreign_service_fails_with_exec_format_error(service: dict[Platform, BuiltImage], container_name: str) -> None:
    _skip_unless_exec_format_error(FOREIGN)
    code, log = _run_until_exit(container_name, service[FOREIGN].ref)
    assert code != 0
    assert SERVICE_SYMPTOM in log


def test_rebuilding_the_same_content_gives_the_same_tag(service: dict[Platform, BuiltImage], context: Path) -> None:
    first = service[FOREIGN]
    again = images.build_image(
        context,
        FOREIGN,
        dockerfile=REPO_ROOT / "docker" / "Dockerfile",
        build_args={"PYTHON_BASE": ensure_python_base(str(FOREIGN)).ref, "APP_VERSION": f"e2e-{first.builder.value}"},
        repository=REPOSITORY,
        builder=first.builder,
    )
    assert again.ref == first.ref
    assert again.seconds < 60, f"a cached rebuild took {again.seconds:.1f} s"


def test_a_base_of_the_wrong_platform_is_refused(bases: dict[Platform, str], context: Path) -> None:
    with pytest.raises(HarnessError, match=f"is {NATIVE}, but the build is for {FOREIGN}"):
        images.build_image(
            context,
            FOREIGN,
            dockerfile=REPO_ROOT / "docker" / "Dockerfile",
            build_args={"PYTHON_BASE": bases[NATIVE]},
            repository=REPOSITORY,
            builder=Builder.CLASSIC,
        )


# ---------------------------------------------------------------------------------------------
# busybox httpd


def test_native_busybox_httpd_serves(container_name: str) -> None:
    ref = ensure_busybox_httpd(str(NATIVE)).ref
    assert images.image_platform(ref) == NATIVE
    run([docker_binary(), "run", "-d", "--name", container_name, "-p", "127.0.0.1::8080", ref], timeout=60)
    port = _published_port(container_name, "8080/tcp")
    assert _get(f"http://127.0.0.1:{port}/healthz", 20) == (200, b"ok\n")
    status, body = _get(f"http://127.0.0.1:{port}/cgi-bin/arch", 10)
    assert status == 200 and body.strip() == (b"x86_64" if NATIVE.architecture == "amd64" else b"aarch64")


def test_foreign_busybox_httpd_fails_with_exec_format_error(container_name: str) -> None:
    ref = ensure_busybox_httpd(str(FOREIGN)).ref
    assert images.image_platform(ref) == FOREIGN
    _skip_unless_exec_format_error(FOREIGN)
    code, log = _run_until_exit(container_name, ref)
    assert code != 0
    assert BUSYBOX_SYMPTOM in log


# ---------------------------------------------------------------------------------------------
# multi-platform index into a private containerd


@pytest.fixture
def private_containerd() -> Iterator[list[str]]:
    """A containerd of our own (own root, state and socket; CRI off); yields the ctr command prefix."""
    if os.geteuid() != 0:
        pytest.skip("a private containerd needs root")
    if not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("containerd and ctr are not installed (apt-get install containerd)")
    # A short directory: the socket path must fit in sun_path (108 bytes).
    base = Path(tempfile.mkdtemp(prefix="ih-ctd-"))
    socket = base / "c.sock"
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
        f'[debug]\n  address = "{base / "debug.sock"}"\n[metrics]\n  address = ""\n'
    )
    log = open(base / "containerd.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    ctr = ["ctr", "--address", str(socket), "--namespace", "k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while run([*ctr, "version"], check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"private containerd did not start: {(base / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield ctr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def test_index_imports_into_containerd_with_both_platforms(
    service: dict[Platform, BuiltImage], private_containerd: list[str], tmp_path: Path
) -> None:
    ctr = private_containerd
    ref = f"{REPOSITORY}:index-{uuid.uuid4().hex[:8]}"
    archive = images.build_index([service[NATIVE], service[FOREIGN]], tmp_path / "index.tar", ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    run([*ctr, "images", "import", "--all-platforms", str(archive)], timeout=300)
    listing = run([*ctr, "images", "ls"], timeout=60).stdout
    line = next((row for row in listing.splitlines() if row.startswith(images.normalize_reference(ref) + " ")), "")
    assert line, f"{ref} missing from ctr images ls:\n{listing}"
    assert f"{NATIVE}" in line and f"{FOREIGN}" in line, line
    check = run([*ctr, "images", "check"], timeout=60).stdout
    assert "complete" in next(row for row in check.splitlines() if images.normalize_reference(ref) in row)
