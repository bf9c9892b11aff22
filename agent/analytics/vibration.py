"""Vibration indicators and diagnosis for one waveform block (pure numpy, no I/O).

`analyze_block` turns an acceleration block into `VibrationIndicators`: what the uplink carries
instead of raw samples. Everything starts from ONE real FFT of the block (the envelope stages add
inverse FFTs of parts of it; nothing transforms the block again):

* time domain: r.m.s., peak, crest factor, kurtosis of the acceleration;
* velocity r.m.s. over the ISO band (10-1000 Hz; 2-1000 Hz at or below 600 r/min) by integrating the
  Hann-windowed spectrum (the window is applied in the frequency domain as a 3-tap convolution of
  the FFT, so no second FFT is needed) and the ISO 10816-3 zone;
* velocity amplitudes at 1x, 2x, 3x shaft speed, and the shaft speed itself when the caller has
  none (`estimate_shaft_hz`);
* bearing evidence from squared-envelope spectra of the spectral-kurtosis band and of the
  pre-whitened block (agent.analytics.bearing_search), and the bearing diagnosis made from it
  (agent.analytics.diagnosis: present or not, located or "bearing" when the locations do not
  separate, with a cross-validated confidence);
* a diagnosis: (fault, confidence, evidence) entries and a 0-100 health score.

Only numpy is used (numpy.fft; the analytic signal is the positive half of the spectrum), so the
edge install needs no scipy. Per-block-size tables (frequency weights, kurtogram band layout) are
cached, which keeps the cost at a few FFTs of the block.

Diagnosis rules are physical, not learned: a bearing defect is reported when its defect line and a
harmonic or expected sideband stand at least 12 dB above the local median of the envelope
spectrum (agent.analytics.envelope.SIGNIFICANT_DB), its location only when the lines that one
location alone explains lead clearly; unbalance, misalignment and looseness are
reported from the shape of the 1x/2x/3x... velocity spectrum, weighted by how far the overall
velocity is into ISO zone B (a machine in zone A has nothing to act on).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from agent.analytics.bearing_search import (
    DEFAULT_SLIP_TOLERANCE,
    MIN_REVOLUTIONS_TO_REFINE,
    SPEED_TOLERANCE,
    BearingFindings,
    Demodulation,
    bearing_findings,
    demodulate,
    envelope_limits,
    findings_from_spectra,
)
from agent.analytics.bearings import BearingDefects
from agent.analytics.diagnosis import (
    BEARING_ANSWERS,
    CALIBRATION,
    DiagnosisEntry,
    LocationCalibration,
    LocationEvidence,
    bearing_answer,
    location_evidence,
)
from agent.analytics.iso10816 import iso_zone, velocity_band_hz, zone_boundaries

__all__ = [
    "DEFAULT_SLIP_TOLERANCE",
    "FAULTS",
    "MIN_REVOLUTIONS_TO_REFINE",
    "RPM_SOURCES",
    "SPEED_TOLERANCE",
    "STANDARD_GRAVITY",
    "AnalysedBlock",
    "BearingFindings",
    "BlockAnalysis",
    "DiagnosisEntry",
    "VibrationIndicators",
    "analyze_block",
    "analyze_block_evidence",
    "bearing_findings",
    "envelope_limits",
    "estimate_shaft_hz",
    "findings_from_spectra",
    "with_bearing_evidence",
]

STANDARD_GRAVITY = 9.80665  # m/s^2 per g
# "bearing": a bearing defect whose location the evidence does not separate (agent.analytics.diagnosis)
FAULTS = ("normal", "outer_race", "inner_race", "ball", "cage", "bearing", "unbalance", "misalignment", "looseness")
RPM_SOURCES = ("speed_point", "config", "estimated", "given")
UNITS_G = ("g",)
UNITS_SI = ("m/s2", "m/s^2", "m/s**2", "m/s²")

MIN_SAMPLES = 256
SHAFT_SEARCH_HZ = (5.0, 100.0)  # 300-6000 r/min when the speed must be estimated
REPORT_THRESHOLD = 0.5  # a diagnosis entry at or above this confidence becomes `fault`
BEARING_HEALTH_WEIGHT = 65.0  # a bearing defect caps health at 100 - 65 x its severity
MECHANICAL_HEALTH_WEIGHT = 40.0  # unbalance, misalignment, looseness: 100 - 40 x confidence
MECHANICAL_LINE_RATIO = 10.0  # 10 dB over the local background: a shaft-order line, not noise
BACKGROUND_BINS = 12  # spectrum bins each side of a line used for its background
SHAFT_ORDERS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)  # the velocity lines measured


@dataclass(frozen=True, slots=True)
class VibrationIndicators:
    """Indicators of one waveform block; field names match protos.twin.v1.VibrationIndicators.

    Units: accelerations in g (input in m/s^2 is converted), velocities in mm/s r.m.s.
    amp_1x/2x/3x: velocity r.m.s. (mm/s) of the shaft-speed harmonics.
    bpfo/bpfi/bsf/ftf: height in dB of the defect line above the local median of the squared
      envelope spectrum (0 when no line stands out or no bearing is configured). bsf is measured
      at 2 x BSF, the rate at which a ball defect strikes the races; ftf at the cage frequency.
      A height of 12 dB or more is a present line; in noise the maximum is typically 5-10 dB.
    health: 0-100; 90-100 as new, 70-90 acceptable, 40-70 plan maintenance, below 40 act now.
    fault: the most confident diagnosis, "normal" if none reaches confidence 0.5.
    """

    accel_rms: float
    accel_peak: float
    crest_factor: float
    kurtosis: float
    velocity_rms_mm_s: float
    iso_zone: str
    rpm: float
    rpm_source: str
    amp_1x: float
    amp_2x: float
    amp_3x: float
    bpfo: float
    bpfi: float
    bsf: float
    ftf: float
    health: float
    fault: str
    confidence: float
    diagnosis: tuple[DiagnosisEntry, ...]
    envelope_band_hz: tuple[float, float] = (0.0, 0.0)
    band_kurtosis: float = 0.0
    sample_rate_hz: float = 0.0
    n_samples: int = 0

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able dict (diagnosis as a list of dicts)."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "diagnosis":
                value = [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence}
                         for d in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per (block length, sample rate) tables, computed once and cached."""

    n: int
    fs: float
    df: float
    freqs: np.ndarray
    window_power: float  # sum of the squared Hann window
    velocity_weight: np.ndarray  # (1000 * g / (2 pi f))^2, 0 at DC: PSD in g^2 -> (mm/s)^2

    def band_mask(self, band_hz: tuple[float, float]) -> np.ndarray:
        return (self.freqs >= band_hz[0]) & (self.freqs <= band_hz[1])

    def band_slice(self, band_hz: tuple[float, float]) -> slice:
        """The bins of `band_mask` (frequencies rise, so they are one run) as a slice: no mask, no gather."""
        return slice(int(np.searchsorted(self.freqs, band_hz[0], side="left")),
                     int(np.searchsorted(self.freqs, band_hz[1], side="right")))


