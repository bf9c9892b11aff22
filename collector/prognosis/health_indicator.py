"""A health indicator (HI) built from the agent's per-block vibration indicators, normalised to the
machine's own healthy baseline.

Absolute levels do not transfer between machines: one pump runs at 0.3 g r.m.s. when new, another
at 2 g, and a sensor moved by a centimetre changes both. What transfers is the *change* from the
machine's own healthy state. So each indicator is taken as a log ratio to its median over the
first `blocks` blocks the machine sends (its baseline), and the HI is the weighted mean of those
log ratios: 0 is "as when the baseline was taken", log(2) is "twice the baseline".

Robustness, by construction rather than by tuning:
- the baseline level is a median and its spread a median absolute deviation (scaled to a standard
  deviation), so impulsive snapshots or a run-in transient in the baseline move neither much;
- `trailing_median` smooths the HI with a causal running median: an isolated spike changes a
  median of three or more values not at all, a sustained change moves it within half the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["MAD_TO_SD", "Baseline", "fit_baseline", "health_indicator", "trailing_median"]

MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation for normal data
MIN_BASELINE_BLOCKS = 5


@dataclass(frozen=True, slots=True)
class Baseline:
    """The machine's healthy state: per indicator, the median of ln(value) and its robust spread.

    `spread` is the robust standard deviation of the HI itself over the baseline blocks (what one
    block of a healthy machine scatters by), the unit in which an alert level can be stated.
    """

    weights: Mapping[str, float]
    center: Mapping[str, float]  # median of ln(indicator) over the baseline blocks
    spread: float  # robust standard deviation of the HI over the baseline blocks
    blocks: int

    def as_dict(self) -> dict[str, object]:
        return {"weights": dict(self.weights), "center": dict(self.center), "spread": self.spread,
                "blocks": self.blocks}

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> Baseline:
        weights = doc["weights"]
        center = doc["center"]
        if not isinstance(weights, Mapping) or not isinstance(center, Mapping):
            raise ValueError("baseline: weights and center must be tables")
        return cls({str(k): float(v) for k, v in weights.items()}, {str(k): float(v) for k, v in center.items()},
                   float(doc["spread"]), int(doc["blocks"]))  # type: ignore[arg-type]


def _log_values(values: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in weights:
        if name not in values:
            raise ValueError(f"health indicator: no values for {name!r}")
        v = np.asarray(values[name], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
    return out


def _combine(logs: Mapping[str, np.ndarray], center: Mapping[str, float], weights: Mapping[str, float]) -> np.ndarray:
    total = sum(weights.values())
    hi = sum(weights[k] * (logs[k] - center[k]) for k in weights)
    return np.asarray(hi, dtype=np.float64) / total


def fit_baseline(values: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> Baseline:
    """The baseline from the blocks in `values` (each indicator's array over the same blocks).

    Blocks where an indicator is missing or not positive are left out; at least
    MIN_BASELINE_BLOCKS usable blocks are needed (ValueError otherwise).
    """
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("health indicator: weights must be non-negative with a positive sum")
    logs = _log_values(values, weights)
    ok = np.logical_and.reduce([np.isfinite(v) for v in logs.values()])
    if int(ok.sum()) < MIN_BASELINE_BLOCKS:
        raise ValueError(f"baseline: {int(ok.sum())} usable blocks, need at least {MIN_BASELINE_BLOCKS}")
    center = {k: float(np.median(v[ok])) for k, v in logs.items()}
    hi = _combine({k: v[ok] for k, v in logs.items()}, center, weights)
    spread = MAD_TO_SD * float(np.median(np.abs(hi - np.median(hi))))
    return Baseline(dict(weights), center, spread, int(ok.sum()))


def health_indicator(values: Mapping[str, np.ndarray], baseline: Baseline) -> np.ndarray:
    """The HI of each block: the weighted mean of ln(indicator / baseline median). NaN where a value
    is missing or not positive."""
    return _combine(_log_values(values, baseline.weights), baseline.center, baseline.weights)


def trailing_median(x: np.ndarray, window: int) -> np.ndarray:
    """Causal running median over the last `window` finite values (fewer at the start), NaN ignored."""
    arr = np.asarray(x, dtype=np.float64)
    if window <= 1 or len(arr) == 0:
        return arr.copy()
    padded = np.concatenate([np.full(window - 1, math.nan), arr])
    return np.nanmedian(sliding_window_view(padded, window), axis=1) if np.isfinite(arr).any() else arr.copy()
