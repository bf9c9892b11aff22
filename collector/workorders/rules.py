"""Work-order rules: pure functions from (rule, previous state, new observation) to (state, finding).

No I/O here: the ingest path feeds values in and persists the returned state, which keeps rules
testable on synthetic histories and lets a what-if replay run them without touching production.

This module holds what every rule kind shares (severity, `Finding`, `RuleBase`, the condition state
machine) and the classic **threshold** rule. The other kinds live beside it: rate.py (rate of
change), vibration.py (ISO zone, bearing diagnosis), trend.py (forecast), data_quality.py (stale,
bad, agent offline); evaluate.py parses a `[[rules]]` list and dispatches observations to them.

Threshold rule semantics (the classic alarm-management trio):
- **limit**: `above` (or `below`) on one field of a point's interval summary (mean/min/max/last);
- **minimum duration**: the condition must hold continuously for `min_duration_s` before a
  finding is raised, so a single spike does not open a work order;
- **hysteresis**: once raised, the condition clears only when the value returns past `clear_at`
  (below `above`, or above `below`), so a value hovering at the limit does not flap;
- **escalation**: past `escalate_at` the finding's severity rises to `escalate_severity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from runtime.tomlconfig import StrictModel

__all__ = [
    "CATEGORIES",
    "DEFAULT_RERAISE_AFTER_S",
    "FIELD_CATEGORIES",
    "SEVERITIES",
    "Finding",
    "RuleBase",
    "RuleSettings",
    "RuleState",
    "Severity",
    "ThresholdRule",
    "ThresholdState",
    "evaluate_threshold",
    "rule_applies",
    "step_blocks",
    "step_level",
    "worse_severity",
]

SEVERITIES = ("info", "minor", "major", "critical")
Severity = Literal["info", "minor", "major", "critical"]
# corrective: something is wrong now; preventive: a forecast says it will be; data_quality: the twin
# cannot see the asset properly (stale, bad or missing data), which is a job for the controls team;
# collector: the collector itself cannot do its job (its sink or state database is failing), which is
# a job for whoever runs the monitoring, never for the field.
FIELD_CATEGORIES = ("corrective", "preventive", "data_quality")
CATEGORIES = (*FIELD_CATEGORIES, "collector")
# A work order closed while its condition still holds comes back after this long if it still holds.
DEFAULT_RERAISE_AFTER_S = 24 * 3600.0


class RuleBase(StrictModel):
    """Keys every rule kind has. Subclasses set `kind` (a Literal) and `title_keys`."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset",)
    category: ClassVar[str] = "corrective"

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    asset_type: str = ""
    asset: str = ""
    severity: Severity = "minor"
    title: str = ""
    description: str = ""
    # closed while the condition still holds: raised again this long after the close if it still holds
    # (0: never; the condition must then clear and return)
    reraise_after_s: float = Field(default=DEFAULT_RERAISE_AFTER_S, ge=0)

    @model_validator(mode="after")
    def _target_and_title(self) -> RuleBase:
        if self.targets_assets and bool(self.asset) == bool(self.asset_type):
            raise ValueError("give exactly one of asset (one asset id) or asset_type (every asset of a type)")
        if self.title:
            try:
                self.title.format(**dict.fromkeys(self.title_keys, "x"))
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"title: unknown placeholder {exc}; available: "
                                 + ", ".join("{" + k + "}" for k in self.title_keys)) from None
        return self

    @property
    def targets_assets(self) -> bool:
        """False for rules about agents rather than assets (agent_offline)."""
        return True

    def applies_to(self, asset: str, asset_type: str) -> bool:
        return self.asset == asset if self.asset else self.asset_type == asset_type

    def render_title(self, default: str, **values: object) -> str:
        return self.title.format(**values) if self.title else default


def rule_applies(rule: RuleBase, asset: str, asset_type: str) -> bool:
    return rule.applies_to(asset, asset_type)


def worse_severity(a: str, b: str) -> str:
    return max(a, b, key=SEVERITIES.index)


