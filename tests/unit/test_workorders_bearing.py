"""The collector's `bearing` rule on the agent's real diagnosis, including "bearing fault, location undetermined".

The blocks go the way production sends them: `analyze_block` on the agent, the uplink message
(`indicators_message`), the collector's view of it (`history.vibration_doc`), then the rule.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block
from agent.vibration_monitor import indicators_message
from collector.workorders.evaluate import parse_rules
from collector.workorders.history import vibration_doc
from collector.workorders.rules import RuleState
from collector.workorders.vibration import BEARING_FAULTS, BearingRule, evaluate_bearing
from runtime.errors import ConfigError
from tests.unit.test_vibration import FR, FS, impacts, noise

S = 10**9
BEARING = lookup("6205-2RS")


def block(inner_weight: float) -> dict[str, Any]:
    """Outer-race impacts plus inner-race impacts of the given relative strength, as the collector sees them."""
    load_zone = lambda t: 0.5 * (1 + math.cos(2 * math.pi * FR * t))  # noqa: E731
    x = impacts(BEARING.bpfo * FR, seed=31) + noise(0.1, seed=32)
    x = x + inner_weight * impacts(BEARING.bpfi * FR, seed=33, modulation=load_zone)
    ind = analyze_block(x, FS, rpm=FR * 60, rpm_source="speed_point", bearing=BEARING)
    return vibration_doc(indicators_message("pump-1", "de", 1, ind))


def run(rule: BearingRule, blocks: list[dict[str, Any]]) -> list[Any]:
    state, findings = RuleState(), []
    for i, b in enumerate(blocks):
        state, finding = evaluate_bearing(rule, state, "pump-1", "de", b, i * S)
        if finding is not None:
            findings.append(finding)
    return findings


def test_undetermined_location_raises_a_work_order_that_says_so_and_lists_the_candidates() -> None:
    undetermined = block(1.6)
    assert undetermined["fault"] == "bearing"
    rule = BearingRule(name="bearing_defect", kind="bearing", asset_type="pump", consecutive_blocks=3)
    assert "bearing" in rule.faults and tuple(rule.faults) == BEARING_FAULTS  # by default
    findings = run(rule, [undetermined] * 3)
    assert [f.action for f in findings] == ["raise"]
    raised = findings[0]
    assert raised.title == "pump-1: bearing fault, location undetermined (de)"
    assert "bearing fault, location undetermined" in raised.description
    assert "outer race: outer race defect: BPFO" in raised.description
    assert "inner race: inner race defect: BPFI" in raised.description
    assert "Inspect the whole bearing" in raised.description
    assert raised.evidence["fault"] == "bearing"
    assert raised.evidence["confidence"] >= 0.7
    assert {c["fault"] for c in raised.evidence["candidates"]} == {"outer_race", "inner_race"}
    assert all(c["evidence"].startswith(("outer race defect", "inner race defect"))
               for c in raised.evidence["candidates"])


def test_a_rule_for_located_faults_only_ignores_an_undetermined_location() -> None:
    rule = BearingRule(name="races", kind="bearing", asset_type="pump", faults=["outer_race", "inner_race"],
                       consecutive_blocks=2)
    assert run(rule, [block(1.6)] * 4) == []  # the candidates are possibilities (<= 0.45), not answers
    located = run(rule, [block(0.0)] * 2)
    assert [f.title for f in located] == ["pump-1: bearing outer race defect (de)"]
    assert "candidates" not in located[0].evidence


def test_located_and_undetermined_blocks_count_as_one_streak_for_the_default_rule() -> None:
    rule = BearingRule(name="bearing_defect", kind="bearing", asset_type="pump", consecutive_blocks=3,
                       escalate_confidence=0.9)
    findings = run(rule, [block(1.6), block(0.0), block(1.6)])
    assert [(f.action, f.evidence["fault"]) for f in findings] == [("raise", "bearing")]


def test_bearing_is_a_valid_fault_in_the_rule_config() -> None:
    (rule,) = parse_rules([{"name": "b", "kind": "bearing", "asset_type": "pump", "faults": ["bearing"]}])
    assert isinstance(rule, BearingRule) and rule.faults == ["bearing"]
    with pytest.raises(ConfigError, match=r"rules\[0\]\.faults\[0\]"):
        parse_rules([{"name": "b", "kind": "bearing", "asset_type": "pump", "faults": ["somewhere"]}])
