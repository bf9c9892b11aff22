"""A device that stops answering: its points go BAD with reason, the agent keeps running and recovers.

The device process is frozen with SIGSTOP: its TCP connection stays open but nothing answers, which
is what a hung PLC or a broken serial gateway looks like to the agent.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemons import (
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    wait_acked,
)
from tests.servers import wait_for

pytestmark = pytest.mark.integration


def points(agent_dir: Path) -> dict[str, dict[str, object]]:
    return status(agent_dir).get("assets", {}).get("ahu-1", {}).get("points", {})


def test_device_timeout_marks_points_bad_and_recovers(tmp_path: Path) -> None:
    device = pattern_device(tmp_path)
    collector = collector_process(tmp_path / "c")
    agent_dir = tmp_path / "a"
    agent = agent_process(agent_dir, pattern_agent_toml(agent_dir / "state", collector.port, device.port))
    try:
        wait_acked(agent_dir, 2)
        assert {p["quality"] for p in points(agent_dir).values()} == {"GOOD"}
        os.kill(device.pid, signal.SIGSTOP)
        wait_for(lambda: {p["quality"] for p in points(agent_dir).values()} == {"BAD"}, 30, "points BAD")
        st = status(agent_dir)
        assert all("timeout" in str(p["reason"]).lower() for p in points(agent_dir).values()), points(agent_dir)
        assert st["assets"]["ahu-1"]["state"] == "offline"
        assert not any(st["connectors"]["ahu-1-controller"]["devices_online"].values())
        assert st["connectors"]["ahu-1-controller"]["errors"] > 0
        acked = st["uplink"]["acked"]
        wait_acked(agent_dir, acked + 2)  # still summarising and sending while the device is down
        assert agent.running()
        # While offline the collector gets counts of BAD readings and no values: the last value is
        # never re-sent under a new timestamp.
        with sqlite3.connect(tmp_path / "c" / "state" / "summaries.sqlite") as conn:
            rows = [json.loads(f) for (f,) in conn.execute(
                "SELECT fields FROM summary_points WHERE measurement = 'telemetry' ORDER BY ts_ns")]
        offline = [r for r in rows if r.get("count") == 0]
        assert offline, "summaries of the offline intervals were stored"
        assert all(r["bad"] > 0 and "mean" not in r and "last" not in r for r in offline)

        os.kill(device.pid, signal.SIGCONT)
        wait_for(lambda: {p["quality"] for p in points(agent_dir).values()} == {"GOOD"}, 30, "recovery")
        assert status(agent_dir)["assets"]["ahu-1"]["state"] == "online"
        out = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(agent_dir / "agent.toml")],
                             capture_output=True, text=True, check=True).stdout
        assert "ahu-1 (ahu): online" in out and "uplink: connected" in out
        assert "unit-1=online" in out
        agent.stop()
        # Stopped: the same command reads the state files the agent left behind.
        (agent_dir / "state" / "status.json").unlink()
        stopped = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(agent_dir / "agent.toml")],
                                 capture_output=True, text=True, check=False)
        assert stopped.returncode == 3, "exit status 3: the agent does not run"
        out = stopped.stdout
        assert "NOT RUNNING, stopped" in out and "r5" in out and "100.5" in out
    finally:
        os.kill(device.pid, signal.SIGCONT)
        for p in (agent, collector, device):
            p.stop()
