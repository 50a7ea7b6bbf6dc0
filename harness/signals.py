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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler: raise Interrupted, unless Ctrl-C is being held back this moment.

    Code that creates a resource and registers its clean-up holds SIGINT back by installing a
    handler of its own for that short while; these signals then go to that handler too, so
    they are held back in the same way.
    """
    held = signal.getsignal(signal.SIGINT)
    if callable(held) and held is not signal.default_int_handler and held is not _interrupt:
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


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (a plain KeyboardInterrupt), 128 + the signal number for an Interrupted."""
    return exc.exit_status if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def signal_name(exc: KeyboardInterrupt) -> str:
    """SIGINT for Ctrl-C (a plain KeyboardInterrupt), else the signal's name."""
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
