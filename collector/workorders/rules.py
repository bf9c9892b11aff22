"""Work-order rules: pure functions from (rule, previous state, new value) to (state, finding).

No I/O here: the ingest path feeds values in and persists the returned state, which keeps rules
testable on synthetic histories and lets a what-if replay run them without touching production.

Threshold rule semantics (the classic alarm-management trio):
- **limit**: `above` (or `below`) on one field of a point's interval summary (mean/max/min/last);
- **minimum duration**: the condition must hold continuously for `min_duration_s` before a
  finding is raised, so a single spike does not open a work order;
- **hysteresis**: once raised, the condition clears only when the value returns past `clear_at`
  (below `above`, or above `below`), so a value hovering at the limit does not flap;
- **escalation**: past `escalate_at` the finding's severity rises to `escalate_severity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import Field, model_validator

from agent.tomlconfig import StrictModel

__all__ = ["SEVERITIES", "Finding", "RuleSettings", "ThresholdState", "evaluate_threshold", "rule_applies"]

SEVERITIES = ("info", "minor", "major", "critical")
Severity = Literal["info", "minor", "major", "critical"]


class RuleSettings(StrictModel):
    """One `[[rules]]` table of the collector config."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: Literal["threshold"] = "threshold"
    asset_type: str = ""
    asset: str = ""
    point: str
    field: Literal["mean", "min", "max", "last"] = "mean"
    above: float | None = None
    below: float | None = None
    clear_at: float | None = None
    min_duration_s: float = Field(default=0.0, ge=0)
    severity: Severity = "minor"
    escalate_at: float | None = None
    escalate_severity: Severity = "critical"
    title: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _semantics(self) -> RuleSettings:
        if bool(self.asset) == bool(self.asset_type):
            raise ValueError("give exactly one of asset (one asset id) or asset_type (every asset of a type)")
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.clear_at is not None:
            if self.above is not None and self.clear_at > self.above:
                raise ValueError(f"clear_at ({self.clear_at}) must be <= above ({self.above}) for hysteresis")
            if self.below is not None and self.clear_at < self.below:
                raise ValueError(f"clear_at ({self.clear_at}) must be >= below ({self.below}) for hysteresis")
        if self.escalate_at is not None:
            if self.above is not None and self.escalate_at <= self.above:
                raise ValueError("escalate_at must be beyond the limit (greater than above)")
            if self.below is not None and self.escalate_at >= self.below:
                raise ValueError("escalate_at must be beyond the limit (less than below)")
            if SEVERITIES.index(self.escalate_severity) <= SEVERITIES.index(self.severity):
                raise ValueError("escalate_severity must be higher than severity")
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def clear_level(self) -> float:
        return self.clear_at if self.clear_at is not None else self.limit

    def beyond(self, value: float, level: float) -> bool:
        return value > level if self.above is not None else value < level


def rule_applies(rule: RuleSettings, asset: str, asset_type: str) -> bool:
    return rule.asset == asset if rule.asset else rule.asset_type == asset_type


@dataclass(frozen=True, slots=True)
class ThresholdState:
    """What a threshold rule remembers between values for one asset (persisted by the collector)."""

    pending_since_ns: int | None = None  # condition true since (not yet long enough)
    active: bool = False  # a finding has been raised and has not cleared
    severity: str = ""
    worst: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict for one asset: `raise` a work order, `escalate` it, or note it `clear`ed."""

    action: Literal["raise", "escalate", "clear"]
    rule: str
    asset: str
    severity: str
    title: str
    description: str
    ts_ns: int
    evidence: dict[str, object] = field(default_factory=dict)


def _title(rule: RuleSettings, asset: str) -> str:
    if rule.title:
        return rule.title.format(asset=asset, point=rule.point, limit=rule.limit)
    word = "above" if rule.above is not None else "below"
    return f"{asset}: {rule.point} {word} {rule.limit:g}"


def evaluate_threshold(
    rule: RuleSettings, state: ThresholdState, asset: str, value: float, ts_ns: int
) -> tuple[ThresholdState, Finding | None]:
    """Feed one value (in time order) and get the new state and possibly a finding."""
    word = "above" if rule.above is not None else "below"
    evidence: dict[str, object] = {"point": rule.point, "field": rule.field, "value": value, "limit": rule.limit,
                                   "condition": f"{rule.field} {word} {rule.limit:g}"}
    if not state.active:
        if not rule.beyond(value, rule.limit):
            return ThresholdState(), None
        since = state.pending_since_ns if state.pending_since_ns is not None else ts_ns
        duration_s = (ts_ns - since) / 1e9
        if duration_s < rule.min_duration_s:
            return replace(state, pending_since_ns=since), None
        severity = rule.severity
        if rule.escalate_at is not None and rule.beyond(value, rule.escalate_at):
            severity = rule.escalate_severity
        evidence |= {"since_ns": since, "duration_s": round(duration_s, 1)}
        desc = rule.description or (
            f"{rule.point} ({rule.field}) has been {word} {rule.limit:g} for {duration_s:.0f}s "
            f"(now {value:.4g}); minimum duration {rule.min_duration_s:g}s."
        )
        return (ThresholdState(since, True, severity, value),
                Finding("raise", rule.name, asset, severity, _title(rule, asset), desc, ts_ns, evidence))
    # active: watch for escalation or clearing (with hysteresis)
    worst = value if state.worst is None or rule.beyond(value, state.worst) else state.worst
    if not rule.beyond(value, rule.clear_level) and value != rule.clear_level:
        evidence |= {"clear_at": rule.clear_level, "worst": worst}
        return ThresholdState(), Finding(
            "clear", rule.name, asset, state.severity, _title(rule, asset),
            f"{rule.point} back to {value:.4g} (clear level {rule.clear_level:g}); worst was {worst:.4g}.",
            ts_ns, evidence)
    if (rule.escalate_at is not None and state.severity != rule.escalate_severity
            and rule.beyond(value, rule.escalate_at)):
        evidence |= {"escalate_at": rule.escalate_at, "worst": worst}
        return (replace(state, severity=rule.escalate_severity, worst=worst),
                Finding("escalate", rule.name, asset, rule.escalate_severity, _title(rule, asset),
                        f"{rule.point} reached {value:.4g}, past {rule.escalate_at:g}: escalated to "
                        f"{rule.escalate_severity}.", ts_ns, evidence))
    return replace(state, worst=worst), None
