"""Trend forecast rule: fit the recent trend robustly and raise a *preventive* work order early.

The fit is Theil-Sen (the median of all pairwise slopes): a few outliers, a missing day or a
step in the noise do not move it, where least squares would. Its confidence band comes from
Kendall's S statistic (Sen 1968), the same construction as `scipy.stats.theilslopes`, so the
work order can say "reaches the limit in ~9 days (6-14 days)". With `model = "log"` the fit is
on ln(value): exponential growth, typical of a developing bearing defect, becomes a straight line.

Raise: the slope points toward the limit with the whole confidence band (the trend is real, not
noise) and the forecast crossing is within `horizon_days`. Clear (hysteresis): the forecast
crossing moves beyond `clear_horizon_days` (default twice the horizon) or the slope turns away.
Escalate: the crossing comes within `escalate_within_days`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from collector.workorders.rules import SEVERITIES, Finding, RuleBase, RuleState, Severity

__all__ = ["MAX_FIT_POINTS", "VIBRATION_FIELDS", "Forecast", "TrendRule", "evaluate_trend", "forecast_crossing",
           "theil_sen"]

DAY_NS = 86_400 * 10**9
MAX_FIT_POINTS = 240  # longer histories are reduced to this many time-bucket medians (Theil-Sen is O(n^2))
# Numeric fields of a vibration block that a trend rule may follow (protos/twin/v1 VibrationIndicators).
VIBRATION_FIELDS = ("accel_rms", "accel_peak", "crest_factor", "kurtosis", "velocity_rms_mm_s", "rpm", "amp_1x",
                    "amp_2x", "amp_3x", "bpfo", "bpfi", "bsf", "ftf", "health", "confidence")


def theil_sen(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Return (slope, intercept, slope_low, slope_high): the Theil-Sen fit and the slope's confidence band."""
    n = len(x)
    i, j = np.triu_indices(n, 1)
    dx = x[j] - x[i]
    ok = dx != 0
    slopes = np.sort((y[j] - y[i])[ok] / dx[ok])
    if len(slopes) == 0:
        raise ValueError("need at least two distinct x values")
    slope = float(np.median(slopes))
    intercept = float(np.median(y - slope * x))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    m = len(slopes)
    low = slopes[max(round((m - c) / 2) - 1, 0)]
    high = slopes[min(round((m + c) / 2), m - 1)]
    return slope, intercept, float(low), float(high)


