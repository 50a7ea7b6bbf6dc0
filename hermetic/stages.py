"""Content-keyed, atomic build stages with progress for the registry-free toolchain.

A stage's output lives in ``<cache>/<stage>/<key>/`` and counts as complete only when its
``.complete`` marker exists; it is built in a private ``.partial`` directory that is renamed
into place at the end, so an interrupted build never leaves an artifact that passes for
complete. Stdlib only: this runs before the project's Python dependencies are installed.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cache_root() -> Path:
    explicit = os.environ.get("HARNESS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "incident-harness"


def read_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    return pins


class StageFailed(Exception):
    """A stage failed: names the stage, the command, its exit code and the end of its output."""

    def __init__(self, stage: str, cmd: Sequence[str], returncode: int, tail: Sequence[str]) -> None:
        self.stage, self.cmd, self.returncode, self.tail = stage, list(cmd), returncode, list(tail)
        lines = "\n    ".join(tail[-20:]) or "(no output)"
        super().__init__(f"stage '{stage}' failed: {' '.join(cmd)} exited {returncode}\n    {lines}")


def content_key(*parts: object, files: Sequence[Path] = ()) -> str:
    """A short hash of values, functions (their syntax trees) and file contents: the stage's recipe."""
    h = hashlib.sha256()
    for part in parts:
        if callable(part):
            # The function's syntax tree, not its text: formatting and comments do not count.
            h.update(ast.dump(ast.parse(textwrap.dedent(inspect.getsource(part)))).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    for path in sorted(files):
        for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if item.is_file():
                h.update(str(item.relative_to(path.parent)).encode())
                h.update(item.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Progress:
    """Prints which stage runs, elapsed time, and a heartbeat while a long command works."""

    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def say(self, stage: str, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {stage}: {text}", flush=True)


PROGRESS = Progress()


def run(
    stage: str,
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    heartbeat: float = 20.0,
    describe: Callable[[str], str | None] | None = None,
) -> list[str]:
    """Run a command, keep its output, print a heartbeat with what it is doing; raise StageFailed."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: list[str] = []
    current: list[str] = [""]
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat):
            what = current[0]
            PROGRESS.say(stage, f"still working ({time.monotonic() - started:.0f}s){': ' + what if what else ''}")

    ticker = threading.Thread(target=beat, daemon=True)
    ticker.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if len(lines) > 4000:
                del lines[:2000]
            shown = describe(line) if describe else None
            if shown:
                current[0] = shown
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
    if rc != 0:
        raise StageFailed(stage, cmd, rc, lines[-40:])
    return lines


def cached(stage: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return <cache>/<stage>/<key>, building it atomically first when it is not complete."""
    root = cache_root() / "stages" / stage
    out = root / key
    if (out / ".complete").exists():
        PROGRESS.say(stage, f"cached ({out.name})")
        return out
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{key}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if out.exists():  # an earlier build died after the rename but before the marker: redo
        shutil.rmtree(out)
    partial = root / f".{key}.partial-{os.getpid()}"
    partial.mkdir()
    began = time.monotonic()
    PROGRESS.say(stage, "building")
    try:
        build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / ".complete").write_text(
        json.dumps({"stage": stage, "key": key, "seconds": round(time.monotonic() - began, 1)})
    )
    try:
        os.rename(partial, out)
    except OSError:
        if not (out / ".complete").exists():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # a concurrent build finished first: same content
    PROGRESS.say(stage, f"done in {time.monotonic() - began:.1f}s")
    for superseded in root.iterdir():  # outputs of earlier recipes: nothing refers to them any more
        if superseded.is_dir() and superseded.name != key and not superseded.name.startswith("."):
            shutil.rmtree(superseded, ignore_errors=True)
    return out


def fail(message: str, remedy: str) -> None:
    print(f"node-image: error: {message}\nnode-image: what to do: {remedy}", file=sys.stderr)
    raise SystemExit(2)
