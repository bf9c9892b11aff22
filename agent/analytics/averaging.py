"""Bearing diagnosis on the envelope spectra of consecutive blocks, averaged (pure numpy, no I/O).

Field sensors send short blocks (8192 samples at 12.8 kHz = 0.64 s). A weak defect, such as a
spalled ball carried through the load zone by the cage, leaves lines in one such block's envelope
spectrum a few dB above the background: inside what noise does in one block, so the per-block
diagnosis (`analyze_block`) rightly stays silent. Averaging the squared-envelope power spectra of
N consecutive blocks (same length, same demodulation band, same shaft speed) keeps the periodic
defect lines where they are while the noise of each bin settles towards its mean: its spread falls
by about sqrt(N). The lines do not grow over the background (that would need a longer block, which
also resolves them better); the background becomes steady enough to trust a lower height.

How much lower follows from the noise statistics, nothing is fitted: a noise bin's power is
exponential in one block and Gamma(N) in the mean of N independent blocks, so the height that noise
reaches as rarely as 12 dB in one block (2e-5 per bin) is 9.1 dB for 2 blocks, 6.9 dB for 4 and
5.2 dB for 8. Line heights in the averaged spectra are reported as single-block-equivalent dB
(agent.analytics.envelope.single_block_equivalent_db), and the per-block rules then apply
unchanged: a family is present at 12 dB, the same severity, location rule and calibrated confidence, the same cage
vs ball reading (agent.analytics.diagnosis).

* Each block's envelope power spectrum is divided by its median before averaging, so that every
  block weighs the same: one loud block (a knock, a load step) cannot dominate the mean and the
  noise stays close to the Gamma(N) statistics the thresholds assume.
* The demodulation band must be the same for every block averaged. After a reset it is the first
  block's most impulsive band (nothing else is known yet); then, once per window of N blocks, it is
  chosen again from the spectral kurtosis averaged over the window's blocks, which is a far steadier
  estimate than one short block's (the kurtosis of 8192 samples scatters by about +/-0.1 for noise).
  When the band changes, the band spectrum is the average of whichever band most of the window's
  blocks were demodulated in, until the old band's blocks have left the window; the pre-whitened
  spectrum, which has no band, keeps averaging all N.
* Blocks are only averaged if their length and sample rate are equal and their shaft speeds are
  within half the slip tolerance (1 %) of the window's first block: otherwise the lines would smear
  over the slip window. Anything else starts a new window.

* The agent analyses each block on its own first (`analyze_block_evidence`), which transforms and
  demodulates it already; `EnvelopeAverager.add(..., analysis=)` reuses that work wherever the
  window's settings make it the same computation (same units and demodulation limits: the band
  kurtosis and the pre-whitened spectrum; same band too: the band spectrum), so a block costs one
  transform and one demodulation, not two.

`EnvelopeAverager` keeps the rolling window of one sensor (N small spectra, not the blocks);
`block_envelope` and `diagnose_averaged` are the pure steps it uses; `with_averaged` adds the
averaged finding to a block's indicators when the block alone does not show it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.analytics.bearing_search import (
    DEFAULT_SLIP_TOLERANCE,
    BearingFindings,
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
from agent.analytics.envelope import EnvelopeSpectrum, band_envelope_spectrum, whitened_envelope_spectrum
from agent.analytics.kurtogram import Band, candidate_bands, candidate_kurtosis, select_band
from agent.analytics.vibration import (
    BEARING_HEALTH_WEIGHT,
    REPORT_THRESHOLD,
    AnalysedBlock,
    BlockAnalysis,
    VibrationIndicators,
    _lines_at,
    _lines_plan,
    _plan,
    _to_g,
    checked_block,
)

__all__ = [
    "AveragedDiagnosis",
    "BlockEnvelope",
    "EnvelopeAverager",
    "block_envelope",
    "choose_band",
    "diagnose_averaged",
    "redecided",
    "with_averaged",
]



@dataclass(frozen=True, slots=True)
class BlockEnvelope:
    """What one block contributes to an average: a few hundred bins per spectrum, not the samples.

    band_power / whitened_power: squared-envelope power spectra (0 Hz up to the highest line
    searched) of the demodulation band and of the pre-whitened block, each divided by its median.
    accel_power: Hann power spectrum of the acceleration (g^2 per bin) over the same range, for the
    cage-line check. band_sk: this block's spectral kurtosis of every candidate band
    (`candidate_bands` with the width floor `band_floor_hz`), from which a window's band is chosen.
    """

    n: int
    fs: float
    shaft_hz: float
    band: Band
    band_power: np.ndarray
    whitened_power: np.ndarray
    whitened_kurtosis: float
    accel_power: np.ndarray
    band_sk: np.ndarray
    band_floor_hz: float


@dataclass(frozen=True, slots=True)
class AveragedDiagnosis:
    """Bearing diagnosis on averaged envelope spectra.

    blocks: blocks in the pre-whitened average; band_blocks: blocks in the band average (fewer
    right after the band changed). fault: the strongest bearing finding at confidence 0.5 or
    more, else "normal". diagnosis: bearing entries only, strongest first, each saying how many
    blocks it rests on. bpfo/bpfi/bsf/ftf: single-block-equivalent dB of the defect lines.
    """

    blocks: int
    band_blocks: int
    fault: str
    confidence: float
    diagnosis: tuple[DiagnosisEntry, ...]
    bpfo: float
    bpfi: float
    bsf: float
    ftf: float
    findings: BearingFindings
    evidence: LocationEvidence
    severity: float = 0.0


def _checked_block(x: np.ndarray, fs: float, units: str) -> np.ndarray:
    xg = _to_g(checked_block(x, fs), units)
    xg = xg - xg.mean()
    if not xg.any():
        raise ValueError("waveform block is constant: no vibration signal (sensor or cabling fault?)")
    return xg


def _median(values: np.ndarray) -> float:
    """numpy.median of a 1-D array without NaN, by one partition (the overhead of numpy.median is most of its cost)."""
    middle = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, middle)[middle])
    lower, upper = np.partition(values, (middle - 1, middle))[middle - 1:middle + 1]
    return float((lower + upper) / 2)


def _mean(rows: Sequence[np.ndarray] | Sequence[float]) -> np.ndarray:
    """`np.mean(rows, axis=0)` (the same sum and division), without its wrapper's overhead."""
    return np.add.reduce(np.array(rows), axis=0) / len(rows)


