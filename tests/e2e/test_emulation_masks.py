"""Emulation masks the incident: the buildx + QEMU path, on this host's kernel and the kind nodes.

GitHub runners after docker/setup-qemu-action, Docker Desktop, and any machine where QEMU is
registered in binfmt_misc with the F flag run foreign binaries. Kind nodes are containers on the
host kernel, so such a registration reaches them too: the seed incident's arm64 image then RUNS on
the amd64 nodes instead of failing with `exec format error`. The harness must say so ("masked by
emulation"), never "reproduced" and never "healthy".

Inside one short platforms.emulation_registered() window (the registration is kernel-wide and
other tests may run at the same time) the module builds docker/Dockerfile.emulated for the foreign
platform through buildx, whose RUN step executes the foreign python3, and runs the seed scenario.
Everything is asserted after the window has closed and binfmt_misc is back to its exact state.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import images, platforms, workload
from harness.cluster import KindCluster
from harness.errors import HarnessError
from harness.outcomes import Outcome
from harness.report import render_terminal
from harness.runner import ExitStatus, RunOptions, RunResult, run_scenario
from harness.scenario import SCENARIO_DIR, load
from harness.tools import REPO_ROOT, docker_binary, run
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = [pytest.mark.e2e, pytest.mark.emulation]

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile.emulated"
SEED = SCENARIO_DIR / "arm64-on-amd64.yaml"
REPOSITORY = "incident-harness/emulated-build"


# ---------------------------------------------------------------------------------------------
# Preconditions and inputs (prepared before the window opens)


@pytest.fixture(scope="module")
def foreign(node_arch: platforms.Platform) -> platforms.Platform:
    """The seed scenario's "foreign": arm64 on amd64 nodes, amd64 on arm64 nodes."""
    foreign = platforms.foreign_of(node_arch)
    if os.geteuid() != 0:
        pytest.skip("registering a binfmt_misc handler needs root")
    if foreign.architecture == platforms.host_platform().architecture:
        pytest.skip(f"the host runs {foreign} natively: there is nothing to emulate")
    qemu = platforms.QEMU_STATIC_DIR / f"qemu-{platforms.qemu_name(foreign)}-static"
    if not qemu.is_file():
        pytest.skip(f"{qemu} missing: apt-get install --no-install-recommends qemu-user-static")
    return foreign


@pytest.fixture(scope="module")
def python_base(foreign: platforms.Platform) -> str:
    """The registry-free python base of the foreign platform (built once, cached)."""
    return images.ensure_python_base(foreign)


@pytest.fixture(scope="module")
def empty_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docker/Dockerfile.emulated COPYs nothing: its build context is an empty directory."""
    return tmp_path_factory.mktemp("emulated-context")


def build_emulated(context: Path, foreign: platforms.Platform, python_base: str, nonce: str) -> images.BuiltImage:
    return images.build_image(
        context,
        foreign,
        dockerfile=DOCKERFILE,
        build_args={"PYTHON_BASE": python_base, "BUILD_NONCE": nonce},
        repository=REPOSITORY,
        builder=images.Builder.BUILDX,
    )


def remove_image(ref: str) -> None:
    run([docker_binary(), "image", "rm", ref], check=False, timeout=120)


def file_from_image(ref: str, path: str, scratch: Path) -> str:
    """A file's text from an image, without running it (docker create, then docker cp)."""
    container = run([docker_binary(), "create", ref], timeout=60).stdout.strip()
    try:
        run([docker_binary(), "cp", f"{container}:{path}", str(scratch)], timeout=60)
    finally:
        run([docker_binary(), "rm", container], check=False, timeout=60)
    return (scratch / Path(path).name).read_text()


