"""Vibration of a motor-driven pump's drive-end bearing housing, as an accelerometer sees it.

Pure numpy, no I/O: `synthesize_block` turns shaft speed, fault severities and a random generator
into one block of acceleration samples (in g). The signal is built the way the faults physically
appear, so that the agent's analytics can find them by the same reasoning a vibration analyst uses:

- shaft harmonics 1x/2x/3x (residual unbalance, misalignment) plus broadband noise;
- a structural resonance (~3 kHz, a few % damping), lightly excited by the noise;
- `bearing_outer`: a spall on the stationary outer race is struck by every ball, at BPFO. Each
  strike is a short impulse that rings the resonance; ball slip makes the intervals jitter by
  1-2 %, which is why the fault shows in the envelope spectrum rather than as a clean line;
- `bearing_inner`: a spall on the rotating inner race is struck at BPFI and passes through the
  load zone once per revolution, so the strikes are amplitude-modulated at 1x (sidebands at
  BPFI +- 1x in the envelope spectrum);
- `unbalance`: the 1x component grows.

Defect frequencies come from the bearing geometry (`BearingGeometry.defect_multipliers`), not a
catalogue table, so a different bearing is one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FAULTS",
    "SKF_6205_2RS",
    "BearingGeometry",
    "DefectMultipliers",
    "PumpVibration",
    "synthesize_block",
]

FAULTS = ("bearing_outer", "bearing_inner", "unbalance")


@dataclass(frozen=True, slots=True)
class DefectMultipliers:
    """Bearing defect frequencies as multiples of the shaft rotation frequency."""

    bpfo: float  # ball pass frequency, outer race
    bpfi: float  # ball pass frequency, inner race
    bsf: float  # ball spin frequency
    ftf: float  # fundamental train (cage) frequency


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    n_balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0

    def defect_multipliers(self) -> DefectMultipliers:
        """The kinematic defect frequencies (rolling without slip, stationary outer race)."""
        r = self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))
        n = self.n_balls
        return DefectMultipliers(
            bpfo=n / 2 * (1 - r),
            bpfi=n / 2 * (1 + r),
            bsf=self.pitch_diameter_mm / (2 * self.ball_diameter_mm) * (1 - r * r),
            ftf=(1 - r) / 2,
        )


SKF_6205_2RS = BearingGeometry(n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04, contact_angle_deg=0.0)


@dataclass(frozen=True, slots=True)
class PumpVibration:
    """The healthy machine: harmonic amplitudes (g, peak), noise and resonance."""

    amp_1x: float = 0.02  # ~0.9 mm/s RMS at 1480 rpm with 2x and 3x: ISO 10816 zone A
    amp_2x: float = 0.012
    amp_3x: float = 0.006
    noise_rms: float = 0.02
    resonance_hz: float = 3000.0
    resonance_damping: float = 0.04  # fraction of critical damping
    resonance_noise: float = 0.5  # how much of the broadband noise also rings the resonance
    slip_jitter: float = 0.015  # relative std of the interval between rolling-element strikes
    bearing: BearingGeometry = SKF_6205_2RS


def synthesize_block(
    n: int,
    fs: float,
    shaft_hz: float,
    severities: Mapping[str, float],
    rng: np.random.Generator,
    machine: PumpVibration = PumpVibration(),
    t0_s: float = 0.0,
) -> np.ndarray:
    """One block of `n` acceleration samples (g) at `fs` Hz for a shaft turning at `shaft_hz`.

    `severities` maps fault name (see FAULTS) to its severity: peak acceleration of one bearing
    strike in g, or for unbalance the extra 1x amplitude in g. `t0_s` keeps the harmonics' phase
    continuous from one block to the next."""
    unknown = set(severities) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {FAULTS}")
    if n <= 0 or fs <= 0 or shaft_hz <= 0:
        raise ValueError("n, fs and shaft_hz must be positive")
    t = t0_s + np.arange(n) / fs
    w = 2 * np.pi * shaft_hz
    amp_1x = machine.amp_1x + max(0.0, severities.get("unbalance", 0.0))
    x = (amp_1x * np.sin(w * t + 0.3) + machine.amp_2x * np.sin(2 * w * t + 1.1)
         + machine.amp_3x * np.sin(3 * w * t + 2.0))
    noise = rng.normal(0.0, machine.noise_rms, n)
    kernel = _resonance_kernel(fs, machine.resonance_hz, machine.resonance_damping)
    strikes = machine.resonance_noise * noise
    defects = machine.bearing.defect_multipliers()
    outer = severities.get("bearing_outer", 0.0)
    if outer > 0:
        strikes = strikes + outer * _impulse_train(n, fs, defects.bpfo * shaft_hz, machine.slip_jitter, rng)
    inner = severities.get("bearing_inner", 0.0)
    if inner > 0:
        train = _impulse_train(n, fs, defects.bpfi * shaft_hz, machine.slip_jitter, rng)
        load_zone = 0.6 + 0.4 * np.cos(w * t)  # the spall passes the load zone once per turn
        strikes = strikes + inner * train * load_zone
    ringing = np.convolve(strikes, kernel)[:n]
    return x + noise + ringing


def _impulse_train(n: int, fs: float, rate_hz: float, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Unit impulses at `rate_hz` with random slip: each interval varies by `jitter` (relative std)."""
    mean_interval = fs / rate_hz  # in samples
    count = int(n / mean_interval) + 2
    intervals = mean_interval * (1.0 + jitter * rng.standard_normal(count))
    positions = rng.uniform(0, mean_interval) + np.concatenate(([0.0], np.cumsum(intervals[:-1])))
    positions = np.rint(positions[positions < n - 0.5]).astype(np.int64)
    train = np.zeros(n)
    np.add.at(train, positions, 1.0)
    return train


def _resonance_kernel(fs: float, f_hz: float, damping: float) -> np.ndarray:
    """Impulse response of a lightly damped mode, unit peak, truncated once it has decayed to 0.1 %."""
    wn = 2 * np.pi * f_hz
    decay = damping * wn
    length = max(8, math.ceil(math.log(1000.0) / decay * fs))
    t = np.arange(length) / fs
    h = np.exp(-decay * t) * np.sin(wn * math.sqrt(1 - damping**2) * t)
    return h / np.max(np.abs(h))
