"""Spectral kurtosis band selection: where in frequency are the bearing impacts?

A bearing defect produces a train of short impacts that ring a structural resonance. Somewhere in
the spectrum these impacts dominate, and there the band-passed signal is impulsive: its envelope
has a high kurtosis. Elsewhere gear meshing, shaft harmonics and noise make it Gaussian (spectral
kurtosis 0) or even sub-Gaussian (a steady tone: -1). Demodulating the most impulsive band is what
makes the envelope spectrum show the defect lines (Antoni & Randall 2006, "The spectral kurtosis:
application to the vibratory surveillance and diagnostics of rotating machines", MSSP 20(2)).

This is a frequency-domain equivalent of Antoni's fast kurtogram (MSSP 21(1), 2007), written in
numpy only (the edge install has no scipy): bands of widths fs/2, fs/2/sqrt(2), fs/4, ... overlap
by half, each shaped by a Hann taper over its support so that adjacent bands sum to one. The
complex envelope of a band is the inverse FFT of its (tapered) spectrum bins, which is already the
band signal shifted to baseband and decimated to the band width; all bands of one width are done
by one batched inverse FFT. The spectral kurtosis of a band is
    SK = E|c|^4 / (E|c|^2)^2 - 2,
zero for Gaussian noise, -1 for a pure tone, large for sparse impacts.

The one-sided spectrum is computed once by the caller and shared with the other indicators.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Band",
    "KurtogramLevel",
    "candidate_bands",
    "candidate_kurtosis",
    "fast_length",
    "kurtogram",
    "kurtogram_levels",
    "select_band",
    "select_band_with_kurtosis",
]

MIN_BAND_BINS = 64  # fewer samples give a kurtosis estimate too noisy to rank bands with


@dataclass(frozen=True, slots=True)
class Band:
    """A demodulation band: spectrum bins [start, stop) and their spectral kurtosis."""

    start: int
    stop: int
    low_hz: float
    high_hz: float
    kurtosis: float

    @property
    def width_hz(self) -> float:
        return self.high_hz - self.low_hz


@dataclass(frozen=True, slots=True)
class KurtogramLevel:
    """All bands of one width: `starts` are first bins, each band spans `width` bins.

    The first `on_grid` bands start at multiples of `hop` (half the width), which lets them be
    read as a strided view of the spectrum; a last band ending at the Nyquist bin may be off it.
    """

    width: int
    starts: np.ndarray
    taper: np.ndarray
    hop: int = 1
    on_grid: int = 0


@functools.lru_cache(maxsize=256)
def fast_length(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (FFT-friendly), like scipy's next_fast_len."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=64)
def kurtogram_levels(n_bins: int) -> tuple[KurtogramLevel, ...]:
    """Band layout for a one-sided spectrum of `n_bins` bins: widths fall by sqrt(2) per level.

    Cached per spectrum length, so an agent analysing fixed-size blocks computes it once.
    """
    levels: list[KurtogramLevel] = []
    span = n_bins - 1
    seen: set[int] = set()
    level = 0
    while True:
        target = span / 2 ** (level / 2)
        if target < MIN_BAND_BINS:
            break
        width = min(fast_length(round(target)), n_bins)
        level += 1
        if width in seen:
            continue
        seen.add(width)
        hop = max(width // 2, 1)
        starts = list(range(0, n_bins - width + 1, hop))
        if starts[-1] != n_bins - width:
            starts.append(n_bins - width)  # last band ends at the Nyquist bin
        taper = (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(width) + 0.5) / width)).astype(np.float32)
        first = np.asarray(starts, dtype=np.intp)
        on_grid = int(np.sum(first == np.arange(len(first)) * hop))
        levels.append(KurtogramLevel(width, first, taper, hop, on_grid))
    return tuple(levels)


def _single(spectrum: np.ndarray) -> np.ndarray:
    """The spectrum in single precision, once per kurtogram (every level reads it)."""
    return spectrum.astype(np.complex64, copy=False)


def _level_kurtosis(spectrum: np.ndarray, level: KurtogramLevel) -> np.ndarray:
    """SK of every band of one level (`_levels_kurtosis` for a single level)."""
    return _levels_kurtosis(spectrum, (level,))[0]


@dataclass(frozen=True, slots=True)
class _LevelsLayout:
    """For levels of given (bands, width): each band's first element in its level's flat buffer."""

    band_starts: tuple[np.ndarray, ...]  # per level
    band_widths: np.ndarray  # float64 width of every band, all levels in order
    largest: int  # elements of the largest level


@functools.lru_cache(maxsize=64)
def _levels_layout(shapes: tuple[tuple[int, int], ...]) -> _LevelsLayout:
    """Layout for levels of (bands, width) `shapes` (cached: an agent sees few block sizes)."""
    starts = tuple(width * np.arange(count, dtype=np.intp) for count, width in shapes)
    widths = np.concatenate([np.full(count, float(width)) for count, width in shapes])
    for array in (*starts, widths):
        array.setflags(write=False)  # shared by every call
    return _LevelsLayout(starts, widths, max(count * width for count, width in shapes))


def _levels_kurtosis(spectrum: np.ndarray, levels: tuple[KurtogramLevel, ...]) -> list[np.ndarray]:
    """SK of every band of each level; single precision (numpy >= 2 FFTs keep it), ample for ranking.

    The levels take turns in one set of buffers (each level while it is in cache): its tapered
    bands are written in, inverse transformed in place (one batched FFT per level), and the sums of
    every band's power and squared power (double precision) taken with one `reduceat` each; the
    kurtosis of all bands is then one pass. Few numpy calls per level, no per-level allocations.
    `spectrum` should already be complex64 (`_single`).
    """
    if not levels:
        return []
    layout = _levels_layout(tuple((len(level.starts), level.width) for level in levels))
    spectrum = np.ascontiguousarray(spectrum, dtype=np.complex64)
    buffer = np.empty(layout.largest, dtype=np.complex64)
    power = np.empty(layout.largest, dtype=np.float32)
    wide = np.empty(layout.largest, dtype=np.float64)
    sums = np.empty(len(layout.band_widths))
    squares = np.empty(len(layout.band_widths))
    step = spectrum.strides[0]
    first = 0
    for level, starts in zip(levels, layout.band_starts, strict=True):
        count, width = len(level.starts), level.width
        size = count * width
        bands = buffer[:size].reshape(count, width)
        # the bands on the hop grid are a strided view of the spectrum (np.ndarray: no copy, no checks)
        grid = np.ndarray((level.on_grid, width), np.complex64, spectrum, 0, (level.hop * step, step))
        np.multiply(grid, level.taper, out=bands[: level.on_grid])
        for row in range(level.on_grid, count):
            start = int(level.starts[row])
            np.multiply(spectrum[start:start + width], level.taper, out=bands[row])
        np.fft.ifft(bands, axis=1, out=bands)
        c = buffer[:size]
        p = power[:size]
        np.multiply(c.real, c.real, out=p)
        imag = c.imag
        np.multiply(imag, imag, out=imag)  # the buffer is scratch: no temporary
        p += imag
        w = wide[:size]
        w[:] = p
        np.add.reduceat(w, starts, out=sums[first:first + count])
        np.multiply(w, w, out=w)
        np.add.reduceat(w, starts, out=squares[first:first + count])
        first += count
    mean = sums / layout.band_widths
    fourth = squares / layout.band_widths
    sk = np.full(len(mean), -np.inf)  # a band without power cannot be chosen
    live = mean > 0
    np.divide(fourth, mean**2, out=sk, where=live)
    np.subtract(sk, 2.0, out=sk, where=live)
    bounds = np.cumsum([len(level.starts) for level in levels])[:-1]
    return np.split(sk, bounds)


def kurtogram(spectrum: np.ndarray, df: float) -> list[tuple[float, float, np.ndarray]]:
    """Spectral kurtosis of every band: [(width_hz, first band low edge spacing_hz, sk per band)].

    For display: each entry is (band width in Hz, hop in Hz between band starts, SK array).
    """
    out = []
    levels = kurtogram_levels(len(spectrum))
    for level, sk in zip(levels, _levels_kurtosis(_single(spectrum), levels), strict=True):
        hop = float(level.starts[1] - level.starts[0]) * df if len(level.starts) > 1 else 0.0
        out.append((level.width * df, hop, sk))
    return out


def select_band(
    spectrum: np.ndarray, df: float, *, min_width_hz: float = 0.0, min_low_hz: float = 0.0
) -> Band:
    """The most impulsive band at least `min_width_hz` wide whose low edge is at or above `min_low_hz`.

    `spectrum` is the one-sided FFT of the block (numpy.fft.rfft), `df` its bin spacing. The width
    floor keeps the defect lines and their harmonics inside the demodulated band (an envelope
    cannot show modulation faster than the band is wide). If no band satisfies the limits the
    whole spectrum is used.
    """
    return _select_band(spectrum, df, min_width_hz, min_low_hz)[0]


def select_band_with_kurtosis(spectrum: np.ndarray, df: float, *, min_width_hz: float = 0.0
                              ) -> tuple[Band, np.ndarray]:
    """`select_band` and `candidate_kurtosis` of the same block from one computation of the kurtosis.

    The envelope averager chooses its band from the candidates' kurtosis; computing them once serves
    both the block's own band choice and the average.
    """
    band, parts = _select_band(spectrum, df, min_width_hz, 0.0)
    return band, np.concatenate(parts) if parts else np.zeros(0)


def _select_band(spectrum: np.ndarray, df: float, min_width_hz: float, min_low_hz: float
                 ) -> tuple[Band, list[np.ndarray]]:
    """`select_band`, and the kurtosis of every band at least `min_width_hz` wide (level by level)."""
    best: Band | None = None
    single = _single(spectrum)
    chosen = []
    for level in kurtogram_levels(len(spectrum)):
        if level.width * df < min_width_hz:
            continue
        allowed = level.starts * df >= min_low_hz
        if allowed.any():
            chosen.append((level, allowed))
    levels = tuple(level for level, _ in chosen)
    parts = _levels_kurtosis(single, levels)
    for (level, allowed), sk in zip(chosen, parts, strict=True):
        if not allowed.all():
            sk = np.where(allowed, sk, -np.inf)
        i = int(np.argmax(sk))
        if best is None or sk[i] > best.kurtosis:
            start = int(level.starts[i])
            best = Band(start, start + level.width, start * df, (start + level.width) * df, float(sk[i]))
    if best is None:
        levels = kurtogram_levels(len(spectrum))
        top = levels[0] if levels else KurtogramLevel(len(spectrum), np.zeros(1, np.intp),
                                                       np.ones(len(spectrum), dtype=np.float32))
        sk = float(_level_kurtosis(single, top)[0])
        best = Band(0, len(spectrum), 0.0, (len(spectrum)) * df, sk)
    return best, parts


@functools.lru_cache(maxsize=64)
def candidate_bands(n_bins: int, df: float, min_width_hz: float) -> tuple[tuple[int, int], ...]:
    """(start, stop) bins of every kurtogram band at least `min_width_hz` wide, in `select_band` order."""
    return tuple((int(start), int(start) + level.width) for level in kurtogram_levels(n_bins)
                 if level.width * df >= min_width_hz for start in level.starts)


def candidate_kurtosis(spectrum: np.ndarray, df: float, min_width_hz: float) -> np.ndarray:
    """Spectral kurtosis of each of `candidate_bands`: what several blocks' band choice is averaged from.

    The first maximum of this array is the band `select_band` picks for the same width floor.
    """
    levels = tuple(level for level in kurtogram_levels(len(spectrum)) if level.width * df >= min_width_hz)
    parts = _levels_kurtosis(_single(spectrum), levels)
    return np.concatenate(parts) if parts else np.zeros(0)