def reduce_series(ts_ns: np.ndarray, values: np.ndarray, max_points: int = MAX_FIT_POINTS) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Bucket a long series into `max_points` equal time bins (median time and value per bin)."""
    if len(ts_ns) <= max_points:
        return ts_ns, values
    edges = np.linspace(ts_ns[0], ts_ns[-1] + 1, max_points + 1)
    idx = np.searchsorted(edges, ts_ns, side="right") - 1
    out_t, out_v = [], []
    for b in np.unique(idx):
        sel = idx == b
        out_t.append(np.median(ts_ns[sel]))
        out_v.append(np.median(values[sel]))
    return np.asarray(out_t), np.asarray(out_v)


@dataclass(frozen=True, slots=True)
class Forecast:
    """Where the fitted trend goes. Days are counted from `ts_ns` (the newest value)."""

    model: str
    level: float  # fitted value now
    slope_per_day: float  # in value units per day (linear) or relative growth per day (log)
    slope_low: float
    slope_high: float
    n: int
    span_days: float
    eta_days: float  # until the limit is crossed at the fitted slope; inf if never, 0 if already past
    eta_early_days: float  # at the steep end of the confidence band
    eta_late_days: float  # at the shallow end (inf when the band includes a flat trend)
    significant: bool  # the whole band points toward the limit

    def value_at(self, days: float, slope: float | None = None) -> float:
        s = self.slope_per_day if slope is None else slope
        return self.level * math.exp(s * days) if self.model == "log" else self.level + s * days

    def as_evidence(self, horizon_days: float) -> dict[str, Any]:
        def r(v: float) -> float | None:
            return None if math.isinf(v) or math.isnan(v) else round(v, 4)

        steps = [horizon_days * k / 4 for k in range(5)]
        return {
            "model": self.model, "level": r(self.level), "slope_per_day": r(self.slope_per_day),
            "slope_band_per_day": [r(self.slope_low), r(self.slope_high)], "points": self.n,
            "span_days": r(self.span_days), "eta_days": r(self.eta_days),
            "eta_band_days": [r(self.eta_early_days), r(self.eta_late_days)],
            "forecast": [{"days": round(d, 3), "value": r(self.value_at(d)),
                          "low": r(min(self.value_at(d, self.slope_low), self.value_at(d, self.slope_high))),
                          "high": r(max(self.value_at(d, self.slope_low), self.value_at(d, self.slope_high)))}
                         for d in steps],
        }


def forecast_crossing(ts_ns: np.ndarray, values: np.ndarray, limit: float, *, above: bool, model: str = "linear",
                      confidence: float = 0.9) -> Forecast | None:
    """Fit the series and say when it crosses `limit` (None if it cannot be fitted)."""
    ts = np.asarray(ts_ns, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & ((v > 0) if model == "log" else True)
    ts, v = ts[keep], v[keep]
    if len(ts) < 3 or (model == "log" and limit <= 0):
        return None
    ts, v = reduce_series(ts, v)
    now = float(ts[-1])
    x = (ts - now) / DAY_NS
    y = np.log(v) if model == "log" else v
    try:
        slope, intercept, low, high = theil_sen(x, y, confidence)
    except ValueError:
        return None
    target = math.log(limit) if model == "log" else limit
    sign = 1.0 if above else -1.0
    gap = sign * (target - intercept)  # how far the fitted level is from the limit, toward it

    def eta(s: float) -> float:
        toward = sign * s
        if gap <= 0:
            return 0.0
        return gap / toward if toward > 0 else math.inf

    steep, shallow = (high, low) if above else (low, high)
    level = math.exp(intercept) if model == "log" else intercept
    return Forecast(model, level, slope, low, high, len(x), float(-x[0]), eta(slope), eta(steep), eta(shallow),
                    significant=sign * shallow > 0)


class TrendRule(RuleBase):
    """`kind = "trend"`: forecast when a point's summary field or a vibration indicator crosses a limit."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "indicator", "limit", "days")
    category: ClassVar[str] = "preventive"

    kind: Literal["trend"]
    point: str = ""
    field: Literal["mean", "min", "max", "last"] = "mean"
    vibration: str = ""  # a numeric vibration indicator instead of a point, e.g. velocity_rms_mm_s
    sensor: str = ""  # with vibration: only this sensor (empty: every sensor of the asset, each on its own)
    above: float | None = None
    below: float | None = None
    model: Literal["linear", "log"] = "linear"
    window_days: float = Field(default=7.0, gt=0, le=365)
    horizon_days: float = Field(default=14.0, gt=0)
    clear_horizon_days: float | None = Field(default=None, gt=0)
    min_points: int = Field(default=12, ge=5)
    min_span_days: float | None = Field(default=None, ge=0)
    confidence: float = Field(default=0.9, gt=0.5, lt=1)
    evaluate_every_s: float = Field(default=3600.0, ge=0)
    escalate_within_days: float | None = Field(default=None, gt=0)
    escalate_severity: Severity = "major"

    @model_validator(mode="after")
    def _semantics(self) -> TrendRule:
        if bool(self.point) == bool(self.vibration):
            raise ValueError("give exactly one of point (a point's summary field) or vibration (an indicator)")
        if self.vibration and self.vibration not in VIBRATION_FIELDS:
            raise ValueError(f"vibration: must be one of {', '.join(VIBRATION_FIELDS)}")
        if self.sensor and not self.vibration:
            raise ValueError("sensor: only with vibration")
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.model == "log" and self.limit <= 0:
            raise ValueError("model = \"log\" needs a positive limit")
        if self.clear_horizon_days is not None and self.clear_horizon_days < self.horizon_days:
            raise ValueError("clear_horizon_days must be >= horizon_days (hysteresis)")
        if self.escalate_within_days is not None:
            if self.escalate_within_days >= self.horizon_days:
                raise ValueError("escalate_within_days must be shorter than horizon_days")
            if SEVERITIES.index(self.escalate_severity) <= SEVERITIES.index(self.severity):
                raise ValueError("escalate_severity must be higher than severity")
        if self.span_needed_days > self.window_days:
            raise ValueError("min_span_days must not exceed window_days")
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def indicator(self) -> str:
        return f"{self.point}.{self.field}" if self.point else self.vibration

    @property
    def span_needed_days(self) -> float:
        return self.min_span_days if self.min_span_days is not None else self.window_days / 4

    @property
    def window_ns(self) -> int:
        return int(self.window_days * DAY_NS)

    def due(self, state: RuleState, ts_ns: int) -> bool:
        """Trend fits are costly and change slowly: evaluate at most every `evaluate_every_s` (data time)."""
        return state.last_eval_ns == 0 or ts_ns - state.last_eval_ns >= self.evaluate_every_s * 1e9


