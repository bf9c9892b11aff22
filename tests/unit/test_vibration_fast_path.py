"""The fast analysis path gives the indicators the straightforward code gave (recorded before it was made fast).

tests/cases/vibration_indicators_reference/expected.json was written by
`python -m tests.unit.vibration_reference_signals` before the line search and the local median were
vectorised and single precision was used: every indicator, the diagnosis text and the averaged
diagnosis must come out the same (floats to 1e-9 relative: summation order may differ in the last bit).
Each piece made fast since (the kurtogram's levels at once, the Gamma tail term by term, medians by
partition, the shaft-harmonic masks in the search pass, the velocity band as a slice) is also compared
below with a straightforward version of itself kept here.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from agent.analytics.averaging import _median
from agent.analytics.bearing_search import defect_families
from agent.analytics.bearings import lookup
from agent.analytics.envelope import (
    MIN_BACKGROUND_BINS,
    EnvelopeSpectrum,
    _heights,
    _local_medians,
    _log_tail,
    search_families,
    shaft_harmonic_masks,
    single_block_equivalent_db,
)
from agent.analytics.kurtogram import KurtogramLevel, _levels_kurtosis, _single, kurtogram_levels
from agent.analytics.vibration import (
    BACKGROUND_BINS,
    MECHANICAL_LINE_RATIO,
    _line_rms,
    _lines_rms,
    _plan,
    _shaft_heights,
    estimate_shaft_hz,
)
from tests.unit.vibration_reference_signals import EXPECTED, indicators

RECORDED: dict[str, Any] = json.loads(EXPECTED.read_text(encoding="utf-8"))


def _same(now: Any, then: Any, where: str) -> None:
    if isinstance(then, float) or isinstance(now, float):
        assert math.isclose(float(now), float(then), rel_tol=1e-9, abs_tol=1e-9), f"{where}: {now} != {then}"
    elif isinstance(then, list | tuple):
        assert len(now) == len(then), f"{where}: {now} != {then}"
        for i, (a, b) in enumerate(zip(now, then, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(then, dict):
        assert set(now) == set(then), f"{where}: keys {sorted(now)} != {sorted(then)}"
        for key in then:
            _same(now[key], then[key], f"{where}.{key}")
    else:
        assert now == then, f"{where}: {now!r} != {then!r}"


@pytest.fixture(scope="module")
def computed() -> dict[str, Any]:
    return json.loads(json.dumps(indicators()))  # the same JSON round trip as the recording


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_indicators_are_unchanged(computed: dict[str, Any], case: str) -> None:
    _same(computed[case], RECORDED[case], case)


# --- the vectorised pieces against one-at-a-time references --------------------------------------------------


def _line_rms_reference(power: np.ndarray, weight: np.ndarray, df: float, hz: float, search_hz: float
                        ) -> tuple[float, bool]:
    """One line, straightforwardly: the background is numpy.median of the bins beside the main lobe."""
    if hz <= 0:
        return 0.0, False
    centre = round(hz / df)
    reach = max(math.ceil(search_hz / df), 1)
    lo, hi = max(centre - reach, 2), min(centre + reach + 1, len(power) - 2)
    if hi <= lo:
        return 0.0, False
    peak = lo + int(np.argmax(power[lo:hi] * weight[lo:hi]))
    lobe = float(np.sum(power[peak - 2:peak + 3] * weight[peak - 2:peak + 3]))
    around = [i for i in range(peak - 3 - BACKGROUND_BINS, peak + 4 + BACKGROUND_BINS)
              if abs(i - peak) >= 4 and 1 <= i < len(power)]
    background = 5 * float(np.median(power[around] * weight[around])) / math.log(2) if around else 0.0
    return math.sqrt(lobe), lobe >= MECHANICAL_LINE_RATIO * background


def test_line_rms_equals_the_reference() -> None:
    rng = np.random.default_rng(4)
    plan = _plan(8192, 12800.0)
    for trial in range(200):
        power = rng.exponential(1.0, len(plan.freqs)) * (1 + 50 * (rng.random(len(plan.freqs)) > 0.995))
        hz = float(rng.choice([rng.uniform(-5, 6400), 0.0, 3.0, 6398.0, 6400.0, rng.uniform(0, 30)]))
        search = float(rng.uniform(0.1, 20))
        assert _line_rms(power, plan.velocity_weight, plan.df, hz, search) == _line_rms_reference(
            power, plan.velocity_weight, plan.df, hz, search), (trial, hz, search)


def _level_kurtosis_reference(spectrum: np.ndarray, level: KurtogramLevel) -> np.ndarray:
    """Spectral kurtosis of one level's bands, one band at a time."""
    single = spectrum.astype(np.complex64)
    out = []
    for start in level.starts:
        c = np.fft.ifft(single[start:start + level.width] * level.taper)
        power = (c.real * c.real + c.imag * c.imag).astype(np.float64)
        mean = power.mean()
        out.append(np.mean(power * power) / mean**2 - 2.0 if mean > 0 else -np.inf)
    return np.array(out)


