"""A counter register that resets (a meter restarted): the increase is counted across the reset.

A real Modbus device, a real agent and a real collector. The test writes the counter register the
agent polls: 1000 -> 1010 -> 1030 -> 5 (reset) -> 15. Prometheus' increase() over that is
10 + 20 + 5 + 10 = 45: the sum of the `increase` field the collector stored over all intervals
must be exactly that, with one reset; the reset is a change event in the agent's twin and in the
collector's fleet twin.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    stored_points,
    wait_drained,
)
from tests.servers import wait_for

pytestmark = pytest.mark.integration


def r0(agent_dir: Path) -> float | None:
    point = status(agent_dir).get("assets", {}).get("ahu-1", {}).get("points", {}).get("r0", {})
    return float(point["value"]) if point.get("value") not in (None, "") else None


def test_counter_reset_is_an_event_and_the_increase_spans_it(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        agent = procs.add(agent_process(agent_dir, pattern_agent_toml(agent_dir / "state", collector.port,
                                                                      device.port, r0_kind="counter")))
        client = ModbusTcpClient("127.0.0.1", port=device.port)
        try:
            assert client.connect()
            wait_for(lambda: r0(agent_dir) == 1000.0, 30, "the counter's first reading")
            for value in (1010, 1030, 5, 15):
                assert not client.write_register(0, value, device_id=1).isError()
                wait_for(lambda v=value: r0(agent_dir) == float(v), 30, f"the agent to read {value}")
        finally:
            client.close()
        wait_drained(agent_dir)
        agent.stop()

    counter = [f for tags, _, f in stored_points(tmp_path / "c", "telemetry") if tags["point"] == "r0"]
    assert sum(f["increase"] for f in counter) == 45.0
    assert sum(f["resets"] for f in counter) == 1
    other = [f for tags, _, f in stored_points(tmp_path / "c", "telemetry") if tags["point"] == "r5"]
    assert other and all("increase" not in f for f in other), "only counter points carry an increase"
    with sqlite3.connect(agent_dir / "state" / "twin.sqlite") as conn:
        local = conn.execute("SELECT old_value, new_value FROM changes WHERE kind = 'counter_reset'").fetchall()
    assert local == [("1030", "5")]
    with sqlite3.connect(tmp_path / "c" / "state" / "collector.sqlite") as conn:
        fleet = conn.execute("SELECT asset, point, old_value, new_value FROM changes "
                             "WHERE kind = 'counter_reset'").fetchall()
    assert fleet == [("ahu-1", "r0", "1030", "5")]
