"""Every query of every provisioned Grafana dashboard returns data from a real InfluxDB 1.x that the
real collector filled: from the real agent polling the simulated plant (the demo's Modbus AHU and
OPC-UA power meter, configs/demo) and from a second agent's three-hour history sent over the
collector's gRPC API (a pump with a growing outer-race defect, an offline pump, agent health).

Queries are expanded as Grafana's InfluxDB data source expands them ($timeFilter, $__interval,
template variables; see tests/unit/test_dashboards_queries.py) and run over the InfluxDB HTTP API.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from agent.analytics.iso10816 import iso_zone
from collector.config import hash_token
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from simulator.demo import SUMMARY_INTERVAL_S, render_configs
from tests.integration.daemons import TOKENS
from tests.integration.influx_query import influxql
from tests.servers import ServerProcess, free_port, influxd_server, tcp_open, wait_for
from tests.unit.test_dashboards_queries import (
    ALL,
    DashboardQuery,
    dashboard_queries,
    expand,
    load_dashboards,
)

pytestmark = pytest.mark.integration

DB = "facility_twin"
SEC = 1_000_000_000
RANGE_S = 30 * 60  # the dashboards are viewed over the last 30 minutes
INTERVAL = f"{SUMMARY_INTERVAL_S}s"  # $__interval: the data source's min interval = the summary interval
DATA_TIMEOUT_S = 90.0
HISTORY_S, HISTORY_STEP_S = 3 * 3600, 60
DEMO_ASSET_BY_ROW = {"HVAC": "ahu-1", "Power": "msb-meter"}  # configs/demo/agent.toml

FAST_FILTER_RULE = """
[[rules]]
name = "filter_loading"
asset_type = "ahu"
point = "filter_dp"
field = "mean"
above = 130.0
clear_at = 125.0
min_duration_s = 2
severity = "minor"
title = "Air filter loading on {asset}"

