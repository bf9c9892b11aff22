"""Vibration rules on the agent's per-block indicators: ISO 10816/20816 zone and bearing diagnosis.

Both judge a run of consecutive waveform blocks, never one block: a single block can be spoiled by
a door slam or a start-up transient. Each sensor of an asset is a separate subject with its own
streak; the asset's work order stays open while any sensor keeps its condition.

- `iso_zone`: raise when `min_blocks` consecutive blocks are in `zone` or worse (default C: "not
  suitable for long-term operation"), escalate after `min_blocks` blocks in `escalate_zone` (D:
  "damage may occur"), clear after `min_blocks` blocks back in `clear_zone` or better.
- `bearing`: raise when one of `faults` is diagnosed with confidence >= `min_confidence` in
  `consecutive_blocks` consecutive blocks, escalate when the confidence reaches
  `escalate_confidence`, clear after as many blocks below `clear_confidence`. `faults` may hold
  `bearing`: a bearing fault whose location the agent's evidence does not separate (the
  diagnosis then lists candidate locations with their lines, and the work order says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from collector.workorders.rules import SEVERITIES, Finding, RuleBase, RuleState, Severity, step_blocks

__all__ = ["BEARING_FAULTS", "UNDETERMINED", "ZONES", "BearingRule", "IsoZoneRule", "evaluate_bearing",
           "evaluate_iso_zone"]

ZONES = ("A", "B", "C", "D")
BEARING_FAULTS = ("outer_race", "inner_race", "ball", "cage", "bearing")
UNDETERMINED = "bearing"  # agent.analytics.diagnosis.UNDETERMINED: a bearing fault, location undetermined
Zone = Literal["A", "B", "C", "D"]
BearingFault = Literal["outer_race", "inner_race", "ball", "cage", "bearing"]
_LOCATIONS = {"outer_race": "outer race", "inner_race": "inner race", "ball": "rolling element", "cage": "cage"}


class IsoZoneRule(RuleBase):
    """`kind = "iso_zone"`: velocity RMS zone (A/B/C/D) of an asset's vibration sensors."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "sensor", "zone")

    kind: Literal["iso_zone"]
    sensor: str = ""  # empty: every sensor of the asset
    zone: Zone = "C"
    clear_zone: Zone = "B"
    escalate_zone: Zone | None = "D"
    min_blocks: int = Field(default=3, ge=1)
    severity: Severity = "major"
    escalate_severity: Severity = "critical"

    @model_validator(mode="after")
    def _semantics(self) -> IsoZoneRule:
        if ZONES.index(self.clear_zone) >= ZONES.index(self.zone):
            raise ValueError(f"clear_zone ({self.clear_zone}) must be better than zone ({self.zone})")
        if self.escalate_zone is not None:
            if ZONES.index(self.escalate_zone) <= ZONES.index(self.zone):
                raise ValueError(f"escalate_zone ({self.escalate_zone}) must be worse than zone ({self.zone})")
            if SEVERITIES.index(self.escalate_severity) <= SEVERITIES.index(self.severity):
                raise ValueError("escalate_severity must be higher than severity")
        return self


class BearingRule(RuleBase):
    """`kind = "bearing"`: a bearing defect diagnosed with enough confidence in consecutive blocks."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "sensor", "fault")

    kind: Literal["bearing"]
    sensor: str = ""
    faults: list[BearingFault] = Field(default_factory=lambda: list(BEARING_FAULTS), min_length=1)
    min_confidence: float = Field(default=0.7, gt=0, le=1)
    clear_confidence: float | None = Field(default=None, ge=0, le=1)
    consecutive_blocks: int = Field(default=3, ge=1)
    escalate_confidence: float | None = Field(default=None, gt=0, le=1)
    severity: Severity = "major"
    escalate_severity: Severity = "critical"

    @model_validator(mode="after")
    def _semantics(self) -> BearingRule:
        if self.clear_confidence is not None and self.clear_confidence > self.min_confidence:
            raise ValueError("clear_confidence must be <= min_confidence (hysteresis)")
        if self.escalate_confidence is not None:
            if self.escalate_confidence <= self.min_confidence:
                raise ValueError("escalate_confidence must be greater than min_confidence")
            if SEVERITIES.index(self.escalate_severity) <= SEVERITIES.index(self.severity):
                raise ValueError("escalate_severity must be higher than severity")
        return self


def evaluate_iso_zone(rule: IsoZoneRule, state: RuleState, asset: str, sensor: str, block: Mapping[str, Any],
                      ts_ns: int) -> tuple[RuleState, Finding | None]:
    """Feed one block's indicators (needs iso_zone; velocity_rms_mm_s goes into the evidence)."""
    zone = str(block.get("iso_zone") or "")
    if zone not in ZONES:
        return state, None  # no zone computed (no machine group configured): nothing to judge
    rank = ZONES.index(zone)
    velocity = float(block.get("velocity_rms_mm_s") or 0.0)
    escalated = rule.escalate_zone is not None and rank >= ZONES.index(rule.escalate_zone)
    new, action = step_blocks(state, hit=rank >= ZONES.index(rule.zone), clean=rank <= ZONES.index(rule.clear_zone),
                              escalated=escalated, needed=rule.min_blocks, severity=rule.severity,
                              escalate_severity=rule.escalate_severity, value=velocity)
    if action is None:
        return new, None
    evidence = {"kind": "iso_zone", "sensor": sensor, "iso_zone": zone, "velocity_rms_mm_s": velocity,
                "zone_limit": rule.zone, "blocks": rule.min_blocks,
                "condition": f"ISO zone {rule.zone} or worse in {rule.min_blocks} consecutive blocks",
                "series": f"vibration:{sensor}:velocity_rms_mm_s"}
    title = rule.render_title(f"{asset}: vibration in ISO zone {zone} ({sensor}, {velocity:.2f} mm/s)",
                              asset=asset, sensor=sensor, zone=zone)
    meaning = {"C": "not suitable for long-term continuous operation: plan an inspection",
               "D": "severe enough to cause damage: act now"}.get(zone, "acceptable")
    desc = {"raise": rule.description or (
                f"Velocity RMS {velocity:.2f} mm/s on {sensor} is in ISO 10816/20816 zone {zone} "
                f"({meaning}) for {rule.min_blocks} consecutive blocks."),
            "escalate": f"{sensor} reached zone {zone} ({velocity:.2f} mm/s, {meaning}): escalated.",
            "clear": f"{sensor} back in zone {zone} ({velocity:.2f} mm/s) for {rule.min_blocks} blocks."}[action]
    return new, Finding(action, rule.name, asset, new.severity or state.severity, title, desc, ts_ns, evidence,
                        "corrective", sensor)


