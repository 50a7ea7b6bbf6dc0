"""Registry delivery through the runner on the real cluster: what a registry that dies mid-run does.

The scenario files in scenarios/ (run as items by `make test`) show the delivery incidents
themselves; this file checks the fault a user can meet: the registry stops answering while the
pods are watched. That is an environment failure (exit 3) naming the registry, never a verdict on
the workload. The registry here is one of the test's own (own port and container), so the
session's shared registry is never stopped.
"""

from __future__ import annotations

import socket
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import scenario
from harness.cluster import KindCluster
from harness.outcomes import Evidence
from harness.platforms import Platform
from harness.registry import Registry
from harness.runner import ExitStatus, RunOptions, run_scenario
from harness.session import Session
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = pytest.mark.e2e

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: web
          image: registry.example.com/web:${GIT_SHA}
          imagePullPolicy: Always
"""

SCENARIO = """
apiVersion: incident-harness/v1
kind: Scenario
name: registry-dies
title: The registry stops answering while the pods are watched
images:
  app: {context: app, platform: foreign}
workload:
  manifests: [k8s/web.yaml]
  image: app
  delivery: registry
expect:
  outcome: CrashLoopBackOff
  timeout: 90
  symptoms:
    - restartsAtLeast: 2
"""


@pytest.fixture
def own_registry() -> Iterator[Registry]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = Registry.ensure(port=port, name=f"registry-e2e-midrun-{uuid.uuid4().hex[:6]}")
    yield registry
    registry.remove()


def test_a_registry_that_dies_mid_run_is_an_environment_failure_not_a_verdict(
    harness_cluster: KindCluster, own_registry: Registry, node_arch: Platform, tmp_path: Path
) -> None:
    foreign = "linux/arm64" if node_arch.architecture == "amd64" else "linux/amd64"
    (tmp_path / "pyproject.toml").write_text("[tool.incident-harness]\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "marker").write_text(f"{uuid.uuid4()}\n")  # a new build: a new tag, a real pull
    (tmp_path / "app" / "Dockerfile").write_text(f"FROM {ensure_busybox_httpd(foreign).ref}\nCOPY marker /marker\n")
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "web.yaml").write_text(MANIFEST)
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / "registry-dies.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    loaded = scenario.load(path)

    stopped: list[str] = []

    def stop_registry_once(e: Evidence) -> None:
        if not stopped:
            stopped.append(e.text)
            own_registry.stop()

    session = Session(harness_cluster, registry_address=own_registry.host)
    session.start()
    said: list[str] = []
    result = run_scenario(
        loaded,
        RunOptions(
            session=session,
            on_evidence=stop_registry_once,
            report_dir=tmp_path / "reports",
            artifacts_dir=tmp_path / "artifacts",
            say=said.append,
        ),
    )

    assert stopped, "the watch reported nothing, so the registry was never stopped"
    assert result.exit_status is ExitStatus.ENVIRONMENT, "\n".join(said[-20:])
    assert "does not answer GET /v2/" in (result.report.error or ""), result.report.error
    assert not result.verdicts, "no verdict on the workload when the registry is gone"
    assert result.report.facts["delivery"].startswith(f"registry {own_registry.host}")