def evaluate_trend(rule: TrendRule, state: RuleState, asset: str, subject: str, ts_ns: np.ndarray,
                   values: np.ndarray) -> tuple[RuleState, Finding | None]:
    """Fit the history (oldest first, ending with the newest value) and return the new state and finding."""
    now = int(ts_ns[-1]) if len(ts_ns) else 0
    state = replace(state, last_eval_ns=now)
    if len(ts_ns) < rule.min_points or (now - int(ts_ns[0])) / DAY_NS < rule.span_needed_days:
        return state, None
    fc = forecast_crossing(ts_ns, values, rule.limit, above=rule.above is not None, model=rule.model,
                           confidence=rule.confidence)
    if fc is None:
        return state, None
    where = f" ({subject})" if subject else ""
    word = "above" if rule.above is not None else "below"
    days_text = "now" if fc.eta_days == 0 else f"in ~{fc.eta_days:.1f} days"
    band = (f"{fc.eta_early_days:.1f}-{'?' if math.isinf(fc.eta_late_days) else f'{fc.eta_late_days:.1f}'} days"
            if fc.eta_days > 0 else "already reached")
    evidence: dict[str, Any] = {"kind": "trend", "indicator": rule.indicator, "limit": rule.limit,
                                "condition": f"{rule.indicator} {word} {rule.limit:g} within {rule.horizon_days:g} d",
                                "window_days": rule.window_days, "horizon_days": rule.horizon_days,
                                "series": _series_key(rule, subject), "value": round(float(values[-1]), 6),
                                **fc.as_evidence(rule.horizon_days)}
    title = rule.render_title(f"{asset}: {rule.indicator}{where} reaches {rule.limit:g} {days_text}",
                              asset=asset, indicator=rule.indicator, limit=rule.limit,
                              days=f"{fc.eta_days:.1f}")
    desc = rule.description or (
        f"{rule.indicator}{where} is trending {'up' if fc.slope_per_day > 0 else 'down'} "
        f"({_slope_text(fc)}); at this rate it is {word} {rule.limit:g} {days_text} "
        f"(confidence band {band}, {rule.confidence:.0%}). Fit: Theil-Sen {fc.model} on {fc.n} values over "
        f"{fc.span_days:.1f} days. Plan the intervention before then.")
    clear_horizon = rule.clear_horizon_days if rule.clear_horizon_days is not None else 2 * rule.horizon_days
    severity = rule.severity
    if rule.escalate_within_days is not None and fc.eta_days <= rule.escalate_within_days:
        severity = rule.escalate_severity
    if not state.active:
        if fc.significant and fc.eta_days <= rule.horizon_days:
            return (replace(state, active=True, severity=severity, worst=fc.eta_days),
                    Finding("raise", rule.name, asset, severity, title, desc, now, evidence, "preventive", subject))
        return state, None
    if fc.eta_days > clear_horizon:
        return (RuleState(last_eval_ns=now),
                Finding("clear", rule.name, asset, state.severity, title,
                        f"{rule.indicator}{where}: the forecast crossing moved beyond {clear_horizon:g} days "
                        f"({'never at the current slope' if math.isinf(fc.eta_days) else days_text}).",
                        now, evidence, "preventive", subject))
    worst = fc.eta_days if state.worst is None else min(state.worst, fc.eta_days)
    if SEVERITIES.index(severity) > SEVERITIES.index(state.severity or "info"):
        return (replace(state, severity=severity, worst=worst),
                Finding("escalate", rule.name, asset, severity, title,
                        f"{rule.indicator}{where} now forecast to reach {rule.limit:g} {days_text}: escalated "
                        f"to {severity}.", now, evidence, "preventive", subject))
    return replace(state, worst=worst), None


def _slope_text(fc: Forecast) -> str:
    if fc.model == "log":
        return f"{math.expm1(fc.slope_per_day):+.1%}/day"
    return f"{fc.slope_per_day:+.4g}/day"


def _series_key(rule: TrendRule, subject: str) -> str:
    if rule.point:
        return f"point:{rule.point}:{rule.field}"
    return f"vibration:{subject}:{rule.vibration}"
