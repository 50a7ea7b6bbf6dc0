"""Errors a user can meet: each says what failed and what to do next."""

from __future__ import annotations

import signal


class HarnessError(Exception):
    """A failure with a one-line cause and a one-line remedy; no traceback is shown for it."""

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.cause}\n  what to do: {self.remedy}"
        return self.cause


class ToolError(HarnessError):
    """A subprocess that failed: carries the command line, exit code and output."""

    def __init__(
        self,
        cmd: list[str],
        returncode: int,
        stdout: str,
        stderr: str,
        remedy: str = "",
        tail_lines: int = 15,
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        output = (stderr.strip() or stdout.strip()).splitlines()[-tail_lines:]
        shown = "\n    ".join(output) if output else "(no output)"
        cause = f"command failed (exit {returncode}): {' '.join(cmd)}\n    {shown}"
        super().__init__(cause, remedy)


class ToolMissing(HarnessError):
    """A required program is not installed."""


class EngineUnavailable(HarnessError):
    """The Docker engine does not answer."""


class ClusterGone(HarnessError):
    """The kind cluster disappeared or stopped answering mid-run."""


class GuardRefused(HarnessError):
    """The kubeconfig context is not a kind cluster made by the harness."""


class WatchStopped(HarnessError):
    """A watch stopped on request (its stop event was set by another thread)."""


class NotManaged(GuardRefused):
    """A cluster, container or image the harness did not make: it refuses to delete or change it."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised in the main thread so every clean-up path runs as for Ctrl-C.

    exit_status is the shell's convention, 128 + the signal number: 130 SIGINT, 143 SIGTERM, 129 SIGHUP.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        self.exit_status = 128 + self.signum
        try:
            self.signal_name = signal.Signals(signum).name
        except ValueError:
            self.signal_name = f"signal {signum}"
        super().__init__(self.signal_name)


class BadInput(HarnessError):
    """The user's input is wrong (exit status 2): a manifest, a scenario's step, a workload."""


class ManifestRejected(BadInput):
    """The API server refused an object of a manifest: names the file and the object."""
