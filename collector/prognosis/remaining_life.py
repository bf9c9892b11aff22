"""Remaining life from the health indicator: where the HI stands, where its trend goes, and when.

`assess` looks at the recent HI of one sensor and answers with a `RemainingLife`:

- **reached**: the smoothed HI has been at or above the failure level for `sustain_blocks`
  blocks: the remaining life is 0 and the machine should be stopped or repaired now;
- **trend**: the smoothed HI has been above the alert level for `sustain_blocks` blocks (the
  machine has left its healthy state: a sustained change, never one spike) and its Theil-Sen slope
  over the last `fit_window_s` is upward with the whole confidence band. The HI is a log ratio, so
  a straight line in it is exponential growth of the indicators, the usual shape of a developing
  bearing defect. The crossing of the failure level at the fitted slope is the forecast; at the
  steep and the shallow end of the slope band it gives the interval;
- **healthy** (no degradation, or a change that is not growing): the vibration says nothing yet
  about when the machine will fail. The estimate is then the machine's *life statistics*: the
  residual life of a Weibull life model (scale `life_scale_s`, shape `life_shape`, as ISO 281
  states bearing lives) given the age reached, at the `life_quantile` quantile, with the
  `confidence` quantiles around it as the interval. It is not evidence and never raises a work
  order; it is there so that a remaining life is always stated, with an interval as wide as the
  ignorance it comes from.

Where both a trend and the life model give an estimate, the earlier one stands: a late estimate
costs a failure in service, an early one a planned intervention (the PHM 2012 score weighs being
late four times as much, which is also why `life_quantile` sits low, near 0.2).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from collector.prognosis.health_indicator import MAD_TO_SD, trailing_median
from collector.workorders.trend import reduce_series, theil_sen

__all__ = ["BASES", "MIN_FIT_BLOCKS", "ForecastSettings", "RemainingLife", "assess", "residual_life", "trend_fit"]

BASES = ("healthy", "trend", "reached")
Basis = Literal["healthy", "trend", "reached"]
MIN_FIT_BLOCKS = 5


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """What `assess` needs (the prognosis rule's options; see configs/collector.example.toml). The
    defaults are those chosen on the six FEMTO runs (bench/prognosis_eval.py)."""

    smooth_blocks: int = 9
    alert_ratio: float = 1.3
    alert_sigma: float = 3.0
    sustain_blocks: int = 6
    failure_ratio: float = 10.0
    fit_window_s: float = 600.0
    confidence: float = 0.9
    life_scale_s: float = 14_235.0
    life_shape: float = 1.777
    life_quantile: float = 0.1

    def __post_init__(self) -> None:
        if self.smooth_blocks < 1 or self.sustain_blocks < 1:
            raise ValueError("smooth_blocks and sustain_blocks must be at least 1")
        if not 1.0 < self.alert_ratio < self.failure_ratio:
            raise ValueError("need 1 < alert_ratio < failure_ratio")
        if self.fit_window_s <= 0 or not 0.5 < self.confidence < 1:
            raise ValueError("fit_window_s must be positive and confidence in (0.5, 1)")
        if self.life_scale_s <= 0 or self.life_shape <= 0:
            raise ValueError("life_scale_s and life_shape must be positive")
        if not 0 < self.life_quantile < 1:
            raise ValueError("life_quantile must be in (0, 1)")

    def alert_level(self, spread: float) -> float:
        """The HI above which the machine has left its healthy state: a ratio to the baseline, or
        `alert_sigma` baseline standard deviations when the baseline is that noisy."""
        return max(math.log(self.alert_ratio), self.alert_sigma * spread)

    @property
    def failure_level(self) -> float:
        return math.log(self.failure_ratio)


@dataclass(frozen=True, slots=True)
class RemainingLife:
    """The answer for one sensor at one time. Seconds are counted from the newest block."""

    basis: Basis
    estimate_s: float
    low_s: float
    high_s: float  # inf when the slope band includes no growth
    hi: float  # HI now (ln of the ratio to the baseline): smoothed, or the higher of that and the fit
    alert_level: float
    failure_level: float
    degraded: bool  # above the alert level for sustain_blocks blocks
    crossing_s: float  # when the trend alone reaches the failure level (inf: no growing trend)
    slope_per_h: float  # HI per hour over the fit window (nan when it could not be fitted)
    running_s: float  # the machine's age: time since the baseline started, plus its age then

    def within(self, horizon_s: float) -> bool:
        """Does the *forecast* (not the prior) put the failure level within `horizon_s`?"""
        return self.basis == "reached" or (self.basis == "trend" and self.crossing_s <= horizon_s)

    def as_dict(self) -> dict[str, object]:
        def num(v: float, digits: int = 1) -> float | None:
            return round(v, digits) if math.isfinite(v) else None

        return {"basis": self.basis, "estimate_s": num(self.estimate_s), "low_s": num(self.low_s),
                "high_s": num(self.high_s), "hi": num(self.hi, 4), "ratio": num(math.exp(self.hi), 3),
                "alert_level": num(self.alert_level, 4), "failure_level": num(self.failure_level, 4),
                "degraded": self.degraded, "crossing_s": num(self.crossing_s),
                "slope_per_h": num(self.slope_per_h, 4), "running_s": num(self.running_s)}


def _sustained(values: np.ndarray, level: float, blocks: int) -> bool:
    recent = values[-blocks:]
    return len(recent) == blocks and bool(np.all(recent >= level))


def assess(t_s: np.ndarray, hi: np.ndarray, *, spread: float, running_s: float,
           settings: ForecastSettings) -> RemainingLife:
    """Assess one sensor from its recent HI (oldest first, ending with the newest block).

    `t_s`: block times in seconds (any origin); `hi`: the HI of each block (NaN where missing),
    covering at least `fit_window_s` plus `smooth_blocks` blocks when that much history exists;
    `spread`: the baseline's robust standard deviation of the HI; `running_s`: the machine's age
    (for the life model).
    """
    t = np.asarray(t_s, dtype=np.float64)
    h = np.asarray(hi, dtype=np.float64)
    if len(t) != len(h) or len(t) == 0:
        raise ValueError("t_s and hi must be non-empty and of the same length")
    ok = np.isfinite(h)
    t, h = t[ok], h[ok]
    s = settings
    alert, failure = s.alert_level(spread), s.failure_level
    prior = residual_life(running_s, s.life_scale_s, s.life_shape, s.life_quantile)
    band = (residual_life(running_s, s.life_scale_s, s.life_shape, (1 - s.confidence) / 2),
            residual_life(running_s, s.life_scale_s, s.life_shape, (1 + s.confidence) / 2))
    if len(h) == 0:
        return RemainingLife("healthy", prior, *band, math.nan, alert, failure, False, math.inf, math.nan, running_s)
    smooth = trailing_median(h, s.smooth_blocks)
    level = float(smooth[-1])
    degraded = _sustained(smooth, alert, s.sustain_blocks)
    if _sustained(smooth, failure, s.sustain_blocks):
        return RemainingLife("reached", 0.0, 0.0, 0.0, level, alert, failure, True, 0.0, math.nan, running_s)
    slope, low, high, fitted, fitted_se = (trend_fit(t, h, s.fit_window_s, s.confidence) if degraded
                                           else (math.nan,) * 5)
    slope_h = slope * 3600.0
    if degraded and math.isfinite(low) and low > 0 and level < failure:
        # Where the HI stands now: the fitted line (steady on a slow rise) or the smoothed last
        # blocks when they stand higher (right after a sudden rise); the earlier crossing counts.
        # The interval takes the fit's uncertainty about the level as well as about the slope.
        z = NormalDist().inv_cdf(0.5 + s.confidence / 2)
        now_level = max(level, fitted)
        top, bottom = max(level, fitted + z * fitted_se), min(level, fitted - z * fitted_se)
        crossing = max(0.0, (failure - now_level) / slope)
        early, late = max(0.0, (failure - top) / high), max(0.0, (failure - bottom) / low)
        return RemainingLife("trend", min(crossing, prior), min(early, band[0]), min(late, band[1]), now_level,
                             alert, failure, True, crossing, slope_h, running_s)
    return RemainingLife("healthy", prior, *band, level, alert, failure, degraded, math.inf, slope_h, running_s)


def residual_life(age_s: float, scale_s: float, shape: float, quantile: float) -> float:
    """The `quantile` of the remaining life of a Weibull(scale, shape) life that has reached `age_s`:
    the r with P(life <= age + r | life > age) = quantile."""
    a = max(0.0, age_s) / scale_s
    return scale_s * (a**shape - math.log1p(-quantile)) ** (1.0 / shape) - max(0.0, age_s)


def trend_fit(t_s: np.ndarray, hi: np.ndarray, window_s: float,
              confidence: float) -> tuple[float, float, float, float, float]:
    """Theil-Sen slope of the HI per second over the last `window_s`, its confidence band, the fitted
    HI at the newest block and that value's standard error (NaN when fewer than MIN_FIT_BLOCKS
    blocks). Fitted on the raw HI, not the smoothed one: the fit is robust by itself, and smoothing
    would make the band pretend to more certainty than the blocks hold. The standard error is the
    least-squares one of a line's end point, from the robust scatter of the residuals."""
    nan = (math.nan,) * 5
    t = np.asarray(t_s, dtype=np.float64)
    now = float(t[-1])
    recent = t >= now - window_s
    if int(recent.sum()) < MIN_FIT_BLOCKS:
        return nan
    x, y = reduce_series(t[recent] - now, np.asarray(hi, dtype=np.float64)[recent])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            slope, intercept, low, high = theil_sen(x, y, confidence)
        except ValueError:
            return nan
    residual = y - (intercept + slope * x)
    scatter = MAD_TO_SD * float(np.median(np.abs(residual - np.median(residual))))
    spread_x = float(np.sum((x - x.mean()) ** 2))
    se = scatter * math.sqrt(1.0 / len(x) + float(x.mean()) ** 2 / spread_x) if spread_x > 0 else math.inf
    return slope, low, high, intercept, se
