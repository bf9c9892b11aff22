"""Where each bearing defect family shows in the envelope spectra of a block (pure numpy, no I/O).

`bearing_findings` demodulates the block (the band of highest spectral kurtosis, and the whole
pre-whitened band), then `findings_from_spectra` searches every defect family in each envelope
spectrum: one fundamental within the slip tolerance, its harmonics and the sidebands the physics
expects (agent.analytics.envelope.measure_family). The result, `BearingFindings`, is evidence
only; agent.analytics.diagnosis turns it into a diagnosis.

`discriminating_lines` says which harmonics of a family can tell it from the others at all: the
defect frequencies of one bearing are tied together (BPFO + BPFI = Z x shaft rate, BPFO = Z x FTF),
so some harmonics of one family fall inside the slip window of another's lines (for a 6205,
3 x BPFO is 0.7 % from 2 x BPFI). Such a line is evidence of a bearing defect, not of where it is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from agent.analytics.bearings import BearingDefects
from agent.analytics.envelope import (
    SIGNIFICANT_DB,
    EnvelopeSpectrum,
    FamilyEvidence,
    FamilySet,
    LineSpec,
    band_envelope_spectrum,
    family_set,
    search_families,
    shaft_lines_of,
    whitened_envelope_spectrum,
)
from agent.analytics.kurtogram import Band, select_band_with_kurtosis

__all__ = [
    "BEARING_FAMILIES",
    "DEFAULT_SLIP_TOLERANCE",
    "LOCATION_FAMILIES",
    "MIN_REVOLUTIONS_TO_REFINE",
    "SPEED_TOLERANCE",
    "BearingFindings",
    "Demodulation",
    "bearing_findings",
    "defect_families",
    "demodulate",
    "discriminating_lines",
    "envelope_limits",
    "findings_from_spectra",
]

DEFAULT_SLIP_TOLERANCE = 0.02  # rolling elements slip 1-2 % against the shaft
SPEED_TOLERANCE = 0.03  # how far a given speed may be from the shaft lines it is re-measured from
MIN_REVOLUTIONS_TO_REFINE = 64  # block length, in shaft turns, needed to re-measure the speed
BEARING_FAMILIES = ("outer_race", "inner_race", "ball", "cage")
LOCATION_FAMILIES = ("outer_race", "inner_race", "ball")  # the defect locations a diagnosis can name


@dataclass(frozen=True, slots=True)
class BearingFindings:
    """Everything the bearing analysis measured; `analyze_block` keeps the summary, plots use all.

    families: per family, the evidence of the spectrum where it is clearest (present first, then
    strongest). per_spectrum: per envelope spectrum (same order as `spectra`), every family's
    evidence in it; the diagnosis compares families within one spectrum.
    """

    band: Band
    spectra: tuple[EnvelopeSpectrum, ...]
    families: dict[str, FamilyEvidence] = field(default_factory=dict)
    shaft_hz: float = 0.0  # shaft rate the families were searched around (re-measured when possible)
    per_spectrum: tuple[dict[str, FamilyEvidence], ...] = ()


def defect_families(defects: BearingDefects, fr: float) -> dict[str, tuple[float, tuple[LineSpec, ...]]]:
    """Each family's nominal fundamental (Hz) and the lines searched with it, at shaft rate `fr`."""
    return dict(_defect_families(defects, fr))


@functools.lru_cache(maxsize=64)
def _defect_families(defects: BearingDefects, fr: float) -> tuple[tuple[str, tuple[float, tuple[LineSpec, ...]]], ...]:
    """`defect_families` as a tuple, cached: a configured speed gives the same lines block after block."""
    ftf_hz = defects.ftf * fr
    return tuple({
        "outer_race": (defects.bpfo * fr, (
            LineSpec(1, 0, "BPFO"), LineSpec(2, 0, "2xBPFO"), LineSpec(3, 0, "3xBPFO"))),
        "inner_race": (defects.bpfi * fr, (
            LineSpec(1, 0, "BPFI"), LineSpec(2, 0, "2xBPFI"), LineSpec(3, 0, "3xBPFI"),
            LineSpec(1, -fr, "BPFI-1x"), LineSpec(1, fr, "BPFI+1x"),
            LineSpec(2, -fr, "2xBPFI-1x"), LineSpec(2, fr, "2xBPFI+1x"))),
        "ball": (2 * defects.bsf * fr, (
            LineSpec(1, 0, "2xBSF"), LineSpec(2, 0, "4xBSF"), LineSpec(0.5, 0, "BSF"),
            LineSpec(1, -ftf_hz, "2xBSF-FTF"), LineSpec(1, ftf_hz, "2xBSF+FTF"))),
        "cage": (ftf_hz, (
            LineSpec(1, 0, "FTF"), LineSpec(2, 0, "2xFTF"), LineSpec(3, 0, "3xFTF"),
            LineSpec(-1, fr, "1x-FTF"), LineSpec(1, fr, "1x+FTF"))),
    }.items())


