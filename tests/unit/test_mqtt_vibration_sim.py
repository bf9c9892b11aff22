"""Simulated pump vibration: bearing kinematics and the spectral signature of each fault."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.mqtt_sensors import (
    DEFAULT_GROWTH_PER_S,
    DEFAULT_MAX_SEVERITY,
    FaultGrowth,
    VibrationSensorSimulator,
)
from simulator.vibration import SKF_6205_2RS, BearingGeometry, PumpVibration, synthesize_block

FS = 12800.0
N = 8192 * 4  # 2.56 s: 0.39 Hz resolution, enough to tell BPFI from its 1x sidebands
SHAFT_HZ = 1480.0 / 60.0


def amplitude_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    return np.fft.rfftfreq(len(x), 1 / FS), spec


def envelope_spectrum(x: np.ndarray, band: tuple[float, float] = (2000.0, 4500.0)) -> tuple[np.ndarray, np.ndarray]:
    """Band-pass around the resonance, Hilbert envelope, spectrum: what a bearing analyst does."""
    spectrum = np.fft.fft(x)
    f = np.fft.fftfreq(len(x), 1 / FS)
    analytic = np.where((f >= band[0]) & (f <= band[1]), 2 * spectrum, 0)
    envelope = np.abs(np.fft.ifft(analytic))
    return amplitude_spectrum(envelope - envelope.mean())


def peak_near(freqs: np.ndarray, spec: np.ndarray, f0: float, tol: float = 0.02) -> float:
    sel = (freqs > f0 * (1 - tol)) & (freqs < f0 * (1 + tol))
    return float(spec[sel].max())


def median_in(freqs: np.ndarray, spec: np.ndarray, lo: float, hi: float) -> float:
    return float(np.median(spec[(freqs > lo) & (freqs < hi)]))


def block(seed: int = 1, **severities: float) -> np.ndarray:
    return synthesize_block(N, FS, SHAFT_HZ, severities, np.random.default_rng(seed))


def test_defect_multipliers_from_geometry() -> None:
    d = SKF_6205_2RS.defect_multipliers()
    assert d.bpfo == pytest.approx(3.585, abs=1e-3)
    assert d.bpfi == pytest.approx(5.415, abs=1e-3)
    assert d.bsf == pytest.approx(2.357, abs=1e-3)
    assert d.ftf == pytest.approx(0.398, abs=1e-3)
    assert d.bpfo + d.bpfi == pytest.approx(SKF_6205_2RS.n_balls)  # holds for any geometry


def test_contact_angle_shifts_defect_frequencies() -> None:
    angular = BearingGeometry(9, 7.94, 39.04, contact_angle_deg=40.0).defect_multipliers()
    assert angular.bpfo > SKF_6205_2RS.defect_multipliers().bpfo


def test_healthy_block_has_shaft_harmonics_and_a_resonance() -> None:
    x = block()
    assert x.shape == (N,) and x.dtype == np.float64
    freqs, spec = amplitude_spectrum(x)
    floor = median_in(freqs, spec, 100, 1000)
    m = PumpVibration()
    for k, amp in ((1, m.amp_1x), (2, m.amp_2x), (3, m.amp_3x)):
        assert peak_near(freqs, spec, k * SHAFT_HZ) == pytest.approx(amp, rel=0.25)
    assert median_in(freqs, spec, 2800, 3200) > 1.8 * floor  # the structural mode rings on noise
    assert 0.02 < float(np.sqrt(np.mean(x**2))) < 0.1


def test_blocks_are_reproducible_from_the_seed() -> None:
    np.testing.assert_array_equal(block(seed=5), block(seed=5))
    assert not np.array_equal(block(seed=5), block(seed=6))


def test_unbalance_grows_the_1x_component() -> None:
    freqs, healthy = amplitude_spectrum(block())
    _, faulty = amplitude_spectrum(block(unbalance=0.2))
    assert peak_near(freqs, faulty, SHAFT_HZ) == pytest.approx(PumpVibration().amp_1x + 0.2, rel=0.1)
    assert peak_near(freqs, faulty, 2 * SHAFT_HZ) == pytest.approx(peak_near(freqs, healthy, 2 * SHAFT_HZ), rel=0.3)


def test_outer_race_fault_shows_at_bpfo_in_the_envelope() -> None:
    bpfo = SKF_6205_2RS.defect_multipliers().bpfo * SHAFT_HZ
    freqs, env = envelope_spectrum(block(bearing_outer=0.5))
    floor = median_in(freqs, env, 20, 500)
    assert peak_near(freqs, env, bpfo) > 20 * floor
    assert peak_near(freqs, env, 2 * bpfo) > 10 * floor  # harmonics of the strike train
    _, healthy = envelope_spectrum(block())
    assert peak_near(freqs, healthy, bpfo) < 6 * median_in(freqs, healthy, 20, 500)
    x = block(bearing_outer=0.5)
    kurtosis = np.mean((x - x.mean()) ** 4) / np.var(x) ** 2
    assert kurtosis > 3.5  # impulsive


def test_outer_race_strikes_jitter_like_slipping_balls() -> None:
    """Slip smears the strike train's higher harmonics: the 8th is much weaker than without slip."""
    bpfo = SKF_6205_2RS.defect_multipliers().bpfo * SHAFT_HZ
    freqs, slipping = envelope_spectrum(block(bearing_outer=0.5))
    rigid = synthesize_block(N, FS, SHAFT_HZ, {"bearing_outer": 0.5}, np.random.default_rng(1),
                             PumpVibration(slip_jitter=0.0))
    _, clean = envelope_spectrum(rigid)
    assert peak_near(freqs, slipping, bpfo, 0.01) == pytest.approx(peak_near(freqs, clean, bpfo, 0.01), rel=0.25)
    assert peak_near(freqs, slipping, 8 * bpfo, 0.01) < 0.6 * peak_near(freqs, clean, 8 * bpfo, 0.01)


