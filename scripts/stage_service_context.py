"""Fill an image context for orders-api: app/, docker/uvicorn and .deps/ (its wheels, installed).

The seed scenarios declare it as their images' prepare step (scenarios/arm64-on-amd64.yaml):

    prepare:
      command: ["{python}", scripts/stage_service_context.py, "{context}"]
      inputs: [app, docker/uvicorn, scripts/stage_service_context.py]

The harness runs it in the repository root with an empty folder to fill, and caches the folder
by the content of those inputs. Image builds cannot reach PyPI, so the pinned pure-Python wheels
of app/requirements.txt are downloaded here on the host (once, into the harness cache) and
installed with ``pip install --target``; the Dockerfile only COPYs.

    python scripts/stage_service_context.py DEST    # DEST: an empty folder (or $HARNESS_CONTEXT)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.tools import cache_dir, run

ROOT = Path(__file__).resolve().parent.parent
# What the service's requirements are resolved for: pure-Python wheels for CPython 3.11 only.
WHEEL_TARGET = ("--platform", "any", "--implementation", "py", "--abi", "none", "--python-version", "3.11")


def prepare_wheels(requirements: Path) -> Path:
    """The pinned pure-Python wheels of requirements in a cache directory (downloaded once)."""
    key = hashlib.sha256(requirements.read_bytes() + " ".join(WHEEL_TARGET).encode()).hexdigest()[:16]
    dest = cache_dir() / "wheels" / key
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".wheels-"))
    try:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--no-deps",
                *WHEEL_TARGET,
                "-r",
                str(requirements),
                "-d",
                str(tmp),
            ],
            timeout=600,
            remedy=f"check that PyPI is reachable and that {requirements} pins only packages with "
            "pure-Python (py3-none-any) wheels",
        )
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def stage(dest: Path, root: Path = ROOT) -> None:
    """Fill dest (an existing, empty folder) with app/, docker/uvicorn and .deps/."""
    app_dir, script = root / "app", root / "docker" / "uvicorn"
    requirements = app_dir / "requirements.txt"
    for needed in (requirements, script):
        if not needed.is_file():
            raise HarnessError(f"{needed} is missing", "restore it from the repository")
    wheels = prepare_wheels(requirements)
    shutil.copytree(app_dir, dest / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "docker").mkdir()
    shutil.copy2(script, dest / "docker" / "uvicorn")
    os.chmod(dest / "docker" / "uvicorn", 0o755)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--find-links",
            str(wheels),
            "--only-binary=:all:",
            *WHEEL_TARGET,
            "--no-compile",
            "--target",
            str(dest / ".deps"),
            "-r",
            str(requirements),
        ],
        timeout=600,
        remedy=f"delete {wheels} and try again",
    )
    shutil.rmtree(dest / ".deps" / "bin", ignore_errors=True)  # pip's scripts name the host's python
    for path in (dest / ".deps").rglob("direct_url.json"):
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else os.environ.get("HARNESS_CONTEXT", "")
    if not target or not Path(target).is_dir() or any(Path(target).iterdir()):
        print("usage: stage_service_context.py DEST  (DEST: an existing empty folder)", file=sys.stderr)
        return 2
    try:
        stage(Path(target))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
