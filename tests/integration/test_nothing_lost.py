"""Nothing lost, nothing duplicated: the collector killed, InfluxDB stopped, the agent restarted.

Accounting: the agent's queue persists how many summaries it ever produced (`summaries_total`) and
how many batches (`next_seq - 1`). After each fault and a clean stop of the agent, InfluxDB must hold
exactly that many telemetry points and one agent_health point per batch, and the collector must
have committed each batch once (its watermark table counts commits).
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from tests.integration.daemons import (
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    wait_acked,
    wait_drained,
)
from tests.integration.influx_query import influxql
from tests.servers import influxd_server, wait_for

pytestmark = pytest.mark.integration

DB = "facility_twin"


class Plant:
    """influxd + a Modbus device + collector + agent, each a real process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.influx = influxd_server(tmp / "influx")
        self.device = pattern_device(tmp)
        self.collector = collector_process(
            tmp / "c", influx=f'[influx]\napi = "v1"\nurl = "http://127.0.0.1:{self.influx.port}"\ndatabase = "{DB}"\n'
                              "timeout_s = 2.0\n")
        self.agent_dir = tmp / "a"
        self.agent = agent_process(self.agent_dir, pattern_agent_toml(self.agent_dir / "state", self.collector.port,
                                                                      self.device.port))

    def acked(self) -> int:
        return int(status(self.agent_dir).get("uplink", {}).get("acked", 0))

    def query(self, q: str) -> list[dict[str, object]]:
        return influxql(f"http://127.0.0.1:{self.influx.port}", DB, q)

    def check_exactly_once(self) -> dict[str, int]:
        self.agent.stop()
        st = status(self.agent_dir)
        assert st["queue"]["batches"] == 0, "everything was delivered before the agent stopped"
        assert st["queue"]["dropped"] == 0
        produced_batches = st["queue"]["next_seq"] - 1
        produced_summaries = st["queue"]["summaries_total"]
        stored = self.query("SELECT count(mean) FROM telemetry")[0]["count"]
        health = self.query("SELECT count(queue_batches) FROM agent_health")[0]["count"]
        assert stored == produced_summaries, f"InfluxDB holds {stored}, the agent produced {produced_summaries}"
        assert health == produced_batches
        with sqlite3.connect(self.tmp / "c" / "state" / "collector.sqlite") as conn:
            committed = conn.execute("SELECT SUM(batches) FROM watermarks WHERE agent_id = 'gw-a'").fetchone()[0]
        assert committed == produced_batches, "each batch committed exactly once by the collector"
        return {"batches": produced_batches, "summaries": produced_summaries}

    def stop(self) -> None:
        for p in (self.agent, self.collector, self.device, self.influx):
            p.stop()


@pytest.fixture
def plant(tmp_path: Path):
    p = Plant(tmp_path)
    yield p
    p.stop()


def test_collector_killed_mid_stream(plant: Plant) -> None:
    wait_acked(plant.agent_dir, 3)
    plant.collector.kill()  # SIGKILL: no goodbye, possibly mid-transaction
    before = plant.acked()
    wait_for(lambda: status(plant.agent_dir)["queue"]["batches"] >= 2, 30, "batches queued while the collector is gone")
    plant.collector.start()
    wait_for(lambda: plant.acked() > before + 2, 60, "acks after the collector restart")
    wait_drained(plant.agent_dir)
    counts = plant.check_exactly_once()
    assert counts["batches"] >= 7


def test_influxdb_stopped_for_a_while(plant: Plant) -> None:
    wait_acked(plant.agent_dir, 2)
    plant.influx.stop()
    wait_for(lambda: status(plant.agent_dir)["queue"]["batches"] >= 2, 30,
             "batches kept by the agent while InfluxDB is down (no acks)")
    plant.influx.start()
    wait_drained(plant.agent_dir)
    plant.check_exactly_once()


def test_agent_restarted_with_a_full_queue(plant: Plant) -> None:
    wait_acked(plant.agent_dir, 2)
    plant.collector.stop()
    wait_for(lambda: status(plant.agent_dir)["queue"]["batches"] >= 2, 30, "batches queued while the collector is down")
    plant.agent.stop(signal.SIGKILL)  # a power cut on the gateway
    assert status(plant.agent_dir)["queue"]["batches"] >= 2
    plant.agent.start()
    plant.collector.start()
    wait_drained(plant.agent_dir)
    plant.check_exactly_once()


def test_full_queue_drops_the_oldest_and_reports_it(tmp_path: Path) -> None:
    """A collector away for longer than the queue holds: the oldest batches go, are counted, and the
    count reaches InfluxDB; everything still queued is delivered once."""
    influx = influxd_server(tmp_path / "influx")
    device = pattern_device(tmp_path)
    collector = collector_process(
        tmp_path / "c", influx=f'[influx]\napi = "v1"\nurl = "http://127.0.0.1:{influx.port}"\ndatabase = "{DB}"\n')
    agent_dir = tmp_path / "a"
    # ~2 KB: a handful of batches. The queue spares its max_in_flight oldest batches (they may be stored
    # with the ack lost), so the window must be smaller than the queue for the drop count to be exact.
    agent = agent_process(agent_dir, pattern_agent_toml(agent_dir / "state", collector.port, device.port,
                                                        max_queue_mb=0.002, max_in_flight=2))
    try:
        wait_acked(agent_dir, 2)
        collector.stop()
        wait_for(lambda: status(agent_dir)["queue"]["dropped"] >= 3, 60, "drops while the collector is away")
        st = status(agent_dir)
        assert st["queue"]["bytes"] <= 0.002 * 1024 * 1024
        collector.start()
        wait_drained(agent_dir)
        agent.stop()
        st = status(agent_dir)
        dropped = st["queue"]["dropped"]
        reported = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT max(dropped) FROM agent_health")
        assert reported[0]["max"] == dropped, "the drop count is reported upstream"
        health = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT count(queue_batches) FROM agent_health")
        assert health[0]["count"] == st["queue"]["next_seq"] - 1 - dropped, "every batch not dropped arrived once"
    finally:
        for p in (agent, collector, device, influx):
            p.stop()
