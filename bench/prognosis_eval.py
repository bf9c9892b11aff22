"""Leave-one-run-out evaluation of the prognosis rule on real run-to-failure bearings (FEMTO PRONOSTIA).

    python bench/prognosis_eval.py [--data ../shared/data/femto] [--quick]

The six runs of `../shared/data/femto` (PHM 2012 learning set, horizontal accelerometer) are each held
out in turn. Every option of the prognosis rule is chosen on the other five, then the held-out run is
replayed with the real `twin-collector backtest` (a subprocess, as a user runs it) on the whole
recording and on copies cut at 50, 70 and 90 % of its life. Printed per run:

- the first work order that is not about data quality, and the first of the prognosis rule, as a
  fraction of life, and whether any work order came in the first 10 % of life;
- the remaining-life estimate at the three cut-offs, its PHM 2012 accuracy A (Er = 100 (actual -
  estimate) / actual; A = exp(-ln(0.5) Er / 5) when Er <= 0, exp(ln(0.5) Er / 20) when Er > 0) and the
  score (mean A), and whether the interval held the true remaining life;
- beside it, in the same run, the data README's floor: RMS above the mean + 3 standard deviations of
  the run's first 10 % for three snapshots in a row.

Then two references that use no vibration at all, chosen on the same five runs, to show what the score
at fixed fractions of life rewards: the Weibull life model alone, and a remaining life proportional to
the running time (whose factor only encodes the cut-off fractions). Finally the options chosen on all
six runs: the defaults shipped in collector/workorders/prognosis.py and collector/backtest_rules.toml.

How options are chosen on the training runs (nothing here sees the held-out run):
1. the life model: a Weibull maximum-likelihood fit of the five lives (scipy, a dev dependency);
2. `life_quantile`: the quantile of that model's residual life with the best mean PHM accuracy at
   cut-offs every 5 % from 50 to 95 % of each training life;
3. the HI and forecast options (indicator weights, baseline, smoothing, alert and failure levels, fit
   window, horizon) from a grid restricted beforehand to settings robust to bursts of a few impulsive
   snapshots (smoothing >= 9 blocks, >= 6 sustained blocks, alert >= 1.3x): the setting must raise a
   prognosis work order on every training run after 10 % of its life and before its end, and among
   those the one with the largest worst-case margin (the smaller of "first work order - 10 %" and
   "end - first work order" over the five runs) wins; ties go to the better PHM accuracy at the dense
   cut-offs. The grid is evaluated with the rule's own functions (trend_fit, trailing_median,
   fit_baseline, health_indicator, residual_life) on the indicators the backtest computes.

The analytics run once per recording (about 7,500 snapshots). `--quick` uses a smaller grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.analytics.bearings import bearing_defects  # noqa: E402
from collector.backtest import DEFAULT_RULES_FILE, AnalysisSettings, analyse, load_recording, snapshot_ns  # noqa: E402
from collector.prognosis.health_indicator import fit_baseline, health_indicator, trailing_median  # noqa: E402
from collector.prognosis.remaining_life import residual_life, trend_fit  # noqa: E402
from runtime.tomlconfig import load_toml  # noqa: E402

RUNS = ("Bearing1_1", "Bearing1_2", "Bearing2_1", "Bearing2_2", "Bearing3_1", "Bearing3_2")
MULTIPLIERS = {"bpfo": 5.61, "bpfi": 7.39, "bsf": 3.59, "ftf": 0.432}  # the data README, from the geometry
CUTOFFS = (0.5, 0.7, 0.9)
DENSE = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95, for choosing on training runs
CONFIDENCE = 0.9  # the forecast's slope band and the life model's interval (not tuned)
WEIGHTS = {"rms": {"accel_rms": 1.0}, "rms+peak": {"accel_rms": 1.0, "accel_peak": 1.0},
           "rms+velocity": {"accel_rms": 1.0, "velocity_rms_mm_s": 1.0}}
GRID = {"weights": list(WEIGHTS), "baseline_blocks": [30, 60, 120], "smooth_blocks": [9, 15],
        "alert_ratio": [1.3, 1.5, 2.0], "alert_sigma": [3.0, 4.0, 6.0], "sustain_blocks": [6, 12],
        "failure_ratio": [2.5, 3.0, 4.0, 6.0, 10.0], "fit_window_s": [600.0, 1200.0, 1800.0, 3600.0],
        "horizon_s": [1800.0, 3600.0, 7200.0, 14400.0]}
QUICK = {**GRID, "weights": ["rms", "rms+peak"], "baseline_blocks": [30, 60], "alert_sigma": [3.0, 4.0],
         "fit_window_s": [600.0, 1800.0]}
QUANTILES = tuple(round(0.05 * i, 2) for i in range(1, 11))
RUNNING_FACTORS = tuple(round(0.01 * i, 2) for i in range(2, 101))


def accuracy(actual: np.ndarray | float, estimate: np.ndarray | float) -> np.ndarray:
    """PHM 2012 accuracy A of remaining-life estimates (late is punished four times as hard)."""
    er = np.clip(100.0 * (np.asarray(actual) - np.asarray(estimate)) / np.asarray(actual), -1e4, 1e4)
    return np.where(er <= 0, np.exp(-math.log(0.5) * er / 5), np.exp(math.log(0.5) * er / 20))


@dataclass
class Run:
    name: str
    path: Path
    t_s: np.ndarray
    ts_ns: np.ndarray
    values: dict[str, np.ndarray]  # indicator -> per snapshot, as the backtest computes them

    @property
    def life_s(self) -> float:
        return float(self.t_s[-1] - self.t_s[0])

    def cut_index(self, fraction: float) -> int:
        """The last snapshot of a copy cut at `fraction` of the life."""
        return int(np.searchsorted(self.t_s, self.t_s[0] + fraction * self.life_s, side="right") - 1)


def load_runs(data: Path) -> list[Run]:
    settings = AnalysisSettings(bearing=bearing_defects(**MULTIPLIERS))
    runs = []
    for name in RUNS:
        started = time.perf_counter()
        rec = load_recording(data / f"{name}.npz")
        names = {n for w in WEIGHTS.values() for n in w}
        values: dict[str, list[float]] = {n: [] for n in names}
        for _, doc, why in analyse(rec, settings):
            if doc is None:
                raise RuntimeError(f"{name}: a snapshot could not be analysed: {why}")
            for n in names:
                values[n].append(float(doc[n]))
        ts_ns = np.array([snapshot_ns(float(t)) for t in rec.t_s], dtype=np.int64)
        runs.append(Run(name, rec.path, rec.t_s, ts_ns, {n: np.array(v) for n, v in values.items()}))
        print(f"  analysed {name}: {len(rec.t_s)} snapshots in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return runs


def sustained(mask: np.ndarray, blocks: int) -> np.ndarray:
    return np.convolve(mask.astype(float), np.ones(blocks), "full")[:len(mask)] >= blocks - 0.5


@dataclass
class Tables:
    """Per run and grid setting: when the prognosis rule first raises, and its trend crossing at each cut."""

    settings: list[dict[str, Any]]
    first: np.ndarray  # (setting, run) first work order as a fraction of life (nan: none)
    crossing: np.ndarray  # (setting, run, dense cut) trend crossing in s (inf: no trend, 0: reached)


def build_tables(runs: list[Run], grid: dict[str, list[Any]]) -> Tables:
    """The rule's decisions for every grid setting, computed as collector/prognosis/remaining_life.assess
    computes them at each block (the rule assesses every block with evaluate_every_s = 0)."""
    settings: list[dict[str, Any]] = []
    firsts: list[list[float]] = []
    crossings: list[list[list[float]]] = []
    cache: dict[tuple[str, int, str], tuple[np.ndarray, float]] = {}
    fits: dict[tuple[str, int, str, float], np.ndarray] = {}
    started = time.perf_counter()
    for wk, nb in itertools.product(grid["weights"], grid["baseline_blocks"]):
        for run in runs:
            w = WEIGHTS[wk]
            base = fit_baseline({n: run.values[n][:nb] for n in w}, w)
            hi = health_indicator({n: run.values[n] for n in w}, base)
            cache[(wk, nb, run.name)] = (hi, base.spread)
            # Fits only where the most sensitive setting of the grid is degraded: elsewhere no setting fits.
            alert = max(math.log(min(grid["alert_ratio"])), min(grid["alert_sigma"]) * base.spread)
            need = np.zeros(len(hi), dtype=bool)
            for m in grid["smooth_blocks"]:
                need |= sustained(trailing_median(hi, m) >= alert, min(grid["sustain_blocks"]))
            for window in grid["fit_window_s"]:
                table = np.full((len(hi), 5), np.nan)
                for i in np.nonzero(need)[0]:
                    if i < nb - 1:
                        continue
                    lo = int(np.searchsorted(run.ts_ns, run.ts_ns[i] - int(window * 1e9), side="left"))
                    t_rel = (run.ts_ns[lo:i + 1] - run.ts_ns[i]) / 1e9
                    table[i] = trend_fit(t_rel, hi[lo:i + 1], window, CONFIDENCE)
                fits[(wk, nb, run.name, window)] = table
    print(f"  trend fits: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    keys = ("smooth_blocks", "alert_ratio", "alert_sigma", "sustain_blocks", "failure_ratio", "fit_window_s",
            "horizon_s")
    for wk, nb in itertools.product(grid["weights"], grid["baseline_blocks"]):
        smooth_cache: dict[tuple[str, int], np.ndarray] = {}
        for combo in itertools.product(*(grid[k] for k in keys)):
            s = dict(zip(keys, combo, strict=True))
            if s["failure_ratio"] <= s["alert_ratio"]:
                continue
            first_row, cross_row = [], []
            for run in runs:
                hi, spread = cache[(wk, nb, run.name)]
                key = (run.name, s["smooth_blocks"])
                if key not in smooth_cache:
                    smooth_cache[key] = trailing_median(hi, s["smooth_blocks"])
                smooth = smooth_cache[key]
                alert = max(math.log(s["alert_ratio"]), s["alert_sigma"] * spread)
                failure = math.log(s["failure_ratio"])
                valid = np.arange(len(hi)) >= nb - 1
                degraded = sustained(smooth >= alert, s["sustain_blocks"])
                reached = valid & sustained(smooth >= failure, s["sustain_blocks"])
                fit = fits[(wk, nb, run.name, s["fit_window_s"])]
                slope, low, fitted = fit[:, 0], fit[:, 1], fit[:, 3]
                trend = valid & degraded & ~reached & (low > 0) & (smooth < failure)
                with np.errstate(divide="ignore", invalid="ignore"):
                    crossing = np.where(trend, np.maximum(0.0, (failure - np.fmax(smooth, fitted)) / slope), np.inf)
                crossing = np.where(reached, 0.0, crossing)
                raised = np.nonzero(crossing <= s["horizon_s"])[0]
                first_row.append((run.t_s[raised[0]] - run.t_s[0]) / run.life_s if len(raised) else math.nan)
                cross_row.append([float(crossing[run.cut_index(f)]) for f in DENSE])
            settings.append({"weights": wk, "baseline_blocks": nb, **s})
            firsts.append(first_row)
            crossings.append(cross_row)
    return Tables(settings, np.array(firsts), np.array(crossings))


def fit_life(lives: list[float]) -> tuple[float, float]:
    from scipy.stats import weibull_min

    shape, _, scale = weibull_min.fit(lives, floc=0)
    return float(scale), float(shape)


def running_and_actual(runs: list[Run], cuts: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    running = np.array([[r.t_s[r.cut_index(f)] - r.t_s[0] for f in cuts] for r in runs])
    actual = np.array([[r.t_s[-1] - r.t_s[r.cut_index(f)] for f in cuts] for r in runs])
    return running, actual


def choose(runs: list[Run], train: list[int], tables: Tables) -> dict[str, Any]:
    """Every option from the training runs only (see the module docstring)."""
    scale, shape = fit_life([runs[i].life_s for i in train])
    running, actual = running_and_actual([runs[i] for i in train], DENSE)
    scores = [float(accuracy(actual, residual_life_array(running, scale, shape, q)).mean()) for q in QUANTILES]
    quantile = QUANTILES[int(np.argmax(scores))]
    first = tables.first[:, train]
    margin = np.where(np.isnan(first), -1.0, np.minimum(first - 0.1, 1.0 - first)).min(axis=1)
    prior = residual_life_array(running, scale, shape, quantile)
    estimate = np.minimum(tables.crossing[:, train, :], prior[None])
    dense = accuracy(actual[None], estimate).mean(axis=(1, 2))
    best = int(np.lexsort((-dense, -np.round(margin, 3)))[0])
    if margin[best] <= 0:
        raise RuntimeError("no grid setting warns on every training run after 10 % of life")
    return {**tables.settings[best], "life_scale_s": round(scale, 0), "life_shape": round(shape, 3),
            "life_quantile": quantile, "confidence": CONFIDENCE, "_margin": float(margin[best]), "_index": best}


def residual_life_array(age: np.ndarray, scale: float, shape: float, quantile: float) -> np.ndarray:
    return np.vectorize(lambda a: residual_life(float(a), scale, shape, quantile))(age)


def rules_toml(options: dict[str, Any]) -> str:
    """The default vibration rules with these prognosis options (what the held-out backtest runs)."""
    text = DEFAULT_RULES_FILE.read_text()
    head = text[:text.index('[[rules]]\nname = "remaining_life"')]
    weights = ", ".join(f"{k} = {v:g}" for k, v in WEIGHTS[options["weights"]].items())
    lines = ['[[rules]]', 'name = "remaining_life"', 'kind = "prognosis"', 'asset_type = "machine"',
             f"indicators = {{ {weights} }}"]
    for key in ("baseline_blocks", "smooth_blocks", "alert_ratio", "alert_sigma", "sustain_blocks", "failure_ratio",
                "fit_window_s", "confidence", "horizon_s", "life_scale_s", "life_shape", "life_quantile"):
        value = options[key]
        lines.append(f"{key} = {value:.6g}" if isinstance(value, float) else f"{key} = {value}")
    return head + "\n".join(lines) + "\n"


def backtest_cli(path: Path, rules: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "collector", "backtest", str(path), "--rules", str(rules), "--json", "--quiet",
            *[f"--{k}={v}" for k, v in MULTIPLIERS.items()]]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"backtest of {path.name} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def cut_copy(run: Run, fraction: float, folder: Path) -> Path:
    """The recording up to `fraction` of its life, in the backtest's format."""
    with np.load(run.path, allow_pickle=False) as data:
        n = run.cut_index(fraction) + 1
        out = folder / f"{run.name}-{round(100 * fraction)}.npz"
        np.savez(out, accel=data["accel"][:n], t_s=data["t_s"][:n], fs=data["fs"], rpm=data["rpm"])
    return out