class ThresholdRule(RuleBase):
    """One `[[rules]]` table with `kind = "threshold"` (the default kind)."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "point", "limit")

    kind: Literal["threshold"] = "threshold"
    point: str
    field: Literal["mean", "min", "max", "last"] = "mean"
    above: float | None = None
    below: float | None = None
    clear_at: float | None = None
    min_duration_s: float = Field(default=0.0, ge=0)
    escalate_at: float | None = None
    escalate_severity: Severity = "critical"

    @model_validator(mode="after")
    def _semantics(self) -> ThresholdRule:
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


RuleSettings = ThresholdRule  # the original name, kept for configs and callers that use it


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
    evidence: dict[str, Any] = field(default_factory=dict)
    category: str = "corrective"
    subject: str = ""  # the point or sensor within the asset the finding is about ("" = the asset)


def _title(rule: ThresholdRule, asset: str) -> str:
    word = "above" if rule.above is not None else "below"
    return rule.render_title(f"{asset}: {rule.point} {word} {rule.limit:g}",
                             asset=asset, point=rule.point, limit=rule.limit)


def evaluate_threshold(
    rule: ThresholdRule, state: ThresholdState, asset: str, value: float, ts_ns: int
) -> tuple[ThresholdState, Finding | None]:
    """Feed one value (in time order) and get the new state and possibly a finding."""
    word = "above" if rule.above is not None else "below"
    evidence: dict[str, Any] = {"kind": "threshold", "point": rule.point, "field": rule.field, "value": value,
                                "limit": rule.limit, "condition": f"{rule.field} {word} {rule.limit:g}",
                                "series": f"point:{rule.point}:{rule.field}"}
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


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the other rule kinds remember per (asset, rule, subject); persisted as JSON by the collector."""

    active: bool = False
    severity: str = ""
    pending_since_ns: int | None = None  # level rules: condition true since (not yet long enough)
    streak: int = 0  # block rules: consecutive blocks meeting the condition (or its escalation while active)
    clear_streak: int = 0  # block rules: consecutive clean blocks while active
    worst: float | None = None
    last_eval_ns: int = 0  # trend rules evaluate at most every evaluate_every_s (data time)


Action = Literal["raise", "escalate", "clear"]


def step_level(state: RuleState, *, beyond_limit: bool, beyond_clear: bool, severity: str, value: float,
               ts_ns: int, min_duration_s: float = 0.0, higher_is_worse: bool = True,
               ) -> tuple[RuleState, Action | None]:
    """The threshold state machine for any scalar condition (minimum duration, hysteresis, escalation).

    `beyond_limit`: the raise condition holds now; `beyond_clear`: the value has not yet come back past
    the clear level (hysteresis); `severity`: what the current value deserves (base or escalated).
    """
    if not state.active:
        if not beyond_limit:
            return RuleState(last_eval_ns=state.last_eval_ns), None
        since = state.pending_since_ns if state.pending_since_ns is not None else ts_ns
        if (ts_ns - since) / 1e9 < min_duration_s:
            return replace(state, pending_since_ns=since), None
        return replace(state, active=True, severity=severity, pending_since_ns=since, worst=value), "raise"
    if state.worst is None or (value > state.worst if higher_is_worse else value < state.worst):
        state = replace(state, worst=value)
    if not beyond_clear:
        return RuleState(last_eval_ns=state.last_eval_ns), "clear"
    if SEVERITIES.index(severity) > SEVERITIES.index(state.severity or "info"):
        return replace(state, severity=severity), "escalate"
    return state, None


def step_blocks(state: RuleState, *, hit: bool, clean: bool, escalated: bool, needed: int, severity: str,
                escalate_severity: str, value: float) -> tuple[RuleState, Action | None]:
    """Consecutive-block state machine for per-block diagnoses (ISO zone, bearing fault).

    Raise after `needed` consecutive hits; while raised, escalate after `needed` consecutive escalated
    blocks and clear after `needed` consecutive clean blocks. A block that is neither hit nor clean
    (between the raise and the clear level) keeps the state: that is the hysteresis.
    """
    if not state.active:
        streak = state.streak + 1 if hit else 0
        if streak < needed:
            return replace(state, streak=streak), None
        first = escalate_severity if escalated else severity
        return RuleState(active=True, severity=first, streak=0, worst=value), "raise"
    worst = value if state.worst is None or value > state.worst else state.worst
    clear_streak = state.clear_streak + 1 if clean else 0
    if clear_streak >= needed:
        return RuleState(), "clear"
    streak = state.streak + 1 if escalated else 0
    if streak >= needed and SEVERITIES.index(escalate_severity) > SEVERITIES.index(state.severity):
        return replace(state, severity=escalate_severity, streak=0, clear_streak=0, worst=worst), "escalate"
    return replace(state, streak=streak, clear_streak=clear_streak, worst=worst), None
