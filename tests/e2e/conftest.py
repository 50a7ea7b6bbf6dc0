"""Fixtures shared by the e2e tests: the nodes' platform, the foreign one, small test images."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from harness.platforms import Platform
from harness.session import Session
from hermetic.images.busybox_httpd import ensure_busybox_httpd

HttpdDeployment = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def node_arch(harness_session: Session) -> Platform:
    """The platform of the cluster's nodes."""
    return harness_session.node_platform


@pytest.fixture(scope="session")
def foreign(harness_session: Session) -> Platform:
    """The platform the nodes are not: arm64 on amd64 nodes (the incident), amd64 on arm64 nodes."""
    return harness_session.foreign


@pytest.fixture(scope="session")
def httpd_images(harness_session: Session, node_arch: Platform, foreign: Platform) -> dict[str, str]:
    """The busybox httpd image for the nodes' platform and for the foreign one, loaded into the nodes."""
    refs = {}
    for which, platform in (("native", node_arch), ("foreign", foreign)):
        ref = ensure_busybox_httpd(str(platform)).ref
        harness_session.load_image(ref, [platform])
        refs[which] = ref
    return refs


@pytest.fixture(scope="session")
def httpd_deployment() -> HttpdDeployment:
    """httpd_deployment(name, probes=None, **pod_spec): a one-replica Deployment of the busybox httpd with fast
    probes. probes={"readinessProbe": {"path": "/missing", "failureThreshold": 9}} replaces the container's probe
    with an httpGet one (path /healthz, port 8080, periodSeconds 2, failureThreshold 3 unless given); None removes it."""
    return _httpd_deployment


def _http_probe(path: str = "/healthz", port: int = 8080, **fields: Any) -> dict[str, Any]:
    """An httpGet probe of the httpd: path and port, then the probe's fields (periodSeconds 2, failureThreshold 3)."""
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 2, "failureThreshold": 3, **fields}


def _httpd_deployment(
    name: str, probes: Mapping[str, dict[str, Any] | None] | None = None, **pod_spec: Any
) -> list[dict[str, Any]]:
    """A one-replica Deployment of the busybox httpd (port 8080, /healthz) with fast probes."""
    probe = _http_probe()
    container: dict[str, Any] = {
        "name": "httpd",
        "image": "set-by-test",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 2},
    }
    for kind, replaced in (probes or {}).items():
        if replaced is None:
            container.pop(kind, None)
        else:
            container[kind] = _http_probe(**replaced)
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 0, "containers": [container], **pod_spec},
                },
            },
        }
    ]
