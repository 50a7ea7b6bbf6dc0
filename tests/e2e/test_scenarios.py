"""Every scenario file in scenarios/ is a regression test: run it end to end on the session cluster.

A new incident needs a YAML file and no Python (scenarios/README.md). Each file passes when the
runner's exit status is OK (every expectation met). When the host emulates the platform of one of
the workload's single-platform images (a QEMU handler with the F flag in binfmt_misc, which other
tests may register kernel-wide), that image runs instead of failing: the run must then end as
MASKED_BY_EMULATION, and the report must say masked, never reproduced or healthy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import platforms
from harness.cluster import KindCluster
from harness.errors import HarnessError
from harness.outcomes import Outcome
from harness.report import RunReport, render_terminal
from harness.runner import ExitStatus, RunOptions, RunResult, run_scenario
from harness.scenario import Scenario, discover, load

pytestmark = [pytest.mark.e2e, pytest.mark.scenario]


def _scenario_id(path: Path) -> str:
    """The scenario's name (the file stem if the file does not load: the test then shows why)."""
    try:
        return load(path).name
    except HarnessError:
        return path.stem


SCENARIO_FILES = [pytest.param(path, id=_scenario_id(path)) for path in discover()]


def node_platform_of(cluster: KindCluster) -> platforms.Platform:
    node = cluster.core.list_node().items[0]
    return platforms.node_platform(cluster.core.api_client.sanitize_for_serialization(node))


def emulated_images(scenario: Scenario, node: platforms.Platform, state: platforms.EmulationState) -> list[str]:
    """The workload's single-platform images that these nodes would run under emulation, explained.

    "native" and "foreign" mean what the runner means: the nodes' platform, and the other one of
    amd64/arm64. A multi-platform index is never emulated: the node picks its own platform.
    """
    foreign = platforms.parse_platform("linux/arm64" if node.architecture == "amd64" else "linux/amd64")
    found = []
    for name in (scenario.workload.image, scenario.workload.init_image):
        spec = scenario.images[name] if name else None
        if spec is None or spec.platforms:
            continue
        word = spec.platform
        image = node if word == "native" else foreign if word == "foreign" else platforms.parse_platform(word)
        if platforms.expected_outcome(image, node, state) is platforms.Expectation.EMULATED:
            found.append(f"{name}: {platforms.explain(image, node, state)}")
    return found


def assert_says_masked(report: RunReport, markdown: str, data: dict[str, object]) -> None:
    """The report of a masked run says so, and claims neither a reproduction nor health."""
    terminal = render_terminal(report)
    assert report.exit_status == ExitStatus.MASKED_BY_EMULATION, terminal
    assert report.emulation, f"the report does not name the emulation that masked the run:\n{terminal}"
    assert report.verdicts, terminal
    incident = report.verdicts[0].verdict
    assert incident.outcome is Outcome.RAN_EMULATED, terminal
    assert "masked" in incident.summary, incident.summary
    assert report.symptoms_reproduced == 0, terminal
    assert report.fix_verified is None, f"fix steps ran on a masked run:\n{terminal}"
    for text, where in ((terminal, "terminal"), (markdown, "Markdown")):
        assert "masked" in text.lower(), f"the {where} report does not say masked:\n{text}"
        assert not re.search(r"\bPASSED\b", text), f"the {where} report claims a pass:\n{text}"
        assert not re.search(r"\bhealthy\b", text, re.IGNORECASE), f"the {where} report says healthy:\n{text}"
        assert not re.search(r"reproduced [1-9]", text), f"the {where} report claims a reproduction:\n{text}"
    assert data["exit_status"] == ExitStatus.MASKED_BY_EMULATION and data["passed"] is False, data
    assert data["emulation"], data
    verdicts = data["verdicts"]
    assert isinstance(verdicts, list) and verdicts, data
    assert verdicts[0]["verdict"]["outcome"] == Outcome.RAN_EMULATED.value, verdicts[0]


def read_reports(result: RunResult) -> tuple[str, dict[str, object]]:
    """The Markdown and JSON reports the run wrote."""
    markdown = next(p for p in result.report_paths if p.suffix == ".md").read_text()
    data = json.loads(next(p for p in result.report_paths if p.suffix == ".json").read_text())
    return markdown, data


@pytest.mark.parametrize("path", SCENARIO_FILES)
def test_scenario(path: Path, harness_cluster: KindCluster, tmp_path: Path) -> None:
    scenario = load(path)
    node = node_platform_of(harness_cluster)
    masking = emulated_images(scenario, node, platforms.read_binfmt())
    said: list[str] = []
    result = run_scenario(
        scenario,
        RunOptions(
            cluster=harness_cluster,
            report_dir=tmp_path / "reports",
            artifacts_dir=tmp_path / "artifacts",
            say=said.append,
        ),
    )
    # binfmt_misc is kernel-wide and other tests register handlers: one that appeared during the
    # run (seen here afterwards, or by the runner itself) masks the run just the same.
    masking = masking or emulated_images(scenario, node, platforms.read_binfmt())
    runner_saw = result.report.facts.get("emulation verdict")
    shown = render_terminal(result.report)
    if masking or (runner_saw and result.exit_status is ExitStatus.MASKED_BY_EMULATION):
        assert result.exit_status is ExitStatus.MASKED_BY_EMULATION, (
            f"expected MASKED_BY_EMULATION ({'; '.join(masking)}), got {result.exit_status.name}:\n{shown}"
        )
        markdown, data = read_reports(result)
        assert_says_masked(result.report, markdown, data)
    else:
        assert result.exit_status is ExitStatus.OK, (
            f"{scenario.name} ended with {result.exit_status.name}:\n{shown}\n\nrun log (last lines):\n"
            + "\n".join(said[-40:])
        )