def _entries(block: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    entries = [(str(d.get("fault")), float(d.get("confidence") or 0), str(d.get("evidence") or ""))
               for d in block.get("diagnosis") or ()]
    if not entries and block.get("fault"):
        entries = [(str(block["fault"]), float(block.get("confidence") or 0), "")]
    return entries


def _best(block: Mapping[str, Any], faults: list[str]) -> tuple[str, float, str]:
    """The most confident diagnosis entry among `faults` (the top-level fault/confidence as a fallback)."""
    relevant = [e for e in _entries(block) if e[0] in faults]
    return max(relevant, key=lambda e: e[1]) if relevant else ("", 0.0, "")


def _candidates(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidate locations an undetermined diagnosis lists (entries after it, evidence 'candidate ...')."""
    return [{"fault": fault, "confidence": conf, "evidence": why.removeprefix("candidate ")}
            for fault, conf, why in _entries(block) if fault in _LOCATIONS and why.startswith("candidate ")]


def evaluate_bearing(rule: BearingRule, state: RuleState, asset: str, sensor: str, block: Mapping[str, Any],
                     ts_ns: int) -> tuple[RuleState, Finding | None]:
    """Feed one block's diagnosis; return the new state and possibly a finding."""
    fault, confidence, why = _best(block, list(rule.faults))
    clear_below = rule.clear_confidence if rule.clear_confidence is not None else rule.min_confidence
    escalated = rule.escalate_confidence is not None and confidence >= rule.escalate_confidence
    new, action = step_blocks(state, hit=confidence >= rule.min_confidence, clean=confidence < clear_below,
                              escalated=escalated, needed=rule.consecutive_blocks, severity=rule.severity,
                              escalate_severity=rule.escalate_severity, value=confidence)
    if action is None:
        return new, None
    undetermined = fault == UNDETERMINED
    candidates = _candidates(block) if undetermined else []
    label = "bearing fault, location undetermined" if undetermined else \
        f"bearing {(fault.replace('_', ' ') or 'bearing')} defect"
    evidence = {"kind": "bearing", "sensor": sensor, "fault": fault, "confidence": confidence,
                "diagnosis_evidence": why, "min_confidence": rule.min_confidence,
                "blocks": rule.consecutive_blocks, "health": block.get("health"),
                "bpfo_db": block.get("bpfo"), "bpfi_db": block.get("bpfi"), "bsf_db": block.get("bsf"),
                "condition": f"{'/'.join(rule.faults)} at confidence >= {rule.min_confidence:g} "
                             f"in {rule.consecutive_blocks} consecutive blocks",
                "series": f"vibration:{sensor}:confidence"}
    if undetermined:
        evidence["candidates"] = candidates
    title = rule.render_title(f"{asset}: {label} ({sensor})", asset=asset, sensor=sensor, fault=fault)
    if undetermined:
        listed = "; ".join(f"{_LOCATIONS[c['fault']]}: {c['evidence']}" for c in candidates) or \
            (why or "no detail")
        raised = (f"Envelope analysis on {sensor} finds a bearing fault (confidence {confidence:.2f} in "
                  f"{rule.consecutive_blocks} consecutive blocks) but its evidence does not separate where it is: "
                  f"bearing fault, location undetermined. Candidates: {listed}. Inspect the whole bearing "
                  "(both races and the rolling elements); check lubrication.")
    else:
        article = "an" if label.removeprefix("bearing ")[0] in "aeiou" else "a"
        raised = (f"Envelope analysis on {sensor} diagnoses {article} {label.removeprefix('bearing ')} with "
                  f"confidence {confidence:.2f} in {rule.consecutive_blocks} consecutive blocks "
                  f"({why or 'no detail'}). Plan a bearing inspection or replacement; check lubrication.")
    what = "bearing fault (location undetermined)" if undetermined else label.removeprefix("bearing ")
    desc = {"raise": rule.description or raised,
            "escalate": f"{what} confidence on {sensor} reached {confidence:.2f}: escalated.",
            "clear": f"no bearing defect above {clear_below:g} confidence on {sensor} for "
                     f"{rule.consecutive_blocks} blocks."}[action]
    return new, Finding(action, rule.name, asset, new.severity or state.severity, title, desc, ts_ns, evidence,
                        "corrective", sensor)
