"""Work orders that say one thing: title, description and evidence name the same point over every rule kind;
one closed while its condition holds comes back after reraise_after_s (and closing warns); a work order
names the upstream work order that explains it, in `show`, the API and the ITSM payload; /ready tells
when the state database is failing. Real SQLite, a real collector daemon, API and webhook receiver."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector.config import build_collector_config, hash_token
from collector.daemon import CollectorDaemon
from collector.fleet import FleetTwin
from collector.state import StateLocation
from collector.workorders.collector_health import Outage, collector_health_rule, outage_findings
from collector.workorders.evaluate import RULE_KINDS, parse_rules
from collector.workorders.history import HistorySettings
from collector.workorders.store import WorkOrder
from protos.twin.v1 import twin_pb2
from tests.conftest import collector_state, state_toml
from tests.integration.daemons import TOKENS
from tests.integration.test_collector_auth import exchange
from tests.integration.test_workorders_lifecycle import Feeder, summary, vibration
from tests.integration.webhook_receiver import serve_webhook
from tests.servers import free_port

S = 10**9

RULES: list[dict[str, Any]] = [
    {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0},
    {"name": "supply_heating", "kind": "rate_of_change", "asset_type": "ahu", "point": "supply_temp",
     "rise_per_h": 10.0, "window_s": 60, "min_points": 3},
    {"name": "vib_zone", "kind": "iso_zone", "asset_type": "pump", "min_blocks": 1,
     "title": "Vibration on {asset} in zone {zone}"},  # a configured title that leaves the sensor out
    {"name": "bearing_defect", "kind": "bearing", "asset_type": "pump", "min_confidence": 0.7,
     "consecutive_blocks": 1},
    {"name": "vib_forecast", "kind": "trend", "asset_type": "pump", "vibration": "velocity_rms_mm_s",
     "above": 7.1, "model": "linear", "window_days": 0.01, "min_span_days": 0.0001, "horizon_days": 1.0,
     "min_points": 5, "evaluate_every_s": 0},
    {"name": "stale_data", "kind": "stale", "asset_type": "pump", "points": ["flow", "temp"], "factor": 3,
     "min_silence_s": 10},
    {"name": "bad_data", "kind": "bad_quality", "asset_type": "chiller", "max_bad_s": 5},
    {"name": "device_offline", "kind": "device_offline", "asset_type": "power_meter", "offline_after_s": 5},
    {"name": "agent_offline", "kind": "agent_offline", "offline_after_s": 60},
    {"name": "collector_health", "kind": "collector_health"},
    {"name": "remaining_life", "kind": "prognosis", "asset_type": "pump", "indicators": {"accel_rms": 1.0},
     "baseline_blocks": 5, "smooth_blocks": 1, "sustain_blocks": 1, "fit_window_s": 60, "horizon_s": 120},
]


def pd(name: str, interval: float = 10.0, kind: str = "measurement") -> twin_pb2.PointDescriptor:
    return twin_pb2.PointDescriptor(name=name, unit="", expected_interval_s=interval, kind=kind)


def plant_hello() -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id="gw-a", site="plant-a", version="test", queue_epoch="e1", assets=[
        twin_pb2.AssetDescriptor(id="ahu-1", type="ahu", depends_on=["meter-1"],
                                 points=[pd("filter_dp"), pd("supply_temp")]),
        twin_pb2.AssetDescriptor(id="pump-1", type="pump", points=[
            pd("de", 1.0, "waveform"), pd("nde", 1.0, "waveform"), pd("flow", 5.0), pd("temp", 5.0)]),
        twin_pb2.AssetDescriptor(id="chiller-1", type="chiller", points=[pd("a"), pd("b")]),
        twin_pb2.AssetDescriptor(id="meter-1", type="power_meter", points=[pd("v1"), pd("v2")]),
    ])


def subject_names(wo: WorkOrder) -> list[str]:
    """What a work order is about: its subjects, or for rules with one subject per asset what the evidence names."""
    ev = wo.evidence
    lead = ev.get("subject") or ev.get("point") or ev.get("asset") or ev.get("agent")
    assert isinstance(lead, str) and lead, f"{wo.rule}: the evidence names no subject: {ev}"
    return [lead, *ev.get("also", {})]


def test_title_description_and_evidence_name_the_same_subject_for_every_rule_kind(
        state_location: StateLocation) -> None:
    async def main() -> None:
        rules = parse_rules(RULES)
        assert {r.kind for r in rules} == set(RULE_KINDS), "every rule kind is exercised here"
        fleet = FleetTwin(state_location, rules, HistorySettings(summary_resolution_s=0))
        await fleet.open()
        await fleet.register_hello(plant_hello())
        feed = Feeder(fleet)
        t0 = time.time_ns()
        for k in range(6):
            t = t0 + k * 10 * S
            summaries = [summary("ahu-1", "filter_dp", t, 350.0 if k >= 2 else 250.0),
                         summary("ahu-1", "supply_temp", t, 20.0 + k),
                         *(summary("chiller-1", p, t, 0, count=0, bad=3, reason="decode error: NaN")
                           for p in ("a", "b")),
                         *(summary("meter-1", p, t, 0, count=0, bad=3, reason="timeout") for p in ("v1", "v2"))]
            if k == 0:
                summaries += [summary("pump-1", "flow", t, 40.0), summary("pump-1", "temp", t, 30.0)]
            blocks = [vibration("pump-1", s, t + i, "C", 4.0 + k * 0.5, "outer_race", 0.9)
                      for i, s in enumerate(("de", "nde"))]
            for b in blocks:  # five blocks of baseline, then twenty times it: the failure level is reached
                b.accel_rms = 1.0 + 0.01 * (k % 2) if k < 5 else 20.0
            await feed.batch(created_ns=t, summaries=summaries, vibration=blocks)
        await fleet.set_connected("gw-a", False)
        await fleet.check(time.time_ns() + 120 * S)
        outage = Outage("sink", "InfluxDB", "InfluxDB v1 at http://influx:8086 (database twin)", t0, "refused",
                        t0 + 30 * S, 14)
        await fleet.apply_findings(outage_findings(collector_health_rule(rules), outage, t0 + 40 * S))
        assert fleet.work_orders is not None
        orders = await fleet.work_orders.list()
        by_rule = {wo.rule: wo for wo in orders}
        assert len(orders) == len(RULES) == len(by_rule), [wo.title for wo in orders]
        for wo in orders:
            names = subject_names(wo)
            for name in names:
                assert name in wo.title, f"{wo.rule}: title {wo.title!r} does not name {name}"
                assert name in wo.description, f"{wo.rule}: description does not name {name}"
            for name, ev in wo.evidence.get("also", {}).items():
                assert ev.get("subject") == name, f"{wo.rule}: evidence under also.{name} is about {ev.get('subject')}"
        # the case: a stale work order names in its title the point its evidence is about
        stale = by_rule["stale_data"]
        assert stale.title == "pump-1: flow is stale (also temp)"
        assert (stale.evidence["point"], stale.evidence["also"]["temp"]["point"]) == ("flow", "temp")
        assert subject_names(by_rule["vib_zone"]) == ["de", "nde"]
        assert by_rule["vib_zone"].title == "Vibration on pump-1 in zone C (de) (also nde)"
        assert subject_names(by_rule["vib_forecast"]) == ["de", "nde"]
        assert subject_names(by_rule["remaining_life"]) == ["de", "nde"]
        assert subject_names(by_rule["bad_data"]) == ["a", "b"]
        device = by_rule["device_offline"]
        assert device.title == "meter-1: device offline (timeout)" and len(device.evidence["points"]) == 2
        assert by_rule["collector_health"].category == "collector"
        # one cause, one work order: the AHU's filter (corrective) names the meter's outage as its probable cause
        assert by_rule["filter_clogged"].probable_cause is not None
        assert by_rule["filter_clogged"].probable_cause["ref"] == device.ref
        await fleet.close()

    asyncio.run(main())


def collector_toml(state_dir: Path, rules: str, state: str = "") -> Path:
    cfg = state_dir.parent / "collector.toml"
    cfg.write_text(f'[collector]\nstate_dir = "{state_dir}"\n\n[[agents]]\nid = "gw-a"\n'
                   f'token_sha256 = "{hash_token(TOKENS["gw-a"])}"\n\n{rules}\n{state}')
    return cfg


def test_closed_while_the_condition_holds_is_raised_again_after_reraise_after(
        tmp_path: Path, state_location: StateLocation) -> None:
    rules = ('[[rules]]\nname = "filter_clogged"\nasset_type = "ahu"\npoint = "filter_dp"\nabove = 300.0\n'
             "reraise_after_s = 3600\n")
    state = tmp_path / "state"
    cfg = collector_toml(state, rules, state_toml(state_location, tmp_path))

    async def main() -> tuple[FleetTwin, Feeder, int]:
        fleet = FleetTwin(collector_state(state_location, state), build_collector_config(
            {"collector": {"state_dir": str(state)}, "agents": [{"id": "gw-a", "token_sha256": "0" * 64}],
             "rules": [{"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0,
                        "reraise_after_s": 3600}]}).rules)
        await fleet.open()
        await fleet.register_hello(plant_hello())
        feed = Feeder(fleet)
        t = time.time_ns()
        (wo,) = await feed.batch(created_ns=t, summaries=[summary("ahu-1", "filter_dp", t, 350.0)])
        await fleet.close()
        return fleet, feed, wo.id

    fleet, feed, first = asyncio.run(main())
    close = subprocess.run([sys.executable, "-m", "collector", "work-orders", "--config", str(cfg), "close",
                            str(first), "--by", "alice", "--note", "known"], capture_output=True, text=True, timeout=60)
    assert close.returncode == 0 and f"WO-{first:06d} is now closed" in close.stdout
    assert "warning: the condition of" in close.stderr and "raised again in 60 min" in close.stderr

    async def later() -> None:
        await fleet.open()
        now = time.time_ns()
        assert await fleet.check(now + 3500 * S) == [], "not before reraise_after_s"
        (again,) = await fleet.check(now + 3700 * S)
        assert again.id != first and again.status == "open" and again.title == "ahu-1: filter_dp above 300"
        assert again.description.startswith("Raised again: the condition still holds ") and "by alice (known)" in \
            again.description
        assert await fleet.check(now + 7400 * S) == [], "once: the new work order is open"
        # cleared, then closed: nothing comes back
        t = time.time_ns()
        await feed.batch(created_ns=t, summaries=[summary("ahu-1", "filter_dp", t, 200.0)])
        await fleet.close_work_order(again.id, "bob")
        assert await fleet.check(now + 20_000 * S) == []
        await fleet.close()

    asyncio.run(later())


def test_probable_cause_in_show_api_and_itsm_and_ready_with_a_locked_state_database(tmp_path: Path) -> None:
    """The meter feeding ahu-1 goes offline, then ahu-1's filter alarm: the filter work order names the meter's
    as its probable cause. Then the state database is locked by another process: /ready says so."""
    state = tmp_path / "state"
    token_file = tmp_path / "api.token"
    token_file.write_text("api-token-0123456789abcdef\n")

    async def main() -> None:
        hook_port = free_port()
        received: list[dict[str, Any]] = []

        async def handle(request: web.Request) -> web.Response:
            received.append(json.loads(await request.read()))
            return web.Response(status=204)

        runner = await serve_webhook(handle, hook_port)
        config = build_collector_config({
            "collector": {"listen": f"127.0.0.1:{free_port()}", "state_dir": str(state), "check_interval_s": 0.2},
            "agents": [{"id": "gw-a", "token_sha256": hash_token(TOKENS["gw-a"])}],
            "rules": [RULES[0], RULES[7]],
            "webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{hook_port}/hook", "retry_initial_s": 0.05}],
            "api": {"listen": "127.0.0.1:0", "token_file": str(token_file)},
        })
        daemon = CollectorDaemon(config)
        await daemon.start()
        try:
            t = time.time_ns() + S
            batches = [twin_pb2.Batch(seq=k + 1, created_ns=t + k * 3 * S, summaries=[
                summary("meter-1", p, t + k * 3 * S, 0, count=0, bad=2, reason="cannot connect to 10.0.0.9:502")
                for p in ("v1", "v2")]) for k in range(3)]
            batches.append(twin_pb2.Batch(seq=4, created_ns=t + 9 * S, summaries=[
                summary("ahu-1", "filter_dp", t + 9 * S, 350.0)]))
            await exchange(daemon.port, TOKENS["gw-a"], plant_hello(), batches)
            assert daemon.api is not None
            base = f"http://127.0.0.1:{daemon.api.port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/work-orders?rule=filter_clogged") as r:
                    (summary_doc,) = await r.json()
                async with http.get(f"{base}/work-orders/{summary_doc['ref']}") as r:
                    doc = await r.json()
                cause = doc["probable_cause"]
                assert (cause["asset"], cause["rule"], cause["relation"]) == ("meter-1", "device_offline",
                                                                             "ahu-1 depends on meter-1")
                for _ in range(100):
                    if any(p["work_order"]["rule"] == "filter_clogged" for p in received):
                        break
                    await asyncio.sleep(0.1)
                (payload,) = [p for p in received if p["work_order"]["rule"] == "filter_clogged"]
                assert payload["work_order"]["probable_cause"] == cause, "the ITSM payload carries it"
                show = await asyncio.to_thread(subprocess.run, [
                    sys.executable, "-m", "collector", "work-orders", "--config",
                    str(collector_toml(state, "")), "show", doc["ref"]], capture_output=True, text=True, timeout=60)
                assert f"probable cause: {cause['ref']} on meter-1 (ahu-1 depends on meter-1)" in show.stdout
                # closed through the API while the meter is still offline: the answer warns
                async with http.post(f"{base}/work-orders/{cause['ref']}/close", json={"by": "alice"},
                                     headers={"Authorization": "Bearer api-token-0123456789abcdef"}) as r:
                    closed = await r.json()
                assert r.status == 200 and closed["status"] == "closed"
                assert closed["warning"].startswith(f"the condition of {cause['ref']} still holds") and \
                    "raised again in 24 h" in closed["warning"]
                async with http.get(f"{base}/ready") as r:
                    assert r.status == 200
                # another process takes the state database's write lock: the periodic check cannot commit
                # (in a thread: the collector under test runs on this event loop and must go on meanwhile)
                locker = sqlite3.connect(state / "collector.sqlite", timeout=30, isolation_level=None,
                                         check_same_thread=False)
                await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
                try:
                    # first /ready's own probe waits in vain, then the failed commit is the reason
                    deadline, reasons = time.monotonic() + 60, []
                    while time.monotonic() < deadline and not any("locked" in x for x in reasons):
                        async with http.get(f"{base}/ready") as r:
                            reasons = (await r.json()).get("reasons", [])
                            assert r.status == (503 if reasons else 200)
                        await asyncio.sleep(0.5)
                    assert any(x.startswith("state database ") and "database is locked" in x for x in reasons), \
                        reasons
                    async with http.get(f"{base}/health") as r:
                        assert r.status == 503 and (await r.json())["status"] == "failing"
                finally:
                    await asyncio.to_thread(locker.execute, "ROLLBACK")
                    locker.close()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    async with http.get(f"{base}/ready") as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.5)
                assert r.status == 200, "ready again once the state database works"
                async with http.get(f"{base}/work-orders?category=collector") as r:
                    (incident,) = await r.json()
                assert (incident["rule"], incident["asset"]) == ("collector_health", "collector")
                assert incident["title"].startswith("state database failing since ")
        finally:
            await daemon.stop()
            await runner.cleanup()

    asyncio.run(main())

