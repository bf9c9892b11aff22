"""Threshold rules: limit, minimum duration, hysteresis, escalation, config validation."""

from __future__ import annotations

import pytest

from collector.workorders.rules import RuleSettings, ThresholdState, evaluate_threshold
from runtime.errors import ConfigError
from runtime.tomlconfig import parse_model

S = 10**9


def rule(**kw: object) -> RuleSettings:
    base: dict[str, object] = {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp",
                               "above": 300.0, "clear_at": 250.0, "min_duration_s": 30, "severity": "major"}
    return RuleSettings(**(base | kw))


def feed(r: RuleSettings, values: list[float], step_s: int = 10) -> list[tuple[int, str, str]]:
    state, out = ThresholdState(), []
    for i, v in enumerate(values):
        state, f = evaluate_threshold(r, state, "ahu-1", v, i * step_s * S)
        if f:
            out.append((i, f.action, f.severity))
    return out


def test_minimum_duration_ignores_spikes() -> None:
    assert feed(rule(), [100, 400, 100, 400, 100, 400, 400, 100]) == []


def test_raises_after_minimum_duration() -> None:
    # above from index 2 (t=20 s); 30 s later is index 5
    assert feed(rule(), [100, 200, 310, 320, 330, 340, 350]) == [(5, "raise", "major")]


def test_hysteresis_stops_flapping() -> None:
    values = [310, 320, 330, 340] + [299, 301, 290, 305, 260, 302] * 3 + [240]
    events = feed(rule(), values)
    assert events == [(3, "raise", "major"), (len(values) - 1, "clear", "major")]


def test_escalation_once() -> None:
    r = rule(escalate_at=450.0)
    events = feed(r, [310, 320, 330, 340, 400, 460, 470, 480])
    assert events == [(3, "raise", "major"), (5, "escalate", "critical")]


def test_below_rule() -> None:
    r = rule(above=None, below=5.0, clear_at=8.0, min_duration_s=0, point="supply_air_flow")
    assert feed(r, [10, 4, 6, 7, 9]) == [(1, "raise", "major"), (4, "clear", "major")]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"clear_at": 350.0}, "clear_at"),
        ({"above": None}, "exactly one of above or below"),
        ({"asset": "ahu-1"}, "exactly one of asset"),
        ({"escalate_at": 100.0}, "escalate_at"),
        ({"field": "median"}, "rules[0].field"),
        ({"severity": "urgent"}, "rules[0].severity"),
        ({"treshold": 3}, "rules[0].treshold: unknown key"),
    ],
)
def test_invalid_rules_name_the_key(kw: dict[str, object], message: str) -> None:
    base = {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_model(RuleSettings, base | kw, "rules[0]")
