"""The `work_order` measurement follows the work-order store: escalations, and acks and closes made
through the CLI in another process, reach a real InfluxDB, and the dashboards' queries count each
work order once with its current severity and status."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.config import build_collector_config, hash_token
from collector.daemon import CollectorDaemon
from collector.state import StateLocation
from protos.twin.v1 import twin_pb2
from runtime.errors import SinkError
from tests.conftest import state_table
from tests.integration.daemons import TOKENS
from tests.integration.influx_query import influxql
from tests.integration.test_collector_auth import exchange
from tests.integration.test_workorders_lifecycle import FILTER_RULE, hello, summary
from tests.servers import free_port, influxd_server, wait_for

pytestmark = pytest.mark.integration

DB = "twin"
DASHBOARDS = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "dashboards"


def dashboard_query(dashboard: str, title: str) -> str:
    doc = json.loads((DASHBOARDS / dashboard).read_text())
    for panel in doc["panels"]:
        if panel.get("title") == title:
            return str(panel["targets"][0]["query"]).replace("$site", "plant-a")
    raise KeyError(title)


def test_escalation_ack_and_close_reach_influxdb_once_per_work_order(tmp_path: Path,
                                                                     state_location: StateLocation) -> None:
    influx = influxd_server(tmp_path / "influx")
    url = f"http://127.0.0.1:{influx.port}"
    open_count = dashboard_query("fleet-overview.json", "Open work orders")
    annotations = ('SELECT "status", "severity", "id" FROM "work_order" WHERE "site" = \'plant-a\' '
                   "AND \"status\" <> 'escalated'")

    def query(q: str) -> list[dict[str, object]]:
        try:
            return influxql(url, DB, q)
        except RuntimeError as exc:
            if "database not found" in str(exc):  # the sink creates it with its first write
                return []
            raise

    def cli(config: Path, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "collector", "work-orders", "--config", str(config), *args],
                       check=True, capture_output=True, timeout=60)

    async def main() -> None:
        settings = {
            "collector": {"listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / "state"),
                          "site": "plant-a", "check_interval_s": 0.2},
            "influx": {"api": "v1", "url": "http://127.0.0.1:1", "database": DB, "timeout_s": 1.0},
            "agents": [{"id": "gw-a", "token_sha256": hash_token(TOKENS["gw-a"])}],
            "rules": [FILTER_RULE],
            "state": state_table(state_location, tmp_path),
        }
        config_file = tmp_path / "collector.toml"
        down = CollectorDaemon(build_collector_config(settings))
        # Nothing listens on port 1: the fleet twin still raises the work order; its annotation waits.
        await down.fleet.open()
        await down.fleet.register_hello(hello())
        t = time.time_ns() - 3600 * 10**9
        for i, v in enumerate((310, 320, 330)):
            await down.fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(
                seq=i + 1, summaries=[summary("ahu-1", "filter_dp", t + i * 60 * 10**9, v)]))
        with pytest.raises(SinkError):
            await down.annotations.sync()
        await down.fleet.close()

        settings["influx"]["url"] = url  # type: ignore[index]
        config_file.write_text(toml(settings))
        daemon = CollectorDaemon(build_collector_config(settings))
        await daemon.start()
        try:
            # the pending annotation arrives once InfluxDB is reachable
            await asyncio.to_thread(wait_for, lambda: query(open_count), 20, "the open work order in InfluxDB")
            assert query(open_count)[0]["count"] == 1
            batch = twin_pb2.Batch(seq=4, summaries=[summary("ahu-1", "filter_dp", t + 4 * 60 * 10**9, 450)])
            assert await exchange(daemon.port, TOKENS["gw-a"], hello(), [batch]) == [3, 4]  # escalates
            rows = query(annotations)
            assert [(r["status"], r["severity"]) for r in rows] == [("open", "critical")]
            assert query(open_count)[0]["count"] == 1, "the escalated work order counts once"
            ref = str(rows[0]["id"])

            await asyncio.to_thread(cli, config_file, "ack", ref, "--by", "alice")
            await asyncio.to_thread(wait_for, lambda: query(annotations)[0]["status"] == "acknowledged", 20,
                                    "the acknowledgement in InfluxDB")
            await asyncio.to_thread(cli, config_file, "close", ref, "--by", "alice", "--note", "filter replaced")
            await asyncio.to_thread(wait_for, lambda: query(annotations)[0]["status"] == "closed", 20,
                                    "the close in InfluxDB")
            assert query(open_count) == [], "no open work orders left"
            assert len(query('SELECT "status" FROM "work_order"')) == 2, "the major series, marked escalated"
        finally:
            await daemon.stop()
            influx.stop()

    asyncio.run(main())


def toml(settings: dict[str, dict[str, object]]) -> str:
    out = []
    for section, values in settings.items():
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            out.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            out += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"