def test_inner_race_fault_shows_at_bpfi_with_shaft_sidebands() -> None:
    bpfi = SKF_6205_2RS.defect_multipliers().bpfi * SHAFT_HZ
    freqs, env = envelope_spectrum(block(bearing_inner=0.5))
    floor = median_in(freqs, env, 20, 500)
    assert peak_near(freqs, env, bpfi, tol=0.01) > 20 * floor
    assert peak_near(freqs, env, bpfi - SHAFT_HZ, tol=0.01) > 8 * floor
    assert peak_near(freqs, env, bpfi + SHAFT_HZ, tol=0.01) > 8 * floor
    assert peak_near(freqs, env, SHAFT_HZ) > 10 * floor  # the load-zone modulation itself


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        synthesize_block(16, FS, SHAFT_HZ, {"cavitation": 1.0}, np.random.default_rng())
    with pytest.raises(ValueError):
        synthesize_block(0, FS, SHAFT_HZ, {}, np.random.default_rng())


def test_fault_growth_is_linear_and_capped() -> None:
    g = FaultGrowth(started_s=10.0, severity=0.1, severity_per_s=0.05, max_severity=1.0)
    assert g.at(5.0) == 0.1
    assert g.at(12.0) == pytest.approx(0.2)
    assert g.at(1000.0) == 1.0


def test_simulator_faults_by_call_command_and_schedule() -> None:
    """Fault bookkeeping of the MQTT simulator, without a broker (nothing is published here)."""
    sim = VibrationSensorSimulator("127.0.0.1", 1, period_s=0.1)
    sim.inject("unbalance", 0.0, severity=0.2)
    assert sim.severities() == {"unbalance": 0.2}
    sim.command(b'{"inject": "bearing_outer", "severity": 0.1, "severity_per_s": 1e12, "max_severity": 0.5}')
    assert sim.severities()["bearing_outer"] == 0.5  # grows fast, capped
    sim.command(b'{"clear": "unbalance"}')
    sim.command(b'{"inject": "cavitation"}')  # unknown: logged and ignored
    sim.command(b"not json")
    assert set(sim.severities()) == {"bearing_outer"}
    sim.schedule(0.0, "bearing_inner", 0.0, severity=0.3)
    sim.schedule(0.0, "bearing_outer", clear=True)
    sim.schedule(3600.0, "unbalance", 0.1)
    sim._apply_schedule()
    assert sim.severities() == {"bearing_inner": 0.3}
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject("misalignment")
    sim.inject("unbalance")  # neither severity nor growth: grows at its default rate, capped
    assert sim._faults["unbalance"].severity_per_s == DEFAULT_GROWTH_PER_S["unbalance"] > 0
    assert sim._faults["unbalance"].max_severity == DEFAULT_MAX_SEVERITY["unbalance"]
