"""The cluster's life around the tests: reuse, the guard against foreign contexts, evidence on failure.

All of it runs against the shared session cluster (never deleted, never relabelled): the guard's
refusals are shown with kubeconfigs written here that point at that cluster's real API server.
"""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
import stat
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from harness import tools, workload
from harness.cluster import MANAGED_LABEL, KindCluster, ensure_harness_context
from harness.errors import GuardRefused
from harness.platforms import node_platform
from hermetic.images.busybox_httpd import ensure_busybox_httpd

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

# pytester points HOME at a temporary directory; the inner session must still find the cached
# kind and kubectl and the shared cluster's kubeconfig, which live under the real cache.
CACHE = tools.cache_dir()


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _kubeconfig(cluster: KindCluster) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text())
    return loaded


def _write_kubeconfig(path: Path, base: dict[str, Any], *, context: str, server: str | None = None) -> Path:
    """A copy of base whose only context is named context (and whose server is replaced, if given)."""
    config = copy.deepcopy(base)
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    current["name"] = context
    config["contexts"] = [current]
    config["current-context"] = context
    if server is not None:
        for entry in config["clusters"]:
            entry["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _core(kubeconfig: Path) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


# -- reuse ---------------------------------------------------------------------------------------


def test_create_reuses_the_existing_cluster_quickly(harness_cluster: KindCluster) -> None:
    user_kubeconfig = Path.home() / ".kube" / "config"
    before = _digest(user_kubeconfig)

    started = time.monotonic()
    again = KindCluster(name=harness_cluster.name, profile=harness_cluster.profile).create()
    took = time.monotonic() - started

    assert again.reused, "an existing, healthy cluster must be reused, not recreated"
    assert took < 15, f"reusing the cluster took {took:.1f} s"
    assert again.kubeconfig == harness_cluster.kubeconfig
    assert again.kubeconfig.resolve() != user_kubeconfig.resolve()
    assert again.kubeconfig.is_relative_to(CACHE), again.kubeconfig
    mode = stat.S_IMODE(again.kubeconfig.stat().st_mode)
    assert mode == 0o600, f"kubeconfig {again.kubeconfig} has mode {mode:o}: it holds client credentials"
    assert _digest(user_kubeconfig) == before, "~/.kube/config must never be written"
    again.guard()
    listed: list[Any] = again.core.list_node().items
    assert sorted(n.metadata.name for n in listed) == sorted(again.nodes())


# -- the guard ----------------------------------------------------------------------------------


def test_guard_accepts_the_harness_cluster(harness_cluster: KindCluster) -> None:
    harness_cluster.guard()
    labelled = harness_cluster.core.list_node(label_selector=f"{MANAGED_LABEL}=true").items
    assert labelled, f"the session cluster's nodes lack {MANAGED_LABEL}"


def test_guard_refuses_a_context_that_is_not_kind(harness_cluster: KindCluster, tmp_path: Path) -> None:
    """Same reachable API server, but the context is named like a production one."""
    path = _write_kubeconfig(tmp_path / "kubeconfig", _kubeconfig(harness_cluster), context="prod-aks-westeurope")
    with pytest.raises(GuardRefused) as refused:
        ensure_harness_context(path, _core(path))
    message = str(refused.value)
    assert "'prod-aks-westeurope'" in message and "not a kind cluster" in message, message
    assert str(path) in message, message
    assert refused.value.remedy and "make cluster" in refused.value.remedy


def test_guard_refuses_a_kind_context_whose_server_is_not_local(harness_cluster: KindCluster, tmp_path: Path) -> None:
    path = _write_kubeconfig(
        tmp_path / "kubeconfig", _kubeconfig(harness_cluster), context="kind-remote", server="https://10.20.30.40:6443"
    )
    with pytest.raises(GuardRefused) as refused:
        ensure_harness_context(path)
    message = str(refused.value)
    assert "'kind-remote'" in message and "https://10.20.30.40:6443" in message and "not on this machine" in message
    assert "what to do:" in message


def test_guard_refuses_a_kind_cluster_without_the_harness_label(harness_cluster: KindCluster, tmp_path: Path) -> None:
    """A real kind cluster the harness did not make: its nodes carry no harness label.

    The shared cluster must keep its label, so the guard is asked for a label no node has; the
    refusal comes from the real API server's (empty) node list.
    """
    path = _write_kubeconfig(tmp_path / "kubeconfig", _kubeconfig(harness_cluster), context="kind-other")
    core = _core(path)
    ensure_harness_context(path, core)  # the real label: accepted
    missing = "incident-harness.io/made-by-someone-else"
    with pytest.raises(GuardRefused) as refused:
        ensure_harness_context(path, core, label=missing)
    message = str(refused.value)
    assert "'kind-other'" in message and f"lack the {missing} label" in message, message
    assert refused.value.remedy


def test_guard_refuses_a_local_kind_context_nobody_answers(harness_cluster: KindCluster, tmp_path: Path) -> None:
    """Loopback and kind-* but nothing listens: ownership cannot be proven, so it is refused."""
    path = _write_kubeconfig(
        tmp_path / "kubeconfig", _kubeconfig(harness_cluster), context="kind-stopped", server="https://127.0.0.1:9"
    )
    core = _core(path)
    started = time.monotonic()
    with pytest.raises(GuardRefused) as refused:
        ensure_harness_context(path, core)
    assert time.monotonic() - started < 15
    message = str(refused.value)
    assert "'kind-stopped'" in message and "cannot list its nodes" in message, message


# -- evidence of a failed test --------------------------------------------------------------------

INNER_TEST = """
from harness.outcomes import Outcome

import pytest

pytestmark = pytest.mark.e2e

CRASHY = [{{
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "crashy"}},
    "spec": {{
        "replicas": 1, "selector": {{"matchLabels": {{"app": "crashy"}}}},
        "template": {{"metadata": {{"labels": {{"app": "crashy"}}}}, "spec": {{
            "terminationGracePeriodSeconds": 0,
            "containers": [{{"name": "main", "image": "set-by-test",
                            "command": ["/bin/busybox", "sh", "-c", "echo {marker} >&2; exit 3"]}}],
        }}}},
    }},
}}]


def test_crashy_service_answers(deploy, expect_outcome):
    applied = deploy(CRASHY, image={image!r})
    verdict = expect_outcome(applied, Outcome.CRASH_LOOP, timeout=60)
    assert verdict.outcome is Outcome.HEALTHY, "deliberate failure: the plugin must save the evidence"
"""


def test_failed_test_leaves_describe_events_and_logs(
    harness_cluster: KindCluster,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    node = harness_cluster.core.list_node().items[0]
    native = node_platform(harness_cluster.core.api_client.sanitize_for_serialization(node))
    image = ensure_busybox_httpd(str(native)).ref
    harness_cluster.load_image(image)
    marker = f"crashy-says-goodbye-{secrets.token_hex(4)}"
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TEST.format(image=image, marker=marker)))
    monkeypatch.setenv("HARNESS_CACHE", str(CACHE))
    artifacts = tmp_path / "artifacts"

    result = pytester.runpytest_subprocess(
        "--harness-keep-cluster",
        "--harness-cluster",
        harness_cluster.name,
        "--harness-artifacts-dir",
        str(artifacts),
        "-p",
        "no:cacheprovider",
        timeout=240,
    )

    output = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "deliberate failure" in output
    found = re.search(r"saved in (\S+)", output)
    assert found and "incident-harness evidence" in output, output
    saved = Path(found.group(1))
    assert saved.parent == artifacts and saved.name.startswith("test_crashy_service_answers-"), saved
    assert saved.is_dir()

    describe = (saved / "describe-pods.txt").read_text()
    assert re.search(r"Name:\s+crashy-", describe), describe
    assert re.search(r"Exit Code:\s+3", describe), describe
    events = (saved / "events.txt").read_text()
    assert "pod/crashy-" in events and "Started" in events, events
    assert "BackOff" in events or "Back-off" in events, events
    logs = (saved / "logs-previous.txt").read_text()
    assert marker in logs, logs
    objects = yaml.safe_load((saved / "objects.yaml").read_text())
    kinds = {item["kind"] for item in objects["items"]}
    assert {"Deployment", "ReplicaSet", "Pod"} <= kinds, kinds

    kind_logs = saved / "kind-logs"
    assert (kind_logs / "kind-version.txt").is_file(), sorted(p.name for p in kind_logs.iterdir())
    for name in harness_cluster.nodes():
        kubelet = kind_logs / name / "kubelet.log"
        assert kubelet.is_file() and kubelet.stat().st_size > 0, f"no kubelet log of {name} in {kind_logs}"
        assert (kind_logs / name / "containerd.log").is_file()

    # The inner session's namespace is gone (kept only with --keep-namespace-on-failure).
    match = re.search(r"Namespace:\s+(\S+)", describe)
    assert match, describe
    try:
        namespace: Any = harness_cluster.core.read_namespace(match.group(1))
    except ApiException as exc:
        assert exc.status == 404, exc
    else:
        assert namespace.metadata.deletion_timestamp is not None, f"namespace {match.group(1)} was left behind"


