"""inspect's prediction against what the real cluster does, for images whose label misleads.

Each image is written here (a `docker save` archive with Debian's static busybox), loaded into
the engine and into the nodes, inspected from the engine, predicted for the nodes' platform and
the host's binfmt_misc state, then deployed as a one-replica Deployment of busybox httpd and
watched. The prediction must be what the cluster shows:

- mislabeled: the nodes' bytes under the foreign label. A label-based check says "exec format
  error"; the bytes say it runs, and it does.
- mislabeled-foreign: the foreign CPU's bytes under the nodes' label (a hard-coded GOARCH or
  TARGETARCH default). A label-based check says it runs; the bytes say exec format error (or
  emulation, where the host registers an emulator for that CPU).
- no #!: the nodes' label and bytes, but the entrypoint is a script without a #! line: the label
  agrees with the node and the exec still fails with "exec format error".
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import inspect
from harness.cluster import KindCluster
from harness.inspect import Expected
from harness.outcomes import Outcome, Verdict
from harness.platforms import Expectation, Platform, expected_outcome, read_binfmt
from harness.tools import docker_binary, run
from harness.workload import Workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import imagebuild  # the unit tests' image writer

pytestmark = pytest.mark.e2e

REPOSITORY = "incident-harness/inspect-e2e"
HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
EXPECTED = {
    Expected.RUNS: Outcome.HEALTHY,
    Expected.RUNS_EMULATED: Outcome.RAN_EMULATED,
    Expected.EXEC_FORMAT_ERROR: Outcome.CRASH_LOOP,
    Expected.NO_SUCH_FILE: Outcome.CRASH_LOOP,
}


def _image(tmp: Path, case: str, bytes_arch: str, label: Platform, entrypoint: list[str], extra: list[Any]) -> str:
    """Write, `docker load` and return the reference of a busybox httpd image."""
    F, link, directory = imagebuild.F, imagebuild.link, imagebuild.directory
    entries = [
        directory("usr/bin"),
        link("bin", "usr/bin"),
        F("usr/bin/busybox", imagebuild.busybox_binary(bytes_arch)),
        F("www/index.html", b"ok\n", 0o644),
        F("www/healthz", b"ok\n", 0o644),
        F("tmp", kind="dir", mode=0o1777),
        *extra,
    ]
    layer = imagebuild.layer_tar(entries)
    config = imagebuild.image_config(
        label.architecture, variant=label.variant, entrypoint=entrypoint, user="65534:65534", env=["PATH=/usr/bin:/bin"]
    )
    key = hashlib.sha256(layer + repr(config).encode()).hexdigest()[:12]
    ref = f"{REPOSITORY}:{case}-{bytes_arch}-{key}"
    archive = imagebuild.docker_archive(tmp / f"{case}.tar", config, [layer], tag=ref)
    run([docker_binary(), "load", "-i", str(archive)], timeout=300)
    return ref


@pytest.fixture(scope="module")
def cases(
    harness_cluster: KindCluster, node_arch: Platform, foreign: Platform, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("inspect-e2e")
    refs = {
        "mislabeled": _image(tmp, "mislabeled", node_arch.architecture, foreign, HTTPD, []),
        "mislabeled-foreign": _image(tmp, "mislabeled-foreign", foreign.architecture, node_arch, HTTPD, []),
        "no-shebang": _image(
            tmp,
            "no-shebang",
            node_arch.architecture,
            node_arch,
            ["/entrypoint.sh"],
            [imagebuild.F("entrypoint.sh", ("exec " + " ".join(HTTPD) + "\n").encode(), 0o755)],
        ),
    }
    for ref in refs.values():
        harness_cluster.load_image(ref)
    return refs


@pytest.mark.parametrize("case", ["mislabeled", "mislabeled-foreign", "no-shebang"])
def test_prediction_matches_the_cluster(
    case: str,
    cases: dict[str, str],
    node_arch: Platform,
    foreign: Platform,
    httpd_deployment: Callable[..., list[dict[str, Any]]],
    deploy: Callable[..., Workload],
    expect_outcome: Callable[..., Verdict],
) -> None:
    ref = cases[case]
    emulation = read_binfmt()
    (facts,) = inspect.inspect(ref)
    (manifest,) = facts.manifests
    prediction = inspect.predict(facts, node_arch, emulation)
    if case == "mislabeled":
        assert manifest.label == str(foreign) and manifest.agreement == "disagree", manifest
        assert prediction.outcome is Expected.RUNS, prediction
        label_only = expected_outcome(foreign, node_arch, emulation)
        assert label_only is not Expectation.NATIVE, "the label alone predicts a failure (or emulation)"
    elif case == "mislabeled-foreign":
        assert manifest.label == str(node_arch) and manifest.agreement == "disagree", manifest
        wanted_prediction = {
            Expectation.EMULATED: Expected.RUNS_EMULATED,
            Expectation.EXEC_FORMAT_ERROR: Expected.EXEC_FORMAT_ERROR,
            Expectation.INTERPRETER_MISSING: Expected.NO_SUCH_FILE,
        }[expected_outcome(foreign, node_arch, emulation)]
        assert prediction.outcome is wanted_prediction, prediction
        assert expected_outcome(node_arch, node_arch, emulation) is Expectation.NATIVE, "the label alone says it runs"
    else:
        assert manifest.agreement == "unknown" and prediction.outcome is Expected.EXEC_FORMAT_ERROR, prediction
        assert "no #! and no ELF magic" in prediction.reason

    wanted = EXPECTED[prediction.outcome]
    applied = deploy(httpd_deployment(f"inspect-{case}"), image=ref)
    verdict = expect_outcome(applied, wanted, timeout=90, emulated=wanted is Outcome.RAN_EMULATED)
    assert verdict.outcome is wanted, f"predicted {prediction.outcome.value} ({prediction.reason}); {verdict.summary}"
    if prediction.outcome is Expected.EXEC_FORMAT_ERROR:
        assert verdict.cause is not None and verdict.cause.exec_format_error, verdict.cause
