"""Data-quality judgement on what the agent reported, at its data time (pure: a memory rule store); the
connection-reason vocabulary; the collector's outage findings and dependency health; asset condition."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from collector.condition import asset_condition
from collector.health import CollectorHealth
from collector.workorders.collector_health import DEFAULT_COLLECTOR_HEALTH_RULE, Outage, outage_findings
from collector.workorders.data_quality import is_connection_reason
from collector.workorders.evaluate import PointReport, RuleStateInMemory, evaluate_data_quality, parse_rules
from collector.workorders.rules import Finding
from collector.workorders.store import render_subjects
from runtime.errors import ConfigError

S = 10**9


class MemoryStore(RuleStateInMemory):
    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array([], dtype=np.int64), np.array([])


RULES = parse_rules([
    {"name": "stale_data", "kind": "stale", "asset_type": "ahu", "factor": 3, "min_silence_s": 10},
    {"name": "bad_data", "kind": "bad_quality", "asset_type": "ahu", "max_bad_s": 30},
    {"name": "device_offline", "kind": "device_offline", "asset_type": "ahu", "offline_after_s": 30},
])


def report(point: str, last: int, *, bad: bool = False, reason: str = "", since: int = 0,
           asset: str = "ahu-1") -> PointReport:
    return PointReport(asset, "ahu", point, 5.0, last, bad, reason, since)


def judge(store: MemoryStore, now: int, reports: list[PointReport], rules: Any = RULES) -> list[Finding]:
    return asyncio.run(evaluate_data_quality(rules, store, now, reports))


def test_silence_is_counted_in_the_agents_data_time_only() -> None:
    """A batch judged late (a backlog, a collector restart) is judged at the time it describes."""
    store = MemoryStore()
    t0 = 1_000 * S
    for k in range(10):  # both points reported in every batch, however late the collector stores them
        assert judge(store, t0 + k * 5 * S, [report("a", t0 + k * 5 * S), report("b", t0 + k * 5 * S)]) == []
    # b is no longer reported while a is: stale after 3 x 5 s, at least 10 s, of the agent's own time
    last_b = t0 + 45 * S
    assert judge(store, t0 + 55 * S, [report("a", t0 + 55 * S), report("b", last_b)]) == []
    (f,) = judge(store, t0 + 61 * S, [report("a", t0 + 61 * S), report("b", last_b)])
    assert (f.action, f.rule, f.subject, f.evidence["silent_s"]) == ("raise", "stale_data", "b", 16.0)


def test_an_agent_restart_or_a_newly_declared_point_is_not_silence() -> None:
    store = MemoryStore()
    t0 = 1_000 * S
    # the agent process started 5 s ago (a power cut before): b's last report is an hour old, but the
    # silence counts from the start of watching it
    start = t0 - 5 * S
    assert judge(store, t0, [report("a", t0, since=start), report("b", t0 - 3600 * S, since=start)]) == []
    (f,) = judge(store, t0 + 12 * S, [report("a", t0 + 12 * S, since=start),
                                      report("b", t0 - 3600 * S, since=start)])
    assert f.subject == "b" and f.evidence["silent_s"] == 17.0


def test_a_point_reported_bad_is_bad_not_stale_and_a_dead_device_is_one_finding() -> None:
    store = MemoryStore()
    t0 = 1_000 * S
    # a: the agent said once that it has no good value (an OPC-UA server marks its points BAD once) and then
    # nothing: it is BAD, not silent
    found = []
    for k in range(8):
        now = t0 + k * 10 * S
        found += judge(store, now, [report("a", t0, bad=True, reason="BadNodeIdUnknown"), report("b", now)])
    assert [(f.rule, f.subject) for f in found] == [("bad_data", "a")]
    # every point BAD with a connection reason: one device_offline finding, the points as its evidence,
    # no bad_data of their own
    store = MemoryStore()
    found = []
    for k in range(8):
        now = t0 + k * 10 * S
        found += judge(store, now, [report("a", now, bad=True, reason="timeout"),
                                    report("b", now, bad=True, reason="timeout (connection lost)")])
    (f,) = found
    assert (f.rule, f.asset, f.subject, f.title) == ("device_offline", "ahu-1", "", "ahu-1: device offline (timeout)")
    assert [p["point"] for p in f.evidence["points"]] == ["a", "b"]


def test_without_a_device_rule_the_points_are_judged_each() -> None:
    rules = [r for r in RULES if r.kind != "device_offline"]
    store = MemoryStore()
    t0 = 1_000 * S
    found = []
    for k in range(5):
        now = t0 + k * 10 * S
        found += judge(store, now, [report("a", now, bad=True, reason="timeout"),
                                    report("b", now, bad=True, reason="timeout")], rules)
    assert sorted(f.subject for f in found) == ["a", "b"]


@pytest.mark.parametrize(("reason", "connection"), [
    ("timeout", True), ("timeout (connection lost)", True), ("cannot connect to 10.0.0.5:502", True),
    ("10.0.0.5:502: [Errno 111] Connection refused", True), ("disconnected", True), ("BadNotConnected", True),
    ("BadCommunicationError", True), ("exception 11 gateway target device failed to respond", True),
    ("Sparkplug NDEATH", True), ("BadSecureChannelClosed", True), ("no response", True),  # BACnet
    ("timeout after 5 s", True), ("server disconnected", True), ("No SNMP response received before timeout", True),
    ("decode error: NaN", False), ("exception 2 illegal data address", False), ("BadNodeIdUnknown", False),
    ("null (Sparkplug is_null)", False), ("", False)])
def test_connection_reasons(reason: str, connection: bool) -> None:
    assert is_connection_reason(reason) is connection


def test_only_one_collector_health_rule() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\].kind: only one collector_health rule"):
        parse_rules([{"name": "a", "kind": "collector_health"}, {"name": "b", "kind": "collector_health"}])
    with pytest.raises(ConfigError, match="about the collector itself"):
        parse_rules([{"name": "a", "kind": "collector_health", "asset": "x"}])


def test_outage_findings() -> None:
    rule = DEFAULT_COLLECTOR_HEALTH_RULE
    ongoing = Outage("sink", "InfluxDB", "InfluxDB v1 at http://i:8086 (database d)", 100 * S, "refused")
    (raised,) = outage_findings(rule, ongoing, 130 * S)
    assert (raised.action, raised.asset, raised.category, raised.ts_ns) == ("raise", "collector", "collector", 100 * S)
    assert raised.title.startswith("InfluxDB unreachable since ") and "refused" in raised.description
    done = replace(ongoing, until_ns=127 * S, late_batches=14)
    raised, cleared = outage_findings(rule, done, 130 * S)
    assert cleared.action == "clear" and cleared.description == "sink recovered after 27 s, 14 batches stored late"
    slow = parse_rules([{"name": "c", "kind": "collector_health", "min_duration_s": 60}])[0]
    assert outage_findings(slow, done, 130 * S) == [], "shorter than min_duration_s: logged and counted only"


def test_dependency_health_logs_each_transition_once(caplog: pytest.LogCaptureFixture) -> None:
    health = CollectorHealth("InfluxDB", "InfluxDB v1 at http://i:8086 (database d)", "/var/lib/c.sqlite")
    assert health.ready() and health.reasons() == []
    with caplog.at_level(logging.INFO, "twin.collector.health"):
        for _ in range(5):
            health.sink.failed("connection refused")
        assert not health.ready()
        (reason,) = health.reasons()
        assert reason.startswith("sink InfluxDB v1 at http://i:8086 (database d) failing since ")
        health.sink.succeeded(14)
        health.sink.succeeded(3)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("sink failing: ")
    assert lines[1].startswith("sink recovered after 0 s, 14 batches stored late")
    assert health.ready() and health.sink.outages_total == 1 and health.sink.late_batches_total == 14
    (outage,) = health.sink.take_finished()
    assert outage.until_ns is not None and outage.late_batches == 14 and health.sink.take_finished() == []


def test_render_subjects_names_every_subject() -> None:
    de = {"title": "Vibration on pump-1 in zone C", "description": "Velocity in zone C.", "severity": "major",
          "evidence": {"sensor": "de", "subject": "de"}}
    nde = {"title": "Vibration on pump-1 in zone D", "description": "Velocity in zone D.", "severity": "critical",
           "evidence": {"sensor": "nde", "subject": "nde"}}
    title, desc, ev = render_subjects({"de": de, "nde": nde})
    assert title == "Vibration on pump-1 in zone D (nde) (also de)", "the worst leads"
    assert desc == "nde: Velocity in zone D. Also: de: Velocity in zone C."
    assert ev["sensor"] == "nde" and ev["also"]["de"]["sensor"] == "de"


def test_condition_in_plain_words() -> None:
    assert asset_condition([], {}).level == "good"
    wos = [{"ref": "WO-000003", "category": "corrective", "severity": "critical", "title": "Air filter clogged"},
           {"ref": "WO-000004", "category": "data_quality", "severity": "major", "title": "flow is stale"}]
    cond = asset_condition(wos, {})
    assert cond.level == "act" and cond.reasons == ("WO-000003 critical: Air filter clogged",), \
        "data-quality work orders are about seeing the asset, not its condition"
    # zone A with health 35: the envelope sees the bearing long before the broadband velocity rises
    cond = asset_condition([], {"de_accel": {"health": 35.0, "iso_zone": "A", "fault": "outer_race",
                                             "confidence": 1.0}})
    assert cond.level == "act"
    assert "de_accel: vibration health 35 (outer race, confidence 100%)" in cond.reasons
    assert any("ISO zone A yet health 35" in r and "envelope" in r for r in cond.reasons)
    cond = asset_condition([], {"de": {"health": 95.0, "iso_zone": "C", "fault": "normal"}})
    assert cond.level == "watch" and any("unbalance" in r for r in cond.reasons)
    preventive = [{"ref": "WO-000009", "category": "preventive", "severity": "minor", "title": "zone D in ~9 days"}]
    assert asset_condition(preventive, {}).level == "watch"
