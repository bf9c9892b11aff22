"""Rule kinds on synthetic histories with known answers: trend forecast, rate of change, ISO zone,
bearing diagnosis, data quality; and config validation that names the key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from collector.workorders.data_quality import (
    AgentOfflineRule,
    BadQualityRule,
    StaleRule,
    evaluate_agent_offline,
    evaluate_bad_quality,
    evaluate_stale,
)
from collector.workorders.evaluate import parse_rules
from collector.workorders.rate import RateOfChangeRule, evaluate_rate
from collector.workorders.rules import RuleState, ThresholdRule
from collector.workorders.trend import TrendRule, evaluate_trend, forecast_crossing, theil_sen
from collector.workorders.vibration import BearingRule, IsoZoneRule, evaluate_bearing, evaluate_iso_zone
from runtime.errors import ConfigError

S = 10**9
H = 3600 * S
DAY = 24 * H


def test_theil_sen_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 10, 60))
    y = 3.0 - 0.7 * x + rng.standard_t(2, 60)  # heavy-tailed noise
    slope, intercept, low, high = theil_sen(x, y, 0.9)
    ref = stats.theilslopes(y, x, 0.9, method="joint")
    assert slope == pytest.approx(ref.slope)
    assert intercept == pytest.approx(ref.intercept)
    assert (low, high) == pytest.approx((ref.low_slope, ref.high_slope))


def replay_trend(rule: TrendRule, ts: np.ndarray, values: np.ndarray) -> list[tuple[float, str, dict]]:
    """Feed the series one value at a time, with only the past visible (as ingest does)."""
    state, out = RuleState(), []
    for k in range(len(ts)):
        if not rule.due(state, int(ts[k])):
            continue
        lo = np.searchsorted(ts, ts[k] - rule.window_ns)
        state, f = evaluate_trend(rule, state, "pump-1", "", ts[lo:k + 1], values[lo:k + 1])
        if f:
            out.append((ts[k] / DAY, f.action, f.evidence))
    return out


def trend_rule(**kw: object) -> TrendRule:
    base: dict[str, object] = {"name": "vib_forecast", "kind": "trend", "asset_type": "pump",
                               "vibration": "velocity_rms_mm_s", "above": 7.1, "window_days": 3,
                               "horizon_days": 10, "evaluate_every_s": 3600}
    return TrendRule(**(base | kw))


def test_linear_rise_is_forecast_on_the_known_day() -> None:
    # 2 mm/s rising 0.25 mm/s per day crosses 7.1 mm/s at day 20.4; hourly values with noise
    rng = np.random.default_rng(7)
    ts = np.arange(0, 25 * DAY, H, dtype=np.int64)
    values = 2.0 + 0.25 * ts / DAY + rng.normal(0, 0.15, len(ts))
    events = replay_trend(trend_rule(window_days=5), ts, values)
    assert events, "the rise must be forecast"
    day, action, ev = events[0]
    assert action == "raise"
    # raised when the crossing first comes within the 10-day horizon: about day 10.4 (a 5-day fit on
    # noisy data estimates the slope to within some 10 %, and the first raise favours a steep estimate)
    assert 8.5 <= day <= 11.5
    assert day + ev["eta_days"] == pytest.approx(20.4, abs=2.0), "the predicted crossing day"
    early, late = ev["eta_band_days"]
    assert early <= 20.4 - day <= late, "the true crossing lies in the reported band"
    assert ev["forecast"][-1]["low"] <= ev["forecast"][-1]["value"] <= ev["forecast"][-1]["high"]
    assert [a for _, a, _ in events] == ["raise"], "no flapping while the rise goes on"


def test_log_linear_growth() -> None:
    # exponential growth 1 mm/s * e^(0.1 t): reaches 7.1 mm/s at t = ln(7.1)/0.1 = 19.6 days
    rng = np.random.default_rng(3)
    ts = np.arange(0, 19 * DAY, 2 * H, dtype=np.int64)
    values = np.exp(0.1 * ts / DAY) * rng.lognormal(0, 0.05, len(ts))
    fc = forecast_crossing(ts, values, 7.1, above=True, model="log")
    assert fc is not None and fc.significant
    assert fc.eta_days == pytest.approx(19.6 - ts[-1] / DAY, abs=0.6)
    events = replay_trend(trend_rule(model="log", horizon_days=5), ts, values)
    assert events and events[0][1] == "raise" and 13.6 <= events[0][0] <= 15.6


def test_noise_does_not_trigger_a_forecast() -> None:
    rng = np.random.default_rng(11)
    ts = np.arange(0, 30 * DAY, H, dtype=np.int64)
    values = 4.0 + rng.normal(0, 0.8, len(ts)) + (rng.random(len(ts)) < 0.01) * 6  # spikes
    assert replay_trend(trend_rule(), ts, values) == []


def test_trend_clears_when_the_rise_stops() -> None:
    ts = np.arange(0, 30 * DAY, H, dtype=np.int64)
    days = ts / DAY
    values = np.where(days < 12, 2.0 + 0.3 * days, 2.0 + 0.3 * 12 - 0.05 * (days - 12))
    events = [a for _, a, _ in replay_trend(trend_rule(), ts, values)]
    assert events == ["raise", "clear"]


def test_rate_of_change() -> None:
    r = RateOfChangeRule(name="bearing_heating", kind="rate_of_change", asset_type="pump", point="bearing_temp",
                         rise_per_h=3.0, window_s=1800, clear_per_h=1.0)
    step = 60 * S
    ts = np.arange(0, 6 * H, step, dtype=np.int64)
    hours = ts / H
    # flat 40 degC with one 20-degree spike; from hour 2 rising 5 degC/h for an hour; then flat again
    values = 40.0 + np.clip(hours - 2, 0, 1) * 5.0
    values[30] += 20.0
    state, events = RuleState(), []
    for k in range(len(ts)):
        lo = np.searchsorted(ts, ts[k] - r.window_ns)
        state, f = evaluate_rate(r, state, "pump-1", ts[lo:k + 1], values[lo:k + 1])
        if f:
            events.append((round(hours[k], 2), f.action, f.evidence["rate_per_h"]))
    assert [e[1] for e in events] == ["raise", "clear"], events
    raised_at, _, rate = events[0]
    assert 2.0 < raised_at < 3.0 and rate > 3.0
    assert events[1][0] > 3.0


def test_iso_zone_consecutive_blocks_escalation_and_clear() -> None:
    r = IsoZoneRule(name="vib_zone", kind="iso_zone", asset_type="pump", min_blocks=3)
    zones = "BCCBCCCCDDDCBBABB"
    state, events = RuleState(), []
    for i, z in enumerate(zones):
        state, f = evaluate_iso_zone(r, state, "pump-1", "de", {"iso_zone": z, "velocity_rms_mm_s": 3.0 + i},
                                     i * S)
        if f:
            events.append((i, f.action, f.severity))
    assert events == [(6, "raise", "major"), (10, "escalate", "critical"), (14, "clear", "critical")]


def test_bearing_confidence_over_consecutive_blocks() -> None:
    r = BearingRule(name="bearing_defect", kind="bearing", asset_type="pump", min_confidence=0.7,
                    clear_confidence=0.5, consecutive_blocks=2, escalate_confidence=0.9)

    def block(conf: float, fault: str = "outer_race") -> dict[str, object]:
        return {"fault": fault if conf >= 0.5 else "normal", "confidence": conf,
                "diagnosis": [{"fault": fault, "confidence": conf, "evidence": "BPFO 107 Hz +14 dB"}]}

    seq = [block(0.8), block(0.6), block(0.75), block(0.8), block(0.95), block(0.95), block(0.6), block(0.3),
           block(0.4), block(0.2), block(0.99, "unbalance"), block(0.99, "unbalance")]
    state, events = RuleState(), []
    for i, b in enumerate(seq):
        state, f = evaluate_bearing(r, state, "pump-1", "de", b, i * S)
        if f:
            events.append((i, f.action, f.severity, f.evidence["fault"]))
            if f.action == "raise":
                assert f.title == "pump-1: bearing outer race defect (de)"
                assert f.description.startswith("Envelope analysis on de diagnoses an outer race defect with "
                                                "confidence 0.80 in 2 consecutive blocks (BPFO 107 Hz +14 dB)")
    assert events == [(3, "raise", "major", "outer_race"), (5, "escalate", "critical", "outer_race"),
                      (8, "clear", "critical", "outer_race")]


def test_bad_quality_longer_than_limit() -> None:
    r = BadQualityRule(name="bad_data", kind="bad_quality", asset_type="pump", max_bad_s=60)
    seq = [False, True, True, False, True, True, True, True, True, False]
    state, events = RuleState(), []
    for i, bad in enumerate(seq):
        state, f = evaluate_bad_quality(r, state, "pump-1", "flow", bad, "timeout", i * 20 * S)
        if f:
            events.append((i, f.action, f.category))
    assert events == [(7, "raise", "data_quality"), (9, "clear", "data_quality")]


def test_stale_point_and_offline_agent() -> None:
    r = StaleRule(name="stale_data", kind="stale", asset_type="pump", factor=3, min_silence_s=10)
    state = RuleState()
    state, f = evaluate_stale(r, state, "pump-1", "flow", last_ns=0, expected_interval_s=5, now_ns=14 * S)
    assert f is None
    state, f = evaluate_stale(r, state, "pump-1", "flow", last_ns=0, expected_interval_s=5, now_ns=16 * S)
    assert f is not None and f.action == "raise" and f.evidence["limit_s"] == 15
    state, f = evaluate_stale(r, state, "pump-1", "flow", last_ns=20 * S, expected_interval_s=5, now_ns=21 * S)
    assert f is not None and f.action == "clear"
    assert evaluate_stale(r, RuleState(), "pump-1", "x", 0, 0.0, 10**15)[1] is None, "no interval: never stale"

    o = AgentOfflineRule(name="agent_offline", kind="agent_offline", offline_after_s=60)
    st, f = evaluate_agent_offline(o, RuleState(), "gw-a", 0, 61 * S, ["pump-1"])
    assert f is not None and f.action == "raise" and f.asset == "gw-a" and f.evidence["assets"] == ["pump-1"]
    st, f = evaluate_agent_offline(o, st, "gw-a", 0, 120 * S, ["pump-1"])
    assert f is None, "raised once"
    st, f = evaluate_agent_offline(o, st, "gw-a", 119 * S, 120 * S, ["pump-1"])
    assert f is not None and f.action == "clear"


def test_parse_rules_default_kind_and_all_kinds() -> None:
    rules = parse_rules([
        {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0},
        {"name": "vib_zone", "kind": "iso_zone", "asset_type": "pump"},
        {"name": "bearing_defect", "kind": "bearing", "asset_type": "pump", "faults": ["outer_race"]},
        {"name": "vib_forecast", "kind": "trend", "asset_type": "pump", "vibration": "velocity_rms_mm_s",
         "above": 7.1},
        {"name": "heating", "kind": "rate_of_change", "asset": "pump-1", "point": "t", "rise_per_h": 2.0},
        {"name": "stale_data", "kind": "stale", "asset_type": "pump"},
        {"name": "bad_data", "kind": "bad_quality", "asset_type": "pump"},
        {"name": "agent_offline", "kind": "agent_offline"},
    ])
    assert isinstance(rules[0], ThresholdRule)
    assert [r.kind for r in rules] == ["threshold", "iso_zone", "bearing", "trend", "rate_of_change", "stale",
                                       "bad_quality", "agent_offline"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "trend", "vibration": "velocity_rms_mm_s", "above": 7.1, "horizon_days": -1},
         "rules[2].horizon_days: Input should be greater than 0"),
        ({"kind": "trend", "point": "p", "vibration": "velocity_rms_mm_s", "above": 1.0},
         "rules[2]: give exactly one of point"),
        ({"kind": "trend", "vibration": "speed", "above": 1.0}, "rules[2]: vibration: must be one of"),
        ({"kind": "trend", "point": "p", "above": 1.0, "escalate_within_days": 20}, "escalate_within_days"),
        ({"kind": "trend", "point": "p", "above": -1.0, "model": "log"}, "positive limit"),
        ({"kind": "rate_of_change", "point": "p"}, "rules[2]: give exactly one of rise_per_h or fall_per_h"),
        ({"kind": "rate_of_change", "point": "p", "rise_per_h": 2, "clear_per_h": 3}, "clear_per_h"),
        ({"kind": "iso_zone", "zone": "E"}, "rules[2].zone"),
        ({"kind": "iso_zone", "zone": "C", "clear_zone": "C"}, "clear_zone"),
        ({"kind": "bearing", "faults": ["broken"]}, "rules[2].faults[0]"),
        ({"kind": "bearing", "min_confidence": 0.7, "escalate_confidence": 0.6}, "escalate_confidence"),
        ({"kind": "stale", "factor": 0.5}, "rules[2].factor"),
        ({"kind": "agent_offline"}, "rules[2]: agent_offline rules are about agents"),
        ({"kind": "nonsense"}, "rules[2].kind: unknown rule kind 'nonsense'"),
        ({"kind": "iso_zone", "title": "{asset} {nope}"}, "title: unknown placeholder"),
        ({"kind": "iso_zone", "horizon_days": 3}, "rules[2].horizon_days: unknown key"),
    ],
)
def test_rule_errors_name_the_key(table: dict[str, object], message: str) -> None:
    good = [{"name": "a", "asset_type": "ahu", "point": "p", "above": 1.0},
            {"name": "b", "kind": "iso_zone", "asset_type": "pump"}]
    with pytest.raises(ConfigError) as err:
        parse_rules([*good, {"name": "c", "asset_type": "pump"} | table])
    assert message in str(err.value)


def test_duplicate_rule_names() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\]: duplicate 'a'"):
        parse_rules([{"name": "a", "asset_type": "ahu", "point": "p", "above": 1.0},
                     {"name": "a", "kind": "iso_zone", "asset_type": "pump"}])


def test_forecast_already_past_limit() -> None:
    ts = np.arange(0, 5 * DAY, H, dtype=np.int64)
    fc = forecast_crossing(ts, 8.0 + 0.1 * ts / DAY, 7.1, above=True)
    assert fc is not None and fc.eta_days == 0.0
    fc = forecast_crossing(ts, 5.0 - 0.1 * ts / DAY, 7.1, above=True)
    assert fc is not None and math.isinf(fc.eta_days) and not fc.significant
