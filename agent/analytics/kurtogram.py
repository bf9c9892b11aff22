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


@dataclass(frozen=True, slots=True, eq=False)
class KurtogramLevel:
    """All bands of one width: `starts` are first bins, each band spans `width` bins.

    The first `on_grid` bands start at multiples of `hop` (half the width); a last band ending at
    the Nyquist bin may be off that grid. Compared and hashed by identity (the levels come from the
    cached `kurtogram_levels`), so the band layout of a tuple of levels is cached too (`_levels_plan`).
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
    return _bands_kurtosis(spectrum, (level,))


GROUP_ELEMENTS = 2  # levels are done in groups of at most this many times the largest level's elements


@dataclass(frozen=True, slots=True, eq=False)
class _LevelSlot:
    """Where one level's bands lie in its group's work buffer, and its taper as complex64 (the product
    numpy computes for the real taper, without a cast per call)."""

    offset: int  # first element in the group's buffer
    count: int  # bands
    level: KurtogramLevel
    taper: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class _LevelGroup:
    """Consecutive levels whose bands share one work buffer: one power pass and one sum per group."""

    size: int  # elements of the buffer the group fills
    first_band: int  # its bands' range in the kurtosis of all bands
    end_band: int
    band_starts: np.ndarray  # each band's first element in the buffer
    slots: tuple[_LevelSlot, ...]


@dataclass(frozen=True, slots=True, eq=False)
class _LevelsPlan:
    """For a tuple of levels: where every band's bins come from and where each band lies in a work buffer.

    The levels are taken in groups of consecutive levels (at most GROUP_ELEMENTS times the largest
    level's elements each). A group's bands lie one after the other in one work buffer (level by
    level, band by band): each level's bands are tapered into it from a strided view of the
    spectrum and inverse transformed in place (one batched FFT per level), then the power and the
    sums over each band are one numpy call each per group. The work buffers are only as large as a
    group, which keeps the memory one block takes (and so returns to the allocator) no larger than
    a level-by-level pass needs.
    """

    groups: tuple[_LevelGroup, ...]
    largest: int  # elements of the largest group
    band_widths: np.ndarray  # float64 width of every band
    band_level: np.ndarray  # index (into the levels) of every band's level
    band_bins: np.ndarray  # first spectrum bin of every band
    bounds: np.ndarray  # where each level's bands end in the kurtosis array (for np.split)


def _level_group(members: list[KurtogramLevel], first_band: int) -> _LevelGroup:
    slots, starts, offset = [], [], 0
    for level in members:
        count, width = len(level.starts), level.width
        taper = level.taper.astype(np.complex64)
        taper.setflags(write=False)
        slots.append(_LevelSlot(offset, count, level, taper))
        starts.append(offset + width * np.arange(count, dtype=np.intp))
        offset += count * width
    band_starts = np.concatenate(starts)
    band_starts.setflags(write=False)
    return _LevelGroup(offset, first_band, first_band + len(band_starts), band_starts, tuple(slots))


@functools.lru_cache(maxsize=64)
def _levels_plan(levels: tuple[KurtogramLevel, ...]) -> _LevelsPlan:
    """The plan for `levels` (cached by identity: the levels come from the cached `kurtogram_levels`)."""
    limit = GROUP_ELEMENTS * max(len(level.starts) * level.width for level in levels)
    groups: list[_LevelGroup] = []
    members: list[KurtogramLevel] = []
    for level in levels:
        size = len(level.starts) * level.width
        if members and sum(len(m.starts) * m.width for m in members) + size > limit:
            groups.append(_level_group(members, groups[-1].end_band if groups else 0))
            members = []
        members.append(level)
    groups.append(_level_group(members, groups[-1].end_band if groups else 0))
    plan = _LevelsPlan(
        tuple(groups),
        max(group.size for group in groups),
        np.concatenate([np.full(len(level.starts), float(level.width)) for level in levels]),
        np.concatenate([np.full(len(level.starts), i) for i, level in enumerate(levels)]),
        np.concatenate([level.starts for level in levels]),
        np.cumsum([len(level.starts) for level in levels])[:-1],
    )
    for array in (plan.band_widths, plan.band_level, plan.band_bins, plan.bounds):
        array.setflags(write=False)  # shared by every call
    return plan


def _levels_kurtosis(spectrum: np.ndarray, levels: tuple[KurtogramLevel, ...]) -> list[np.ndarray]:
    """SK of every band of each level, one array per level (`_bands_kurtosis` split by level)."""
    if not levels:
        return []
    return np.split(_bands_kurtosis(spectrum, levels), _levels_plan(levels).bounds)


def _bands_kurtosis(spectrum: np.ndarray, levels: tuple[KurtogramLevel, ...]) -> np.ndarray:
    """SK of every band of `levels`, level after level; single precision (numpy >= 2 FFTs keep it), ample
    for ranking.

    Group by group (`_levels_plan`), in one set of work buffers: each level's bands are tapered
    in (those on the hop grid from a strided view of the spectrum: no copy) and inverse transformed
    in place (one batched FFT per level), then every band's power and squared power of the group
    summed in double precision with one `reduceat` each. `spectrum` should already be complex64
    (`_single`).
    """
    if not levels:
        return np.zeros(0)
    plan = _levels_plan(levels)
    spectrum = np.ascontiguousarray(spectrum, dtype=np.complex64)
    step = spectrum.strides[0]
    buffer = np.empty(plan.largest, dtype=np.complex64)
    single = np.empty(plan.largest, dtype=np.float32)
    wide = np.empty(plan.largest, dtype=np.float64)
    sums = np.empty(len(plan.band_widths))
    squares = np.empty(len(plan.band_widths))
    for group in plan.groups:
        size = group.size
        bands = buffer[:size]
        for slot in group.slots:
            level, count, taper = slot.level, slot.count, slot.taper
            width = level.width
            rows = bands[slot.offset:slot.offset + count * width].reshape(count, width)
            # the bands on the hop grid are a strided view of the spectrum (np.ndarray: no copy, no checks)
            grid = np.ndarray((level.on_grid, width), np.complex64, spectrum, 0, (level.hop * step, step))
            np.multiply(grid, taper, out=rows[:level.on_grid])
            for row in range(level.on_grid, count):  # a last band ending at the Nyquist bin, off the grid
                start = int(level.starts[row])
                np.multiply(spectrum[start:start + width], taper, out=rows[row])
            np.fft.ifft(rows, axis=1, out=rows)
        parts = bands.view(np.float32).reshape(-1, 2)
        np.multiply(parts, parts, out=parts)  # the buffer is scratch: real and imaginary parts squared in place
        power = wide[:size]
        np.add(parts[:, 0], parts[:, 1], out=single[:size])
        power[:] = single[:size]
        np.add.reduceat(power, group.band_starts, out=sums[group.first_band:group.end_band])
        np.multiply(power, power, out=power)
        np.add.reduceat(power, group.band_starts, out=squares[group.first_band:group.end_band])
    mean = sums / plan.band_widths
    fourth = squares / plan.band_widths
    sk = np.full(len(mean), -np.inf)  # a band without power cannot be chosen
    live = mean > 0
    np.divide(fourth, mean**2, out=sk, where=live)
    np.subtract(sk, 2.0, out=sk, where=live)
    return sk


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
    return _select_band(spectrum, df, min_width_hz, 0.0)


@functools.lru_cache(maxsize=64)
def _wide_levels(n_bins: int, df: float, min_width_hz: float) -> tuple[KurtogramLevel, ...]:
    """The levels of `kurtogram_levels(n_bins)` whose bands are at least `min_width_hz` wide (cached)."""
    return tuple(level for level in kurtogram_levels(n_bins) if level.width * df >= min_width_hz)


def _select_band(spectrum: np.ndarray, df: float, min_width_hz: float, min_low_hz: float
                 ) -> tuple[Band, np.ndarray]:
    """`select_band`, and the kurtosis of every band at least `min_width_hz` wide (level after level).

    The first maximum over the levels' bands in order is the band a level-by-level search keeping
    the first strictly higher band picks.
    """
    single = _single(spectrum)
    if min_low_hz <= 0:  # every band starts at or above 0 Hz: all levels wide enough, all bands allowed
        levels = _wide_levels(len(spectrum), df, min_width_hz)
        chosen = []
    else:
        chosen = []
        for level in _wide_levels(len(spectrum), df, min_width_hz):
            allowed = level.starts * df >= min_low_hz
            if allowed.any():
                chosen.append((level, allowed))
        levels = tuple(level for level, _ in chosen)
    sk = _bands_kurtosis(single, levels)
    if levels:
        ranked = sk if not chosen else np.where(np.concatenate([allowed for _, allowed in chosen]), sk, -np.inf)
        i = int(np.argmax(ranked))
        plan = _levels_plan(levels)
        level, start = levels[int(plan.band_level[i])], int(plan.band_bins[i])
        return Band(start, start + level.width, start * df, (start + level.width) * df, float(ranked[i])), sk
    all_levels = kurtogram_levels(len(spectrum))
    top = all_levels[0] if all_levels else KurtogramLevel(len(spectrum), np.zeros(1, np.intp),
                                                          np.ones(len(spectrum), dtype=np.float32))
    whole = float(_level_kurtosis(single, top)[0])
    return Band(0, len(spectrum), 0.0, (len(spectrum)) * df, whole), sk


@functools.lru_cache(maxsize=64)
def candidate_bands(n_bins: int, df: float, min_width_hz: float) -> tuple[tuple[int, int], ...]:
    """(start, stop) bins of every kurtogram band at least `min_width_hz` wide, in `select_band` order."""
    return tuple((int(start), int(start) + level.width) for level in kurtogram_levels(n_bins)
                 if level.width * df >= min_width_hz for start in level.starts)


def candidate_kurtosis(spectrum: np.ndarray, df: float, min_width_hz: float) -> np.ndarray:
    """Spectral kurtosis of each of `candidate_bands`: what several blocks' band choice is averaged from.

    The first maximum of this array is the band `select_band` picks for the same width floor.
    """
    return _bands_kurtosis(_single(spectrum), _wide_levels(len(spectrum), df, min_width_hz))
