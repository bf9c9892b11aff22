"""Prognosis rule: a health indicator against the machine's own baseline, its remaining life, and a
*preventive* work order when the forecast reaches the failure level within the horizon.

`kind = "prognosis"` watches the vibration blocks of each sensor of an asset:

1. **Baseline.** The first `baseline_blocks` blocks the rule sees of a sensor are its healthy state
   (collector/prognosis/health_indicator.py). Until then the rule says nothing.
2. **Assessment** on every block (or every `evaluate_every_s` of data time): the HI of the blocks of
   the last two fit windows, smoothed, compared with the alert and failure levels, and its trend
   forecast (collector/prognosis/remaining_life.py). Each assessment is a remaining-life estimate
   with an interval; the collector keeps them for the twin and InfluxDB.
3. **Work order.** Raised when the *forecast* (never the prior) reaches the failure level within
   `horizon_s`, or the failure level is reached: the HI must have stayed above the alert level for
   `sustain_blocks` smoothed blocks first, so a single spike never raises one. Escalated to
   `escalate_severity` when the failure level is reached. Cleared (hysteresis) after
   `sustain_blocks` assessments in a row with the HI back below the alert level and no forecast
   within `clear_horizon_s` (default twice the horizon).

The default options are those chosen by leave-one-run-out cross-validation on the six FEMTO
PRONOSTIA run-to-failure bearings (bench/prognosis_eval.py; README "Prediction and backtest"):
they fit an accelerated test rig whose bearings live hours. For a plant, scale the time options
(`fit_window_s`, `horizon_s`) to its life span; the ratios and block counts carry over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from collector.prognosis.health_indicator import Baseline, fit_baseline, health_indicator
from collector.prognosis.remaining_life import ForecastSettings, RemainingLife, assess
from collector.workorders.rules import SEVERITIES, Finding, RuleBase, Severity

__all__ = ["HI_FIELDS", "PrognosisRule", "PrognosisState", "evaluate_prognosis", "format_duration",
           "format_remaining_life"]

# Indicators that scale with the vibration (positive, larger when worse): usable in the HI's log ratio.
HI_FIELDS = ("accel_rms", "accel_peak", "crest_factor", "kurtosis", "velocity_rms_mm_s", "amp_1x", "amp_2x",
             "amp_3x")


def format_duration(seconds: float) -> str:
    """`42 s`, `7.5 min`, `3.2 h`, `12 d`: what a technician reads in a title."""
    if not math.isfinite(seconds):
        return "never"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86_400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.0f} d"


def format_remaining_life(doc: dict[str, Any]) -> str:
    """One line for a twin's `remaining_life` entry (collector/prognosis/store.py `latest`)."""
    est, low, high = doc.get("estimate_s"), doc.get("low_s"), doc.get("high_s")
    if est is None:
        return "not assessed"
    band = f"{format_duration(low) if low is not None else '?'}-{format_duration(high) if high is not None else '?'}"
    basis = {"healthy": "no growing degradation: from the life statistics", "trend": "forecast from the trend",
             "reached": "failure level reached"}.get(str(doc.get("basis")), str(doc.get("basis")))
    ratio = doc.get("ratio_to_baseline")
    return (f"~{format_duration(est)} ({band}), {basis}"
            + (f", vibration {ratio:.2f}x baseline" if isinstance(ratio, int | float) else ""))


