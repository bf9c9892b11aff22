"""PNG of a backtest: the health indicator with its alert and failure levels, the last forecast with its
interval, the remaining-life estimates over time, and the work orders. Needs the `plot` extra
(matplotlib); imported only when `--plot` is given."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from collector.backtest import BacktestResult

__all__ = ["plot_backtest"]

KIND_COLOURS = {"condition": "tab:red", "preventive": "tab:orange", "data_quality": "tab:gray"}


def _unit(duration_s: float) -> tuple[float, str]:
    if duration_s >= 3 * 86_400:
        return 86_400.0, "d"
    if duration_s >= 3 * 3600:
        return 3600.0, "h"
    if duration_s >= 180:
        return 60.0, "min"
    return 1.0, "s"


def plot_backtest(path: Path, result: BacktestResult) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'facility-twin[plot]'") from exc
    scale, unit = _unit(max(result.duration_s, 1.0))
    fig, (ax_hi, ax_rul) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 2]})
    rules = sorted({a.rule for a in result.assessments})
    right = result.end_t_s  # widened to show the last forecast reach the failure level
    for rule in rules:
        rows = [a for a in result.assessments if a.rule == rule]
        t = np.array([a.t_s for a in rows]) / scale
        ratio = np.exp([a.remaining_life.hi for a in rows])
        ax_hi.plot(t, ratio, lw=0.9, label=f"health indicator ({rule}), x baseline")
        last = rows[-1].remaining_life
        ax_hi.axhline(math.exp(last.alert_level), color="tab:olive", ls="--", lw=0.8, label="alert level")
        ax_hi.axhline(math.exp(last.failure_level), color="tab:red", ls="--", lw=0.8, label="failure level")
        trend = [a for a in rows if a.remaining_life.basis == "trend"]
        if trend:
            a = trend[-1]
            rl = a.remaining_life
            t0, level = a.t_s, rl.hi
            ends = [(rl.crossing_s, "tab:purple", "-")]
            for dt, colour, style in ends:
                ax_hi.plot([t0 / scale, (t0 + dt) / scale], [math.exp(level), math.exp(rl.failure_level)],
                           color=colour, ls=style, lw=1.2, label=f"last forecast (at {t0 / scale:.2f} {unit})")
            if math.isfinite(rl.low_s) and math.isfinite(rl.high_s):
                ax_hi.axvspan((t0 + rl.low_s) / scale, (t0 + rl.high_s) / scale, color="tab:purple", alpha=0.12,
                              label="remaining-life interval")
            reach = rl.high_s if math.isfinite(rl.high_s) else rl.crossing_s
            if math.isfinite(reach):
                right = max(right, min(t0 + reach, result.end_t_s + 0.5 * result.duration_s))
        est = np.array([a.remaining_life.estimate_s for a in rows]) / scale
        low = np.array([a.remaining_life.low_s for a in rows]) / scale
        high = np.array([a.remaining_life.high_s for a in rows]) / scale
        ax_rul.plot(t, est, lw=0.9, label=f"remaining life ({rule})")
        ax_rul.fill_between(t, low, np.where(np.isfinite(high), high, np.nan), alpha=0.2, label="interval")
    for w in result.work_orders:
        for ax in (ax_hi, ax_rul):
            ax.axvline(w.t_s / scale, color=KIND_COLOURS.get(w.kind, "k"), lw=1.0, alpha=0.8)
        ax_hi.annotate(f"{w.kind}: {w.rule}", (w.t_s / scale, 1.0), xycoords=("data", "axes fraction"),
                       rotation=90, va="top", ha="right", fontsize=7, color=KIND_COLOURS.get(w.kind, "k"))
    ax_hi.set_yscale("log")
    ax_hi.set_ylabel("ratio to the baseline")
    ax_hi.set_title(f"{result.file}: {result.snapshots} snapshots, {len(result.work_orders)} work orders")
    handles, labels = ax_hi.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax_hi.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    ax_rul.set_ylabel(f"remaining life ({unit})")
    ax_rul.set_xlabel(f"time since the first snapshot ({unit})")
    ax_rul.set_xlim(result.start_t_s / scale, right / scale)
    if not rules:
        ax_hi.text(0.5, 0.5, "no remaining-life assessment (no prognosis rule, or its baseline is not complete)",
                   transform=ax_hi.transAxes, ha="center")
    else:
        ax_rul.legend(fontsize=7, loc="upper right")
    for ax in (ax_hi, ax_rul):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
