"""Links that fail silently: a frozen collector (SIGSTOP) and a partition that drops everything.

Neither end sees a reset: the TCP connection stays "up". The agent must show the link as stalled,
give up on the stream after `ack_timeout_s` and reconnect; the collector must show the agent's
stream as stalled. Once the collector or the path is back, everything is delivered exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
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
from tests.servers import ServerProcess, free_port, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 4


def uplink(agent_dir: Path) -> dict[str, object]:
    return status(agent_dir).get("uplink", {})


def check_exactly_once(agent: ServerProcess, agent_dir: Path, collector_dir: Path) -> None:
    wait_drained(agent_dir)
    agent.stop()
    q = status(agent_dir)["queue"]
    assert q["batches"] == 0 and q["dropped"] == 0
    assert len(stored_points(collector_dir, "telemetry")) == q["summaries_total"]
    assert len(stored_points(collector_dir, "agent_health")) == q["next_seq"] - 1


def test_frozen_collector_is_noticed_and_left(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        agent = procs.add(agent_process(agent_dir, pattern_agent_toml(
            agent_dir / "state", collector.port, device.port, uplink_extra=f"ack_timeout_s = {ACK_TIMEOUT_S}")))
        wait_acked(agent_dir, 3)
        os.kill(collector.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: uplink(agent_dir).get("link") == "stalled", 30, "the agent to show the link stalled")
            wait_for(lambda: uplink(agent_dir).get("link") == "disconnected", 60,
                     "the agent to give up on the frozen collector's stream")
            assert uplink(agent_dir)["reconnects"] >= 1 or uplink(agent_dir)["ack_timeouts"] >= 1
        finally:
            os.kill(collector.pid, signal.SIGCONT)
        wait_for(lambda: uplink(agent_dir).get("link") == "connected", 60, "the agent back on the thawed collector")
        check_exactly_once(agent, agent_dir, tmp_path / "c")


def collector_link(api_port: int, agent_id: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=10) as resp:
        doc = json.loads(resp.read())
    return str(doc["ingest"]["per_agent"].get(agent_id, {}).get("link", ""))


def test_silent_partition_is_noticed_on_both_sides(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    api_port = free_port()
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c",
                                                collector_extra=f'\n[api]\nlisten = "127.0.0.1:{api_port}"\n'))
        with TcpProxy(collector.port) as proxy:
            agent = procs.add(agent_process(agent_dir, pattern_agent_toml(
                agent_dir / "state", proxy.port, device.port, uplink_extra=f"ack_timeout_s = {ACK_TIMEOUT_S}")))
            wait_acked(agent_dir, 3)
            assert collector_link(api_port, "gw-a") == "connected"
            proxy.silent = True
            wait_for(lambda: uplink(agent_dir).get("link") == "stalled", 30, "the agent to show the link stalled")
            wait_for(lambda: collector_link(api_port, "gw-a") == "stalled", 60,
                     "the collector to show the agent's stream stalled")
            wait_for(lambda: uplink(agent_dir)["ack_timeouts"] >= 1, 60, "the agent to give up on the silent stream")
            assert proxy.dropped_bytes > 0
            proxy.silent = False
            wait_for(lambda: uplink(agent_dir).get("link") == "connected", 60,
                     "the agent reconnected through the path")
            check_exactly_once(agent, agent_dir, tmp_path / "c")