class PrognosisRule(RuleBase):
    """`kind = "prognosis"`: remaining life of a machine from its vibration, against its own baseline."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "sensor", "remaining", "low", "high")
    category: ClassVar[str] = "preventive"

    kind: Literal["prognosis"]
    sensor: str = ""  # empty: every vibration sensor of the asset, each with its own baseline
    indicators: dict[str, float] = Field(default_factory=lambda: {"accel_rms": 1.0, "accel_peak": 1.0})  # HI weights
    baseline_blocks: int = Field(default=30, ge=5, le=100_000)
    smooth_blocks: int = Field(default=9, ge=1, le=1000)
    alert_ratio: float = Field(default=1.3, gt=1.0)
    alert_sigma: float = Field(default=3.0, ge=0)
    sustain_blocks: int = Field(default=6, ge=1, le=1000)
    failure_ratio: float = Field(default=10.0, gt=1.0)
    fit_window_s: float = Field(default=600.0, gt=0)
    confidence: float = Field(default=0.9, gt=0.5, lt=1)
    horizon_s: float = Field(default=7200.0, gt=0)
    clear_horizon_s: float | None = Field(default=None, gt=0)
    life_scale_s: float = Field(default=14_235.0, gt=0)  # Weibull scale of the machine's life
    life_shape: float = Field(default=1.777, gt=0, le=20)  # Weibull shape (ISO 281 bearings: 1.5)
    life_quantile: float = Field(default=0.1, gt=0, lt=1)
    age_at_start_s: float = Field(default=0.0, ge=0)  # the machine's age when the baseline was taken
    evaluate_every_s: float = Field(default=0.0, ge=0)
    severity: Severity = "major"
    escalate_severity: Severity = "critical"

    @model_validator(mode="after")
    def _semantics(self) -> PrognosisRule:
        if not self.indicators:
            raise ValueError("indicators: give at least one indicator and its weight")
        for name, weight in self.indicators.items():
            if name not in HI_FIELDS:
                raise ValueError(f"indicators.{name}: not an indicator the HI can use; one of {', '.join(HI_FIELDS)}")
            if weight <= 0:
                raise ValueError(f"indicators.{name}: the weight must be positive")
        if self.failure_ratio <= self.alert_ratio:
            raise ValueError("failure_ratio must be greater than alert_ratio")
        if self.clear_horizon_s is not None and self.clear_horizon_s < self.horizon_s:
            raise ValueError("clear_horizon_s must be >= horizon_s (hysteresis)")
        if SEVERITIES.index(self.escalate_severity) < SEVERITIES.index(self.severity):
            raise ValueError("escalate_severity must not be lower than severity")
        return self

    @property
    def settings(self) -> ForecastSettings:
        return ForecastSettings(smooth_blocks=self.smooth_blocks, alert_ratio=self.alert_ratio,
                                alert_sigma=self.alert_sigma, sustain_blocks=self.sustain_blocks,
                                failure_ratio=self.failure_ratio, fit_window_s=self.fit_window_s,
                                confidence=self.confidence, life_scale_s=self.life_scale_s,
                                life_shape=self.life_shape, life_quantile=self.life_quantile)

    @property
    def clear_horizon(self) -> float:
        return self.clear_horizon_s if self.clear_horizon_s is not None else 2 * self.horizon_s

    def series_keys(self, sensor: str) -> dict[str, str]:
        """History series of each HI indicator of `sensor` (collector/workorders/history.py names)."""
        return {name: f"vibration:{sensor}:{name}" for name in self.indicators}

    def due(self, state: PrognosisState, ts_ns: int) -> bool:
        return (state.last_eval_ns == 0 or state.baseline is None
                or ts_ns - state.last_eval_ns >= self.evaluate_every_s * 1e9)

    def history_since(self, state: PrognosisState, ts_ns: int) -> int:
        """Where the history the next assessment needs starts: the baseline's first block while it is
        being taken, then two fit windows (the fit, and the blocks before it the smoothing needs)."""
        if state.baseline is None:
            return state.started_ns or ts_ns
        return max(state.started_ns, ts_ns - int(2 * self.fit_window_s * 1e9))


@dataclass(frozen=True, slots=True)
class PrognosisState:
    """What the rule remembers per (asset, sensor); persisted as JSON like the other rule states."""

    active: bool = False
    severity: str = ""
    last_eval_ns: int = 0
    started_ns: int = 0  # the first block of the baseline
    baseline: dict[str, Any] | None = None  # Baseline.as_dict() once taken
    baseline_end_ns: int = 0
    clear_streak: int = 0
    worst: float | None = None  # the shortest remaining life forecast while active (s)
    last: dict[str, Any] = field(default_factory=dict)  # the latest assessment (RemainingLife.as_dict + ts_ns)


def _align(ts_ns: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One time axis for several indicator series (a value missing in one series is NaN there)."""
    names = list(ts_ns)
    first = ts_ns[names[0]]
    if all(len(ts_ns[n]) == len(first) and np.array_equal(ts_ns[n], first) for n in names[1:]):
        return first, {n: np.asarray(values[n], dtype=np.float64) for n in names}
    axis = np.unique(np.concatenate([ts_ns[n] for n in names]))
    out = {}
    for n in names:
        v = np.full(len(axis), math.nan)
        v[np.searchsorted(axis, ts_ns[n])] = values[n]
        out[n] = v
    return axis, out