@functools.lru_cache(maxsize=32)
def _plan(n: int, fs: float) -> _Plan:
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    weight = np.zeros_like(freqs)
    weight[1:] = (1000.0 * STANDARD_GRAVITY / (2 * np.pi * freqs[1:])) ** 2
    return _Plan(n, fs, fs / n, freqs, 3.0 * n / 8.0, weight)


@functools.lru_cache(maxsize=64)
def _band_slice(n: int, fs: float, band_hz: tuple[float, float]) -> slice:
    """`_Plan.band_slice` of the block length's plan (cached: the band is the same block after block)."""
    return _plan(n, fs).band_slice(band_hz)


def _hann_spectrum(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Spectrum of the periodic-Hann-windowed block from the unwindowed one (3-tap convolution).

    0.5 X[k] - 0.25 (X[k-1] + X[k+1]), the neighbours beyond the one-sided spectrum's ends taken
    from its conjugate symmetry; one pass for the neighbour sums, no shifted copies.
    """
    last = len(spectrum) - 1
    above = np.conj(spectrum[n - last - 1]) if n - last - 1 >= 0 else 0
    neighbours = np.empty_like(spectrum)
    np.add(spectrum[:-2], spectrum[2:], out=neighbours[1:-1])
    neighbours[0] = (np.conj(spectrum[1]) if last >= 1 else 0) + spectrum[1]
    neighbours[-1] = spectrum[-2] + above
    neighbours *= 0.25
    out = 0.5 * spectrum
    out -= neighbours
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _LinesPlan:
    """Where `_lines_rms` searches each line and takes its background, for given lines and spectrum length."""

    rows: np.ndarray  # the lines that have a search window
    lo: np.ndarray  # each searched line's first bin
    search: np.ndarray  # (rows, widest window) bins searched, `top` past each window (-inf there)
    top: int  # bins [0, top) are read; `top` holds -inf, `top + 1` +inf
    inside: bool  # every background bin any peak can have lies inside the spectrum
    n_bins: int


@functools.lru_cache(maxsize=64)
def _lines_plan(n_bins: int, df: float, hz: tuple[float, ...], search_hz: tuple[float, ...]) -> _LinesPlan:
    """The `_LinesPlan` of lines at `hz` (+/- `search_hz`) in a spectrum of `n_bins` (cached: the same
    shaft speed gives the same lines block after block)."""
    hz_array = np.array(hz, dtype=np.float64)
    centre = np.rint(hz_array / df).astype(np.intp)
    reach = np.maximum(np.ceil(np.array(search_hz, dtype=np.float64) / df).astype(np.intp), 1)
    lo = np.maximum(centre - reach, 2)
    hi = np.minimum(centre + reach + 1, n_bins - 2)
    rows = np.nonzero((hz_array > 0) & (hi > lo))[0]
    lo, hi = lo[rows], hi[rows]
    if len(rows) == 0:
        return _LinesPlan(rows, lo, np.zeros((0, 1), dtype=np.intp), 0, True, n_bins)
    top = min(int(hi.max()) + 16, n_bins)  # every bin a window, lobe or background can reach
    span = np.arange(int((hi - lo).max()))
    search = np.where(span[None, :] < (hi - lo)[:, None], lo[:, None] + span[None, :], top)
    # a peak lies in [lo, hi): its background bins peak - 3 - BACKGROUND_BINS .. peak + 3 + BACKGROUND_BINS
    inside = bool(lo.min() - 3 - BACKGROUND_BINS >= 1 and hi.max() - 1 + 3 + BACKGROUND_BINS < n_bins)
    return _LinesPlan(rows, lo, search, top, inside, n_bins)


_LOBE = np.arange(-2, 3)
_BACKGROUND = np.concatenate((np.arange(-3 - BACKGROUND_BINS, -3), np.arange(4, 4 + BACKGROUND_BINS)))


def _lines_rms(power: np.ndarray, weight: np.ndarray, df: float, hz: np.ndarray, search_hz: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Velocity r.m.s. of the strongest line within +/- search_hz of each hz, and whether it is a real line.

    The r.m.s. sums the PSD over the Hann main lobe (5 bins), which is exact wherever the line
    falls between bins. It is a line (not just the loudest bit of broadband noise) when that sum
    is at least MECHANICAL_LINE_RATIO times what 5 bins of the local background hold (the median
    of the BACKGROUND_BINS bins each side beyond the lobe, / ln 2 for the mean of an exponentially
    distributed periodogram). All lines at once: windows and backgrounds are gathered into padded
    arrays (-inf for the search, +inf for the median) instead of one pass per line; where the
    windows lie is worked out once per set of lines (`_lines_plan`).
    """
    hz = tuple(np.asarray(hz, dtype=np.float64).tolist())
    search = np.broadcast_to(np.asarray(search_hz, dtype=np.float64), (len(hz),))
    return _lines_at(power, weight, _lines_plan(len(power), df, hz, tuple(search.tolist())), len(hz))


def _lines_at(power: np.ndarray, weight: np.ndarray, plan: _LinesPlan, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`_lines_rms` of `count` lines laid out by `plan`."""
    rms = np.zeros(count)
    is_line = np.zeros(count, dtype=bool)
    if len(plan.rows) == 0:
        return rms, is_line
    top = plan.top
    weighted = np.empty(top + 2)
    np.multiply(power[:top], weight[:top], out=weighted[:top])
    weighted[top] = -np.inf
    weighted[top + 1] = np.inf
    peak = plan.lo + np.argmax(weighted[plan.search], axis=1)
    lobe = weighted[peak[:, None] + _LOBE].sum(axis=1)
    around = peak[:, None] + _BACKGROUND
    if plan.inside:  # all 2 x BACKGROUND_BINS bins: the median is the mean of the middle two
        values = weighted[around]
        values.partition((BACKGROUND_BINS - 1, BACKGROUND_BINS), axis=1)
        median = (values[:, BACKGROUND_BINS - 1] + values[:, BACKGROUND_BINS]) / 2
        background = 5 * median / math.log(2)
    else:
        usable = (around >= 1) & (around < plan.n_bins)  # (>= peak - 3 - BACKGROUND_BINS always holds)
        values = weighted[np.where(usable, around, top + 1)]
        values.sort(axis=1)
        count_used = usable.sum(axis=1)
        at = np.arange(len(plan.rows))
        upper = values[at, count_used // 2]
        lower = values[at, np.maximum((count_used - 1) // 2, 0)]
        median = np.where(count_used % 2 == 1, upper, (lower + upper) / 2)
        background = np.where(count_used > 0, 5 * median / math.log(2), 0.0)
    rms[plan.rows] = np.sqrt(lobe)
    is_line[plan.rows] = lobe >= MECHANICAL_LINE_RATIO * background
    return rms, is_line


@functools.lru_cache(maxsize=64)
def _shaft_lines_plan(n: int, fs: float, fr: float, slip_tolerance: float, ftf: float | None) -> _LinesPlan:
    """The lines `analyze_block` measures at shaft rate `fr`: SHAFT_ORDERS, and the cage rate (FTF, times
    `fr`) after them when a bearing is configured (cached: a configured speed recurs block after block)."""
    df = _plan(n, fs).df
    orders = np.array(SHAFT_ORDERS)
    hz = orders * fr
    search_hz = np.minimum(max(slip_tolerance * fr, 2 * df) * orders, 0.25 * fr)
    hz_list, search_list = hz.tolist(), search_hz.tolist()
    if ftf is not None:
        ftf_hz = ftf * fr
        hz_list.append(ftf_hz)
        search_list.append(max(slip_tolerance * ftf_hz, df))
    return _lines_plan(n // 2 + 1, df, tuple(hz_list), tuple(search_list))


def _line_rms(power: np.ndarray, weight: np.ndarray, df: float, hz: float, search_hz: float) -> tuple[float, bool]:
    """`_lines_rms` for one line, written out for one (a few scalar steps beat the padded arrays)."""
    if hz <= 0:
        return 0.0, False
    centre = round(hz / df)
    reach = max(math.ceil(search_hz / df), 1)
    lo, hi = max(centre - reach, 2), min(centre + reach + 1, len(power) - 2)
    if hi <= lo:
        return 0.0, False
    weighted = power[lo:hi] * weight[lo:hi]
    peak = lo + int(np.argmax(weighted))
    lobe = float(np.sum(power[peak - 2:peak + 3] * weight[peak - 2:peak + 3]))
    around = np.concatenate((np.arange(max(peak - 3 - BACKGROUND_BINS, 1), peak - 3),
                             np.arange(peak + 4, min(peak + 4 + BACKGROUND_BINS, len(power)))))
    background = 0.0
    if len(around):  # the median, as numpy.median takes it, from one sort of at most 2 x BACKGROUND_BINS values
        values = np.sort(power[around] * weight[around])
        middle = len(values) // 2
        median = float(values[middle]) if len(values) % 2 else float((values[middle - 1] + values[middle]) / 2)
        background = 5 * median / math.log(2)
    return math.sqrt(lobe), lobe >= MECHANICAL_LINE_RATIO * background


def _shaft_heights(spec: np.ndarray, half: int) -> np.ndarray:
    """How far each bin of `spec` stands above the median of the 2 x half + 1 bins around it (0 if below).

    The median of an odd-length window is its middle order statistic: one partition of the
    strided windows, which is what numpy.median takes, without its copies (10x faster on long blocks).
    """
    padded = np.concatenate((np.full(half, spec[0]), spec, np.full(half, spec[-1])))  # np.pad(mode="edge")
    step = padded.strides[0]
    # the sliding windows as a strided view (what sliding_window_view builds, without its checks)
    windows = np.ndarray((len(spec), 2 * half + 1), padded.dtype, padded, 0, (step, step))
    median = np.partition(windows, half, axis=1)[:, half]
    return np.maximum(spec - median[: len(spec)], 0.0)


def estimate_shaft_hz(power: np.ndarray, df: float, *, search_hz: tuple[float, float] = SHAFT_SEARCH_HZ,
                      harmonics: int = 8) -> float:
    """Shaft rate from the acceleration power spectrum: the fundamental whose harmonics stand out most.

    Each candidate f in `search_hz` scores the summed log-height of the spectrum at f, 2f, ...
    over the local median (a harmonic sum). An estimate only: line-frequency (50/60 Hz) families
    of electrical machines can win; give the speed from a speed point or the config when known.
    """
    top_hz = min(search_hz[1] * harmonics * 1.05, (len(power) - 3) * df)
    n_top = int(top_hz / df) + 3
    spec = np.log(np.maximum(power[:n_top], 1e-300))
    half = max(round(search_hz[0] / 2 / df), 3)
    if n_top <= 2 * half + 1:
        return float(0.5 * (search_hz[0] + search_hz[1]))
    height = _shaft_heights(spec, half)
    step = df / harmonics
    candidates = np.arange(max(search_hz[0], 2 * df), min(search_hz[1], top_hz / 2), step)
    if len(candidates) == 0:
        return float(0.5 * (search_hz[0] + search_hz[1]))
    orders = np.arange(1, harmonics + 1)
    idx = np.rint(candidates[:, None] * orders[None, :] / df).astype(np.intp)
    inside = idx < len(height) - 1
    idx = np.minimum(idx, len(height) - 2)
    peaks = np.maximum(np.maximum(height[:-2], height[1:-1]), height[2:])  # 3-bin maxima, then one gather
    score = np.where(inside, peaks[idx - 1], 0.0).sum(axis=1)
    return float(candidates[int(np.argmax(score))])


def _ramp(value: float, zero: float, one: float) -> float:
    return float(min(max((value - zero) / (one - zero), 0.0), 1.0))


def _mechanical_diagnosis(v_rms: float, lines: dict[float, float], bounds: tuple[float, float, float]
                          ) -> list[DiagnosisEntry]:
    """Unbalance, misalignment, looseness from the velocity spectrum shape, scaled by severity.

    `lines` maps shaft orders to the velocity r.m.s. of lines that stand out of the spectrum
    (0 where only noise is). Severity is 0 in zone A, 1 from the B/C boundary up. Classic
    patterns: unbalance puts most of the velocity at 1x; misalignment raises 2x to half of 1x or
    more; looseness produces a long series of harmonics (3x..10x) and half-orders.
    """
    ab, bc, _ = bounds
    severity = _ramp(v_rms, ab, bc)
    if severity <= 0 or v_rms <= 0:
        return []
    v1, v2, v3 = lines[1.0], lines[2.0], lines[3.0]
    high = math.sqrt(sum(lines[h] ** 2 for h in (4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)))
    half = math.sqrt(sum(lines[h] ** 2 for h in (0.5, 1.5, 2.5)))
    share_1x = (v1 / v_rms) ** 2
    entries = []
    unbalance = severity * _ramp(share_1x, 0.3, 0.7) * (1.0 - _ramp(v2 / v1 if v1 else 1.0, 0.3, 0.6))
    if unbalance > 0:
        entries.append(DiagnosisEntry("unbalance", round(unbalance, 3),
                                      f"1x {v1:.2f} mm/s carries {share_1x:.0%} of {v_rms:.2f} mm/s"))
    ratio_2x = v2 / v1 if v1 else (1.0 if v2 else 0.0)
    misalign = severity * _ramp(ratio_2x, 0.4, 0.8) * _ramp((v1**2 + v2**2) / v_rms**2, 0.2, 0.4)
    if misalign > 0:
        entries.append(DiagnosisEntry("misalignment", round(misalign, 3),
                                      f"2x {v2:.2f} mm/s is {ratio_2x:.0%} of 1x {v1:.2f} mm/s"))
    rest = math.sqrt(v3**2 + high**2 + half**2)
    loose = severity * _ramp(rest / v1 if v1 else 0.0, 0.3, 0.7) * _ramp((rest / v_rms) ** 2, 0.1, 0.3)
    if loose > 0:
        entries.append(DiagnosisEntry("looseness", round(loose, 3),
                                      f"harmonics 3x-10x and half-orders {rest:.2f} mm/s vs 1x {v1:.2f} mm/s"))
    return entries


def _health(v_rms: float, bounds: tuple[float, float, float], entries: list[DiagnosisEntry],
            bearing_severity: float) -> float:
    """0-100: ISO zone A 90-100, B 70-90, C 40-70, D below 40; a fault caps it.

    A bearing defect caps it by its severity (how far its lines stand out), not by how sure its
    location is; unbalance, misalignment and looseness by their confidence.
    """
    ab, bc, cd = bounds
    score = float(np.interp(v_rms, [0.0, ab, bc, cd, 1.6 * cd], [100.0, 90.0, 70.0, 40.0, 0.0]))
    for entry in entries:
        if entry.fault not in BEARING_ANSWERS:
            score = min(score, 100.0 - MECHANICAL_HEALTH_WEIGHT * entry.confidence)
    score = min(score, 100.0 - BEARING_HEALTH_WEIGHT * bearing_severity)
    return round(max(score, 0.0), 1)


def _normal_evidence(v_rms: float, zone: str, bounds: tuple[float, float, float],
                     bearing: BearingDefects | None) -> str:
    text = "no fault pattern above threshold"
    if bearing is None:
        text += " (no bearing configured: bearing defects not checked)"
    if zone in ("C", "D"):
        text += (f"; but velocity {v_rms:.2f} mm/s is in ISO zone {zone} (B/C boundary {bounds[1]} mm/s):"
                 " find the source")
    return text


def _to_g(x: np.ndarray, units: str) -> np.ndarray:
    if units in UNITS_G:
        return x
    if units in UNITS_SI:
        return x / STANDARD_GRAVITY
    raise ValueError(f"units must be 'g' or 'm/s^2', got {units!r}")


def checked_block(x: np.ndarray, fs: float) -> np.ndarray:
    """The block as a float64 1-D array, or ValueError saying why it cannot be analysed."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"waveform block must be 1-D, got shape {arr.shape}")
    if len(arr) < MIN_SAMPLES:
        raise ValueError(f"waveform block too short: {len(arr)} samples, need at least {MIN_SAMPLES}")
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"sample rate must be a positive number, got {fs!r}")
    if not np.isfinite(arr).all():
        raise ValueError("waveform block contains NaN or infinite samples")
    return arr


@dataclass(frozen=True, slots=True)
class BlockAnalysis:
    """A block's indicators and the bearing evidence behind them (None without a bearing).

    The evidence is what a second sensor on the same bearing is merged with
    (`with_bearing_evidence`), and what the cross-validation re-decides with each fold's calibration.
    block: the block's demodulation, for the envelope averager to reuse (None without a bearing).
    """

    indicators: VibrationIndicators
    evidence: LocationEvidence | None = None
    findings: BearingFindings | None = None
    block: AnalysedBlock | None = None


@dataclass(frozen=True, slots=True)
class AnalysedBlock:
    """What the bearing analysis of a block computed that the envelope averager needs again.

    `agent.analytics.averaging.EnvelopeAverager.add(..., analysis=)` reuses it for the same block
    when its own settings for it are the same (units, demodulation limits, band), instead of
    transforming and demodulating the block a second time. A few hundred bins, not the block.
    accel_power: the Hann power spectrum of the acceleration (g^2 per bin) below the band
    envelope spectrum's length.
    """

    n: int
    fs: float
    units: str
    demodulation: Demodulation
    accel_power: np.ndarray


def _assemble(mechanical: list[DiagnosisEntry], bearing: list[DiagnosisEntry], note: str, normal_text: str
              ) -> tuple[str, float, tuple[DiagnosisEntry, ...]]:
    """(fault, confidence, entries), entries strongest first.

    The fault is the most confident of: the bearing answer (`bearing[0]`, whatever its
    confidence: a present defect family is reported) and any entry at REPORT_THRESHOLD or more;
    "normal" when there is neither.
    """
    answer = bearing[0] if bearing else None
    ranked = sorted(((e, e is answer) for e in (*mechanical, *bearing)), key=lambda item: -item[0].confidence)
    entries = tuple(DiagnosisEntry(e.fault, e.confidence, e.evidence + note) for e, _ in ranked)
    for entry, (_, is_answer) in zip(entries, ranked, strict=True):
        if is_answer or entry.confidence >= REPORT_THRESHOLD:
            return entry.fault, entry.confidence, entries
    worst = entries[0].confidence if entries else 0.0
    confidence = round(1.0 - worst, 3)
    return "normal", confidence, (DiagnosisEntry("normal", confidence, normal_text), *entries)


def _speed_note(rpm_source: str, rpm: float) -> str:
    return f" [shaft speed estimated: {rpm:.0f} r/min]" if rpm_source == "estimated" else ""


def with_bearing_evidence(ind: VibrationIndicators, evidence: LocationEvidence,
                          calibration: LocationCalibration = CALIBRATION) -> VibrationIndicators:
    """`ind` with its bearing diagnosis made again from `evidence` (usually merged with a second sensor).

    Mechanical entries stay; the bearing entries are replaced; health is capped by the merged
    evidence's severity, which is never below the block's own (merging takes the stronger lines).
    """
    answer = bearing_answer(evidence, calibration)
    mechanical = [e for e in ind.diagnosis if e.fault not in BEARING_ANSWERS and e.fault != "normal"]
    note = _speed_note(ind.rpm_source, ind.rpm)
    mechanical = [DiagnosisEntry(e.fault, e.confidence, e.evidence.removesuffix(note)) for e in mechanical]
    normal = next((e.evidence for e in ind.diagnosis if e.fault == "normal"), "no fault pattern above threshold")
    fault, confidence, entries = _assemble(mechanical, list(answer.entries) if answer else [], note, normal)
    health = ind.health
    if answer is not None:
        health = round(min(health, 100.0 - BEARING_HEALTH_WEIGHT * answer.severity), 1)
    return dataclasses.replace(ind, fault=fault, confidence=confidence, diagnosis=entries, health=health)


def analyze_block(
    x: np.ndarray,
    fs: float,
    *,
    rpm: float | None = None,
    rpm_source: str = "given",
    bearing: BearingDefects | None = None,
    machine_group: int = 2,
    foundation: str = "rigid",
    units: str = "g",
    slip_tolerance: float = DEFAULT_SLIP_TOLERANCE,
) -> VibrationIndicators:
    """All indicators and the diagnosis for one acceleration block.

    x: 1-D acceleration samples in `units` ("g" or "m/s^2"); fs: sample rate in Hz.
    rpm: shaft speed in r/min, None to estimate it from the spectrum (rpm_source "estimated");
      otherwise `rpm_source` says where it came from ("speed_point", "config" or "given").
    bearing: defect multipliers (agent.analytics.bearings); None skips the bearing analysis.
    machine_group (1 or 2) and foundation ("rigid" or "flexible") select the ISO 10816-3 zones.
    slip_tolerance: relative search window around each defect frequency.

    Raises ValueError for input that cannot be analysed (not 1-D, too short, non-finite,
    constant, bad units or settings), with a message saying which.
    """
    return analyze_block_evidence(x, fs, rpm=rpm, rpm_source=rpm_source, bearing=bearing,
                                  machine_group=machine_group, foundation=foundation, units=units,
                                  slip_tolerance=slip_tolerance).indicators


def analyze_block_evidence(
    x: np.ndarray,
    fs: float,
    *,
    rpm: float | None = None,
    rpm_source: str = "given",
    bearing: BearingDefects | None = None,
    machine_group: int = 2,
    foundation: str = "rigid",
    units: str = "g",
    slip_tolerance: float = DEFAULT_SLIP_TOLERANCE,
    calibration: LocationCalibration = CALIBRATION,
    sensor: str = "",
    refine_speed: bool = True,
) -> BlockAnalysis:
    """`analyze_block`, also returning the bearing evidence (for a second sensor or a re-decision).

    calibration: the location calibration to decide with (the cross-validation passes each
    fold's); sensor: a name for the evidence when it is merged with another sensor's;
    refine_speed: re-measure the shaft rate from envelope lines in long blocks (see
    `findings_from_spectra`).
    """
    arr = checked_block(x, fs)
    if rpm is not None and not (math.isfinite(rpm) and rpm > 0):
        raise ValueError(f"rpm must be a positive number or None, got {rpm!r}")
    if rpm is not None and rpm_source not in RPM_SOURCES:
        raise ValueError(f"rpm_source must be one of {RPM_SOURCES}, got {rpm_source!r}")
    if not 0 <= slip_tolerance < 0.2:
        raise ValueError(f"slip_tolerance must be in [0, 0.2), got {slip_tolerance!r}")
    bounds = zone_boundaries(machine_group, foundation)
    xg = _to_g(arr, units)
    n = len(xg)
    xg = xg - np.add.reduce(xg) / n  # the mean as ndarray.mean takes it, without its wrapper (here and below)

    squares = xg * xg
    mean_square = float(np.add.reduce(squares) / n)
    rms = math.sqrt(mean_square)
    if rms == 0.0:
        raise ValueError("waveform block is constant: no vibration signal (sensor or cabling fault?)")
    peak = float(max(np.maximum.reduce(xg), -np.minimum.reduce(xg)))
    kurt = float(np.einsum("i,i->", squares, squares) / n / mean_square**2)  # no BLAS: its threads cost more

    plan = _plan(n, float(fs))
    spectrum = np.fft.rfft(xg)
    parts = _hann_spectrum(spectrum, n).view(np.float64).reshape(-1, 2)
    np.multiply(parts, parts, out=parts)  # real and imaginary parts squared in place (the windowed spectrum is scratch)
    power = np.add(parts[:, 0], parts[:, 1])
    power *= 2.0 / (n * plan.window_power)  # g^2 per bin

    if rpm is None:
        fr = estimate_shaft_hz(power, plan.df)
        rpm_value, source = fr * 60.0, "estimated"
    else:
        fr, rpm_value, source = rpm / 60.0, float(rpm), rpm_source
    v_band = _band_slice(n, float(fs), velocity_band_hz(rpm_value))
    v_rms = float(math.sqrt(np.add.reduce(power[v_band] * plan.velocity_weight[v_band])))
    ftf = bearing.ftf if bearing is not None else None
    rms_of, line_of = _lines_at(power, plan.velocity_weight, _shaft_lines_plan(n, float(fs), fr, slip_tolerance, ftf),
                                len(SHAFT_ORDERS) + (ftf is not None))
    line_rms, is_line = rms_of.tolist(), line_of.tolist()
    lines = dict(zip(SHAFT_ORDERS, line_rms, strict=False))
    real_lines = {h: v if real else 0.0 for h, v, real in zip(SHAFT_ORDERS, line_rms, is_line, strict=False)}

    mechanical = _mechanical_diagnosis(v_rms, real_lines, bounds)
    snr = {"bpfo": 0.0, "bpfi": 0.0, "bsf": 0.0, "ftf": 0.0}
    band_hz, band_sk = (0.0, 0.0), 0.0
    answer = None
    evidence = found = block = None
    if bearing is not None:
        demodulated = demodulate(spectrum, n, float(fs), fr, bearing, tolerance=slip_tolerance)
        found = findings_from_spectra(demodulated.band, demodulated.spectra, n / float(fs), fr, bearing,
                                      tolerance=slip_tolerance, refine_speed=refine_speed)
        m = min(len(demodulated.spectra[0].amplitude), len(spectrum) - 1)
        block = AnalysedBlock(n, float(fs), units, demodulated, power[:m].copy())
        if found.shaft_hz == fr:  # the cage line was searched with the shaft-order lines
            cage_line = is_line[len(SHAFT_ORDERS)]
        else:
            ftf_hz = bearing.ftf * found.shaft_hz
            _, cage_line = _line_rms(power, plan.velocity_weight, plan.df, ftf_hz,
                                     max(slip_tolerance * ftf_hz, plan.df))
        evidence = location_evidence(found, bearing, cage_line=cage_line, given_shaft_hz=fr,
                                     tolerance=slip_tolerance, sensor=sensor, speed_estimated=source == "estimated")
        answer = bearing_answer(evidence, calibration)
        for key, fault in (("bpfo", "outer_race"), ("bpfi", "inner_race"), ("bsf", "ball"), ("ftf", "cage")):
            snr[key] = found.families[fault].fundamental_db
        band_hz, band_sk = (found.band.low_hz, found.band.high_hz), found.band.kurtosis

    zone = iso_zone(v_rms, machine_group, foundation)
    bearing_entries = list(answer.entries) if answer else []
    health = _health(v_rms, bounds, mechanical, answer.severity if answer else 0.0)
    fault, confidence, entries = _assemble(mechanical, bearing_entries, _speed_note(source, rpm_value),
                                           _normal_evidence(v_rms, zone, bounds, bearing))
    indicators = VibrationIndicators(
        accel_rms=rms,
        accel_peak=peak,
        crest_factor=peak / rms,
        kurtosis=kurt,
        velocity_rms_mm_s=v_rms,
        iso_zone=zone,
        rpm=rpm_value,
        rpm_source=source,
        amp_1x=lines[1.0],
        amp_2x=lines[2.0],
        amp_3x=lines[3.0],
        bpfo=snr["bpfo"],
        bpfi=snr["bpfi"],
        bsf=snr["bsf"],
        ftf=snr["ftf"],
        health=health,
        fault=fault,
        confidence=confidence,
        diagnosis=tuple(entries),
        envelope_band_hz=band_hz,
        band_kurtosis=band_sk,
        sample_rate_hz=float(fs),
        n_samples=n,
    )
    return BlockAnalysis(indicators, evidence, found, block)
