"""SIGTERM and SIGHUP take Ctrl-C's path: Interrupted in the main thread, exit 143 / 129, the step named.

Signals are raised in this test process with signal.raise_signal, inside harness.signals.interrupting
(which restores the default action afterwards); the real process case is tests/e2e/test_interrupts.py.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from harness import cli, scenario, signals, tools
from harness.cluster import KindCluster
from harness.errors import Interrupted
from harness.runner import ExitStatus
from harness.session import _interrupts_deferred

SEED = scenario.SCENARIO_DIR / "arm64-on-amd64.yaml"


@pytest.fixture(autouse=True)
def _default_actions() -> Iterator[None]:
    for signum in signals.TERMINATING:
        if signal.getsignal(signum) is not signal.SIG_DFL:
            pytest.skip(f"{signum.name} has a handler in this test process")
    yield
    for signum in signals.TERMINATING:
        assert signal.getsignal(signum) is signal.SIG_DFL, f"{signum.name} was not restored"


@pytest.mark.parametrize(
    ("signum", "status", "name"),
    [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP"), (signal.SIGINT, 130, "SIGINT")],
)
def test_interrupted_carries_the_signal_and_the_shell_s_exit_status(signum: int, status: int, name: str) -> None:
    exc = Interrupted(signum)
    assert isinstance(exc, KeyboardInterrupt)
    assert (exc.signum, exc.exit_status, exc.signal_name, str(exc)) == (signum, status, name, name)
    assert signals.exit_status(exc) == status and signals.signal_name(exc) == name


def test_a_plain_keyboard_interrupt_is_sigint() -> None:
    assert signals.exit_status(KeyboardInterrupt()) == 130 and signals.signal_name(KeyboardInterrupt()) == "SIGINT"
    assert ExitStatus.TERMINATED == 143 and ExitStatus.HANGUP == 129 and ExitStatus.INTERRUPTED == 130


@pytest.mark.parametrize("signum", signals.TERMINATING)
def test_inside_interrupting_the_signal_raises_interrupted(signum: signal.Signals) -> None:
    with pytest.raises(Interrupted) as caught, signals.interrupting():
        signal.raise_signal(signum)
        pytest.fail("the signal did not interrupt")
    assert caught.value.signum == signum


def test_an_ignored_signal_stays_ignored() -> None:
    """A run started under nohup ignores SIGHUP; the harness does not take that back."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.interrupting():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)  # nothing happens
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_outside_the_main_thread_nothing_changes() -> None:
    seen: list[object] = []

    def work() -> None:
        with signals.interrupting():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]


def test_while_ctrl_c_is_held_back_so_is_sigterm() -> None:
    """Code that holds SIGINT back (to register a clean-up) gets SIGTERM too, and decides when to raise."""
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        with signals.interrupting():
            signal.raise_signal(signal.SIGTERM)
            assert held == [signal.SIGTERM]
            later = KeyboardInterrupt()  # what the holding code raises once it lets go
            assert signals.exit_status(later) == 143 and signals.signal_name(later) == "SIGTERM"
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signals.exit_status(KeyboardInterrupt()) == 130  # forgotten outside the block


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_the_cli_exits_143_or_129(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: signal.Signals, status: int
) -> None:
    def killed(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signum)
        pytest.fail("the signal did not interrupt")

    monkeypatch.setattr(cli, "run_scenario", killed)
    assert cli.main(["reproduce", str(SEED), "--quiet"]) == status
    assert f"interrupted ({signum.name})" in capsys.readouterr().err


def test_every_kubectl_command_uses_the_harness_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tools, "kubectl_binary", lambda: "kubectl")
    kubeconfig = tmp_path / "kubeconfig"
    assert tools.kubectl_command(kubeconfig) == [
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(tmp_path / "cache" / "kube-cache"),
    ]
    commands: list[list[str]] = []

    def run(cmd: list[str], **_: Any) -> tools.Result:
        commands.append(list(cmd))
        return tools.Result(tuple(cmd), 0, "", "")

    monkeypatch.setattr(tools, "run", run)
    monkeypatch.setattr(tools, "kind_binary", lambda explicit=None: "kind")
    KindCluster(name="x", kubeconfig=kubeconfig).collect_evidence("ns", "app=x", tmp_path / "evidence")
    kubectl = [c for c in commands if c[0] == "kubectl"]
    assert len(kubectl) == 4
    assert all(c[1:5] == tools.kubectl_command(kubeconfig)[1:] for c in kubectl)


def test_sigterm_while_a_namespace_is_registered_for_clean_up_waits_and_still_exits_143() -> None:
    """The session holds signals back between creating a namespace and registering its deletion.

    (Where in the run the report says it stopped: tests/unit/test_runner.py.)
    """
    registered: list[str] = []
    with signals.interrupting():
        with pytest.raises(KeyboardInterrupt) as caught, _interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)  # arrives right after the namespace was created
            registered.append("namespace")
        # Read inside interrupting(), where the run reads it: the held-back signal is known there.
        status = signals.exit_status(caught.value)
    assert registered == ["namespace"]
    assert status == ExitStatus.TERMINATED


def test_deferred_signals_act_after_the_block() -> None:
    steps: list[str] = []
    with pytest.raises(Interrupted) as caught, signals.interrupting():
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
            steps.append("still running")
        steps.append("not reached")
    assert steps == ["still running"] and caught.value.signum == signal.SIGTERM


def test_a_helper_thread_can_leave_the_signals_to_the_main_thread() -> None:
    masks: list[set[int]] = []

    def helper() -> None:
        signals.leave_to_main_thread()
        masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, set())))

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= masks[0]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # this thread's mask is its own