def floor_alarm(run: Run) -> float:
    """The data README's floor: first time RMS > mean + 3 sd of the first 10 % for three snapshots running."""
    rms = run.values["accel_rms"]
    first10 = rms[run.t_s - run.t_s[0] <= 0.1 * run.life_s]
    over = rms > first10.mean() + 3 * first10.std()
    hits = np.nonzero(sustained(over, 3))[0]
    return float((run.t_s[hits[0]] - run.t_s[0]) / run.life_s) if len(hits) else math.nan


def fraction(run: Run, t_s: float | None) -> float:
    return math.nan if t_s is None else (t_s - float(run.t_s[0])) / run.life_s


def evaluate(run: Run, options: dict[str, Any], folder: Path) -> dict[str, Any]:
    rules = folder / f"rules-{run.name}.toml"
    rules.write_text(rules_toml(options))
    full = backtest_cli(run.path, rules)
    orders = [w for w in full["work_orders"] if w["kind"] != "data_quality"]
    prognosis = [w for w in orders if w["rule"] == "remaining_life"]
    out: dict[str, Any] = {
        "first": fraction(run, orders[0]["t_s"]) if orders else math.nan,
        "first_rule": orders[0]["rule"] if orders else "",
        "first_prognosis": fraction(run, prognosis[0]["t_s"]) if prognosis else math.nan,
        "early": sum(1 for w in full["work_orders"] if fraction(run, w["t_s"]) < 0.1),
        "floor": floor_alarm(run), "estimates": [], "actual": [], "inside": []}
    for f in CUTOFFS:
        doc = backtest_cli(cut_copy(run, f, folder), rules)
        actual = run.life_s - doc["duration_s"]
        rul = doc["rul_s"]
        out["estimates"].append(rul["estimate"] if rul else math.nan)
        out["actual"].append(actual)
        high = math.inf if not rul or rul["high"] is None else rul["high"]
        out["inside"].append(bool(rul and rul["low"] <= actual <= high))
    est = np.array(out["estimates"], dtype=float)
    out["A"] = [float(a) if math.isfinite(e) else 0.0 for a, e in zip(accuracy(np.array(out["actual"]), est), est,
                                                                        strict=True)]
    out["score"] = float(np.mean(out["A"]))
    return out