def test_the_build_needs_the_emulator(empty_context: Path, foreign: platforms.Platform, python_base: str) -> None:
    """Without a handler, the RUN step of the foreign build fails: the build itself needs QEMU."""
    host, state = platforms.host_platform(), platforms.read_binfmt()
    if platforms.expected_outcome(foreign, host, state) is not platforms.Expectation.EXEC_FORMAT_ERROR:
        pytest.skip(f"the host can run {foreign} binaries right now: {platforms.explain(foreign, host, state)}")
    nonce = uuid.uuid4().hex
    try:
        built = build_emulated(empty_context, foreign, python_base, nonce)
    except HarnessError as exc:
        assert "exec format error" in str(exc), str(exc)
        return
    remove_image(built.ref)
    pytest.fail(f"{DOCKERFILE.name} built for {foreign} without an emulator: its RUN step ran natively?")


# ---------------------------------------------------------------------------------------------
# The window: build and run with the handler registered, then leave


@dataclass(frozen=True)
class Window:
    before: platforms.BinfmtSnapshot
    after: platforms.BinfmtSnapshot
    state: platforms.EmulationState  # as registered, inside the window
    seconds: float
    nonce: str
    built: images.BuiltImage | None
    build_error: str
    run: RunResult
    namespace: str
    said: tuple[str, ...]

    def shown(self) -> str:
        return render_terminal(self.run.report) + "\n\nrun log (last lines):\n" + "\n".join(self.said[-30:])


@pytest.fixture(scope="module")
def window(
    harness_cluster: KindCluster,
    foreign: platforms.Platform,
    python_base: str,
    empty_context: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Window]:
    scenario = load(SEED)
    images.stage_service_context()  # the seed's build context, assembled before the window
    out = tmp_path_factory.mktemp("emulated-run")
    nonce = uuid.uuid4().hex
    said: list[str] = []
    built: images.BuiltImage | None = None
    build_error = ""
    before = platforms.snapshot_binfmt()
    started = time.monotonic()
    with platforms.emulation_registered(foreign) as state:
        try:
            built = build_emulated(empty_context, foreign, python_base, nonce)
        except HarnessError as exc:
            build_error = str(exc)
        result = run_scenario(
            scenario,
            RunOptions(
                cluster=harness_cluster,
                report_dir=out / "reports",
                artifacts_dir=out / "artifacts",
                keep_namespace=True,
                say=said.append,
            ),
        )
    seconds = time.monotonic() - started
    after = platforms.snapshot_binfmt()
    found = (re.search(r"namespace (\S+), watching", line) for line in said)
    namespace = next((m.group(1) for m in found if m), "")
    try:
        yield Window(before, after, state, seconds, nonce, built, build_error, result, namespace, tuple(said))
    finally:
        if namespace:
            workload.delete_namespace(harness_cluster.core, namespace)
        if built is not None:
            remove_image(built.ref)


def test_binfmt_state_is_restored(window: Window, foreign: platforms.Platform) -> None:
    assert window.state.can_run_in_containers(foreign), window.state.describe()
    assert window.after == window.before, (
        f"binfmt_misc differs after the window:\nbefore: {window.before}\nafter:  {window.after}"
    )


def test_foreign_build_runs_under_emulation_with_buildx(
    window: Window, foreign: platforms.Platform, tmp_path: Path
) -> None:
    assert window.built is not None, f"the buildx build under emulation failed:\n{window.build_error}"
    assert window.built.builder is images.Builder.BUILDX
    assert window.built.platform == foreign
    assert images.image_platform(window.built.ref) == foreign
    # Written by the foreign python3 in the RUN step: it saw the foreign machine, under QEMU.
    built_on = file_from_image(window.built.ref, "/built-on", tmp_path).split()
    assert built_on == [platforms.qemu_name(foreign), window.nonce], built_on


