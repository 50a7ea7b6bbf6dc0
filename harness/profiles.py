"""Cluster profiles: what a profile sets in the kubelet, and how to read back what the kubelet took.

Two profiles:

- ``faithful``: the kubelet's defaults. A crash-looping container is restarted after 10 s, 20 s,
  40 s ... up to 300 s, as on a production node. ``reproduce`` uses it unless asked.
- ``fast``: kind's kubeadm config patches give every node's KubeletConfiguration
  ``crashLoopBackOff.maxContainerRestartPeriod`` (KEP-4603/KEP-5593) with the feature gate
  ``KubeletCrashLoopBackOffMax`` on. The gate is alpha (off by default) from v1.32 and beta (on by
  default) from v1.35; the harness always sets it, which every version from v1.32 accepts. On
  v1.34.4 it is needed: without it the kubelet refuses to start ("invalid configuration:
  FeatureGate KubeletCrashLoopBackOffMax not enabled, CrashLoopBackOff.MaxContainerRestartPeriod
  must not be set") and kind's kubeadm init fails after minutes. A kubelet older than v1.32 does
  not know the gate: the harness refuses before creating the cluster. The test suite's cluster
  uses this profile.

The value, by measurement (v1.34.4 node image, kind v0.30.0, 2 cores, load average 1 to 14 from
other work on the machine): restart times of a pod whose container exits at once (``busybox
false``), seconds from its creation, one run a line:

- faithful: 3, 17, 44 / 2, 17, 42, 97 (the 10 s, 20 s, 40 s curve plus the kubelet's latency);
- fast, 1 s: 3, 15, 29, 43, 58 / 3, 5, 7, 10, 23, 26, 42, 56, 68 / 3, 17, 32, 33, 48, 61, 74, 88.
  In the seed scenario (two fresh pods) the second restart came 4.9 s after apply.

The floor with fast is not the configured period but the kubelet's pod worker: after a sync that
fails because the container is in back-off, the pod worker retries the pod after 10 s plus up to
50 % jitter (kubelet ``backOffPeriod``, not configurable). Any maxContainerRestartPeriod at or under
10 s therefore gives about the same rhythm; 1 s (the minimum the kubelet accepts) is chosen because
a restart is then never held back longer than the pod worker holds it, whatever wakes the pod
worker earlier (the 2 s restarts above). So on v1.34 fast gives the third restart at about 30 s
instead of 43 s and the fourth at 33-43 s instead of 97 s; while a pod is fresh (its own status
updates wake the pod worker) restarts come 1-2 s apart, which is what the seed's incident needs.

What fast changes besides the time: a container the kubelet kills for a failing liveness or
startup probe is restarted at once, so the API never shows it Waiting in CrashLoopBackOff (seen
with 1 s and with 3 s: 8 to 14 restarts in 90 s, always "Running"); a verdict that waits for that
Waiting reason never comes. A crash loop there shows as restarts with their termination reasons.
With 3 s the seed's incident watch took 7.8 s (1 s: 4.9 to 6.5 s), so 1 s stays.

Reports record what the kubelet took, read from every node's configz through the API server's
node proxy (``/api/v1/nodes/NODE/proxy/configz``), never the assumed value.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s

from harness.errors import BadInput, HarnessError

PROFILE_LABEL = "incident-harness.io/profile"  # on every node: the profile the cluster was made with
FEATURE_GATE = "KubeletCrashLoopBackOffMax"
FAST_MAX_RESTART_PERIOD = "1s"  # chosen by measurement: see the module docstring
DEFAULT_MAX_RESTART_PERIOD = "300s"  # the kubelet's maximum back-off when the field is absent
GATE_SINCE = (1, 32)  # alpha, off by default
GATE_ON_BY_DEFAULT_SINCE = (1, 35)  # beta
# Keys of the facts a report records (harness.session.Session.profile_facts, harness.report.RunReport.profile).
PROFILE_FACT = "cluster profile"
PERIOD_FACT = "kubelet maxContainerRestartPeriod"
GATE_FACT = f"kubelet {FEATURE_GATE}"


class ProfileError(BadInput):
    """A profile name that does not exist."""


class ProfileNotApplied(HarnessError):
    """A kubelet that does not take (or did not take) what the profile sets."""


class Profile(enum.Enum):
    FAITHFUL = "faithful"
    FAST = "fast"

    @classmethod
    def parse(cls, name: str | Profile) -> Profile:
        """The profile of that name; ProfileError listing the valid names otherwise."""
        if isinstance(name, Profile):
            return name
        for profile in cls:
            if profile.value == str(name).strip().lower():
                return profile
        raise ProfileError(
            f"unknown cluster profile {name!r}",
            f"use one of: {', '.join(names())}",
        )

    @property
    def max_restart_period(self) -> str | None:
        """The maxContainerRestartPeriod this profile sets (None: the kubelet's default)."""
        return FAST_MAX_RESTART_PERIOD if self is Profile.FAST else None

    def kubelet_configuration(self) -> dict[str, Any] | None:
        """The KubeletConfiguration fields this profile sets (None: none)."""
        period = self.max_restart_period
        if period is None:
            return None
        return {
            "kind": "KubeletConfiguration",
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "featureGates": {FEATURE_GATE: True},
            "crashLoopBackOff": {"maxContainerRestartPeriod": period},
        }

    def kubeadm_config_patches(self) -> list[str]:
        """kind's ``kubeadmConfigPatches``: YAML strings that kind merges into every node's kubeadm config."""
        config = self.kubelet_configuration()
        if config is None:
            return []
        return [yaml.safe_dump(config, sort_keys=False)]


def names() -> list[str]:
    return [p.value for p in Profile]


# -- versions ---------------------------------------------------------------------------------------

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of 'v1.34.4', 'v1.34.4-5713ff800a0d' or an image ref ending in such a tag."""
    tag = text.rsplit(":", 1)[-1] if ":" in text.rsplit("/", 1)[-1] else text
    found = _VERSION.search(tag)
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_node_image(profile: Profile, image: str) -> None:
    """Before creation: ProfileNotApplied when the node image's Kubernetes is too old for the profile.

    An image whose tag names no version is let through; configz after creation tells.
    """
    if profile.max_restart_period is None:
        return
    version = parse_version(image)
    if version is not None and version < GATE_SINCE:
        raise ProfileNotApplied(
            f"node image {image} is Kubernetes v{version[0]}.{version[1]}: its kubelet has no "
            f"{FEATURE_GATE} feature gate (from v{GATE_SINCE[0]}.{GATE_SINCE[1]}), so profile "
            f"{profile.value} cannot set crashLoopBackOff.maxContainerRestartPeriod",
            f"use a node image of v{GATE_SINCE[0]}.{GATE_SINCE[1]} or newer (--node-image), "
            f"or --profile {Profile.FAITHFUL.value}",
        )


# -- durations --------------------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def duration_seconds(text: str) -> float:
    """A Go duration ('1s', '5m0s', '300ms', '1m30s') in seconds; ValueError if it is not one."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return total


# -- reading back -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeKubeletSettings:
    """What one node's kubelet runs with, from its configz."""

    node: str
    kubelet_version: str
    max_container_restart_period: str  # effective: DEFAULT_MAX_RESTART_PERIOD when the field is absent
    configured: bool  # crashLoopBackOff.maxContainerRestartPeriod is present in configz
    feature_gate: bool | None  # featureGates[KubeletCrashLoopBackOffMax]; None: not set

    @property
    def gate_on(self) -> bool:
        """The gate is on: set true, or not set on a version where it is on by default."""
        if self.feature_gate is not None:
            return self.feature_gate
        version = parse_version(self.kubelet_version)
        return version is not None and version >= GATE_ON_BY_DEFAULT_SINCE

    @property
    def effective_period(self) -> str:
        """The maximum back-off the kubelet applies: the field only counts with the gate on."""
        return self.max_container_restart_period if self.gate_on else DEFAULT_MAX_RESTART_PERIOD


def parse_configz(node: str, configz: Mapping[str, Any], kubelet_version: str = "") -> NodeKubeletSettings:
    """Pure: one node's settings from its configz document ({"kubeletconfig": {...}})."""
    config = configz.get("kubeletconfig")
    if not isinstance(config, Mapping):
        raise HarnessError(
            f"node {node}: its configz has no kubeletconfig (keys: {', '.join(sorted(configz)) or 'none'})",
            f"look at it with 'kubectl get --raw /api/v1/nodes/{node}/proxy/configz'",
        )
    backoff = config.get("crashLoopBackOff")
    period = backoff.get("maxContainerRestartPeriod") if isinstance(backoff, Mapping) else None
    gates = config.get("featureGates")
    gate = gates.get(FEATURE_GATE) if isinstance(gates, Mapping) else None
    return NodeKubeletSettings(
        node=node,
        kubelet_version=kubelet_version,
        max_container_restart_period=str(period) if period else DEFAULT_MAX_RESTART_PERIOD,
        configured=bool(period),
        feature_gate=bool(gate) if gate is not None else None,
    )


@dataclass(frozen=True)
class KubeletSettings:
    """Every node's kubelet settings, as read from configz."""

    nodes: tuple[NodeKubeletSettings, ...]

    @property
    def max_container_restart_period(self) -> str:
        """The effective maximum restart period: one value, or each node's when they differ."""
        values = {n.effective_period for n in self.nodes}
        if len(values) == 1:
            return values.pop()
        return ", ".join(f"{n.node}={n.effective_period}" for n in self.nodes) or "unknown"

    @property
    def feature_gate(self) -> str:
        """The gate as the kubelets run it: 'on', 'off', 'on by default', or each node's."""
        values = {_gate_word(n) for n in self.nodes}
        if len(values) == 1:
            return values.pop()
        return ", ".join(f"{n.node}={_gate_word(n)}" for n in self.nodes) or "unknown"

    @property
    def kubelet_versions(self) -> str:
        return ", ".join(sorted({n.kubelet_version for n in self.nodes if n.kubelet_version})) or "unknown"

    def facts(self) -> dict[str, str]:
        """For a report: what the kubelets run with, and where that was read."""
        return {
            PERIOD_FACT: self.max_container_restart_period,
            GATE_FACT: self.feature_gate,
            "kubelet version": self.kubelet_versions,
            "kubelet settings read from": f"configz of {len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}",
        }

    def describe(self) -> str:
        return (
            f"maxContainerRestartPeriod {self.max_container_restart_period}, {FEATURE_GATE} {self.feature_gate} "
            f"(kubelet {self.kubelet_versions}, configz of {len(self.nodes)} node(s))"
        )


def _gate_word(n: NodeKubeletSettings) -> str:
    if n.feature_gate is None:
        return "on by default" if n.gate_on else "off (default)"
    return "on" if n.feature_gate else "off"


def read_kubelet_settings(core: k8s.CoreV1Api) -> KubeletSettings:
    """Every node's kubelet settings, from GET /api/v1/nodes/NODE/proxy/configz through the API server."""
    nodes: list[Any] = core.list_node().items
    read = []
    for node in nodes:
        name = str(node.metadata.name)
        version = str(node.status.node_info.kubelet_version or "") if node.status and node.status.node_info else ""
        try:
            # Not deserialised by the client: for a 'str' response it would give a dict's repr.
            response: Any = core.connect_get_node_proxy_with_path(name, "configz", _preload_content=False)
            data = json.loads(response.data)
        except urllib3.exceptions.HTTPError:
            raise  # no answer: the session's rule says whether the cluster is gone (Session.answering)
        except Exception as exc:
            raise HarnessError(
                f"node {name}: cannot read its kubelet's configz through the API server ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})",
                f"look at it with 'kubectl get --raw /api/v1/nodes/{name}/proxy/configz'",
            ) from exc
        read.append(parse_configz(name, data if isinstance(data, Mapping) else {}, version))
    return KubeletSettings(tuple(read))


def check_applied(profile: Profile, settings: KubeletSettings, cluster: str) -> None:
    """ProfileNotApplied unless every kubelet runs with what the profile sets (never a silent fallback)."""
    wanted = profile.max_restart_period
    if wanted is None:
        return
    for n in settings.nodes:
        problem = None
        if not n.configured:
            problem = "crashLoopBackOff.maxContainerRestartPeriod is absent from its configz"
        elif duration_seconds(n.max_container_restart_period) != duration_seconds(wanted):
            problem = f"its maxContainerRestartPeriod is {n.max_container_restart_period}, not {wanted}"
        elif not n.gate_on:
            problem = f"the {FEATURE_GATE} feature gate is off, so the kubelet ignores the setting"
        if problem:
            raise ProfileNotApplied(
                f"cluster {cluster}: profile {profile.value} did not take on node {n.node} "
                f"(kubelet {n.kubelet_version or 'of unknown version'}): {problem}",
                f"delete the cluster ('python -m harness cluster delete --name {cluster}') and create it again "
                f"with a node image of v{GATE_SINCE[0]}.{GATE_SINCE[1]} or newer, or use --profile faithful",
            )


def profile_of_labels(labels: Mapping[str, str] | None) -> Profile:
    """The profile recorded in a node's labels; a node without the label was made with kubelet defaults."""
    value = (labels or {}).get(PROFILE_LABEL)
    if not value:
        return Profile.FAITHFUL
    return Profile.parse(value)


def profile_of_nodes(labels: Iterable[Mapping[str, str] | None]) -> Profile | None:
    """The one profile of a cluster's nodes; None when they disagree (or there are none)."""
    found = {profile_of_labels(lab) for lab in labels}
    return found.pop() if len(found) == 1 else None


def profile_of_node_objects(nodes: Iterable[Any]) -> Profile | None:
    """profile_of_nodes for V1Node objects (their metadata.labels)."""
    return profile_of_nodes(n.metadata.labels if n.metadata is not None else None for n in nodes)


__all__ = [
    "DEFAULT_MAX_RESTART_PERIOD",
    "FAST_MAX_RESTART_PERIOD",
    "FEATURE_GATE",
    "GATE_FACT",
    "PERIOD_FACT",
    "PROFILE_FACT",
    "PROFILE_LABEL",
    "KubeletSettings",
    "NodeKubeletSettings",
    "Profile",
    "ProfileError",
    "ProfileNotApplied",
    "check_applied",
    "check_node_image",
    "duration_seconds",
    "names",
    "parse_configz",
    "parse_version",
    "profile_of_labels",
    "profile_of_node_objects",
    "profile_of_nodes",
    "read_kubelet_settings",
]