[[rules]]
name = "bearing_hot"
asset_type = "pump"
point = "bearing_temp"
field = "max"
above = 52.0
clear_at = 50.0
min_duration_s = 120
severity = "major"
title = "Bearing running hot on {asset}"
"""


# ---- the fleet: simulated plant + real agent + real collector + InfluxDB 1.x, and a pump history ----

@dataclass
class Fleet:
    influx_url: str
    processes: list[ServerProcess]


def pump_history(now_ns: int) -> list[twin_pb2.Batch]:
    """Three hours of a pump whose outer race wears: velocity 1 -> 4 mm/s, BPFO line 4 -> 20 dB."""
    steps = HISTORY_S // HISTORY_STEP_S
    batches = []
    for i in range(steps + 1):
        ts = now_ns - (steps - i) * HISTORY_STEP_S * SEC
        f = i / steps
        velocity, bpfo, health = 1.0 + 3.0 * f, 4.0 + 16.0 * f, 95.0 - 50.0 * f
        batches.append(twin_pb2.Batch(
            seq=i + 1, created_ns=ts,
            summaries=[
                twin_pb2.Summary(asset="pump-1", point="speed", unit="rpm", interval_end_ns=ts, first_ns=ts - SEC,
                                 last_ns=ts, mean=1480.0, min=1478.0, max=1482.0, last=1480.0, count=60,
                                 quality=twin_pb2.GOOD),
                twin_pb2.Summary(asset="pump-1", point="bearing_temp", unit="degC", interval_end_ns=ts,
                                 first_ns=ts - SEC, last_ns=ts, mean=42.0 + 10 * f, min=41.0 + 10 * f,
                                 max=43.0 + 10 * f, last=42.0 + 10 * f, count=12, quality=twin_pb2.GOOD),
                twin_pb2.Summary(asset="pump-2", point="speed", unit="rpm", interval_end_ns=ts, count=0,
                                 bad_count=60, quality=twin_pb2.BAD, reason="timeout"),
            ],
            vibration=[twin_pb2.VibrationIndicators(
                asset="pump-1", sensor="de_accel", ts_ns=ts, accel_rms=0.3 + 0.2 * f, accel_peak=1.2 + 2.0 * f,
                crest_factor=4.0 + 2.0 * f, kurtosis=3.0 + 3.0 * f, velocity_rms_mm_s=velocity,
                iso_zone=iso_zone(velocity, 2, "rigid"), rpm=1480.0, rpm_source="speed_point",
                amp_1x=0.6, amp_2x=0.2, amp_3x=0.05, bpfo=bpfo, bpfi=3.0, bsf=2.0, ftf=1.0, health=health,
                fault="outer_race" if bpfo >= 12 else "normal", confidence=0.9 if bpfo >= 12 else 0.2)],
            asset_states=[
                twin_pb2.AssetState(asset="pump-1", state="online" if f < 0.5 else "degraded", health=health,
                                    ts_ns=ts),
                twin_pb2.AssetState(asset="pump-2", state="offline", health=100.0, ts_ns=ts)],
            health=twin_pb2.AgentHealth(
                ts_ns=ts, queue_batches=i % 5, queue_bytes=(i % 5) * 2048, dropped=i // 60, sent=i + 1, acked=i,
                connector_errors=i // 10, stale_points=1, rss_mb=60.0 + 5 * f, uptime_s=float(i * HISTORY_STEP_S)),
        ))
    return batches


async def send_history(port: int, now_ns: int) -> list[int]:
    hello = twin_pb2.Hello(agent_id="gw-b", site="plant-b", version="test", queue_epoch="gw-b-history", assets=[
        twin_pb2.AssetDescriptor(id="pump-1", type="pump", name="Condenser water pump 1", points=[
            twin_pb2.PointDescriptor(name="speed", unit="rpm"),
            twin_pb2.PointDescriptor(name="bearing_temp", unit="degC")]),
        twin_pb2.AssetDescriptor(id="pump-2", type="pump", name="Condenser water pump 2", points=[
            twin_pb2.PointDescriptor(name="speed", unit="rpm")])])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = twin_pb2_grpc.CollectorStub(channel).Connect(
            metadata=(("authorization", f"Bearer {TOKENS['gw-b']}"),))
        await call.write(twin_pb2.AgentMessage(hello=hello))
        acks = [(await call.read()).ack.seq]
        for batch in pump_history(now_ns):
            await call.write(twin_pb2.AgentMessage(batch=batch))
            acks.append((await call.read()).ack.seq)
        await call.done_writing()
    return acks


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("grafana-fleet")
    processes: list[ServerProcess] = []
    try:
        influx = influxd_server(work / "influx")
        processes.append(influx)
        ports = {"modbus": free_port(), "opcua": free_port(), "collector": free_port(), "mqtt": free_port()}
        processes.append(ServerProcess(
            "simulator", [sys.executable, "-m", "simulator.cli", "--modbus-port", str(ports["modbus"]),
                          "--opcua-port", str(ports["opcua"]), "--fault", "clogging_filter@0"],
            work / "sim", lambda: tcp_open(ports["modbus"]) and tcp_open(ports["opcua"]), ports["modbus"]).start())
        agent_cfg, collector_cfg = render_configs(work, ports, mqtt=False)
        collector_cfg.write_text(
            collector_cfg.read_text() + FAST_FILTER_RULE
            + f'\n[[agents]]\nid = "gw-b"\ntoken_sha256 = "{hash_token(TOKENS["gw-b"])}"\n'
            + f'\n[influx]\napi = "v1"\nurl = "http://127.0.0.1:{influx.port}"\ndatabase = "{DB}"\n')
        processes.append(ServerProcess(
            "collector", [sys.executable, "-m", "collector", "run", "--config", str(collector_cfg)], work,
            lambda: tcp_open(ports["collector"]), ports["collector"]).start())
        acks = asyncio.run(send_history(ports["collector"], time.time_ns()))
        assert acks[-1] == HISTORY_S // HISTORY_STEP_S + 1, "every history batch stored and acked"
        status = work / "agent" / "status.json"
        processes.append(ServerProcess(
            "agent", [sys.executable, "-m", "agent", "run", "--config", str(agent_cfg)], work, status.exists,
            0).start())
        yield Fleet(f"http://127.0.0.1:{influx.port}", processes)
    finally:
        for p in reversed(processes):
            p.stop()


# ---- running the dashboards' queries ----------------------------------------------------------------

Assignment = dict[str, str]


def rows(url: str, query: str) -> list[dict[str, Any]]:
    return influxql(url, DB, query)


def variable_assignments(url: str, dashboard: Mapping[str, Any], start_ms: int, end_ms: int
                         ) -> tuple[list[Assignment], dict[str, list[str]]]:
    """Every combination of variable values a user can pick, as Grafana resolves them in order:
    include-all variables as All, single-value query variables as each of their values, custom
    variables as their default. Also returns the values each query variable offered."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assignments: list[Assignment] = [{}]
    offered: dict[str, list[str]] = {}
    for v in dashboard["templating"]["list"]:
        name = v["name"]
        if v["type"] == "custom":
            assignments = [a | {name: v["current"]["value"]} for a in assignments]
        elif v["type"] == "query":
            per_assignment = []
            for a in assignments:
                q = expand(v["query"], variables=variables, values=a, start_ms=start_ms, end_ms=end_ms,
                           interval=INTERVAL)
                values = sorted({str(r["value"]) for r in rows(url, q)})
                offered.setdefault(name, []).extend(values)
                per_assignment.append((a, values))
            if v.get("includeAll"):
                assignments = [a | {name: ALL} for a, _ in per_assignment]
            else:
                assignments = [a | {name: value} for a, values in per_assignment for value in values]
    return assignments, offered