def test_seed_incident_is_masked_by_emulation(
    window: Window, harness_cluster: KindCluster, foreign: platforms.Platform
) -> None:
    result, shown = window.run, window.shown()
    assert result.exit_status is ExitStatus.MASKED_BY_EMULATION, shown
    assert len(result.verdicts) == 1, f"the fix ran although the incident was masked:\n{shown}"
    incident = result.verdicts[0]
    assert incident.expected == frozenset({Outcome.RAN_EMULATED}), shown
    assert incident.verdict.outcome is Outcome.RAN_EMULATED, shown
    assert incident.verdict.ready_seen and incident.verdict.cause is None, shown
    assert result.symptoms == [], "symptoms were checked on a masked run"
    assert result.report.fix_verified is None and result.report.symptoms_reproduced == 0, shown
    assert result.report.emulation and "emulation" in result.report.emulation, shown

    # The foreign image really runs on the nodes: its own / says it is on the foreign CPU.
    core = harness_cluster.core
    listed = core.api_client.sanitize_for_serialization(
        core.list_namespaced_pod(window.namespace, label_selector=incident.verdict.selector)
    )
    running = [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")]
    assert running, f"no pod left in {window.namespace}"
    ip, node = running[0]["status"]["podIP"], running[0]["spec"]["nodeName"]
    script = f"exec 3<>/dev/tcp/{ip}/8000; printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
    answer = harness_cluster.node_exec(node, ["bash", "-c", script], timeout=30).stdout
    info = json.loads(answer.replace("\r\n", "\n").partition("\n\n")[2])
    assert info["version"] == "laptop", info
    assert info["platform"] == platforms.qemu_name(foreign), info  # aarch64 on x86_64 nodes


def test_report_says_masked(window: Window) -> None:
    result, shown = window.run, window.shown()
    markdown_path = next(p for p in result.report_paths if p.suffix == ".md")
    json_path = next(p for p in result.report_paths if p.suffix == ".json")
    markdown, data = markdown_path.read_text(), json.loads(json_path.read_text())
    assert data["exit_status"] == int(ExitStatus.MASKED_BY_EMULATION) == 4 and data["passed"] is False, data
    assert data["emulation"] and data["symptoms"]["reproduced"] == 0 and data["fix_verified"] is None, data
    assert [v["verdict"]["outcome"] for v in data["verdicts"]] == [Outcome.RAN_EMULATED.value], data["verdicts"]
    assert "masked" in data["verdicts"][0]["verdict"]["summary"], data["verdicts"][0]["verdict"]["summary"]
    for text, where in ((shown, "terminal"), (markdown, "Markdown")):
        assert "masked" in text.lower(), f"the {where} report does not say masked:\n{text}"
        assert "emulation" in text.lower(), f"the {where} report does not name the emulation:\n{text}"
        assert not re.search(r"\bPASSED\b", text), f"the {where} report claims a pass:\n{text}"
        # A claim of health, not the word: the timeline may say "Unhealthy" (probe events) or "not Healthy yet".
        claim = re.search(r"(observed|decided:|expected \w+, observed) Healthy|\bhealthy after\b", text, re.IGNORECASE)
        assert not claim, f"the {where} report says healthy ({claim}):\n{text}"
        assert not re.search(r"reproduced [1-9]", text), f"the {where} report claims a reproduction:\n{text}"


def test_the_plugin_reports_a_foreign_image_that_runs_emulated_as_masked(
    foreign: platforms.Platform, harness_cluster: KindCluster, deploy: Any, expect_outcome: Any, httpd_deployment: Any
) -> None:
    """The plugin's door (deploy + expect_outcome on the shared session) under a real QEMU handler.

    The foreign busybox httpd runs under emulation and becomes Ready: the session's watch must
    call that "Ran under emulation", never Healthy, though the test allows Healthy.
    """
    image = ensure_busybox_httpd(str(foreign)).ref  # this module's `foreign` (the session's fixture needs its own)
    harness_cluster.load_image(image)
    before = platforms.snapshot_binfmt()
    with platforms.emulation_registered(foreign):
        applied = deploy(httpd_deployment("plugin-emulated"), image=image)
        verdict = expect_outcome(applied, {Outcome.HEALTHY, Outcome.RAN_EMULATED}, timeout=120)
    assert platforms.snapshot_binfmt() == before
    assert verdict.outcome is Outcome.RAN_EMULATED, verdict.summary
    assert "masked" in verdict.summary or "emulation" in verdict.summary, verdict.summary
