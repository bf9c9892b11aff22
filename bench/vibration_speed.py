"""How fast is the full vibration indicator set, against a bare numpy.fft.rfft of the same block?

    python bench/vibration_speed.py [--seconds S]

For 8192- and 65536-sample blocks at 12.8 kHz (0.64 s and 5.1 s of signal) this measures, in
the same run: a bare `numpy.fft.rfft` of the block (the raw limit: every indicator needs at least
one FFT), `analyze_block` without a bearing (time domain, velocity, ISO zone, 1x/2x/3x, shaft
speed estimate) and with a bearing (plus kurtogram, two envelope spectra and the defect search),
and the averaged path the agent adds per block with `average_blocks = 8` (`EnvelopeAverager.add`
on a full rolling window: the block's kurtogram and envelope spectra, then the defect search on
the 8-block averages), alone and together with the per-block set. It prints blocks per second,
the ratio to the bare FFT, and how many channels one core keeps up with in real time. Nothing is
asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from agent.analytics.averaging import EnvelopeAverager
from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block

FS = 12800.0
RPM = 1780.0


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second: best of three rounds of about seconds/3 each (after one warm-up call)."""
    fn()
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            fn()
            count += 1
        best = max(best, count / elapsed)
    return best


def signal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise plus a ringing outer-race impact train: realistic content for the envelope stages."""
    t = np.arange(n) / FS
    x = 0.05 * rng.standard_normal(n) + 0.02 * np.sin(2 * np.pi * RPM / 60 * t)
    ring = np.exp(-500 * t[:128]) * np.sin(2 * np.pi * 3000 * t[:128])
    period = FS / (3.5848 * RPM / 60)
    for start in np.arange(0, n - 128, period).astype(int):
        x[start:start + 128] += 0.3 * ring
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case (default 3)")
    args = parser.parse_args(argv)
    bearing = lookup("6205-2RS")
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}; sample rate {FS:g} Hz; best of 3 rounds, {args.seconds:g} s per case\n")
    print(f"{'block':>7} {'duration':>8} {'case':34} {'blocks/s':>9} {'ms/block':>9} {'x rfft':>7} "
          f"{'channels/core':>13}")
    for n in (8192, 65536):
        x = signal(n, rng)
        duration = n / FS
        raw = rate(lambda x=x: np.fft.rfft(x), args.seconds)
        cases: list[tuple[str, Callable[[], object]]] = [
            ("numpy.fft.rfft (raw limit)", lambda x=x: np.fft.rfft(x)),
            ("indicators, no bearing", lambda x=x: analyze_block(x, FS, rpm=RPM, rpm_source="config")),
            ("full set with bearing 6205-2RS", lambda x=x: analyze_block(x, FS, rpm=RPM, rpm_source="config",
                                                                          bearing=bearing)),
            ("full set, speed estimated", lambda x=x: analyze_block(x, FS, rpm=None, bearing=bearing)),
        ]
        averager = EnvelopeAverager(bearing, blocks=8)
        for _ in range(8):  # a full window, as in steady operation
            averager.add(x, FS, RPM)
        cases += [
            ("averaged path (8 blocks), added", lambda x=x, a=averager: a.add(x, FS, RPM)),
            ("full set + averaged path", lambda x=x, a=averager: (
                analyze_block(x, FS, rpm=RPM, rpm_source="config", bearing=bearing), a.add(x, FS, RPM))),
        ]
        for name, fn in cases:
            per_s = raw if name.startswith("numpy") else rate(fn, args.seconds)
            print(f"{n:7d} {duration:7.2f}s {name:34} {per_s:9.0f} {1000 / per_s:9.3f} {raw / per_s:7.1f} "
                  f"{per_s * duration:13.0f}")
    print("\nx rfft: time per block relative to one bare rfft of the same block (same run).")
    print("channels/core: blocks/s x block duration, i.e. channels one core analyses in real time.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
