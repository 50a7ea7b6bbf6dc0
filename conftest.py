"""Loads the harness's pytest plugin when the package is not installed (its entry point is then absent)."""

from importlib.metadata import entry_points

if not any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