def answering_assignments(url: str, q: DashboardQuery, dashboard: Mapping[str, Any],
                          assignments: list[Assignment], start_ms: int, end_ms: int) -> list[Assignment]:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    out = []
    for a in assignments:
        query = expand(q.query, variables=variables, values=a, start_ms=start_ms, end_ms=end_ms,
                       interval=q.min_interval or INTERVAL)
        if rows(url, query):
            out.append(a)
    return out


def unanswered(url: str) -> tuple[list[str], dict[tuple[str, str, str], list[Assignment]]]:
    """Queries without data for any choice of variables, and the choices each answered for."""
    end_ms = time.time_ns() // 1_000_000
    start_ms = end_ms - RANGE_S * 1000
    dashboards = load_dashboards()
    missing: list[str] = []
    answered: dict[tuple[str, str, str], list[Assignment]] = {}
    setup = {name: variable_assignments(url, d, start_ms, end_ms) for name, d in dashboards.items()}
    for q in dashboard_queries():
        assignments, offered = setup[q.dashboard]
        if q.kind == "variable":
            if not offered.get(q.title):
                missing.append(f"{q}: no values")
            continue
        ok = answering_assignments(url, q, dashboards[q.dashboard], assignments, start_ms, end_ms)
        answered[(q.dashboard, q.title, q.ref)] = ok
        if not ok:
            missing.append(f"{q}: no data for any of {assignments}\n    {q.query}")
    return missing, answered


def test_every_dashboard_query_returns_data(fleet: Fleet) -> None:
    missing: list[str] = []
    answered: dict[tuple[str, str, str], list[Assignment]] = {}

    def all_answered() -> bool:
        nonlocal missing, answered
        missing, answered = unanswered(fleet.influx_url)
        return not missing

    try:
        wait_for(all_answered, DATA_TIMEOUT_S, "every dashboard query to return data", interval=1.0)
    except TimeoutError:
        pytest.fail("queries without data:\n" + "\n".join(missing))

    # The HVAC and power panels are answered by the demo agent's own assets, polled from the simulators.
    dashboard = load_dashboards()["asset-detail"]
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        if row in DEMO_ASSET_BY_ROW:
            for t in panel["targets"]:
                assets = {a["asset"] for a in answered[("asset-detail", panel["title"], t["refId"])]}
                assert DEMO_ASSET_BY_ROW[row] in assets, f"{panel['title']}: only {assets}"
    # Work orders came from the collector's rules: on the simulated filter's real readings, and on the
    # pump's history (the demo's own vibration rules may add theirs on that history too).
    orders = rows(fleet.influx_url, 'SELECT "id", "status", "asset", "rule" FROM "work_order"')
    assert {("ahu-1", "filter_loading"), ("pump-1", "bearing_hot")} <= {(o["asset"], o["rule"]) for o in orders}

