"""Rate-of-change rule: a value moving faster than X per hour over a window.

A filter that clogs in a day or a bearing temperature climbing 5 degC/h is news before any fixed
limit is reached. The rate is the Theil-Sen slope of the values in the last `window_s` (robust
to a single spike, unlike last-minus-first), evaluated on each new summary. It needs at least
`min_points` values spanning half the window, so a fresh start or a gap does not fire. Minimum
duration, hysteresis (`clear_per_h`) and escalation work as for the threshold rule.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from collector.workorders.rules import SEVERITIES, Finding, RuleBase, RuleState, Severity, step_level
from collector.workorders.trend import reduce_series, theil_sen

__all__ = ["RateOfChangeRule", "evaluate_rate", "rate_per_hour"]

HOUR_NS = 3600 * 10**9


class RateOfChangeRule(RuleBase):
    """`kind = "rate_of_change"` on one field of a point's interval summaries."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "point", "limit")

    kind: Literal["rate_of_change"]
    point: str
    field: Literal["mean", "min", "max", "last"] = "mean"
    rise_per_h: float | None = Field(default=None, gt=0)
    fall_per_h: float | None = Field(default=None, gt=0)
    window_s: float = Field(default=3600.0, gt=0)
    min_points: int = Field(default=4, ge=3)
    clear_per_h: float | None = Field(default=None, ge=0)
    min_duration_s: float = Field(default=0.0, ge=0)
    escalate_per_h: float | None = Field(default=None, gt=0)
    escalate_severity: Severity = "critical"

    @model_validator(mode="after")
    def _semantics(self) -> RateOfChangeRule:
        if (self.rise_per_h is None) == (self.fall_per_h is None):
            raise ValueError("give exactly one of rise_per_h or fall_per_h")
        if self.clear_per_h is not None and self.clear_per_h > self.limit:
            raise ValueError(f"clear_per_h ({self.clear_per_h}) must be <= the rate limit ({self.limit}) "
                             "for hysteresis")
        if self.escalate_per_h is not None:
            if self.escalate_per_h <= self.limit:
                raise ValueError("escalate_per_h must be greater than the rate limit")
            if SEVERITIES.index(self.escalate_severity) <= SEVERITIES.index(self.severity):
                raise ValueError("escalate_severity must be higher than severity")
        return self

    @property
    def limit(self) -> float:
        return self.rise_per_h if self.rise_per_h is not None else self.fall_per_h  # type: ignore[return-value]

    @property
    def window_ns(self) -> int:
        return int(self.window_s * 1e9)


def rate_per_hour(ts_ns: np.ndarray, values: np.ndarray) -> float:
    """Theil-Sen slope of the series, in value units per hour."""
    t, v = reduce_series(np.asarray(ts_ns, dtype=np.float64), np.asarray(values, dtype=np.float64))
    slope, _, _, _ = theil_sen((t - t[-1]) / HOUR_NS, v)
    return slope


def evaluate_rate(rule: RateOfChangeRule, state: RuleState, asset: str, ts_ns: np.ndarray,
                  values: np.ndarray) -> tuple[RuleState, Finding | None]:
    """Feed the window of history ending with the newest value; return the new state and finding."""
    now = int(ts_ns[-1])
    if len(ts_ns) < rule.min_points or (now - int(ts_ns[0])) < rule.window_ns / 2:
        return state, None  # not enough history to judge a rate: keep the state
    rate = rate_per_hour(ts_ns, values)
    toward = rate if rule.rise_per_h is not None else -rate
    clear = rule.clear_per_h if rule.clear_per_h is not None else rule.limit
    severity = rule.severity
    if rule.escalate_per_h is not None and toward > rule.escalate_per_h:
        severity = rule.escalate_severity
    new, action = step_level(state, beyond_limit=toward > rule.limit, beyond_clear=toward > clear,
                             severity=severity, value=toward, ts_ns=now, min_duration_s=rule.min_duration_s)
    if action is None:
        return new, None
    word = "rising" if rule.rise_per_h is not None else "falling"
    evidence: dict[str, Any] = {
        "kind": "rate_of_change", "point": rule.point, "field": rule.field, "rate_per_h": round(rate, 6),
        "limit_per_h": rule.limit, "window_s": rule.window_s, "points": len(ts_ns),
        "value": float(values[-1]), "first_value": float(values[0]),
        "condition": f"{rule.field} {word} faster than {rule.limit:g}/h over {rule.window_s:g}s",
        "series": f"point:{rule.point}:{rule.field}"}
    title = rule.render_title(f"{asset}: {rule.point} {word} {abs(rate):.3g}/h", asset=asset, point=rule.point,
                              limit=rule.limit)
    if action == "raise":
        desc = rule.description or (
            f"{rule.point} ({rule.field}) is {word} at {abs(rate):.4g}/h over the last {rule.window_s:g}s "
            f"(limit {rule.limit:g}/h); now {float(values[-1]):.4g}.")
    elif action == "escalate":
        desc = f"{rule.point} is now {word} at {abs(rate):.4g}/h, past {rule.escalate_per_h:g}/h: escalated."
    else:
        desc = f"{rule.point} rate back to {rate:+.4g}/h (clear level {clear:g}/h)."
    return new, Finding(action, rule.name, asset, new.severity or state.severity, title, desc, now, evidence)