@functools.lru_cache(maxsize=64)
def _defect_family_set(defects: BearingDefects, fr: float) -> FamilySet:
    """`defect_families` laid out for `search_families` (cached, so is the search layout built on it)."""
    return family_set(dict(_defect_families(defects, fr)))


def _overlap(a: float, b: float, tolerance: float) -> bool:
    """Whether two lines' search windows (each +/- tolerance around it) overlap."""
    return abs(a - b) <= tolerance * (abs(a) + abs(b))


@functools.lru_cache(maxsize=64)
def discriminating_lines(defects: BearingDefects, tolerance: float = DEFAULT_SLIP_TOLERANCE
                         ) -> dict[str, tuple[int, ...]]:
    """Indices (into `defect_families`' lines) of the harmonics that only one location family explains.

    A harmonic of a location family (outer race, inner race, ball) is discriminating when its
    slip window overlaps no window of any line (harmonic or sideband) of the other location
    families. Rolling-element lines are also checked against the harmonics of the cage rate:
    cage-rate modulation accompanies race defects too (rolling elements of unequal size or load
    pass the defect), and a ball line that a cage harmonic could be is read like a cage-rate line,
    which points to the rolling elements only when no race family is present. (For the 6205,
    2 x BSF is 11.83 FTF, 1.4 % from the 12th cage harmonic: the ball family has no discriminating
    line and rolling-element defects are located through the cage-rate reading.)
    Everything is in shaft orders, so the answer depends only on the multipliers and the tolerance.
    """
    families = defect_families(defects, 1.0)
    lines = {fault: [spec.order * base + spec.offset_hz for spec in specs] for fault, (base, specs) in families.items()}
    top = max(abs(hz) for fault in LOCATION_FAMILIES for hz in lines[fault])
    cage_harmonics = [k * defects.ftf for k in range(1, math.ceil(top * (1 + 2 * tolerance) / defects.ftf) + 1)]
    out: dict[str, tuple[int, ...]] = {}
    for fault in LOCATION_FAMILIES:
        base, specs = families[fault]
        others = [hz for other in LOCATION_FAMILIES if other != fault for hz in lines[other]]
        if fault == "ball":
            others += cage_harmonics
        out[fault] = tuple(
            i for i, spec in enumerate(specs)
            if spec.offset_hz == 0 and spec.order >= 1 and float(spec.order).is_integer()
            and not any(_overlap(spec.order * base, hz, tolerance) for hz in others)
        )
    return out


def envelope_limits(defects: BearingDefects, fr: float, tolerance: float) -> tuple[float, float]:
    """(narrowest demodulation band, highest envelope frequency kept) in Hz for a shaft rate `fr`.

    The band must hold the highest line searched (third BPFI harmonic plus a shaft sideband, or
    4 x BSF, with slip and speed tolerance) twice over: an envelope cannot carry modulation faster
    than about half the band width without losing it to the band edges.
    """
    widest = max(defects.bpfi * 3 * (1 + tolerance) + 1, 2 * defects.bsf * 2 * (1 + tolerance) + 1)
    top_line = widest * fr * (1 + SPEED_TOLERANCE)
    return 2.0 * top_line, top_line * 1.2 + 0.5 * fr


