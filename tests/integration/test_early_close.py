"""Summary intervals close as soon as every point due in them has been read (not at the boundary),
and that moves no reading out of existence: every poll's value reaches the collector exactly once.

The mechanism is checked, not its timing: the agent counts the intervals it closed early, and the
readings counted in the summaries the collector stored add up to the polls the connector made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    stored_points,
    wait_acked,
    wait_drained,
)

pytestmark = pytest.mark.integration


def test_intervals_close_early_and_lose_no_reading(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        # A 0.5 s poll in a 2 s interval: the fourth reading of each interval is its last one.
        agent = procs.add(agent_process(agent_dir, pattern_agent_toml(
            agent_dir / "state", collector.port, device.port, summary_interval_s=2.0, poll_interval_s=0.5)))
        wait_acked(agent_dir, 4)
        wait_drained(agent_dir)
        agent.stop()
    st = status(agent_dir)
    assert st["intervals"]["closed_early"] >= 2, st["intervals"]
    polls = st["connectors"]["ahu-1-controller"]["polls"]
    telemetry = stored_points(tmp_path / "c", "telemetry")
    for point in ("r0", "r5"):
        counts = [f["count"] for tags, _, f in telemetry if tags["point"] == point]
        assert sum(counts) == polls, f"{point}: every reading in exactly one summary"
    labels = [ts for tags, ts, _ in telemetry if tags["point"] == "r0"]
    assert len(set(labels)) == len(labels) == st["queue"]["summaries_total"] / 2
    assert all(ts % 2_000_000_000 == 0 for ts in labels[:-1]), "stored under whole boundaries (but the last, "\
        "closed at shutdown)"
