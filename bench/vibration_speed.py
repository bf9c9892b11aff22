"""How fast is the vibration analysis, against the FFT work it performs and a bare rfft, in the same run?

    python bench/vibration_speed.py [--seconds S]

For 8192- and 65536-sample blocks at 12.8 kHz (0.64 s and 5.1 s of signal) this measures, in the
same run:

* a bare `numpy.fft.rfft` of the block (every indicator needs at least that FFT);
* **the FFT work the analysis performs**: every numpy FFT call that one `analyze_block` makes (the
  block's rfft, the kurtogram's batched inverse FFTs, the demodulated band, the pre-whitened block,
  the envelope spectra) is recorded once, and those same calls (same lengths, shapes and precision,
  on arrays prepared beforehand; a call that writes into a given array, `out=`, writes into it in
  the replay too) are timed on their own;
* `analyze_block` without a bearing, with a bearing (kurtogram, two envelope spectra, the defect
  line search and the diagnosis), with the speed estimated, and the averaged path the agent adds
  with `average_blocks = 8` (`EnvelopeAverager.add` on a full rolling window), alone and as the
  agent runs it after the block's analysis, reusing the block's transform, band kurtosis and
  envelope spectra (`add(..., analysis=)`).

It prints CPU time per block, the ratio to the FFT work of the same call and to the bare rfft, and
how many channels one core keeps up with in real time. Nothing is asserted: timings depend on
the machine (and on what else it runs: the ratios, taken in the same run, move far less).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.analytics.averaging import EnvelopeAverager
from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block, analyze_block_evidence

FS = 12800.0
RPM = 1780.0
FFT_FUNCTIONS = ("rfft", "irfft", "fft", "ifft")


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of this process: best of three rounds of about seconds/3 each (after a warm-up call).

    CPU time, not wall time: on a shared gateway other processes take turns on the cores, and the
    CPU this analysis costs (all its threads, so a BLAS library spinning helper threads counts) is
    what limits how many channels one core keeps up with.
    """
    fn()
    best = 0.0
    for _ in range(3):
        count, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < seconds / 3:
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


def recorded_ffts(fn: Callable[[], object]) -> list[tuple[str, tuple[int, ...], np.dtype[Any], dict[str, Any]]]:
    """Every numpy.fft call `fn` makes: (function, input shape, input dtype, keyword arguments)."""
    calls: list[tuple[str, tuple[int, ...], np.dtype[Any], dict[str, Any]]] = []
    originals = {name: getattr(np.fft, name) for name in FFT_FUNCTIONS}

    def recorder(name: str) -> Callable[..., np.ndarray]:
        def call(a: Any, n: int | None = None, axis: int = -1, **kwargs: Any) -> np.ndarray:
            arr = np.asarray(a)
            calls.append((name, arr.shape, arr.dtype, {"n": n, "axis": axis, **kwargs}))
            return originals[name](a, n=n, axis=axis, **kwargs)
        return call

    try:
        for name in FFT_FUNCTIONS:
            setattr(np.fft, name, recorder(name))
        fn()
    finally:
        for name, original in originals.items():
            setattr(np.fft, name, original)
    return calls


def fft_replay(calls: list[tuple[str, tuple[int, ...], np.dtype[Any], dict[str, Any]]],
               rng: np.random.Generator) -> Callable[[], None]:
    """A function that makes exactly these FFT calls, on arrays prepared beforehand."""
    prepared = []
    for name, shape, dtype, kwargs in calls:
        data = rng.standard_normal(shape)
        if np.issubdtype(dtype, np.complexfloating):
            data = data + 1j * rng.standard_normal(shape)
        prepared.append((getattr(np.fft, name), data.astype(dtype), kwargs))

    def replay() -> None:
        for fn, data, kwargs in prepared:
            fn(data, **kwargs)

    return replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case (default 3)")
    args = parser.parse_args(argv)
    bearing = lookup("6205-2RS")
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}; sample rate {FS:g} Hz; best of 3 rounds, {args.seconds:g} s per case\n")
    print(f"{'block':>7} {'duration':>8} {'case':34} {'ms/block':>9} {'FFT work ms':>11} {'x FFT work':>10} "
          f"{'x rfft':>7} {'channels/core':>13}")
    for n in (8192, 65536):
        x = signal(n, rng)
        duration = n / FS
        raw = rate(lambda x=x: np.fft.rfft(x), args.seconds)
        averager = EnvelopeAverager(bearing, blocks=8)
        for _ in range(8):  # a full window, as in steady operation
            averager.add(x, FS, RPM)
        cases: list[tuple[str, Callable[[], object]]] = [
            ("indicators, no bearing", lambda x=x: analyze_block(x, FS, rpm=RPM, rpm_source="config")),
            ("full set with bearing 6205-2RS", lambda x=x: analyze_block(x, FS, rpm=RPM, rpm_source="config",
                                                                          bearing=bearing)),
            ("full set, speed estimated", lambda x=x: analyze_block(x, FS, rpm=None, bearing=bearing)),
            ("averaged path (8 blocks), added", lambda x=x, a=averager: a.add(x, FS, RPM)),
            ("full set + averaged path", lambda x=x, a=averager: a.add(x, FS, RPM, analysis=analyze_block_evidence(
                x, FS, rpm=RPM, rpm_source="config", bearing=bearing))),
        ]
        print(f"{n:7d} {duration:7.2f}s {'numpy.fft.rfft (raw limit)':34} {1000 / raw:9.3f} {1000 / raw:11.3f} "
              f"{1.0:10.2f} {1.0:7.1f} {raw * duration:13.0f}")
        for name, fn in cases:
            fft_rate = rate(fft_replay(recorded_ffts(fn), rng), args.seconds)
            per_s = rate(fn, args.seconds)
            print(f"{n:7d} {duration:7.2f}s {name:34} {1000 / per_s:9.3f} {1000 / fft_rate:11.3f} "
                  f"{fft_rate / per_s:10.2f} {raw / per_s:7.1f} {per_s * duration:13.0f}")
    print("\nFFT work: the numpy FFT calls that case makes, timed alone (same run); x FFT work: time per block "
          "over that (goal <= 2).\nx rfft: over one bare rfft of the block. channels/core: blocks/s x block "
          "duration, i.e. channels one core analyses in real time.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
