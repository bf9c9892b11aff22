"""status.json is rewritten at a bounded rate, not every interval (flash wear), and `twin-agent status`
still shows a fresh status of a running agent (it asks for one) and the last one of a stopped agent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    wait_acked,
)

pytestmark = pytest.mark.integration


def on_disk(agent_dir: Path) -> dict[str, object]:
    """The file as it is, without asking the agent for a fresh one."""
    return json.loads((agent_dir / "state" / "status.json").read_text())


def test_status_file_written_when_asked_not_every_interval(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    cli = [sys.executable, "-m", "agent", "status", "--config", str(agent_dir / "agent.toml")]
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        agent = procs.add(agent_process(agent_dir, pattern_agent_toml(agent_dir / "state", collector.port,
                                                                      device.port)))
        wait_acked(agent_dir, 2)
        before = on_disk(agent_dir)
        time.sleep(4)  # four summary intervals
        assert on_disk(agent_dir)["updated_ns"] == before["updated_ns"], "not rewritten every interval"
        shown = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        fresh = on_disk(agent_dir)
        assert fresh["status_requests"] == before["status_requests"] + 1
        assert fresh["updated_ns"] > before["updated_ns"]
        assert fresh["uplink"]["acked"] > before["uplink"]["acked"], "the answer is the agent's current state"
        assert "uplink: connected" in shown.stdout and "could not be asked" not in shown.stdout
        agent.stop()
        stopped = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 3, stopped.stderr  # the agent is not running
        assert "NOT RUNNING" in stopped.stdout and "last known state" in stopped.stdout
        assert on_disk(agent_dir)["uplink"]["connected"] is False, "the last status, written at stop"
