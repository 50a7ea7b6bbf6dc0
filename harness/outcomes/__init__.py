"""Outcomes of a workload: what its pods did, why, and the evidence.

One job per module:
- model: the data (outcomes, evidence, causes, verdicts, pod and container states);
- classify: pure classification of the API's JSON objects (unit-tested on recorded objects);
- api: API calls with bounded retries and resumable watch streams;
- watch: the watch loop that turns pods and events into a verdict;
- rollout: Deployment rollouts and their waits.
"""

from harness.outcomes.api import _Api
from harness.outcomes.classify import (
    HealthGate,
    ProbeCount,
    ProbeLedger,
    classify_pod,
    classify_workload,
    created_after,
    diagnose,
    exec_format_explanation,
    expected_replicas,
    has_exec_format_error,
    healthy_gate,
    job_outcome,
    mark_emulated,
    parse_probe_metrics,
    selector_string,
)
from harness.outcomes.model import (
    CRASH_LOOP_REASON,
    CREATE_ERROR_REASONS,
    DECISIVE,
    FAILURES,
    IMAGE_PULL_REASONS,
    LOG_GONE,
    Cause,
    ContainerState,
    Evidence,
    EvidenceKind,
    HealthEvidence,
    ImageRun,
    Outcome,
    PodState,
    ProbeSpec,
    Verdict,
)
from harness.outcomes.rollout import (
    RolloutResult,
    RolloutStatus,
    current_pods_selector,
    rollout_state,
    wait_deployment_available,
    wait_rollout,
)
from harness.outcomes.watch import _lacks_resources, _read_log, watch_workload

__all__ = [
    "CRASH_LOOP_REASON",
    "CREATE_ERROR_REASONS",
    "DECISIVE",
    "FAILURES",
    "IMAGE_PULL_REASONS",
    "LOG_GONE",
    "Cause",
    "ContainerState",
    "Evidence",
    "EvidenceKind",
    "HealthEvidence",
    "HealthGate",
    "ImageRun",
    "Outcome",
    "PodState",
    "ProbeCount",
    "ProbeLedger",
    "ProbeSpec",
    "RolloutResult",
    "RolloutStatus",
    "Verdict",
    "_Api",
    "_lacks_resources",
    "_read_log",
    "classify_pod",
    "classify_workload",
    "created_after",
    "current_pods_selector",
    "diagnose",
    "exec_format_explanation",
    "expected_replicas",
    "has_exec_format_error",
    "healthy_gate",
    "job_outcome",
    "mark_emulated",
    "parse_probe_metrics",
    "rollout_state",
    "selector_string",
    "wait_deployment_available",
    "wait_rollout",
    "watch_workload",
]