def _unit_median(power: np.ndarray) -> np.ndarray:
    median = _median(power[1:]) if len(power) > 1 else 0.0
    return power / median if median > 0 else power


def block_envelope(
    x: np.ndarray,
    fs: float,
    *,
    shaft_hz: float,
    bearing: BearingDefects,
    band: Band | None = None,
    reference_hz: float | None = None,
    units: str = "g",
    slip_tolerance: float = DEFAULT_SLIP_TOLERANCE,
    analysed: AnalysedBlock | None = None,
) -> BlockEnvelope:
    """One block's envelope spectra, demodulated in `band` (None: the block's most impulsive band).

    reference_hz: the shaft rate that fixes the candidate bands and the spectrum range (the
    window's first block's), so that every block of a window has the same layout.
    analysed: what `analyze_block_evidence` computed for this same block `x`. Used only where it is
    the same computation on the same inputs: the candidates' kurtosis and the pre-whitened spectrum
    when the units and demodulation limits are the same, the band spectrum and acceleration
    spectrum when the band is the same too; anything else is computed here from `x`.
    Raises ValueError for a block `analyze_block` would refuse too.
    """
    if not (math.isfinite(shaft_hz) and shaft_hz > 0):
        raise ValueError(f"shaft rate must be a positive number, got {shaft_hz!r}")
    min_width_hz, max_hz = envelope_limits(bearing, reference_hz or shaft_hz, slip_tolerance)
    shared = None
    if (analysed is not None and analysed.n == len(x) and analysed.fs == float(fs) and analysed.units == units
            and (analysed.demodulation.min_width_hz, analysed.demodulation.max_hz) == (min_width_hz, max_hz)):
        shared = analysed.demodulation
    spectrum: np.ndarray | None = None
    if shared is None:
        xg = _checked_block(x, fs, units)
        n = len(xg)
        spectrum = np.fft.rfft(xg)
        sk = candidate_kurtosis(spectrum, fs / n, min_width_hz)
    else:
        n = len(x)
        sk = shared.candidate_kurtosis
    df = fs / n
    bands = candidate_bands(n // 2 + 1, df, min_width_hz)
    if band is None:
        if len(sk):
            start, stop = bands[int(np.argmax(sk))]
            band = Band(start, stop, start * df, stop * df, float(np.max(sk)))
        elif shared is not None:  # no band is wide enough: the whole spectrum, which the analysis chose too
            band = shared.band
        else:  # no band is wide enough: the whole spectrum, as select_band does
            band = select_band(spectrum, df, min_width_hz=min_width_hz)
    band_sk = float(sk[bands.index((band.start, band.stop))]) if (band.start, band.stop) in bands else band.kurtosis
    if shared is not None and (band.start, band.stop, band_sk) == (shared.band.start, shared.band.stop,
                                                                   shared.band.kurtosis):
        band_es, white_es = shared.spectra
        accel = analysed.accel_power
    else:
        if spectrum is None:
            spectrum = np.fft.rfft(_checked_block(x, fs, units))
        band_es = band_envelope_spectrum(spectrum, n, df, band.start, band.stop, band_sk, max_hz=max_hz)
        white_es = shared.spectra[1] if shared is not None else whitened_envelope_spectrum(spectrum, df, max_hz=max_hz)
        plan = _plan(n, float(fs))
        m = min(len(band_es.amplitude), len(spectrum) - 1)  # Hann window as a 3-tap convolution, first m bins
        hann = 0.5 * spectrum[:m] - 0.25 * (np.concatenate(([np.conj(spectrum[1])], spectrum[: m - 1]))
                                            + spectrum[1:m + 1])
        accel = (hann.real**2 + hann.imag**2) * (2.0 / (n * plan.window_power))
    return BlockEnvelope(
        n=n, fs=float(fs), shaft_hz=float(shaft_hz), band=dataclasses.replace(band, kurtosis=band_sk),
        band_power=_unit_median(band_es.amplitude**2), whitened_power=_unit_median(white_es.amplitude**2),
        whitened_kurtosis=white_es.kurtosis, accel_power=accel, band_sk=sk, band_floor_hz=min_width_hz,
    )


def choose_band(blocks: Sequence[BlockEnvelope]) -> Band:
    """The candidate band with the highest spectral kurtosis averaged over `blocks` (same layout)."""
    last = blocks[-1]
    sks = [b.band_sk for b in blocks if b.band_floor_hz == last.band_floor_hz and b.n == last.n]
    if not len(last.band_sk):
        return last.band
    mean = np.mean(sks, axis=0)
    i = int(np.argmax(mean))
    df = last.fs / last.n
    start, stop = candidate_bands(last.n // 2 + 1, df, last.band_floor_hz)[i]
    return Band(start, stop, start * df, stop * df, float(mean[i]))


def _label(what: str, blocks: int) -> str:
    return f"{what}, averaged over {blocks} block{'s' if blocks != 1 else ''}"


def diagnose_averaged(blocks: Sequence[BlockEnvelope], bearing: BearingDefects, *,
                      slip_tolerance: float = DEFAULT_SLIP_TOLERANCE,
                      calibration: LocationCalibration = CALIBRATION) -> AveragedDiagnosis:
    """Bearing findings on the mean envelope spectra of `blocks` (consecutive blocks of one sensor).

    The band spectrum averages the blocks demodulated in the band most of them share (after a band
    change the old band's blocks keep serving until the new band has as many, so the band average
    never falls below half the window); the pre-whitened one averages them all. The families are
    searched around the mean shaft rate with the rules of the per-block path; the speed is
    re-measured from envelope lines only if one block spans enough shaft turns (averaging does not
    sharpen a line). Raises ValueError if the blocks differ
    in length or sample rate, or if there are none.
    """
    if not blocks:
        raise ValueError("no blocks to average")
    last = blocks[-1]
    if any(b.n != last.n or b.fs != last.fs or len(b.whitened_power) != len(last.whitened_power) for b in blocks):
        raise ValueError("blocks of different length, sample rate or spectrum range cannot be averaged")
    groups: dict[tuple[int, int], list[BlockEnvelope]] = {}
    for b in blocks:
        groups.setdefault((b.band.start, b.band.stop), []).append(b)
    latest = (last.band.start, last.band.stop)
    in_band = max(groups.values(), key=lambda g: (len(g), (g[-1].band.start, g[-1].band.stop) == latest))
    last_in_band = in_band[-1]
    df = last.fs / last.n
    env_df = df  # the envelope spectra have the block's bin spacing
    band_power = _mean([b.band_power for b in in_band])
    band_sk = float(_mean([b.band.kurtosis for b in in_band]))
    band = dataclasses.replace(last_in_band.band, kurtosis=band_sk)
    spectra = (
        EnvelopeSpectrum(env_df, np.sqrt(band_power), band.low_hz, band.high_hz, band_sk,
                         _label(f"band {band.low_hz:.0f}-{band.high_hz:.0f} Hz", len(in_band)), len(in_band)),
        EnvelopeSpectrum(env_df, np.sqrt(_mean([b.whitened_power for b in blocks])), 0.0, last.fs / 2,
                         float(_mean([b.whitened_kurtosis for b in blocks])),
                         _label("whitened full band", len(blocks)), len(blocks)),
    )
    shaft_hz = float(_mean([b.shaft_hz for b in blocks]))
    found = findings_from_spectra(band, spectra, last.n / last.fs, shaft_hz, bearing, tolerance=slip_tolerance)
    plan = _plan(last.n, last.fs)
    accel = _mean([b.accel_power for b in blocks])
    ftf_hz = bearing.ftf * found.shaft_hz
    _, cage = _lines_at(accel, plan.velocity_weight, _lines_plan(len(accel), df, (ftf_hz,),
                                                                 (max(slip_tolerance * ftf_hz, df),)), 1)
    cage_line = bool(cage[0])  # what `_line_rms` gives for the one line
    evidence = location_evidence(found, bearing, cage_line=cage_line, given_shaft_hz=shaft_hz,
                                 tolerance=slip_tolerance)
    answer = bearing_answer(evidence, calibration)
    fam = found.families
    return AveragedDiagnosis(
        blocks=len(blocks), band_blocks=len(in_band),
        fault=answer.fault if answer else "normal", confidence=answer.confidence if answer else 0.0,
        diagnosis=answer.entries if answer else (),
        bpfo=fam["outer_race"].fundamental_db, bpfi=fam["inner_race"].fundamental_db,
        bsf=fam["ball"].fundamental_db, ftf=fam["cage"].fundamental_db, findings=found,
        evidence=evidence, severity=answer.severity if answer else 0.0,
    )


def redecided(avg: AveragedDiagnosis, calibration: LocationCalibration) -> AveragedDiagnosis:
    """The same averaged evidence decided with another calibration (each cross-validation fold's)."""
    answer = bearing_answer(avg.evidence, calibration)
    return dataclasses.replace(avg, fault=answer.fault if answer else "normal",
                               confidence=answer.confidence if answer else 0.0,
                               diagnosis=answer.entries if answer else (),
                               severity=answer.severity if answer else 0.0)


def with_averaged(ind: VibrationIndicators, avg: AveragedDiagnosis,
                  calibration: LocationCalibration = CALIBRATION) -> VibrationIndicators:
    """`ind` with the averaged bearing finding added, if the block alone shows no bearing fault.

    Only a bearing fault the block misses is added (a block's own finding rests on direct
    evidence and is kept as it is); its entries join the block's diagnosis, the averaged answer
    becomes `fault` unless a mechanical fault is more confident, and health is capped by the
    averaged severity as for a per-block bearing fault. The line heights (bpfo...) stay the
    block's own. With a shaft speed estimated from the spectrum (`ind.rpm_source`) the averaged
    answer is decided again as such (`calibration`: the one the averager used).
    """
    if ind.rpm_source == "estimated" and not avg.evidence.speed_estimated:
        avg = redecided(dataclasses.replace(avg, evidence=dataclasses.replace(avg.evidence, speed_estimated=True)),
                        calibration)
    if avg.fault not in BEARING_ANSWERS or not avg.diagnosis:
        return ind
    if ind.fault in BEARING_ANSWERS or any(e.fault in BEARING_ANSWERS and e.confidence >= REPORT_THRESHOLD
                                           for e in ind.diagnosis):
        return ind
    note = f" [shaft speed estimated: {ind.rpm:.0f} r/min]" if ind.rpm_source == "estimated" else ""
    added = [DiagnosisEntry(e.fault, e.confidence, e.evidence + note) for e in avg.diagnosis]
    kept = [e for e in ind.diagnosis if e.fault != "normal" and e.fault not in BEARING_ANSWERS]
    entries = sorted([*kept, *added], key=lambda e: -e.confidence)
    top = next((e for e in entries if e is added[0] or e.confidence >= REPORT_THRESHOLD), added[0])
    health = round(min(ind.health, 100.0 - BEARING_HEALTH_WEIGHT * avg.severity), 1)
    return dataclasses.replace(ind, fault=top.fault, confidence=top.confidence,
                               diagnosis=tuple(entries), health=health)


class EnvelopeAverager:
    """Rolling window of the last `blocks` blocks' envelope spectra of one sensor.

    `add` returns the diagnosis on the window including the new block. Memory is `blocks` small
    spectra (`BlockEnvelope`), whatever the run time. Not thread-safe: one sensor, one caller at a
    time.
    """

    def __init__(self, bearing: BearingDefects, *, blocks: int = 8,
                 slip_tolerance: float = DEFAULT_SLIP_TOLERANCE,
                 calibration: LocationCalibration = CALIBRATION) -> None:
        if blocks < 1:
            raise ValueError(f"blocks must be 1 or more, got {blocks!r}")
        self.bearing = bearing
        self.calibration = calibration
        self.blocks = blocks
        self.slip_tolerance = slip_tolerance
        self._window: deque[BlockEnvelope] = deque(maxlen=blocks)
        self._band: Band | None = None
        # The shaft rate that fixed the window's spectrum range and candidate bands. It stays while
        # the window rolls: taken from whichever block is oldest, a jittering speed would change the
        # range by a bin and no two blocks could be averaged any more.
        self._reference_hz: float | None = None
        self._since_band = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._window)

    def reset(self) -> None:
        self._window.clear()
        self._band = None
        self._reference_hz = None
        self._since_band = 0

    def _fits(self, n: int, fs: float, shaft_hz: float) -> bool:
        if not self._window or self._reference_hz is None:
            return True
        first = self._window[0]
        return (n == first.n and fs == first.fs
                and abs(shaft_hz / self._reference_hz - 1) <= 0.5 * self.slip_tolerance)

    def add(self, x: np.ndarray, fs: float, rpm: float, *, units: str = "g",
            analysis: BlockAnalysis | None = None) -> AveragedDiagnosis:
        """Average the block `x` (sample rate `fs`, shaft speed `rpm` r/min) into the window.

        A block of another length or sample rate, or a speed more than half the slip tolerance
        off the window's reference, starts a new window. A block that cannot be analysed raises
        ValueError and is not added. analysis: `analyze_block_evidence` of this same block `x`
        (same units): its transform, band kurtosis and envelope spectra are reused where the
        window's settings give the same computation (`block_envelope`); the result is the same.
        """
        shaft_hz = rpm / 60.0
        fits = self._fits(len(np.asarray(x)), float(fs), shaft_hz)
        reference = self._reference_hz if fits and self._window else None
        block = block_envelope(x, fs, shaft_hz=shaft_hz, bearing=self.bearing,
                               band=self._band if fits else None, reference_hz=reference, units=units,
                               slip_tolerance=self.slip_tolerance,
                               analysed=analysis.block if analysis is not None else None)
        if not fits:
            self.reset()
            self.resets += 1
        if self._reference_hz is None:
            self._reference_hz = shaft_hz
        dropped = self._window[0] if len(self._window) == self._window.maxlen else None
        self._window.append(block)
        if self._band is None:
            self._band = block.band
        try:
            result = diagnose_averaged(self._window, self.bearing, slip_tolerance=self.slip_tolerance,
                                       calibration=self.calibration)
        except ValueError:
            self._window.pop()
            if dropped is not None:
                self._window.appendleft(dropped)
            raise
        self._since_band += 1
        if self._since_band >= self.blocks:
            self._since_band = 0
            best = choose_band(self._window)
            if (best.start, best.stop) != (self._band.start, self._band.stop):
                self._band = best
        return result
