"""Work orders end to end through the fleet twin's real transaction, on each state database (the
embedded SQLite file and PostgreSQL): raise once, dedup on resend, escalate, clear, close, re-raise
only when the condition returns; context captured when raised; vibration and data-quality rules;
history retention."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from collector.fleet import FleetTwin
from collector.state import StateLocation
from collector.workorders.evaluate import parse_rules
from collector.workorders.history import HistorySettings
from protos.twin.v1 import twin_pb2

S = 10**9
MIN = 60 * S
T0 = time.time_ns() - 2 * 86_400 * S  # histories start two days ago, so "--since 7d" covers them

FILTER_RULE = {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0,
               "clear_at": 250.0, "min_duration_s": 120, "severity": "major", "escalate_at": 420.0,
               "title": "Air filter clogged on {asset}"}


def hello(agent: str = "gw-a") -> twin_pb2.Hello:
    def pd(name: str, unit: str, interval: float = 10.0, kind: str = "measurement") -> twin_pb2.PointDescriptor:
        return twin_pb2.PointDescriptor(name=name, unit=unit, expected_interval_s=interval, kind=kind)

    return twin_pb2.Hello(agent_id=agent, site="plant-a", version="test", queue_epoch="e1", assets=[
        twin_pb2.AssetDescriptor(id="ahu-1", type="ahu", name="AHU 1", depends_on=["chiller-1"],
                                 points=[pd("filter_dp", "Pa"), pd("supply_air_temp", "degC"),
                                         pd("supply_setpoint", "degC", 0, "setpoint")]),
        twin_pb2.AssetDescriptor(id="chiller-1", type="chiller", name="Chiller 1",
                                 points=[pd("chw_supply_temp", "degC")]),
        twin_pb2.AssetDescriptor(id="pump-1", type="pump", name="CHW pump 1", depends_on=["chiller-1"],
                                 points=[pd("flow", "m3/h", 5.0)]),
        twin_pb2.AssetDescriptor(id="zone-3", type="zone", name="Zone 3", depends_on=["ahu-1"]),
    ])


def summary(asset: str, point: str, ts: int, value: float, *, count: int = 6, bad: int = 0,
            reason: str = "") -> twin_pb2.Summary:
    good = count > 0
    return twin_pb2.Summary(asset=asset, point=point, first_ns=ts - 10 * S, last_ns=ts, interval_end_ns=ts,
                            mean=value if good else 0, min=value if good else 0, max=value if good else 0,
                            last=value if good else 0, count=count, bad_count=bad,
                            quality=twin_pb2.GOOD if good else twin_pb2.BAD, reason=reason)


def vibration(asset: str, sensor: str, ts: int, zone: str, velocity: float, fault: str = "normal",
              confidence: float = 0.0) -> twin_pb2.VibrationIndicators:
    diag = [twin_pb2.DiagnosisEntry(fault=fault, confidence=confidence, evidence="BPFO 3.58x +15 dB")] \
        if fault != "normal" else []
    return twin_pb2.VibrationIndicators(asset=asset, sensor=sensor, ts_ns=ts, iso_zone=zone,
                                        velocity_rms_mm_s=velocity, fault=fault, confidence=confidence,
                                        diagnosis=diag, health=80.0)


class Feeder:
    """Commits batches through FleetTwin.commit_batch, the ingest path, numbering seqs."""

    def __init__(self, fleet: FleetTwin, agent: str = "gw-a") -> None:
        self.fleet, self.agent, self.seq = fleet, agent, 0

    async def batch(self, **parts: Any) -> list[Any]:
        self.seq += 1
        return await self.fleet.commit_batch(self.agent, "e1", twin_pb2.Batch(seq=self.seq, **parts))


async def open_fleet(location: StateLocation, rules: list[dict[str, Any]], **kw: Any) -> FleetTwin:
    fleet = FleetTwin(location, parse_rules(rules), **kw)
    await fleet.open()
    await fleet.register_hello(hello())
    return fleet


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_threshold_lifecycle_dedup_context_and_reraise(state_location: StateLocation) -> None:
    async def main() -> None:
        fleet = await open_fleet(state_location, [FILTER_RULE])
        feed = Feeder(fleet)
        wos = fleet.work_orders
        assert wos is not None
        await feed.batch(summaries=[summary("chiller-1", "chw_supply_temp", T0, 6.5)],
                         asset_states=[twin_pb2.AssetState(asset="chiller-1", state="degraded", health=70, ts_ns=T0)])
        t = T0
        for v in (200, 240, 280):  # history before the rise
            t += MIN
            assert await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, v)]) == []
        # a setpoint change shortly before the rise: part of the context
        await feed.batch(changes=[twin_pb2.StateChange(asset="ahu-1", point="supply_setpoint", ts_ns=t + S,
                                                       kind="setpoint", old_value="16", new_value="14")])
        raised = []
        for v in (310, 320, 330):
            t += MIN
            raised += await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, v)])
        assert [w.status for w in raised] == ["open"], "raised once, after the minimum duration"
        wo = raised[0]
        assert wo.severity == "major" and wo.title == "Air filter clogged on ahu-1" and wo.category == "corrective"
        ctx = wo.context
        assert ctx["state"]["type"] == "ahu"
        assert ctx["points"]["filter_dp"]["last"] == 330
        assert [c["new"] for c in ctx["recent_changes"]] == ["14"]
        assert ctx["depends_on"][0]["asset"] == "chiller-1" and ctx["depends_on"][0]["state"] == "degraded"
        assert [d["asset"] for d in ctx["dependents"]] == ["zone-3"]
        assert ctx["trend"]["series"] == "point:filter_dp:mean"
        assert [v for _, v in ctx["trend"]["values"]] == [200, 240, 280, 310, 320, 330]
        assert ctx["earlier_work_orders"] == []

        # a resent batch (same seq) is a duplicate: nothing changes
        dup = await fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(seq=feed.seq, summaries=[
            summary("ahu-1", "filter_dp", t, 500)]))
        assert dup == []
        # worse: escalates the same work order; still one open per (asset, rule)
        t += MIN
        (esc,) = await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, 450)])
        assert esc.id == wo.id and esc.severity == "critical"
        t += MIN
        assert await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, 280)]) == [], "hysteresis: not cleared"
        t += MIN
        (cleared,) = await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, 240)])
        assert cleared.condition_cleared_ns == t and cleared.status == "open"
        await fleet.acknowledge(wo.id, "alice", "replacing the filter")
        closed = await fleet.close_work_order(wo.id, "alice", "filter replaced")
        assert (closed.status, closed.closed_by, closed.note) == ("closed", "alice", "filter replaced")
        assert [a for _, a, _ in await wos.events(wo.id)] == ["raised", "escalated", "condition_cleared",
                                                              "acknowledged", "closed"]
        # the condition returns: a new work order, whose context shows the earlier one
        new = []
        for v in (330, 335, 340, 345):
            t += MIN
            new += await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, v)])
        assert len(new) == 1 and new[0].id != wo.id
        earlier = new[0].context["earlier_work_orders"]
        assert [(e["ref"], e["status"], e["closed_by"]) for e in earlier] == [(wo.ref, "closed", "alice")]
        # closed while the condition persists: nothing new until it worsens past the escalation level
        await fleet.close_work_order(new[0].id, "bob", "known, filter on order")
        t += MIN
        assert await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, 350)]) == []
        t += MIN
        (worse,) = await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, 430)])
        assert worse.id not in (wo.id, new[0].id) and worse.severity == "critical"
        assert f"after {new[0].ref} was closed" in worse.description
        assert len(await wos.list()) == 3 and len(await wos.list(status="active")) == 1
        await fleet.close()

    run(main())


def test_vibration_rules_per_sensor(state_location: StateLocation) -> None:
    rules = [{"name": "vib_zone", "kind": "iso_zone", "asset_type": "pump", "min_blocks": 2},
             {"name": "bearing_defect", "kind": "bearing", "asset_type": "pump", "min_confidence": 0.7,
              "consecutive_blocks": 2}]

    async def main() -> None:
        fleet = await open_fleet(state_location, rules)
        feed = Feeder(fleet)
        t, out = T0, []
        for de, nde in (("B", "B"), ("C", "B"), ("C", "C"), ("C", "C"), ("B", "C"), ("A", "C"), ("A", "B"),
                        ("A", "B")):
            t += MIN
            out += [(w.rule, w.condition_cleared_ns is not None) for w in await feed.batch(vibration=[
                vibration("pump-1", "de", t, de, 5.0), vibration("pump-1", "nde", t + 1, nde, 4.0)])]
        # raised by de, joined by nde (same work order, named in its title and evidence); de clears at block 6
        # but nde is still in C: the work order notes the condition cleared only when both sensors have
        assert out == [("vib_zone", False), ("vib_zone", False), ("vib_zone", True)]
        (wo,) = await fleet.work_orders.list(rule="vib_zone")  # type: ignore[union-attr]
        assert wo.title == "pump-1: vibration in ISO zone C (de, 5.00 mm/s) (also nde)"
        assert wo.evidence["sensor"] == "de" and wo.evidence["also"]["nde"]["sensor"] == "nde"
        assert wo.context["trend"]["series"] == "vibration:de:velocity_rms_mm_s"
        assert [a for _, a, _ in await fleet.work_orders.events(wo.id)] == [  # type: ignore[union-attr]
            "raised", "recurred", "condition_cleared"]
        for conf in (0.8, 0.85):
            t += MIN
            changed = await feed.batch(vibration=[vibration("pump-1", "de", t, "B", 2.0, "outer_race", conf)])
        assert [w.rule for w in changed] == ["bearing_defect"]
        assert changed[0].evidence["fault"] == "outer_race" and changed[0].evidence["confidence"] == 0.85
        await fleet.close()

    run(main())


def test_data_quality_rules(state_location: StateLocation) -> None:
    """Judged at each batch's data time on what the agent reported; agents offline from their streams."""
    rules = [{"name": "stale_data", "kind": "stale", "asset_type": "pump", "factor": 3, "min_silence_s": 10},
             {"name": "bad_data", "kind": "bad_quality", "asset_type": "pump", "max_bad_s": 60},
             {"name": "agent_offline", "kind": "agent_offline", "offline_after_s": 120}]

    async def main() -> None:
        fleet = await open_fleet(state_location, rules)
        feed = Feeder(fleet)
        now = time.time_ns()
        await feed.batch(created_ns=now, summaries=[summary("pump-1", "flow", now, 40.0)])
        # the agent keeps reporting its other points, but not flow: stale at 3 x 5 s (at least 10 s) of its data time
        assert await feed.batch(created_ns=now + 10 * S, summaries=[summary("chiller-1", "chw_supply_temp",
                                                                            now + 10 * S, 6.5)]) == []
        (stale,) = await feed.batch(created_ns=now + 20 * S, summaries=[summary("chiller-1", "chw_supply_temp",
                                                                                now + 20 * S, 6.5)])
        assert (stale.rule, stale.category, stale.evidence["point"]) == ("stale_data", "data_quality", "flow")
        assert stale.title == "pump-1: flow is stale"
        # flow is reported again, but BAD (device timeout) for longer than 60 s: no longer stale, bad data
        changed = []
        for k in range(1, 6):
            ts = now + 20 * S + k * 20 * S
            changed += await feed.batch(created_ns=ts, summaries=[summary("pump-1", "flow", ts, 0, count=0, bad=4,
                                                                          reason="timeout")])
        assert [(w.rule, w.condition_cleared_ns is not None) for w in changed] == [
            ("stale_data", True), ("bad_data", False)]
        assert changed[1].evidence["reason"] == "timeout" and changed[1].evidence["point"] == "flow"
        # the agent's stream is gone: the agent is offline (one work order), its points are not judged
        await fleet.set_connected("gw-a", False)
        later = time.time_ns() + 300 * S
        (offline,) = await fleet.check(later)
        assert offline.rule == "agent_offline" and offline.asset == "gw-a"
        assert offline.context["agent"]["assets"] == ["ahu-1", "chiller-1", "pump-1", "zone-3"]
        assert offline.evidence["assets"] == ["ahu-1", "chiller-1", "pump-1", "zone-3"]
        assert await fleet.check(later + 10 * S) == [], "raised once"
        await fleet.close()

    run(main())


