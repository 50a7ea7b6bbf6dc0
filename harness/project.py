"""The project the harness works for: its root, its scenario folder, and whether it opted in.

A team installs the harness into its own repository. That repository is the project: scenario
files, manifests and build contexts resolve against its root, not against the harness's own
source tree. The root is, in this order:

- the folder given explicitly (``--root``);
- the nearest folder, from the current directory upwards, whose ``pyproject.toml`` has a
  ``[tool.incident-harness]`` table (the project opted in);
- the current directory.

``[tool.incident-harness]`` may set ``scenarios`` (a folder relative to the root, default
``scenarios``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

TABLE = "incident-harness"
DEFAULT_SCENARIOS = "scenarios"


class ProjectError(HarnessError):
    """A project configuration that cannot be read: names the file and the field."""


@dataclass(frozen=True)
class Project:
    root: Path
    scenarios_dir: Path
    configured: bool  # the root's pyproject.toml has [tool.incident-harness]
    config_file: Path | None = None


def _table(pyproject: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{pyproject}: cannot be read ({exc})", "fix its permissions or encoding") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{pyproject}: not valid TOML ({exc})", "fix the file's syntax") from exc
    table = data.get("tool", {}).get(TABLE) if isinstance(data.get("tool"), dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ProjectError(f"{pyproject}: [tool.{TABLE}] must be a table", f"write it as [tool.{TABLE}]")
    return table


def _project(root: Path, table: dict[str, Any] | None, config_file: Path | None) -> Project:
    scenarios = DEFAULT_SCENARIOS
    if table is not None:
        unknown = sorted(set(table) - {"scenarios"})
        if unknown:
            raise ProjectError(
                f"{config_file}: field 'tool.{TABLE}.{unknown[0]}': unknown field", "the known field is 'scenarios'"
            )
        value = table.get("scenarios", DEFAULT_SCENARIOS)
        if not isinstance(value, str) or not value:
            raise ProjectError(
                f"{config_file}: field 'tool.{TABLE}.scenarios': expected a folder relative to the root, got {value!r}",
                "set it to a folder name such as \"scenarios\"",
            )
        scenarios = value
    return Project(root, (root / scenarios).resolve(), table is not None, config_file)


def find_project(root: Path | str | None = None, start: Path | str | None = None) -> Project:
    """The project for an explicit root, else the nearest opted-in folder above start (default: cwd), else cwd."""
    if root is not None:
        base = Path(root).resolve()
        if not base.is_dir():
            raise ProjectError(f"project root {base} is not a folder", "pass an existing folder with --root")
        pyproject = base / "pyproject.toml"
        table = _table(pyproject) if pyproject.is_file() else None
        return _project(base, table, pyproject if table is not None else None)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _table(pyproject)
            if table is not None:
                return _project(folder, table, pyproject)
    return _project(here, None, None)