def evaluate_prognosis(rule: PrognosisRule, state: PrognosisState, asset: str, sensor: str,
                       ts_ns: dict[str, np.ndarray], values: dict[str, np.ndarray], now_ns: int,
                       ) -> tuple[PrognosisState, Finding | None, RemainingLife | None]:
    """Assess one sensor at `now_ns` from the history of its HI indicators since
    `rule.history_since(state, now_ns)` (per indicator: times and values, oldest first).

    Returns the new state, a finding (raise, escalate or clear) or None, and the assessment (None
    while the baseline is being taken).
    """
    if state.baseline is not None and state.baseline.get("weights") != dict(rule.indicators):
        # The rule's indicators changed: the baseline of the old ones means nothing for the new HI.
        state = replace(state, baseline=None, baseline_end_ns=0, started_ns=0)
    started = state.started_ns or now_ns
    state = replace(state, started_ns=started, last_eval_ns=now_ns)
    axis, aligned = _align(ts_ns, values)
    if len(axis) == 0:
        return state, None, None
    if state.baseline is None:
        usable = np.logical_and.reduce([np.isfinite(v) & (v > 0) for v in aligned.values()])
        if int(usable.sum()) < rule.baseline_blocks:
            return state, None, None
        last = int(np.nonzero(usable)[0][rule.baseline_blocks - 1])
        baseline = fit_baseline({n: v[:last + 1] for n, v in aligned.items()}, rule.indicators)
        state = replace(state, baseline=baseline.as_dict(), baseline_end_ns=int(axis[last]))
    else:
        baseline = Baseline.from_dict(state.baseline)
    hi = health_indicator(aligned, baseline)
    rl = assess((axis - now_ns) / 1e9, hi, spread=baseline.spread,
                running_s=(now_ns - started) / 1e9 + rule.age_at_start_s, settings=rule.settings)
    state = replace(state, last={"ts_ns": now_ns, **rl.as_dict()})
    return (*_step(rule, state, asset, sensor, rl, baseline, now_ns), rl)


def _step(rule: PrognosisRule, state: PrognosisState, asset: str, sensor: str, rl: RemainingLife,
          baseline: Baseline, now_ns: int) -> tuple[PrognosisState, Finding | None]:
    warn = rl.within(rule.horizon_s)
    severity = rule.escalate_severity if rl.basis == "reached" else rule.severity
    if not state.active:
        if not warn:
            return state, None
        return (replace(state, active=True, severity=severity, clear_streak=0, worst=rl.estimate_s),
                _finding("raise", rule, asset, sensor, severity, rl, baseline, now_ns))
    worst = rl.estimate_s if state.worst is None else min(state.worst, rl.estimate_s)
    quiet = not rl.degraded and not rl.within(rule.clear_horizon)
    streak = state.clear_streak + 1 if quiet else 0
    if streak >= rule.sustain_blocks:
        return (replace(state, active=False, severity="", clear_streak=0, worst=None),
                _finding("clear", rule, asset, sensor, state.severity, rl, baseline, now_ns))
    if SEVERITIES.index(severity) > SEVERITIES.index(state.severity or "info"):
        return (replace(state, severity=severity, clear_streak=streak, worst=worst),
                _finding("escalate", rule, asset, sensor, severity, rl, baseline, now_ns))
    return replace(state, clear_streak=streak, worst=worst), None


