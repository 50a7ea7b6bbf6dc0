"""Locating and running the external tools (docker, kind, buildx, go) with useful errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.errors import EngineUnavailable, ToolError, ToolMissing
from hermetic.stages import cache_root, read_versions

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Result:
    """The outcome of one finished command."""

    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    cmd: list[str],
    *,
    check: bool = True,
    timeout: float | None = 600,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    remedy: str = "",
) -> Result:
    """Run a command given as an argument list; raise ToolError on failure when check is set."""
    binary = isinstance(input, bytes)
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=not binary,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"{cmd[0]} is not installed", "run 'make setup'") from exc
    except subprocess.TimeoutExpired as exc:
        out = _text(exc.stdout)
        err = _text(exc.stderr)
        raise ToolError(cmd, -1, out, err + f"\n(timed out after {timeout} s)", remedy) from exc
    out, err = _text(proc.stdout), _text(proc.stderr)
    if check and proc.returncode != 0:
        raise ToolError(cmd, proc.returncode, out, err, remedy)
    return Result(tuple(cmd), proc.returncode, out, err)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """The pinned versions from hermetic/versions.env."""
    return read_versions()


def cache_dir() -> Path:
    """Where built tools, stages and contexts are cached, outside the clone ($HARNESS_CACHE)."""
    return cache_root()


def _cached_or_path(name: str, cached: Path) -> str | None:
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


def kind_binary(explicit: str | None = None) -> str:
    """The kind binary: an explicit one, the pinned one built by setup, else kind on PATH."""
    if explicit:
        if shutil.which(explicit) or Path(explicit).is_file():
            return explicit
        raise ToolMissing(f"kind binary {explicit!r} not found", "pass an existing path to --kind-bin")
    version = versions()["KIND_VERSION"]
    found = _cached_or_path("kind", cache_dir() / "bin" / f"kind-{version}")
    if not found:
        raise ToolMissing(f"kind {version} is not installed", "run 'make setup'")
    return found


def kubectl_binary() -> str:
    """kubectl built with the node image (matching its version), else kubectl on PATH."""
    version = versions()["K8S_VERSION"]
    found = _cached_or_path("kubectl", cache_dir() / "bin" / f"kubectl-{version}")
    if not found:
        raise ToolMissing("kubectl is not installed", "run 'make node-image' (it builds kubectl) or install kubectl")
    return found


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write text to path so that a reader finds the old file or the whole new one, never a part.

    A temporary file in the same folder, flushed to disk, then renamed over path; on any failure
    (an interrupt too) the temporary file is removed. The folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def kube_cache_dir() -> Path:
    """kubectl's discovery and HTTP cache: under the harness's cache, never ~/.kube/cache."""
    return cache_dir() / "kube-cache"


def kubectl_command(kubeconfig: Path) -> list[str]:
    """The start of every kubectl command line the harness runs: its kubeconfig and its cache folder."""
    return [kubectl_binary(), "--kubeconfig", str(kubeconfig), "--cache-dir", str(kube_cache_dir())]


def docker_binary() -> str:
    found = shutil.which("docker")
    if not found:
        raise ToolMissing("the docker CLI is not installed", "run 'make setup'")
    return found


def buildx_command() -> list[str] | None:
    """How to call buildx: the docker CLI plugin, or the standalone binary setup built; None if absent."""
    docker = shutil.which("docker")
    if docker and run([docker, "buildx", "version"], check=False, timeout=30).returncode == 0:
        return [docker, "buildx"]
    version = versions()["BUILDX_VERSION"]
    standalone = cache_dir() / "bin" / f"buildx-{version}"
    if standalone.is_file():
        return [str(standalone)]
    return None


def ensure_engine() -> None:
    """Raise EngineUnavailable (one line of cause, one of remedy) when dockerd does not answer."""
    result = run([docker_binary(), "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if result.returncode != 0:
        raise EngineUnavailable(
            "the Docker engine does not answer (" + (result.stderr.strip().splitlines() or ["no output"])[-1] + ")",
            "run 'make setup' to start it, or start Docker yourself",
        )
