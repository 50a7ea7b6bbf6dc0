"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

A CI cancel, `timeout`, `docker stop` or a closed terminal sends SIGTERM or SIGHUP, whose default
action kills the process at once: no report, the run's namespace and any binfmt_misc handler left
behind. Inside `interrupting()` they raise `Interrupted(signum)` in the main thread instead, a
KeyboardInterrupt, so every clean-up path written for Ctrl-C runs, and the exit status says which
signal it was (143, 129).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from harness.errors import Interrupted

TERMINATING: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)

# The signal last handed to a handler that holds Ctrl-C back: that code raises a plain
# KeyboardInterrupt once it lets go, and this says which signal that interrupt stands for.
_held_back: list[int] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler: raise Interrupted, unless Ctrl-C is being held back this moment.

    Code that creates a resource and registers its clean-up holds SIGINT back by installing a
    handler of its own for that short while; these signals then go to that handler too, so
    they are held back in the same way.
    """
    held = signal.getsignal(signal.SIGINT)
    if callable(held) and held is not signal.default_int_handler and held is not _interrupt:
        _held_back[:] = [signum]
        held(signum, frame)
        return
    raise Interrupted(signum)


@contextmanager
def interrupting(signums: Sequence[signal.Signals] = TERMINATING) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Interrupted in the main thread; restored afterwards.

    Only signals whose action is the default (terminate) are taken over: an ignored signal (a
    run started with nohup ignores SIGHUP) stays ignored, and a handler of the caller's stays.
    Outside the main thread nothing changes (Python runs handlers in the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, signal.Handlers] = {}
    for signum in signums:
        current = signal.getsignal(signum)
        if current is signal.SIG_DFL:
            previous[signum] = current
            signal.signal(signum, _interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _held_back.clear()


@contextmanager
def deferred(signums: Sequence[signal.Signals] = (signal.SIGINT, *TERMINATING)) -> Iterator[None]:
    """Within the block, these signals are noted, not acted on; afterwards each noted one is raised again.

    For a few steps that must all run (restoring the kernel's state). Handlers, not a signal
    mask: a signal mask is per thread, and with other threads running the kernel may hand the
    signal to one of them, after which Python still runs the handler in the main thread.
    Outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, frame: noted.append(number)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number in dict.fromkeys(noted):
            signal.raise_signal(number)


def leave_to_main_thread(signums: Sequence[signal.Signals] = (signal.SIGINT, *TERMINATING)) -> None:
    """Call first in a helper thread: the kernel then hands these signals to the main thread only.

    Python runs signal handlers in the main thread, but the kernel may deliver a signal sent to
    the process to any thread not blocking it. When a helper thread blocked in a read gets it,
    the main thread learns of it only when its own wait ends: measured, about one SIGTERM in
    six during a watch took up to the supervisor's 5 s probe interval to act instead of 0.3 s.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signums))


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """The signal an interrupt stands for: its own, the one held back and raised later as a plain
    KeyboardInterrupt, else SIGINT (Ctrl-C)."""
    if isinstance(exc, Interrupted):
        return exc
    return Interrupted(_held_back[-1] if _held_back else signal.SIGINT)


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the number of the signal the interrupt stands for: 130 SIGINT, 143 SIGTERM, 129 SIGHUP."""
    return as_interrupted(exc).exit_status


def signal_name(exc: KeyboardInterrupt) -> str:
    """The name of the signal the interrupt stands for (SIGINT for Ctrl-C)."""
    return as_interrupted(exc).signal_name
