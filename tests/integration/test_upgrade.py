"""An upgrade from release 0.1.0 loses nothing.

The state files are those 0.1.0 left (tests/data/state-0.1.0: dumps its own code made, see
make_state.py there): the agent's queue holds batches 4-8 that never reached the collector, and the
collector holds WO-000001, acknowledged by bob, with its events and ITSM outbox rows. The new
collector and agent start on them as real processes: every file is migrated to the current schema
(versions recorded), the queued batches are delivered and stored once, and the work order is intact.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.twin import TWIN_DATABASE
from agent.uplink.queue import QUEUE_DATABASE
from collector.config import hash_token
from collector.fleet import FLEET_DATABASE
from collector.summary_store import SUMMARY_DATABASE
from tests.integration.daemons import pattern_device
from tests.servers import ServerProcess, free_port, tcp_open, wait_for

pytestmark = pytest.mark.integration

STATE = Path(__file__).resolve().parents[1] / "data" / "state-0.1.0"
TOKEN = "token-for-gw-old-0123456789abcdef"
T0 = 1_767_225_600 * 10**9  # make_state.py: batch k covers the 10 s up to T0 + 10 k s
S = 10**9


def load(dump: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(target) as conn:
        conn.executescript((STATE / dump).read_text())


def rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def test_state_of_release_0_1_0_is_migrated_and_nothing_is_lost(tmp_path: Path) -> None:
    agent_state, collector_state = tmp_path / "agent-state", tmp_path / "collector-state"  # not shadowing the packages
    load("queue.sql", agent_state / "queue.sqlite")
    load("twin.sql", agent_state / "twin.sqlite")
    load("collector.sql", collector_state / "collector.sqlite")
    load("summaries.sql", collector_state / "summaries.sqlite")
    queued = [seq for (seq,) in rows(agent_state / "queue.sqlite", "SELECT seq FROM batches ORDER BY seq")]
    assert queued == [4, 5, 6, 7, 8]

    port = free_port()
    (tmp_path / "collector.toml").write_text(textwrap.dedent(f"""
        [collector]
        listen = "127.0.0.1:{port}"
        state_dir = "{collector_state}"
        [[agents]]
        id = "gw-old"
        token_sha256 = "{hash_token(TOKEN)}"
        [[rules]]
        name = "filter_clogged"
        asset_type = "ahu"
        point = "filter_dp"
        above = 300.0
        clear_at = 250.0
        min_duration_s = 0
        severity = "major"
        title = "Air filter clogged on {{asset}}"
        """))
    collector = ServerProcess("collector", [sys.executable, "-m", "collector", "run", "--config",
                                            str(tmp_path / "collector.toml")], tmp_path, lambda: tcp_open(port),
                              port).start()
    device = pattern_device(tmp_path)
    agent_dir = tmp_path / "a"
    agent_dir.mkdir()
    (agent_dir / "agent.toml").write_text(textwrap.dedent(f"""
        [agent]
        id = "gw-old"
        site = "plant-old"
        state_dir = "{agent_state}"
        summary_interval_s = 1
        [uplink]
        collector = "127.0.0.1:{port}"
        token = "{TOKEN}"
        shutdown_drain_s = 10
        backoff_initial_s = 0.2
        backoff_max_s = 1
        [[assets]]
        id = "ahu-1"
        type = "ahu"
        name = "AHU 1"
        depends_on = ["chiller-1"]
        [[sources]]
        type = "modbus"
        name = "ahu-1-controller"
        host = "127.0.0.1"
        port = {device.port}
        poll_interval_s = 0.25
        timeout_s = 0.2
          [[sources.points]]
          asset = "ahu-1"
          name = "filter_dp"
          unit = "Pa"
          address = 0
          type = "uint16"
          [[sources.points]]
          asset = "ahu-1"
          name = "supply_air_temp"
          unit = "degC"
          address = 5
          type = "int16"
          scale = 0.1
        """))
    agent = ServerProcess("agent", [sys.executable, "-m", "agent", "run", "--config", str(agent_dir / "agent.toml")],
                          agent_dir, (agent_state / "status.json").exists, 0).start()
    try:
        # The five batches 0.1.0 left queued, then the new agent's own.
        wait_for(lambda: rows(collector_state / "collector.sqlite",
                              "SELECT seq FROM watermarks WHERE agent_id = 'gw-old'")[0][0] >= 10, 60,
                 "the queued batches delivered")
        agent.stop()
        assert json.loads((agent_state / "status.json").read_text())["queue"]["dropped"] == 0
        # Stored once each, beside what 0.1.0 had stored (batches 1-3).
        stored = rows(collector_state / "summaries.sqlite",
                      "SELECT ts_ns, COUNT(*) FROM summary_points WHERE measurement = 'telemetry' AND ts_ns <= ? "
                      "GROUP BY ts_ns ORDER BY ts_ns", T0 + 80 * S)
        assert stored == [(T0 + k * 10 * S, 2) for k in range(1, 9)]

        # The work order and its history, as bob left them; the work-order CLI of the new release reads it.
        shown = subprocess.run([sys.executable, "-m", "collector", "work-orders", "show", "WO-000001", "--json",
                                "--config", str(tmp_path / "collector.toml")], capture_output=True, text=True,
                               check=True, timeout=60)
        wo = json.loads(shown.stdout)
        assert (wo["asset"], wo["rule"], wo["status"]) == ("ahu-1", "filter_clogged", "acknowledged")
        assert (wo["acknowledged_by"], wo["note"], wo["category"]) == ("bob", "filter ordered", "corrective")
        assert wo["evidence"]["value"] > 300
        events = rows(collector_state / "collector.sqlite",
                      "SELECT action FROM work_order_events WHERE work_order = 1 ORDER BY id")
        assert [a for (a,) in events][:2] == ["raised", "acknowledged"]
        assert rows(collector_state / "collector.sqlite", "SELECT COUNT(*) FROM work_orders") == [(1,)], \
            "no second work order: the acknowledged one is still the open one"
        outbox = rows(collector_state / "collector.sqlite", "SELECT webhook, action FROM outbox ORDER BY id")
        assert outbox == [("itsm", "raised"), ("itsm", "acknowledged")], "queued ITSM changes are kept"
    finally:
        agent.stop()
        collector.stop()
        device.stop()

    for db, schema in ((agent_state / "queue.sqlite", QUEUE_DATABASE), (agent_state / "twin.sqlite", TWIN_DATABASE),
                       (collector_state / "collector.sqlite", FLEET_DATABASE),
                       (collector_state / "summaries.sqlite", SUMMARY_DATABASE)):
        recorded = dict(rows(db, "SELECT part, version FROM schema_versions"))
        assert recorded == {name: part.version for name, part in schema.parts.items()}, db.name