def _wait_for_container(harness_cluster: KindCluster, namespace: str, wanted: Any, what: str) -> None:
    """Watch the namespace's pods until wanted(container status) holds for one of them (bounded)."""
    for event in watch.Watch().stream(harness_cluster.core.list_namespaced_pod, namespace, timeout_seconds=90):
        statuses = event["object"].status.container_statuses or []
        if any(wanted(s) for s in statuses):
            return
    raise AssertionError(f"no container of {namespace} was {what} within 90 s")


def test_evidence_keeps_the_last_words_in_every_phase_of_a_crash_loop(
    harness_cluster: KindCluster, harness_namespace: str, tmp_path: Path
) -> None:
    """logs-previous.txt holds the last terminated instance's log whatever the pod shows.

    Right after an exit the pod shows Terminated ("Error") for up to the back-off: then the last
    instance is the current one, and `kubectl logs --previous` answers "unable to retrieve
    container logs" (the instance before it is gone). While it waits in CrashLoopBackOff, and
    once a new instance runs, the last words are those of the previous instance.
    """
    node = harness_cluster.core.list_node().items[0]
    native = node_platform(harness_cluster.core.api_client.sanitize_for_serialization(node))
    image = ensure_busybox_httpd(str(native)).ref
    harness_cluster.load_image(image)
    marker = f"last-words-{secrets.token_hex(4)}"
    container = {"name": "main", "image": image, "command": ["/bin/busybox", "sh", "-c", f"echo {marker} >&2; exit 3"]}
    pod = {"terminationGracePeriodSeconds": 0, "containers": [container]}
    docs = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "last-words"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "last-words"}},
                "template": {"metadata": {"labels": {"app": "last-words"}}, "spec": pod},
            },
        }
    ]
    rendered = workload.render(docs, namespace=harness_namespace, image=image, pull_policy="IfNotPresent")
    applied = workload.apply(harness_cluster.api_client(), rendered)

    phases = {
        "Terminated after a restart": lambda s: s.restart_count >= 1 and s.state.terminated is not None,
        "waiting in CrashLoopBackOff": lambda s: (
            s.state.waiting is not None and s.state.waiting.reason == "CrashLoopBackOff"
        ),
    }
    for what, wanted in phases.items():
        _wait_for_container(harness_cluster, harness_namespace, wanted, what)
        saved = harness_cluster.collect_evidence(harness_namespace, applied.selector, tmp_path / what.split()[0])
        last_words = (saved / "logs-previous.txt").read_text()
        assert marker in last_words, f"{what}: {last_words}"
        assert "unable to retrieve" not in last_words, f"{what}: {last_words}"


# -- the emulation check in the plugin's watch -------------------------------------------------------


def test_plugin_never_calls_a_foreign_image_healthy(
    harness_session: Any,
    deploy: Any,
    expect_outcome: Any,
    httpd_images: dict[str, str],
    httpd_deployment: Any,
) -> None:
    """A foreign image, watched by expect_outcome with Healthy allowed and no hint from the test.

    Where the host emulates the foreign platform (a QEMU handler with F: the emulation matrix
    cell) the pod runs and must be reported "Ran under emulation"; elsewhere it fails with exec
    format error. Healthy is wrong on every host.
    """
    from harness.outcomes import Outcome

    foreign = httpd_images["foreign"]
    applied = deploy(httpd_deployment("foreign-allowed-healthy"), image=foreign)
    verdict = expect_outcome(applied, {Outcome.HEALTHY, Outcome.CRASH_LOOP, Outcome.RAN_EMULATED}, timeout=120)
    emulated = harness_session.emulated([foreign])
    assert verdict.outcome is not Outcome.HEALTHY, verdict.summary
    assert verdict.outcome is (Outcome.RAN_EMULATED if emulated else Outcome.CRASH_LOOP), verdict.summary
