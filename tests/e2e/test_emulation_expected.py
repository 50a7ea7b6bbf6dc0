"""In CI matrices, HARNESS_EXPECT_EMULATION says whether QEMU was registered on purpose:
the harness must see the same, or the matrix cell proves nothing."""

from __future__ import annotations

import os

import pytest

from harness import platforms

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(
    "HARNESS_EXPECT_EMULATION" not in os.environ, reason="HARNESS_EXPECT_EMULATION is not set (CI matrices set it)"
)
def test_host_emulation_matches_the_matrix_cell() -> None:
    host = platforms.host_platform()
    foreign = platforms.foreign_of(host)
    state = platforms.read_binfmt()
    expected = os.environ["HARNESS_EXPECT_EMULATION"] == "1"
    assert state.can_run_in_containers(foreign) == expected, (
        f"HARNESS_EXPECT_EMULATION={os.environ['HARNESS_EXPECT_EMULATION']} but the host says: {state.describe()}"
    )
