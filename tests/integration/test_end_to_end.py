"""Modbus device -> agent -> collector -> InfluxDB, all real processes, checked in the store.

InfluxDB 1.x (Debian influxd) through the v1 /write endpoint, queried back with InfluxQL; and the
influxdb-client v2 write path into VictoriaMetrics. Tags, fields and timestamps are checked against
the device's known register values and the agent's summary interval.
"""

from __future__ import annotations

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
from tests.integration.influx_query import influxql, victoria_export
from tests.servers import influxd_server, victoria_metrics_server

pytestmark = pytest.mark.integration

DB = "facility_twin"


def v1_table(port: int) -> str:
    return f'[influx]\napi = "v1"\nurl = "http://127.0.0.1:{port}"\ndatabase = "{DB}"\n'


def test_modbus_to_influxdb_v1(tmp_path: Path) -> None:
    influx = influxd_server(tmp_path / "influx")
    device = pattern_device(tmp_path)
    collector = collector_process(tmp_path / "c", influx=v1_table(influx.port))
    agent = agent_process(tmp_path / "a", pattern_agent_toml(tmp_path / "a" / "state", collector.port, device.port))
    try:
        wait_acked(tmp_path / "a", 4)
        agent.stop()
        st = status(tmp_path / "a")
        assert st["queue"]["batches"] == 0, "a clean stop delivers the last interval"
        rows = influxql(f"http://127.0.0.1:{influx.port}", DB,
                        "SELECT * FROM telemetry WHERE point = 'r5' ORDER BY time")
        assert len(rows) >= 4
        for row in rows:
            assert (row["site"], row["agent"], row["asset"], row["asset_type"], row["unit"]) == \
                ("plant-a", "gw-a", "ahu-1", "ahu", "degC")
            assert row["mean"] == row["min"] == row["max"] == row["last"] == pytest.approx(100.5)
            assert row["bad"] == 0 and row["count"] >= 1
        # Every interval but the last (stored at shutdown) ends on a whole second.
        assert all(r["time"] % 1_000_000_000 == 0 for r in rows[:-1])
        assert len({r["time"] for r in rows}) == len(rows)
        r0 = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT last FROM telemetry WHERE point = 'r0'")
        assert {r["last"] for r in r0} == {1000.0}
        # Every summary the agent produced is stored, once.
        total = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT count(mean) FROM telemetry")[0]["count"]
        assert total == st["queue"]["summaries_total"]
        health = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT count(queue_batches) FROM agent_health")
        assert health[0]["count"] == st["queue"]["next_seq"] - 1, "one agent_health point per batch"
        states = influxql(f"http://127.0.0.1:{influx.port}", DB, "SELECT last(state) FROM asset_state")
        assert states[0]["last"] == "online"
    finally:
        for p in (agent, collector, device, influx):
            p.stop()


def test_modbus_to_victoria_metrics_v2(tmp_path: Path) -> None:
    vm = victoria_metrics_server(tmp_path / "vm")
    device = pattern_device(tmp_path)
    influx = f'[influx]\napi = "v2"\nurl = "http://127.0.0.1:{vm.port}"\nbucket = "{DB}"\nanonymous = true\n'
    collector = collector_process(tmp_path / "c", influx=influx)
    agent = agent_process(tmp_path / "a", pattern_agent_toml(tmp_path / "a" / "state", collector.port, device.port))
    try:
        wait_acked(tmp_path / "a", 4)
        agent.stop()
        st = status(tmp_path / "a")
        base = f"http://127.0.0.1:{vm.port}"
        total = st["queue"]["summaries_total"]
        means = [s for s in victoria_export(base, '{__name__="telemetry_mean"}', at_least=total)
                 if s.labels["point"] == "r5"]
        assert len(means) >= 4
        for s in means:
            assert s.value == pytest.approx(100.5)
            assert {k: s.labels[k] for k in ("site", "agent", "asset", "asset_type", "unit")} == {
                "site": "plant-a", "agent": "gw-a", "asset": "ahu-1", "asset_type": "ahu", "unit": "degC"}
        assert all(s.ts_ms % 1000 == 0 for s in means[:-1]), "interval ends on whole seconds"
        counts = victoria_export(base, '{__name__="telemetry_count"}', at_least=total)
        assert len(counts) == total, "every summary stored once"
    finally:
        for p in (agent, collector, device, vm):
            p.stop()