def _finding(action: Literal["raise", "escalate", "clear"], rule: PrognosisRule, asset: str, sensor: str,
             severity: str, rl: RemainingLife, baseline: Baseline, now_ns: int) -> Finding:
    remaining, low, high = (format_duration(v) for v in (rl.estimate_s, rl.low_s, rl.high_s))
    ratio = math.exp(rl.hi)
    if rl.basis == "reached":
        default_title = f"{asset}: vibration at the failure level ({sensor}, {ratio:.1f}x baseline)"
    else:
        default_title = f"{asset}: failure level forecast in ~{remaining} ({low}-{high}) ({sensor})"
    title = rule.render_title(default_title, asset=asset, sensor=sensor, remaining=remaining, low=low, high=high)
    what = " and ".join(f"{n} (weight {w:g})" for n, w in rule.indicators.items())
    baseline_values = {n: round(math.exp(c), 6) for n, c in baseline.center.items()}
    evidence: dict[str, Any] = {
        "kind": "prognosis", "sensor": sensor, "remaining_life_s": _num(rl.estimate_s),
        "remaining_life_band_s": [_num(rl.low_s), _num(rl.high_s)], "basis": rl.basis,
        "health_indicator": round(rl.hi, 4), "ratio_to_baseline": round(ratio, 3),
        "alert_ratio": round(math.exp(rl.alert_level), 3), "failure_ratio": rule.failure_ratio,
        "forecast_crossing_s": _num(rl.crossing_s), "slope_per_h": _num(rl.slope_per_h, 4),
        "baseline": baseline_values, "baseline_blocks": baseline.blocks, "indicators": dict(rule.indicators),
        "horizon_s": rule.horizon_s, "running_s": round(rl.running_s, 1),
        "condition": f"HI forecast reaches {rule.failure_ratio:g}x baseline within {format_duration(rule.horizon_s)}",
        "series": f"vibration:{sensor}:{next(iter(rule.indicators))}",
    }
    if action == "clear":
        desc = (f"The health indicator of {sensor} is back below {math.exp(rl.alert_level):.2f}x its baseline and "
                f"no failure is forecast within {format_duration(rule.clear_horizon)}.")
    elif action == "escalate":
        desc = (f"The health indicator of {sensor} reached the failure level ({ratio:.1f}x its baseline, failure at "
                f"{rule.failure_ratio:g}x): escalated to {severity}. Stop the machine or repair it now.")
    elif rl.basis == "reached":
        desc = rule.description or (
            f"The health indicator of {sensor} ({what}) has been at or above the failure level, "
            f"{rule.failure_ratio:g}x its baseline, for {rule.sustain_blocks} blocks (now {ratio:.1f}x). "
            "Stop the machine or repair it now.")
    else:
        desc = rule.description or (
            f"The health indicator of {sensor} ({what}) has left its baseline ({ratio:.2f}x, alert at "
            f"{math.exp(rl.alert_level):.2f}x) and grows by {rl.slope_per_h:+.3f} per hour (log ratio, Theil-Sen "
            f"over {format_duration(rule.fit_window_s)}). At that rate it reaches the failure level, "
            f"{rule.failure_ratio:g}x the baseline, in ~{format_duration(rl.crossing_s)}; remaining life ~{remaining} "
            f"(interval {low}-{high}, {rule.confidence:.0%} slope band). Plan the intervention before then.")
    return Finding(action, rule.name, asset, severity, title, desc, now_ns, evidence, "preventive", sensor)


def _num(v: float, digits: int = 1) -> float | None:
    return round(v, digits) if math.isfinite(v) else None