@pytest.mark.parametrize("n", [1000, 8192, 12000])
def test_kurtogram_levels_at_once_equal_one_band_at_a_time(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n) * (1 + 20 * (rng.random(n) > 0.99))
    spectrum = np.fft.rfft(x)
    spectrum[len(spectrum) // 3:len(spectrum) // 3 + 200] = 0  # bands without power cannot be chosen
    levels = kurtogram_levels(len(spectrum))
    for chosen in (levels, levels[2:4], levels[-1:]):
        got = _levels_kurtosis(_single(spectrum), chosen)
        assert len(got) == len(chosen)
        for sk, level in zip(got, chosen, strict=True):
            np.testing.assert_allclose(sk, _level_kurtosis_reference(spectrum, level), rtol=1e-9)


def test_averaged_heights_convert_what_callers_read() -> None:
    """Converting only heights above -3 dB gives the positive part that converting all of them gives."""
    rng = np.random.default_rng(8)
    df = 0.5
    amps = rng.exponential(1.0, (2, 600)) ** 2 * (1 + 30 * (rng.random((2, 600)) > 0.98))
    freqs = rng.uniform(-5, 320, (30, 12))
    background = _local_medians(amps, df, freqs[0], 10.0)
    excludes = rng.random((2, 600)) > 0.9
    usable = rng.random((30, 12)) > 0.1
    single = _heights(amps, df, 1, freqs, background, excludes, usable)
    every = np.where(single != 0, np.maximum(single_block_equivalent_db(single, 8), 0.0), 0.0)
    assert (single > 0).any() and (single < -3).any()
    np.testing.assert_array_equal(np.maximum(_heights(amps, df, 8, freqs, background, excludes, usable), 0.0), every)


def test_lines_rms_at_once_equals_one_line_at_a_time() -> None:
    rng = np.random.default_rng(5)
    plan = _plan(8192, 12800.0)
    for trial in range(20):
        power = rng.exponential(1.0, len(plan.freqs)) * (1 + 50 * (rng.random(len(plan.freqs)) > 0.995))
        hz = np.concatenate((rng.uniform(-5, 6400, 30), [0.0, 0.5, 3.0, 6398.0, 6400.0]))
        search = rng.uniform(0.1, 20, len(hz))
        rms, is_line = _lines_rms(power, plan.velocity_weight, plan.df, hz, search)
        for i in range(len(hz)):
            one = _line_rms(power, plan.velocity_weight, plan.df, float(hz[i]), float(search[i]))
            assert (float(rms[i]), bool(is_line[i])) == one, (trial, hz[i], search[i])


def test_local_medians_equal_a_window_by_window_median() -> None:
    rng = np.random.default_rng(6)
    df = 1.5625
    amps = rng.exponential(1.0, (3, 400))
    freqs = np.concatenate((rng.uniform(-10, 700, 40), [0.0, 5.0, 620.0, 624.0]))
    got = _local_medians(amps, df, freqs, 15.0)
    for s in range(3):
        for j, f in enumerate(freqs):
            half = max(min(15.0, 0.5 * abs(f)), MIN_BACKGROUND_BINS * df)
            lo = max(int(np.rint(f / df)) - int(np.rint(half / df)), 1)
            hi = min(int(np.rint(f / df)) + int(np.rint(half / df)) + 1, 400)
            if f <= 0 or hi - lo < 2 * MIN_BACKGROUND_BINS:
                assert got[s, j] == np.inf
            else:
                window = np.sort(amps[s, lo:hi])
                assert got[s, j] == window[(hi - lo) // 2]  # the upper median for an even width


def _local_height_reference(power: np.ndarray, df: float, search_hz: tuple[float, float], harmonics: int
                            ) -> np.ndarray:
    """The log-spectrum's height over its running median (numpy.median of each window), as estimate_shaft_hz uses."""
    top_hz = min(search_hz[1] * harmonics * 1.05, (len(power) - 3) * df)
    spec = np.log(np.maximum(power[:int(top_hz / df) + 3], 1e-300))
    half = max(round(search_hz[0] / 2 / df), 3)
    padded = np.pad(spec, half, mode="edge")
    return np.maximum(spec - np.array([np.median(padded[i:i + 2 * half + 1]) for i in range(len(spec))]), 0.0)


@pytest.mark.parametrize("n", [8192, 65536])
def test_shaft_estimate_uses_the_running_median(n: int) -> None:
    rng = np.random.default_rng(n)
    plan = _plan(n, 12800.0)
    power = rng.exponential(1.0, len(plan.freqs))
    for k in range(1, 9):
        power[round(k * 23.7 / plan.df)] += 400.0
    height = _local_height_reference(power, plan.df, (5.0, 100.0), 8)
    assert estimate_shaft_hz(power, plan.df) == pytest.approx(23.7, abs=plan.df)
    # the estimate's own running median, reproduced from the height it scores
    spec = np.log(np.maximum(power[:len(height)], 1e-300))
    np.testing.assert_array_equal(_shaft_heights(spec, max(round(2.5 / plan.df), 3)), height)


def _log_tail_reference(y: np.ndarray, blocks: int) -> np.ndarray:
    """ln P(Gamma(blocks) > y) as one log-sum-exp over a (..., blocks) array of terms."""
    k = np.arange(blocks)
    terms = k * np.log(np.maximum(y, 1e-300))[..., None] - np.array([math.lgamma(i + 1.0) for i in k])
    top = terms.max(axis=-1)
    return -y + top + np.log(np.exp(terms - top[..., None]).sum(axis=-1))


@pytest.mark.parametrize("blocks", [1, 2, 3, 7, 8, 9, 16, 17, 130])
def test_gamma_tail_term_by_term_equals_the_log_sum_exp(blocks: int) -> None:
    rng = np.random.default_rng(blocks)
    y = 10 ** rng.uniform(-4, 21, (3, 500))
    np.testing.assert_allclose(_log_tail(y, blocks), _log_tail_reference(y, blocks), rtol=1e-13)
    assert float(_log_tail(np.array(2.5), blocks)) == pytest.approx(float(_log_tail_reference(np.array(2.5), blocks)),
                                                                    rel=1e-13)


def test_shaft_harmonics_excluded_in_the_search_pass_equal_the_separate_masks() -> None:
    """search_families(shaft_hz=...) takes the harmonics' backgrounds with the lines': same evidence as masks first."""
    rng = np.random.default_rng(9)
    df, shaft = 0.5, 29.5
    bearing = lookup("6205-2RS")
    spectra = []
    for blocks in (1, 1, 4):
        amplitude = rng.exponential(1.0, 900)
        for k in range(1, 14):  # shaft harmonics, some strong enough to be masked
            amplitude[round(k * shaft / df)] += rng.choice([0.0, 3.0, 30.0])
        amplitude[round(bearing.bpfo * shaft / df) * np.arange(1, 4)] += 20.0
        spectra.append(EnvelopeSpectrum(df, amplitude, 0.0, 0.0, 0.0, f"test {blocks}", blocks))
    spectra.append(EnvelopeSpectrum(df, rng.exponential(1.0, 700), 0.0, 0.0, 0.0, "shorter"))
    families = defect_families(bearing, shaft)
    masks = shaft_harmonic_masks(spectra, shaft, background_hz=0.5 * shaft)
    assert any(mask.any() for mask in masks)
    separate = search_families(spectra, families, tolerance=0.02, background_hz=0.5 * shaft, excludes=masks)
    assert search_families(spectra, families, tolerance=0.02, background_hz=0.5 * shaft, shaft_hz=shaft) == separate


@pytest.mark.parametrize(("n", "fs"), [(8192, 12800.0), (1000, 12000.0), (65536, 48000.0)])
def test_velocity_band_slice_holds_the_band_mask_bins(n: int, fs: float) -> None:
    plan = _plan(n, fs)
    for band in ((10.0, 1000.0), (2.0, 1000.0), (0.0, fs), (plan.freqs[3], plan.freqs[40]), (fs, 2 * fs)):
        np.testing.assert_array_equal(np.arange(len(plan.freqs))[plan.band_slice(band)],
                                      np.nonzero(plan.band_mask(band))[0])


def test_median_by_partition_equals_numpy_median() -> None:
    rng = np.random.default_rng(10)
    for size in (1, 2, 3, 4, 5, 450, 451, 2460):
        for _ in range(20):
            values = rng.exponential(1.0, size) ** 2
            assert _median(values) == float(np.median(values))
    assert _median(np.array([3.0, 1.0, 3.0, 1.0])) == 2.0
