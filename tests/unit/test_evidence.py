"""Evidence commands re-ask kubectl while a log the pod status names has just been removed.

The kubelet keeps one dead container per pod container; the real race is seen on clusters
(tests/e2e/test_cluster_lifecycle.py). Here a stand-in for tools.run plays the two answers.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness import cluster, tools

GONE = "[pod/crashy-1/main] unable to retrieve container logs for containerd://abc"


def scripted(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> tools.Result:
        calls.append(argv)
        text = answers[min(len(calls), len(answers)) - 1]
        return tools.Result(tuple(argv), 0, text, "")

    monkeypatch.setattr(cluster.tools, "run", run)
    return calls


def test_log_gone_is_asked_again_until_the_status_catches_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = scripted(monkeypatch, [GONE, "[pod/crashy-1/main] the real last words\n"])
    assert cluster._evidence_text(["kubectl", "logs", "--previous"]) == "[pod/crashy-1/main] the real last words\n"
    assert len(calls) == 2


def test_other_output_is_taken_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = scripted(monkeypatch, ["Name: crashy-1\n"])
    assert cluster._evidence_text(["kubectl", "describe", "pods"]) == "Name: crashy-1\n"
    assert len(calls) == 1


def test_a_log_that_stays_gone_is_written_as_kubectl_said_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(cluster.time, "monotonic", lambda: float(next(clock)))
    calls = scripted(monkeypatch, [GONE])
    assert cluster._evidence_text(["kubectl", "logs", "--previous"]) == GONE
    assert 1 < len(calls) < 10


def _status(state: str, last_terminated: bool) -> Any:
    states = {k: (object() if k == state else None) for k in ("running", "terminated", "waiting")}
    return SimpleNamespace(
        state=SimpleNamespace(**states),
        last_state=SimpleNamespace(terminated=object() if last_terminated else None),
    )


@pytest.mark.parametrize(
    ("state", "last_terminated", "which"),
    [
        ("running", True, "previous"),  # a newer instance runs: --previous is the one that ended
        ("running", False, None),  # never ended: no last words
        ("terminated", True, "current"),  # the instance that just exited is the current one
        ("terminated", False, "current"),
        ("waiting", True, "current"),  # CrashLoopBackOff: kubectl logs (no --previous) gives the one that ended
        ("waiting", False, None),  # ContainerCreating
    ],
)
def test_the_last_ended_instance_follows_the_status_read_each_time(
    state: str, last_terminated: bool, which: str | None
) -> None:
    assert cluster._last_ended(_status(state, last_terminated)) == which
