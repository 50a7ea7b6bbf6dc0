"""Unit tests never read or write the harness cache's binfmt_misc records (real runs keep theirs there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import platforms


@pytest.fixture(autouse=True)
def _private_binfmt_records(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    states = tmp_path_factory.mktemp("binfmt-records")
    monkeypatch.setattr(platforms, "binfmt_state_dir", lambda: states)
    return states