@dataclass(frozen=True, slots=True)
class Demodulation:
    """One block's two envelope spectra and the band choice behind them.

    spectra: the band's and the pre-whitened block's envelope spectrum (up to `max_hz`);
    candidate_kurtosis: the spectral kurtosis of every candidate band at least `min_width_hz`
    wide (`agent.analytics.kurtogram.candidate_kurtosis`), from which `band` is the most impulsive.
    The envelope averager reuses all of it when its own settings for the block are the same.
    """

    band: Band
    spectra: tuple[EnvelopeSpectrum, EnvelopeSpectrum]
    candidate_kurtosis: np.ndarray
    min_width_hz: float
    max_hz: float


def demodulate(spectrum: np.ndarray, n: int, fs: float, fr: float, defects: BearingDefects, *,
               tolerance: float = DEFAULT_SLIP_TOLERANCE) -> Demodulation:
    """The band with the highest spectral kurtosis at least `envelope_limits` wide, demodulated, and
    the pre-whitened block's envelope spectrum, from the block's one-sided FFT."""
    min_width_hz, max_hz = envelope_limits(defects, fr, tolerance)
    df = fs / n
    band, sk = select_band_with_kurtosis(spectrum, df, min_width_hz=min_width_hz)
    spectra = (
        band_envelope_spectrum(spectrum, n, df, band.start, band.stop, band.kurtosis, max_hz=max_hz),
        whitened_envelope_spectrum(spectrum, df, max_hz=max_hz),
    )
    return Demodulation(band, spectra, sk, min_width_hz, max_hz)


def bearing_findings(spectrum: np.ndarray, n: int, fs: float, fr: float, defects: BearingDefects, *,
                     tolerance: float = DEFAULT_SLIP_TOLERANCE, refine_speed: bool = True) -> BearingFindings:
    """Envelope evidence for each bearing defect family, from the block's one-sided FFT.

    The band with the highest spectral kurtosis at least `envelope_limits` wide is demodulated,
    and the pre-whitened block gives a second envelope spectrum (`demodulate`);
    `findings_from_spectra` searches both.
    """
    demodulated = demodulate(spectrum, n, fs, fr, defects, tolerance=tolerance)
    return findings_from_spectra(demodulated.band, demodulated.spectra, n / fs, fr, defects, tolerance=tolerance,
                                 refine_speed=refine_speed)


def _significant_lines(ev: FamilyEvidence) -> int:
    return sum(line.snr_db >= SIGNIFICANT_DB for line in ev.lines)


def findings_from_spectra(band: Band, spectra: tuple[EnvelopeSpectrum, ...], seconds: float, fr: float,
                          defects: BearingDefects, *, tolerance: float = DEFAULT_SLIP_TOLERANCE,
                          refine_speed: bool = True) -> BearingFindings:
    """Search every defect family in envelope spectra covering `seconds` of signal (one block or an average).

    A configured speed is often 1-2 % off the real one (a motor's slip changes with load), and the
    defect lines slip another 1-2 % against the shaft, which together can push a line out of its
    search window. So when the shaft clearly modulates the envelope (at least two of 1x-4x stand
    SIGNIFICANT_DB out) the shaft rate is re-measured from those lines within +/- SPEED_TOLERANCE
    and the defect families are searched around it. That needs a block of at least
    MIN_REVOLUTIONS_TO_REFINE shaft turns: then the search window at 4x spans 15 bins or more and
    the estimate is good to about 0.2 %; in shorter blocks a 1x line is itself several percent
    wide and the given speed is kept. `refine_speed=False` always keeps it. Shaft harmonics present
    in an envelope spectrum are excluded from the evidence (`shaft_harmonic_mask`).
    """
    shaft_hz = fr
    if refine_speed and fr * seconds >= MIN_REVOLUTIONS_TO_REFINE:
        shafts = shaft_lines_of(spectra, fr, tolerance=SPEED_TOLERANCE, background_hz=0.5 * fr)
        clearest = max(shafts, key=lambda ev: (_significant_lines(ev), ev.strength_db))
        if _significant_lines(clearest) >= 2:
            shaft_hz = clearest.base_hz
    families = _defect_family_set(defects, shaft_hz)
    per_spectrum = search_families(spectra, families, tolerance=tolerance, background_hz=0.5 * shaft_hz,
                                   shaft_hz=shaft_hz)
    measured = {fault: max((found[fault] for found in per_spectrum), key=lambda ev: (ev.present, ev.strength_db))
                for fault in families.names}
    return BearingFindings(band, spectra, measured, shaft_hz, tuple(per_spectrum))

