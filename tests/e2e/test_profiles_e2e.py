"""Cluster profiles on real kind clusters of this module's own (never the suite's shared one).

- a ``fast`` cluster: every node's configz shows the kubelet took maxContainerRestartPeriod 1s
  with the feature gate on; a crash-looping pod restarts faster than the kubelet's default curve
  allows, and never faster than the configured period;
- a ``faithful`` cluster of the same name is refused when ``fast`` is asked (and the other way
  round), by the library and by the CLI, with the cluster's name, both profiles and the remedy.

The clusters are named ``profiles-e2e-fast`` and ``profiles-e2e-faithful`` (override the prefix
with HARNESS_PROFILES_E2E_PREFIX) and deleted at the end when this module created them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import watch

from harness.cluster import KindCluster, ProfileMismatch
from harness.platforms import Platform
from harness.profiles import FEATURE_GATE, PROFILE_LABEL, Profile, duration_seconds
from harness.session import Session
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.exclusive_cluster,
]  # makes and deletes clusters of its own: alone under xdist

PREFIX = os.environ.get("HARNESS_PROFILES_E2E_PREFIX", "profiles-e2e")
ROOT = Path(__file__).resolve().parents[2]

# Restart times of a container that exits at once, measured on v1.34.4 (harness.profiles' docstring):
# faithful restarts at about 3, 17, 42 and 97 s (10 s, 20 s, 40 s back-off); fast at least every 11-16 s
# (the kubelet's pod worker retries a pod in back-off after 10 s plus up to 50 % jitter), and faster
# while something else wakes the pod worker. Within WINDOW, faithful cannot reach FAST_AT_LEAST.
WINDOW = 60.0
FAST_AT_LEAST = 4


def _open(profile: Profile) -> Iterator[Session]:
    session = Session.open(name=f"{PREFIX}-{profile.value}", profile=profile, keep_cluster=False, say=print)
    try:
        yield session
    finally:
        session.close()  # deletes the cluster when this session created it


@pytest.fixture(scope="module")
def fast() -> Iterator[Session]:
    yield from _open(Profile.FAST)


@pytest.fixture(scope="module")
def faithful() -> Iterator[Session]:
    yield from _open(Profile.FAITHFUL)


def test_fast_cluster_kubelets_took_the_setting(fast: Session) -> None:
    assert fast.profile is Profile.FAST
    nodes = fast.core.list_node().items
    assert nodes and all(n.metadata.labels.get(PROFILE_LABEL) == "fast" for n in nodes)
    settings = fast.kubelet
    assert [n.node for n in settings.nodes] == [n.metadata.name for n in nodes]
    for n in settings.nodes:
        assert n.configured and n.max_container_restart_period == "1s", n
        assert n.feature_gate is True and n.kubelet_version.startswith("v1."), n
    facts = fast.profile_facts()
    assert facts["cluster profile"] == "fast"
    assert facts["kubelet maxContainerRestartPeriod"] == "1s"
    assert facts[f"kubelet {FEATURE_GATE}"] == "on"


def _restarts_within(session: Session, namespace: str, pod: str, seconds: float) -> list[tuple[float, int]]:
    """(seconds since the watch began, restartCount) at each change, watched (not polled) for seconds."""
    began = time.monotonic()
    seen: list[tuple[float, int]] = []
    last = -1
    while (remaining := seconds - (time.monotonic() - began)) > 0:
        stream = watch.Watch().stream(
            session.core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={pod}",
            timeout_seconds=max(1, int(remaining)),
            _request_timeout=(5, remaining + 10),
        )
        for event in stream:
            statuses = event["object"].status.container_statuses or []
            count = statuses[0].restart_count if statuses else 0
            elapsed = time.monotonic() - began
            if elapsed > seconds:
                break
            if count != last:
                seen.append((round(elapsed, 1), count))
                last = count
    return seen


def test_fast_restarts_come_faster_than_the_default_curve_and_not_faster_than_the_period(fast: Session) -> None:
    platform: Platform = fast.node_platform
    image = ensure_busybox_httpd(str(platform)).ref
    fast.load_image(image, [platform])
    namespace = fast.create_namespace("profiles-crashloop")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crashloop"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "c", "image": image, "imagePullPolicy": "Never", "command": ["/bin/busybox", "false"]}
            ],
        },
    }
    try:
        fast.core.create_namespaced_pod(namespace, pod)
        seen = _restarts_within(fast, namespace, "crashloop", WINDOW)
    finally:
        fast.delete_namespace(namespace)
    restarts = seen[-1][1] if seen else 0
    period = duration_seconds(fast.kubelet.max_container_restart_period)
    shown = f"restart counts seen (s, count): {seen}"
    print(shown)
    assert restarts >= FAST_AT_LEAST, f"{restarts} restarts in {WINDOW:.0f} s: no faster than faithful; {shown}"
    assert restarts <= WINDOW / period + 1, f"{restarts} restarts in {WINDOW:.0f} s: faster than {period} s; {shown}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HARNESS_CLUSTER", None)
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


def test_a_cluster_of_another_profile_is_refused(fast: Session, faithful: Session) -> None:
    assert faithful.profile is Profile.FAITHFUL
    assert faithful.kubelet.max_container_restart_period == "300s"  # the kubelet's default, read from configz
    name = faithful.cluster.name
    with pytest.raises(ProfileMismatch) as caught:
        KindCluster(name=name, profile=Profile.FAST).create()
    assert caught.value.cause == (
        f"cluster {name!r} was made with profile faithful, not the requested fast: "
        "it is not reused with other kubelet settings"
    )
    assert "pass --profile faithful" in caught.value.remedy

    result = _cli("cluster", "create", "--name", name, "--profile", "fast")
    assert result.returncode == 3, result.stdout + result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first == f"error: {caught.value.cause}", result.stderr

    other = fast.cluster.name
    result = _cli("cluster", "create", "--name", other, "--profile", "faithful")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"cluster {other!r} was made with profile fast, not the requested faithful" in result.stderr
    # Both clusters are still there and unchanged: nothing was re-made.
    assert fast.api_problem() is None and faithful.api_problem() is None
    assert faithful.cluster.existing_profile() is Profile.FAITHFUL and fast.cluster.existing_profile() is Profile.FAST
