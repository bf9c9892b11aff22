"""`twin-collector backtest`: options, the readable timeline, and the run over several recordings.

The engine is collector/backtest.py; the plot (with the `plot` extra) collector/backtest_plot.py.
Exit codes as `twin-agent diagnose`: 0 all recordings replayed, 1 some failed (reported on stderr,
the others still run), 2 inconsistent options or rules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

from agent.analytics.bearings import CATALOGUE, bearing_defects
from agent.analytics.iso10816 import FOUNDATIONS, MACHINE_GROUPS
from collector.backtest import (
    DEFAULT_ASSET_TYPE,
    DEFAULT_RULES_FILE,
    AnalysisSettings,
    BacktestResult,
    backtest,
    load_recording,
)
from collector.whatif import load_rules_file
from collector.workorders.prognosis import format_duration
from runtime.errors import ConfigError, DecodeError

__all__ = ["PROG", "add_arguments", "format_timeline", "run"]

PROG = "twin-collector backtest"
PROGRESS_STEP = 0.1  # report progress every 10 % of a recording


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="RECORDING.npz",
                        help="recordings: accel (N x n, g), t_s (N, s), fs (Hz), rpm (r/min)")
    parser.add_argument("--bearing", metavar="MODEL",
                        help=f"bearing model from the catalogue ({', '.join(sorted(CATALOGUE))})")
    for name, what in (("bpfo", "outer race"), ("bpfi", "inner race"), ("bsf", "ball spin"), ("ftf", "cage")):
        parser.add_argument(f"--{name}", type=float, default=0.0, metavar="X",
                            help=f"{what} defect frequency in multiples of shaft speed (give all four)")
    parser.add_argument("--rules", type=Path, metavar="FILE",
                        help="TOML with [[rules]] (a rules file or a collector config); default: the vibration "
                             f"rules of {DEFAULT_RULES_FILE.name} (iso_zone, bearing, prognosis)")
    parser.add_argument("--asset-type", default=DEFAULT_ASSET_TYPE,
                        help=f"asset type the rules are matched against (default {DEFAULT_ASSET_TYPE!r})")
    parser.add_argument("--asset", default="", help="asset id (default: the file name without extension)")
    parser.add_argument("--machine-group", type=int, default=2, choices=MACHINE_GROUPS,
                        help="ISO 10816-3 machine group (default 2)")
    parser.add_argument("--foundation", default="rigid", choices=FOUNDATIONS,
                        help="ISO 10816-3 foundation (default rigid)")
    parser.add_argument("--average-blocks", type=int, default=8, metavar="N",
                        help="envelope spectra averaged per sensor, as the agent's average_blocks (default 8)")
    parser.add_argument("--units", default="g", choices=("g", "m/s^2"), help="acceleration units (default g)")
    parser.add_argument("--json", action="store_true", help="one JSON object per recording, one per line")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="PNG of the health indicator, its forecast and interval, and the work orders "
                             "(needs the 'plot' extra); several recordings: OUT-<name>.png")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _clock(t_s: float) -> str:
    t = round(t_s)
    return f"{t // 3600}:{t % 3600 // 60:02d}:{t % 60:02d}"


def format_timeline(result: BacktestResult) -> str:
    """What happened when: the work orders and the remaining life at the end."""
    total = result.duration_s
    lines = [f"{result.file}: {result.snapshots} snapshots over {format_duration(total)} "
             f"(rules: {', '.join(result.rules)})"]
    if result.skipped:
        i, why = result.skipped[0]
        lines.append(f"  {len(result.skipped)} snapshots could not be analysed (first: #{i}: {why})")
    if not result.work_orders:
        lines.append("  no work order")
    for w in result.work_orders:
        share = f"{100 * (w.t_s - result.start_t_s) / total:5.1f} %" if total > 0 else ""
        lines.append(f"  {_clock(w.t_s):>9} {share}  {w.kind.upper():<12} {w.severity:<8} {w.rule:<18} {w.title}")
        if w.escalated_t_s is not None:
            lines.append(f"  {'':>9}          escalated at {_clock(w.escalated_t_s)}")
        if w.cleared_t_s is not None:
            lines.append(f"  {'':>9}          condition cleared at {_clock(w.cleared_t_s)}")
    last = result.last_assessment
    rul = result.rul_s
    if last is not None and rul is not None:
        rl = last.remaining_life
        high = "?" if rul["high"] is None else format_duration(rul["high"])
        why = {"healthy": "no growing degradation: from the life statistics (Weibull residual life)",
               "trend": f"forecast: the HI grows {rl.slope_per_h:+.3f}/h",
               "reached": "the failure level is reached"}[rl.basis]
        lines.append(f"  remaining life at the last snapshot: ~{format_duration(rul['estimate'])} "
                     f"({format_duration(rul['low'])}-{high}); {why}; HI {math.exp(rl.hi):.2f}x baseline "
                     f"(alert {math.exp(rl.alert_level):.2f}x, failure {math.exp(rl.failure_level):.1f}x)")
    else:
        lines.append("  remaining life: not assessed (no prognosis rule, or its baseline is not complete)")
    return "\n".join(lines)


def _plot_path(template: str, path: Path, several: bool) -> Path:
    out = Path(template)
    return out.with_name(f"{out.stem}-{path.stem}{out.suffix or '.png'}") if several else out


def _progress(name: str, quiet: bool):  # type: ignore[no-untyped-def]
    state = {"next": PROGRESS_STEP, "started": time.monotonic()}

    def report(done: int, total: int) -> None:
        if quiet or total == 0:
            return
        if done / total >= state["next"] or done == total:
            rate = done / max(time.monotonic() - state["started"], 1e-9)
            print(f"{name}: {done}/{total} snapshots ({100 * done / total:.0f} %, {rate:.0f}/s)", file=sys.stderr,
                  flush=True)
            while state["next"] <= done / total:
                state["next"] += PROGRESS_STEP
    return report


def run(args: argparse.Namespace) -> int:
    """Backtest every recording; 0 if all were replayed, 1 if any failed, 2 for bad options or rules."""
    try:
        bearing = bearing_defects(args.bearing or "", bpfo=args.bpfo, bpfi=args.bpfi, bsf=args.bsf, ftf=args.ftf)
        if args.average_blocks < 1:
            raise ValueError(f"--average-blocks must be 1 or more, got {args.average_blocks}")
        rules = load_rules_file(args.rules or DEFAULT_RULES_FILE)
    except (ValueError, ConfigError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    settings = AnalysisSettings(bearing, args.machine_group, args.foundation, args.average_blocks, args.units)
    failed = 0
    several = len(args.files) > 1
    for name in args.files:
        path = Path(name)
        try:
            recording = load_recording(path)
            result = asyncio.run(backtest(recording, rules, settings, asset=args.asset, asset_type=args.asset_type,
                                          progress=_progress(path.name, args.quiet)))
            if args.plot:
                from collector.backtest_plot import plot_backtest

                plot_backtest(_plot_path(args.plot, path, several), result)
        except (OSError, DecodeError, ConfigError, ValueError, RuntimeError) as exc:
            failed += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{PROG}: {path}: {reason}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.contract(), allow_nan=False), flush=True)
        else:
            print(format_timeline(result), flush=True)
    return 1 if failed else 0