def references(runs: list[Run], held: int) -> tuple[float, float, float]:
    """Vibration-blind estimates at the held-out cut-offs, each chosen on the five other runs: the Weibull
    life model alone, and a remaining life proportional to the running time."""
    train = [i for i in range(len(runs)) if i != held]
    scale, shape = fit_life([runs[i].life_s for i in train])
    run_tr, act_tr = running_and_actual([runs[i] for i in train], DENSE)
    q = QUANTILES[int(np.argmax([accuracy(act_tr, residual_life_array(run_tr, scale, shape, q)).mean()
                                 for q in QUANTILES]))]
    run_h, act_h = running_and_actual([runs[held]], CUTOFFS)
    life_model = float(accuracy(act_h, residual_life_array(run_h, scale, shape, q)).mean())
    run_p, act_p = running_and_actual([runs[i] for i in train], CUTOFFS)
    k = RUNNING_FACTORS[int(np.argmax([accuracy(act_p, k * run_p).mean() for k in RUNNING_FACTORS]))]
    running_time = float(accuracy(act_h, k * run_h).mean())
    return life_model, running_time, k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "femto")
    parser.add_argument("--quick", action="store_true", help="a smaller grid (for a quick look; not the figures)")
    args = parser.parse_args(argv)
    missing = [n for n in RUNS if not (args.data / f"{n}.npz").exists()]
    if missing:
        print(f"FEMTO recordings not found in {args.data}: {', '.join(missing)}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    print("analysing the six runs (agent analytics, as the backtest runs them)...", file=sys.stderr)
    runs = load_runs(args.data)
    tables = build_tables(runs, QUICK if args.quick else GRID)
    print(f"  {len(tables.settings)} grid settings", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="prognosis-eval-") as tmp:
        for held, run in enumerate(runs):
            options = choose(runs, [i for i in range(len(runs)) if i != held], tables)
            result = evaluate(run, options, Path(tmp))
            life_model, running_time, k = references(runs, held)
            rows.append((run, options, result, life_model, running_time, k))
            print(f"  {run.name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print("Leave-one-run-out on FEMTO PRONOSTIA (options chosen on the other five runs; the held-out run replayed "
          "with `twin-collector backtest`)\n")
    print(f"{'run':<11} {'life':>6} {'first WO':>9} {'(rule)':<15} {'prog. WO':>8} {'<10%':>4} {'floor':>6} | "
          f"{'RUL est/actual at 50 %, 70 %, 90 % (min)':<44} {'A':<17} {'score':>5} {'in':>3} | "
          f"{'life m.':>7} {'run-t':>6}")
    for run, _, r, life_model, running_time, _ in rows:
        ests = ", ".join(f"{e / 60:.0f}/{a / 60:.0f}" for e, a in zip(r["estimates"], r["actual"], strict=True))
        print(f"{run.name:<11} {run.life_s / 3600:5.2f}h {r['first']:9.3f} {r['first_rule']:<15} "
              f"{r['first_prognosis']:8.3f} {r['early']:>4} {r['floor']:6.3f} | {ests:<44} "
              f"{' '.join(f'{a:.2f}' for a in r['A']):<17} {r['score']:5.3f} {sum(r['inside']):>2}/3 | "
              f"{life_model:7.3f} {running_time:6.3f}")
    results = [r for _, _, r, _, _, _ in rows]
    warned = sum(1 for r in results if math.isfinite(r["first"]) and r["first"] < 1.0)
    early = sum(1 for r in results if r["early"])
    floor_warned = sum(1 for r in results if math.isfinite(r["floor"]))
    not_later = sum(1 for r in results if math.isfinite(r["first"]) and r["first"] <= r["floor"] + 1e-9)
    agree = sum(1 for run, options, r, *_ in rows
                if np.isclose(tables.first[options["_index"], runs.index(run)], r["first_prognosis"], atol=1e-9,
                              equal_nan=True))
    print(f"\nthe grid's prediction of the first prognosis work order matches the backtest on {agree}/{len(rows)} runs")
    print(f"mean score {np.mean([r['score'] for r in results]):.3f} (PHM 2012 winner ~0.31); work order before "
          f"failure on {warned}/{len(results)} runs (floor {floor_warned}/{len(results)}), as early as the floor or "
          f"earlier on {not_later}/{len(results)}; runs with a work order in the first 10 % of life: {early}; "
          f"interval held the true remaining life at {sum(sum(r['inside']) for r in results)}/{3 * len(results)} "
          f"cut-offs")
    print(f"references without vibration, chosen the same way: life model alone "
          f"{np.mean([x[3] for x in rows]):.3f}; remaining life = k x running time "
          f"{np.mean([x[4] for x in rows]):.3f} (k = {', '.join(f'{x[5]:g}' for x in rows)}: at cut-offs fixed as "
          "fractions of life, k only encodes the fractions)")
    print("\noptions chosen per held-out run:")
    for run, options, *_ in rows:
        print(f"  {run.name}: " + ", ".join(f"{k}={v}" for k, v in options.items() if not k.startswith("_")))
    final = choose(runs, list(range(len(runs))), tables)
    print("\noptions chosen on all six runs (the shipped defaults):")
    print("  " + ", ".join(f"{k}={v}" for k, v in final.items() if not k.startswith("_")))
    shipped = next(r for r in load_toml(DEFAULT_RULES_FILE)["rules"] if r.get("kind") == "prognosis")
    differ = {k: (shipped.get(k), v) for k, v in final.items()
              if not k.startswith("_") and k != "weights" and shipped.get(k) != v}
    if shipped.get("indicators") != WEIGHTS[final["weights"]]:
        differ["indicators"] = (shipped.get("indicators"), WEIGHTS[final["weights"]])
    print("  shipped defaults match" if not differ else f"  shipped defaults differ (shipped, chosen): {differ}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
