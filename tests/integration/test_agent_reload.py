"""SIGHUP reloads the agent's configuration without losing its queue; a broken file is refused;
the Prometheus endpoint serves the live counters across reloads."""

from __future__ import annotations

import os
import signal
import urllib.request
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
from tests.servers import free_port, wait_for

pytestmark = pytest.mark.integration

EXTRA_POINT = """
          [[sources.points]]
          asset = "ahu-1"
          name = "r7"
          unit = "Pa"
          address = 7
          type = "uint16"
"""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_sighup_reload_and_metrics(tmp_path: Path) -> None:
    device = pattern_device(tmp_path)
    collector = collector_process(tmp_path / "c")
    agent_dir = tmp_path / "a"
    metrics_port = free_port()
    base = pattern_agent_toml(agent_dir / "state", collector.port, device.port)
    base += f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    agent = agent_process(agent_dir, base)
    cfg = agent_dir / "agent.toml"
    try:
        wait_acked(agent_dir, 2)
        text = scrape(metrics_port)
        assert "twin_agent_uplink_connected 1.0" in text
        before = status(agent_dir)

        cfg.write_text(base.replace("\n[metrics]", EXTRA_POINT + "\n[metrics]"))
        os.kill(agent.pid, signal.SIGHUP)
        wait_for(lambda: "r7" in status(agent_dir).get("assets", {}).get("ahu-1", {}).get("points", {}), 30,
                 "the new point after reload")
        wait_for(lambda: status(agent_dir)["assets"]["ahu-1"]["points"]["r7"]["quality"] == "GOOD", 30, "r7 read")
        after = status(agent_dir)
        assert after["pid"] == before["pid"], "reloaded in place, not restarted"
        assert after["queue"]["next_seq"] > before["queue"]["next_seq"], "seq continues: same queue"
        assert after["queue"]["summaries_total"] > before["queue"]["summaries_total"]
        wait_for(lambda: "twin_agent" in scrape(metrics_port), 10, "metrics after reload")

        cfg.write_text(base.replace('type = "uint16"', 'type = "uint17"', 1))
        os.kill(agent.pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in agent.log_path.read_text(), 10, "the refusal")
        assert agent.running()
        acked = status(agent_dir)["uplink"]["acked"]
        wait_acked(agent_dir, acked + 2)  # still working, with the previous configuration

        # a token file that cannot be read is refused at reload too, not discovered half-way
        token_line = next(ln for ln in base.splitlines() if ln.strip().startswith("token = "))
        cfg.write_text(base.replace(token_line, 'token_file = "/nonexistent/uplink-token"'))
        os.kill(agent.pid, signal.SIGHUP)
        wait_for(lambda: agent.log_path.read_text().count("reload refused") >= 2, 10, "second refusal")
        assert "uplink.token_file: cannot read" in agent.log_path.read_text()
        acked = status(agent_dir)["uplink"]["acked"]
        wait_acked(agent_dir, acked + 2)
        assert agent.running()
        assert "r7" in status(agent_dir)["assets"]["ahu-1"]["points"]

        agent.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert agent.proc.wait(timeout=20) == 0  # type: ignore[union-attr]
    finally:
        for p in (agent, collector, device):
            p.stop()
