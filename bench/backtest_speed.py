"""How fast does `twin-collector backtest` replay a recording, against bare analysis of the same snapshots?

    python bench/backtest_speed.py [RECORDING.npz] [--snapshots N]

On the same snapshots (default: the first 600 of FEMTO Bearing1_1, 2560 samples at 25.6 kHz, else a
synthetic recording of that shape), in the same run:

- bare `analyze_block` with the bearing: the raw limit, every snapshot needs at least this;
- the agent's path: `analyze_block` plus the 8-block envelope averaging (what the backtest runs);
- the rules alone: the default rules (iso_zone, bearing, prognosis) replayed over the documents;
- the whole backtest: analysis, documents and rules, as `twin-collector backtest` runs them.

It prints snapshots per second and the ratio of each to bare `analyze_block`. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.analytics.averaging import EnvelopeAverager, with_averaged  # noqa: E402
from agent.analytics.bearings import bearing_defects  # noqa: E402
from agent.analytics.vibration import analyze_block, analyze_block_evidence  # noqa: E402
from collector.backtest import (  # noqa: E402
    AnalysisSettings,
    Recording,
    analyse,
    backtest,
    default_rules,
    load_recording,
    replay,
    rules_for,
)

FEMTO = ROOT.parent / "shared" / "data" / "femto" / "Bearing1_1.npz"
MULTIPLIERS = {"bpfo": 5.61, "bpfi": 7.39, "bsf": 3.59, "ftf": 0.432}


def synthetic(snapshots: int) -> Recording:
    rng = np.random.default_rng(1)
    accel = (0.4 * rng.standard_normal((snapshots, 2560))).astype(np.float32)
    return Recording(Path("synthetic.npz"), accel, np.arange(snapshots) * 10.0, 25600.0, 1800.0)


def per_second(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", nargs="?", type=Path, default=FEMTO if FEMTO.exists() else None)
    parser.add_argument("--snapshots", type=int, default=600)
    args = parser.parse_args(argv)
    rec = load_recording(args.recording) if args.recording else synthetic(args.snapshots)
    n = min(args.snapshots, len(rec.t_s))
    rec = Recording(rec.path, rec.accel[:n], rec.t_s[:n], rec.fs, rec.rpm)
    bearing = bearing_defects(**MULTIPLIERS)
    settings = AnalysisSettings(bearing=bearing)
    rows = np.asarray(rec.accel, dtype=np.float64)

    started = time.perf_counter()
    for x in rows:
        analyze_block(x, rec.fs, rpm=rec.rpm, rpm_source="config", bearing=bearing)
    bare = per_second(n, started)

    started = time.perf_counter()
    averager = EnvelopeAverager(bearing, blocks=8)
    for x in rows:  # as the agent does: the averager reuses the block's own analysis
        result = analyze_block_evidence(x, rec.fs, rpm=rec.rpm, rpm_source="config", bearing=bearing)
        with_averaged(result.indicators, averager.add(x, rec.fs, result.indicators.rpm, analysis=result))
    agent = per_second(n, started)

    docs = [(float(rec.t_s[i]), doc) for i, doc, _ in analyse(rec, settings)]
    rules, _ = rules_for(default_rules(), "machine-1", "machine")
    started = time.perf_counter()
    asyncio.run(replay(docs, rules, asset="machine-1"))
    rules_only = per_second(n, started)

    started = time.perf_counter()
    result = asyncio.run(backtest(rec, default_rules(), settings))
    whole = per_second(n, started)

    print(f"{rec.name}: {n} snapshots of {rec.accel.shape[1]} samples at {rec.fs:g} Hz "
          f"({len(result.work_orders)} work orders, {len(result.assessments)} remaining-life assessments)")
    print(f"{'path':<52} {'snapshots/s':>12} {'vs bare analyze_block':>22}")
    for label, rate in (("bare analyze_block (bearing analysis)", bare),
                        ("agent path: analyze_block + 8-block averaging", agent),
                        ("rules alone (iso_zone, bearing, prognosis)", rules_only),
                        ("twin-collector backtest (analysis + documents + rules)", whole)):
        print(f"{label:<52} {rate:12.0f} {rate / bare:21.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