def test_history_is_bucketed_and_pruned(state_location: StateLocation) -> None:
    async def main() -> None:
        fleet = await open_fleet(state_location, [], history_settings=HistorySettings(
            retention_days=1, summary_resolution_s=60))
        feed = Feeder(fleet)
        base = T0 - T0 % MIN
        for k in range(12):  # 10 s summaries: two 60 s buckets
            await feed.batch(summaries=[summary("ahu-1", "filter_dp", base + k * 10 * S, 100 + k)])
        await feed.batch(summaries=[summary("ahu-1", "filter_dp", time.time_ns(), 1.0)])
        async with fleet.reading() as db:
            rows = await db.fetchall("SELECT mean, vmin, vmax, last, count FROM summary_history ORDER BY ts_ns")
        await fleet.close()
        assert rows[:2] == [(102.5, 100, 105, 105, 36), (108.5, 106, 111, 111, 36)]
        fleet = await open_fleet(state_location, [], history_settings=HistorySettings(retention_days=1))
        assert await fleet.prune_history() == 2
        await fleet.close()

    run(main())


def test_waveform_point_fed_by_indicators_is_not_stale(state_location: StateLocation) -> None:
    """A waveform sensor reaches the collector as vibration indicators, never as summaries."""
    rules = [{"name": "stale_data", "kind": "stale", "asset_type": "pump", "factor": 3, "min_silence_s": 2}]

    async def main() -> None:
        fleet = FleetTwin(state_location, parse_rules(rules))
        await fleet.open()
        await fleet.register_hello(twin_pb2.Hello(agent_id="gw-a", site="s", queue_epoch="e1", assets=[
            twin_pb2.AssetDescriptor(id="pump-1", type="pump", points=[
                twin_pb2.PointDescriptor(name="de_accel", unit="g", expected_interval_s=1.0, kind="waveform")])]))
        feed = Feeder(fleet)
        now = time.time_ns()
        for k in range(5):
            assert await feed.batch(created_ns=now + k * S, vibration=[
                vibration("pump-1", "de_accel", now + k * S, "A", 1.0)]) == [], "fresh blocks keep the sensor fresh"
        (stale,) = await feed.batch(created_ns=now + 20 * S, health=twin_pb2.AgentHealth(ts_ns=now + 20 * S,
                                                                                         uptime_s=60.0))
        assert stale.evidence["point"] == "de_accel", "and silence in the agent's batches makes it stale"
        await fleet.close()

    run(main())


def test_points_removed_from_the_agent_config_are_not_judged_stale(state_location: StateLocation) -> None:
    rules = [{"name": "stale_data", "kind": "stale", "asset_type": "pump", "factor": 3, "min_silence_s": 2}]

    async def main() -> None:
        fleet = await open_fleet(state_location, rules)  # pump-1 has point "flow"
        feed = Feeder(fleet)
        now = time.time_ns()
        await feed.batch(created_ns=now, summaries=[summary("pump-1", "flow", now, 40.0)])
        trimmed = hello()
        for a in trimmed.assets:
            if a.id == "pump-1":
                del a.points[:]  # the point was removed from the agent's configuration
        await fleet.register_hello(trimmed)
        assert await feed.batch(created_ns=now + 60 * S, summaries=[
            summary("chiller-1", "chw_supply_temp", now + 60 * S, 6.5)]) == [], \
            "a retired point raises no stale-data work order"
        await fleet.close()

    run(main())
