"""Squared-envelope spectra and the evidence of bearing defect lines in them.

Bearing impacts ring a resonance far above the defect frequency; the defect rate survives only in
the envelope of the ringing. The squared envelope spectrum (SES) of a band shows the impact rate
as lines at the defect frequency and its harmonics (Randall & Antoni 2011, "Rolling element bearing
diagnostics - a tutorial", MSSP 25(2)). Two spectra are computed here, both from the one-sided
FFT the caller already has (numpy only; the "Hilbert transform" is keeping the positive bins):

* `band_envelope_spectrum`: the band chosen by spectral kurtosis (agent.analytics.kurtogram);
* `whitened_envelope_spectrum`: the whole band after pre-whitening (every bin set to unit
  magnitude, which is cepstral pre-whitening with the whole real cepstrum removed). Whitening
  removes discrete gear/shaft tones and the resonance shape, so weak cyclostationary content
  shows without a band choice (Borghesani et al. 2013, MSSP 36(2)).

`measure_family` searches one defect family (a fundamental inside a slip tolerance, its
harmonics and expected sidebands, all kept consistent with one fundamental) and reports each
line's height above the local median of the spectrum in dB. In a noise-like spectrum the bin
amplitudes are Rayleigh distributed, so a bin exceeds the median by r (amplitude ratio) with
probability exp(-ln2 r^2): about 1e-3 for 10 dB and 2e-5 for 12 dB. A family counts as present
when its fundamental and one supporting line both reach 12 dB; in 600 blocks of Gaussian noise
and of noise with shaft and mains tones that never happens (tests/unit/test_vibration.py).

An envelope spectrum that is the mean of N blocks' spectra (agent.analytics.averaging) has
steadier noise: the power of a noise bin is then Gamma(N) distributed, and the per-bin false-alarm
probability of 12 dB in one block is reached at 9.1 dB (N = 2), 6.9 dB (4), 5.2 dB (8).
`measure_family` reports heights in such a spectrum as single-block-equivalent dB (the height
that is as unlikely in one block, `single_block_equivalent_db`), so every threshold stays as is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.analytics.kurtogram import fast_length

__all__ = [
    "SIGNIFICANT_DB",
    "EnvelopeSpectrum",
    "FamilyEvidence",
    "FamilySet",
    "LineEvidence",
    "LineSpec",
    "band_envelope_spectrum",
    "family_set",
    "measure_families",
    "measure_family",
    "search_families",
    "shaft_harmonic_mask",
    "shaft_harmonic_masks",
    "shaft_lines",
    "shaft_lines_of",
    "single_block_equivalent_db",
    "whitened_envelope_spectrum",
]

SIGNIFICANT_DB = 12.0  # a line this far above the local median counts as present (see module doc)
MIN_LINE_BINS = 8  # a line nearer 0 Hz sits in the window's DC leakage: the block spans < 8 periods
MIN_BACKGROUND_BINS = 8  # each side of a line, so that the median is a stable estimate
SHAFT_GUARD_BINS = 2  # bins either side of a present shaft harmonic (its Hann main lobe): not evidence
SHAFT_PRESENT_DB = SIGNIFICANT_DB / 2  # weaker shaft harmonics cannot fake a significant line
SHAFT_REFINE_HARMONICS = 4  # harmonics used to pin down the actual shaft rate
_EPS = 1e-300
CONVERSION_MARGIN_DB = 3.0  # heights below -3 dB are not converted to single-block equivalents (`_heights`)


@dataclass(frozen=True, slots=True)
class EnvelopeSpectrum:
    """Amplitude spectrum of the squared envelope, bins at k * df from 0 Hz.

    `amplitude` is in (input unit)^2 for a band spectrum and dimensionless for a whitened one;
    only ratios to the local background are used for diagnosis. `blocks` > 1: the amplitude is
    the root of the mean power of that many blocks' spectra (line heights are then converted to
    single-block-equivalent dB by `measure_family`).
    """

    df: float
    amplitude: np.ndarray
    low_hz: float
    high_hz: float
    kurtosis: float
    label: str
    blocks: int = 1

    @property
    def freqs(self) -> np.ndarray:
        return np.arange(len(self.amplitude)) * self.df


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A line of a defect family at `order * f + offset_hz`, f being the family's fundamental."""

    order: float
    offset_hz: float
    label: str


@dataclass(frozen=True, slots=True)
class LineEvidence:
    label: str
    hz: float
    snr_db: float


@dataclass(frozen=True, slots=True)
class FamilyEvidence:
    """How clearly one defect family shows in one envelope spectrum.

    `lines[0]` is the fundamental; the others are harmonics and sidebands that support it.
    `support_db` (the best supporting line's height, 0 without any) is worked out once.
    """

    fault: str
    base_hz: float
    lines: tuple[LineEvidence, ...]
    source: str
    support_db: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "support_db", max((line.snr_db for line in self.lines[1:]), default=0.0))

    @property
    def fundamental_db(self) -> float:
        return self.lines[0].snr_db

    @property
    def support(self) -> LineEvidence | None:
        return max(self.lines[1:], key=lambda line: line.snr_db, default=None)

    @property
    def strength_db(self) -> float:
        """Mean of the fundamental's and the best supporting line's height: one number per family."""
        return 0.5 * (self.lines[0].snr_db + self.support_db)

    @property
    def present(self) -> bool:
        """The fundamental and at least one harmonic or sideband stand out of the background."""
        return self.lines[0].snr_db >= SIGNIFICANT_DB and self.support_db >= SIGNIFICANT_DB


@functools.lru_cache(maxsize=64)
def _tukey(width: int) -> np.ndarray:
    """Band taper: flat, with raised-cosine quarters at each edge (cached: the same widths recur).

    Complex (imaginary part 0): the product with a complex spectrum is then the one numpy computes
    for a real taper, without casting the taper on every call.
    """
    taper = np.ones(width)
    edge = max(width // 4, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(edge) + 0.5) / edge)
    taper[:edge] = ramp
    taper[width - edge:] = ramp[::-1]
    complex_taper = taper.astype(complex)
    complex_taper.setflags(write=False)
    return complex_taper


@functools.lru_cache(maxsize=32)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (cached: the same block sizes recur)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    window.setflags(write=False)
    return window


def _squared_envelope(z: np.ndarray) -> np.ndarray:
    """|z|^2 (real^2 + imag^2) of a scratch complex signal (squared in place: one temporary array fewer)."""
    parts = z.view(z.real.dtype).reshape(-1, 2)
    np.multiply(parts, parts, out=parts)
    return np.add(parts[:, 0], parts[:, 1])


def _ses(power: np.ndarray, df: float, low_hz: float, high_hz: float, kurtosis: float, label: str,
         max_hz: float, mean: float | None = None) -> EnvelopeSpectrum:
    """Spectrum of a squared envelope (`power`, changed in place; `mean`: its mean if known), up to `max_hz`."""
    power -= np.add.reduce(power) / len(power) if mean is None else mean  # = power.mean(), without its wrapper
    window = _hann(len(power))
    power *= window
    spec = np.fft.rfft(power)
    keep = min(len(spec), int(max_hz / df) + 2) if max_hz > 0 else len(spec)
    return EnvelopeSpectrum(df, np.abs(spec[:keep]) * (2.0 / (0.5 * len(power))), low_hz, high_hz, kurtosis,
                            label)


@functools.lru_cache(maxsize=64)
def _log_factorials(blocks: int) -> tuple[float, ...]:
    return tuple(math.lgamma(k + 1.0) for k in range(blocks))


def _pairwise_sum(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Elementwise sum of `parts` in the order numpy's pairwise summation adds a row of that many terms.

    (Sequential below 8 terms, else 8 running sums joined as a tree.) So the result is exactly
    what `np.stack(parts, axis=-1).sum(axis=-1)` gives, without a reduction over a short inner axis.
    """
    if len(parts) < 8:
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total
    tail = len(parts) % 8
    acc = list(parts[:8])
    for i in range(8, len(parts) - tail, 8):
        for j in range(8):
            acc[j] = acc[j] + parts[i + j]
    total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for part in parts[len(parts) - tail:]:
        total = total + part
    return total


def _log_tail(y: np.ndarray, blocks: int) -> np.ndarray:
    """ln P(Gamma(blocks, 1) > y): ln(exp(-y) sum_{k<blocks} y^k / k!), closed form for an integer shape.

    The sum is taken as a log-sum-exp over the terms k ln y - ln k!, held as a leading axis of one
    array: every step is one elementwise pass over all terms, the maximum is a reduction over that
    leading axis (term after term, like a running maximum) and the sum is added term by term in
    pairwise order (numpy's reductions over a short last axis cost several times more).
    """
    if blocks > 128:  # beyond one block of numpy's pairwise summation: its order is not reproduced here
        k = np.arange(blocks)
        terms = k * np.log(np.maximum(y, 1e-300))[..., None] - np.array(_log_factorials(blocks))
        top = terms.max(axis=-1)
        return -y + top + np.log(np.exp(terms - top[..., None]).sum(axis=-1))
    log_y = np.log(np.maximum(y, 1e-300))
    shape = (blocks,) + (1,) * log_y.ndim
    k = np.arange(blocks, dtype=np.float64).reshape(shape)
    terms = k * log_y - np.array(_log_factorials(blocks)).reshape(shape)
    top = np.maximum.reduce(terms, axis=0)
    return -y + top + np.log(_pairwise_sum(list(np.exp(terms - top))))


@functools.lru_cache(maxsize=64)
def _gamma_median(blocks: int) -> float:
    """Median of the sum of `blocks` unit exponentials (bisection on the closed-form tail)."""
    lo, hi = 0.0, 2.0 * blocks + 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _log_tail(np.array(mid), blocks) > math.log(0.5) else (lo, mid)
    return 0.5 * (lo + hi)


def single_block_equivalent_db(height_db: np.ndarray, blocks: int) -> np.ndarray:
    """Height in one block's spectrum that noise reaches as rarely as `height_db` in a mean of `blocks`.

    In one block a noise bin's power is exponential: it exceeds r times the median with
    probability 2^-r. In the mean of `blocks` independent blocks it is Gamma(blocks), whose tail
    has a closed form; the equivalent single-block ratio is -log2 of that tail. Identity for
    `blocks` = 1; the median (0 dB) maps to 0 dB for every `blocks`.
    """
    heights = np.asarray(height_db, dtype=np.float64)
    if blocks <= 1:
        return heights
    ratio = 10.0 ** (np.minimum(heights, 200.0) / 10.0)  # power over the median
    minus_log_tail = -_log_tail(ratio * _gamma_median(blocks), blocks)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.maximum(minus_log_tail, 0.0) / math.log(2))


def band_envelope_spectrum(spectrum: np.ndarray, n: int, df: float, start: int, stop: int,
                           kurtosis: float, *, max_hz: float = 0.0) -> EnvelopeSpectrum:
    """SES of the spectrum bins [start, stop) of a length-`n` block, with Tukey (50 %) band edges.

    The complex envelope is padded to twice the band width so that the squared envelope, whose
    spectrum is twice as wide as the band, is not aliased. The amplitude is in (input unit)^2.
    """
    width = stop - start
    length = fast_length(2 * width)
    padded = np.zeros(length, dtype=complex)
    np.multiply(spectrum[start:stop], _tukey(width), out=padded[:width])
    z = np.fft.ifft(padded, out=padded)  # in place: the padded band is scratch
    z *= 2.0 * length / n  # analytic band signal, in input units
    return _ses(_squared_envelope(z), df, start * df, stop * df, kurtosis,
                f"band {start * df:.0f}-{stop * df:.0f} Hz", max_hz)


def whitened_envelope_spectrum(spectrum: np.ndarray, df: float, *, low_hz: float = 0.0,
                               max_hz: float = 0.0) -> EnvelopeSpectrum:
    """SES of the pre-whitened block: every bin from `low_hz` to Nyquist at unit magnitude."""
    start = max(1, math.ceil(low_hz / df))
    bins = spectrum[start:]
    length = fast_length(2 * len(bins))
    padded = np.zeros(length, dtype=complex)
    magnitude = np.abs(bins)
    np.divide(bins, np.maximum(magnitude, _EPS, out=magnitude), out=padded[: len(bins)])
    power = _squared_envelope(np.fft.ifft(padded, out=padded))  # in place: the padded bins are scratch
    mean = np.add.reduce(power) / len(power)  # = power.mean(), without its wrapper
    # einsum, not np.dot: a BLAS dot spins helper threads that cost more CPU than the sum itself
    kurt = float(np.einsum("i,i->", power, power) / len(power) / mean**2 - 2.0) if mean > 0 else 0.0
    return _ses(power, df, start * df, len(spectrum) * df, kurt, "whitened full band", max_hz, mean)


@dataclass(frozen=True, slots=True, eq=False)
class _Windows:
    """Background windows of lines in a spectrum: `gather` (lines, widest) indexes the spectrum with
    one +inf bin appended (index = length: unused places); `middle` is each sorted window's median."""

    gather: np.ndarray
    middle: np.ndarray
    rows: np.ndarray  # arange(lines)


@dataclass(frozen=True, slots=True, eq=False)
class _LineBins:
    """Where lines are read in a spectrum: bin `idx` (clipped into it), `peak` (= idx - 1, its place in
    `_three_bin_maxima`), and `valid`: the line can count at all (far enough from 0 Hz, inside, usable)."""

    idx: np.ndarray
    peak: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class _SearchPlan:
    """Everything of a family search in spectra of one length and bin spacing that the data do not change."""

    candidates: np.ndarray  # (families, candidates) fundamentals, 0 past each family's grid
    freqs: np.ndarray  # (candidates, lines) every line's frequency at every candidate fundamental
    lines: _LineBins  # where the lines are read (padded candidates are not usable)
    windows: _Windows  # background windows: the shaft harmonics' first, then the lines' nominal ones
    harmonics: _LineBins | None  # where the shaft harmonics are read (None without any)
    guard: np.ndarray  # (harmonics, 2 SHAFT_GUARD_BINS + 1) bins masked around each, past the end: length
    line_index: np.ndarray
    peak: np.ndarray  # `_three_bin_maxima` place of the harmonics, then of every (candidate, line)
    background: np.ndarray  # the `windows` column of each of them
    valid: np.ndarray  # each of them can count at all (`_LineBins.valid`)


def _median_windows(length: int, df: float, freqs: np.ndarray, background_hz: float) -> _Windows:
    """Where the background windows of `freqs` lie in a spectrum of `length` bins (see `_local_medians`)."""
    half = np.maximum(np.minimum(background_hz, 0.5 * np.abs(freqs)), MIN_BACKGROUND_BINS * df)
    half_bins = np.rint(half / df).astype(np.intp)
    centre = np.rint(freqs / df).astype(np.intp)
    lo = np.maximum(centre - half_bins, 1)
    width = np.minimum(centre + half_bins + 1, length) - lo
    usable = (freqs > 0) & (width >= 2 * MIN_BACKGROUND_BINS)
    width = np.where(usable, width, 0)
    offsets = np.arange(max(int(width.max(initial=0)), 1))
    inside = offsets[None, :] < width[:, None]
    gather = np.where(inside, np.minimum(lo[:, None] + offsets[None, :], length - 1), length)
    return _Windows(gather, width // 2, np.arange(len(freqs)))


def _padded(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """(spectra, length + 1): the rows stacked, with one +inf bin past the end (what unused window places read)."""
    padded = np.empty((len(rows), length + 1))
    for i, row in enumerate(rows):
        padded[i, :length] = row
    padded[:, length] = np.inf
    return padded


def _medians(padded: np.ndarray, windows: _Windows) -> np.ndarray:
    """(spectra, lines): each row's median in each window of `_padded` spectra; +inf for a line without one."""
    values = padded[:, windows.gather]
    values.sort(axis=-1)
    return values[:, windows.rows, windows.middle]


def _local_medians(amps: np.ndarray, df: float, freqs: np.ndarray, background_hz: float) -> np.ndarray:
    """(spectra, lines): median of each spectrum (a row of `amps`) within +/- min(background_hz, f/2)
    (>= MIN_BACKGROUND_BINS bins) of each line frequency f.

    Windows are clipped to the spectrum; lines at or below 0 Hz or without room for a window get
    +inf (no line can stand out there). Every window of every spectrum at once: the windows are
    gathered into one array padded with +inf to the widest, sorted, and each row's median (the
    upper one for an even width) picked at its own width's middle.
    """
    return _medians(_padded(amps, amps.shape[1]), _median_windows(amps.shape[1], df, freqs, background_hz))


def _line_bins(length: int, df: float, freqs: np.ndarray, usable: np.ndarray | bool = True) -> _LineBins:
    """Where lines at `freqs` are read in a spectrum of `length` bins (see `_heights`)."""
    top = length - 2
    idx = np.rint(freqs / df).astype(np.intp)
    valid = (idx >= MIN_LINE_BINS) & (idx <= top) & usable
    idx = np.minimum(np.maximum(idx, 1), max(top, 1))  # np.clip, without its wrapper's overhead
    return _LineBins(idx, idx - 1, valid)


def _three_bin_maxima(amps: np.ndarray) -> np.ndarray:
    """(spectra, bins - 2): the maximum of bins k, k + 1, k + 2 of each row (a line at bin k + 1 is read there)."""
    return np.maximum(np.maximum(amps[:, :-2], amps[:, 1:-1]), amps[:, 2:])


def _snr(peak: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Height in dB of amplitudes `peak` over `background` (same shape)."""
    with np.errstate(divide="ignore"):
        return 20 * np.log10(np.maximum(peak, _EPS) / np.maximum(background, _EPS))


def _as_single_block(snr: np.ndarray, valid: np.ndarray, blocks: int) -> None:
    """Heights in a mean of `blocks` spectra converted, in place, to single-block-equivalent dB.

    Only what callers read is converted: they keep the positive part of valid heights, and the
    conversion maps a height at or below 0 dB (the median) to 0 dB or less. Converted element by
    element, each value is what converting the whole array gives; the margin keeps rounding near
    0 dB out.
    """
    if blocks > 1:
        wanted = valid & (snr > -CONVERSION_MARGIN_DB)
        snr[wanted] = single_block_equivalent_db(snr[wanted], blocks)


def _heights_at(peaks: np.ndarray, bins: _LineBins, blocks: int, background: np.ndarray,
                excludes: np.ndarray | None) -> np.ndarray:
    """`_heights` from the spectra's `_three_bin_maxima` and the lines' `_line_bins`."""
    valid = bins.valid[None] & np.isfinite(background)[:, None, :]
    if excludes is not None:
        valid &= ~excludes[:, bins.idx]
    snr = _snr(peaks[:, bins.peak], np.broadcast_to(background[:, None, :], (len(peaks), *bins.peak.shape)))
    _as_single_block(snr, valid, blocks)
    return np.where(valid, snr, 0.0)


def _heights(amps: np.ndarray, df: float, blocks: int, freqs: np.ndarray, background: np.ndarray,
             excludes: np.ndarray | None, usable: np.ndarray | bool = True) -> np.ndarray:
    """(spectra, candidates, lines): height in dB of each spectrum at `freqs` (candidates x lines)
    over its `background` (spectra x lines); only the positive part of a height is meaningful.

    The amplitude is the maximum of the nearest three bins (it absorbs the Hann window's
    scalloping). 0 where a line cannot count: nearer 0 Hz than MIN_LINE_BINS, past the spectrum,
    without a background, in an excluded bin (`excludes`: spectra x bins), or not `usable`.
    Single-block-equivalent dB for averaged spectra (`blocks` > 1).
    """
    if amps.shape[1] < 3:  # no bin is both MIN_LINE_BINS from 0 Hz and inside the spectrum
        return np.zeros((amps.shape[0], *np.shape(freqs)))
    return _heights_at(_three_bin_maxima(amps), _line_bins(amps.shape[1], df, freqs, usable), blocks, background,
                       excludes)


def _alike(spectra: Sequence[EnvelopeSpectrum]) -> dict[tuple[int, float, int], list[int]]:
    """Indices of the spectra that can be stacked: same length, bin spacing and number of blocks."""
    groups: dict[tuple[int, float, int], list[int]] = {}
    for i, es in enumerate(spectra):
        groups.setdefault((len(es.amplitude), es.df, es.blocks), []).append(i)
    return groups


@dataclass(frozen=True, slots=True, eq=False)
class FamilySet:
    """Defect families (name -> (base_hz, lines)) laid out as the arrays `search_families` works on.

    Build it once with `family_set` for families searched again and again (a configured speed gives
    the same families block after block): the search's layout for each spectrum length is then
    cached with it. Compared and hashed by identity.
    """

    names: tuple[str, ...]
    specs: tuple[tuple[LineSpec, ...], ...]
    bases: np.ndarray  # each family's nominal fundamental
    orders: np.ndarray  # every line's order, family after family
    offsets: np.ndarray  # every line's offset in Hz
    family_of_line: np.ndarray
    line_starts: np.ndarray  # each family's first line
    nominal: np.ndarray  # every line's nominal frequency
    labels: tuple[str, ...]  # every line's label
    slices: tuple[tuple[str, int, int], ...]  # each family's name, first line and end


def family_set(families: Mapping[str, tuple[float, Sequence[LineSpec]]]) -> FamilySet:
    """`families` (name -> (base_hz, lines)) as a `FamilySet`."""
    names = tuple(families)
    specs = tuple(tuple(families[name][1]) for name in names)
    counts = np.array([len(lines) for lines in specs])
    bases = np.array([families[name][0] for name in names], dtype=np.float64)
    orders = np.array([line.order for lines in specs for line in lines], dtype=np.float64)
    offsets = np.array([line.offset_hz for lines in specs for line in lines], dtype=np.float64)
    family_of_line = np.repeat(np.arange(len(names)), counts)
    line_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ends = np.cumsum(counts).tolist()
    return FamilySet(names, specs, bases, orders, offsets, family_of_line, line_starts,
                     orders * bases[family_of_line] + offsets, tuple(line.label for lines in specs for line in lines),
                     tuple(zip(names, line_starts.tolist(), ends, strict=True)))


@functools.lru_cache(maxsize=64)
def _search_plan(families: FamilySet, length: int, df: float, tolerance: float, background_hz: float,
                 shaft_hz: float) -> _SearchPlan:
    """The search layout of `families` in spectra of `length` bins spaced `df` (cached per family set)."""
    grids = []
    for base, lines in zip(families.bases, families.specs, strict=True):
        step = df / max(max(abs(line.order) for line in lines), 1.0) / 2
        span = base * tolerance
        grids.append(base + np.arange(-span, span + step / 2, step) if span > 0 else np.array([base]))
    n_candidates = np.array([len(grid) for grid in grids])
    candidates = np.zeros((len(families.names), int(n_candidates.max())))
    for i, grid in enumerate(grids):
        candidates[i, :len(grid)] = grid
    line_of = families.family_of_line
    padded = np.arange(candidates.shape[1])[:, None] >= n_candidates[line_of][None, :]
    freqs = candidates[line_of].T * families.orders[None, :] + families.offsets[None, :]
    harmonics = _harmonics(length, df, shaft_hz)
    lines = _line_bins(length, df, freqs, ~padded)
    harmonic_bins = _line_bins(length, df, harmonics[None, :])
    count = len(harmonics)
    return _SearchPlan(candidates, freqs, lines,
                       _median_windows(length, df, np.concatenate((harmonics, families.nominal)), background_hz),
                       harmonic_bins if count else None, _guard_bins(harmonics, df, length),
                       np.arange(len(families.orders)),
                       np.concatenate((harmonic_bins.peak.ravel(), lines.peak.ravel())),
                       np.concatenate((np.arange(count), count + np.tile(np.arange(freqs.shape[1]), freqs.shape[0]))),
                       np.concatenate((harmonic_bins.valid.ravel(), lines.valid.ravel())))


def _guard_bins(harmonics: np.ndarray, df: float, length: int) -> np.ndarray:
    """(harmonics, 2 SHAFT_GUARD_BINS + 1): the bins masked around each harmonic; `length` for those outside."""
    guard = np.rint(harmonics / df).astype(np.intp)[:, None] + np.arange(-SHAFT_GUARD_BINS, SHAFT_GUARD_BINS + 1)
    return np.where((guard >= 0) & (guard < length), guard, length)


def _reported_from(db: float) -> float:
    """The smallest height whose report (rounded to 0.01 dB by `round`) is at least `db`.

    `round` rises with its argument, so "reported >= db" is "height >= this" for a whole array at once.
    """
    lo, hi = db - 0.01, db  # round(lo, 2) < db <= round(hi, 2): bisect to adjacent floats
    while math.nextafter(lo, math.inf) < hi:
        mid = lo + (hi - lo) / 2
        lo, hi = (lo, mid) if round(mid, 2) >= db else (mid, hi)
    return hi


_SHAFT_REPORTED_FROM = _reported_from(SHAFT_PRESENT_DB)


def search_families(
    spectra: Sequence[EnvelopeSpectrum],
    families: Mapping[str, tuple[float, Sequence[LineSpec]]] | FamilySet,
    *,
    tolerance: float,
    background_hz: float,
    excludes: Sequence[np.ndarray | None] | None = None,
    shaft_hz: float = 0.0,
) -> list[dict[str, FamilyEvidence]]:
    """`measure_family` for several families (name -> (base_hz, lines), or a `family_set`) in several
    spectra at once.

    Spectra of the same length, bin spacing and block count are stacked, and one array holds
    every family's candidate fundamentals (padded to the longest grid) times every line, so the
    whole search is a handful of numpy operations instead of a pass per family and spectrum;
    each result is what `measure_family` gives for that family in that spectrum alone. What does
    not depend on the spectra's values (candidates, bins, background windows) is laid out once
    per family set and spectrum length (`_search_plan`).
    `excludes`: one bin mask (or None) per spectrum. `shaft_hz` > 0 also excludes the harmonics of
    that rate present in each spectrum (`shaft_harmonic_masks`; their backgrounds are taken in the
    same pass as the families' lines).
    """
    fset = families if isinstance(families, FamilySet) else family_set(families)
    results: list[dict[str, FamilyEvidence]] = [{} for _ in spectra]
    for (length, df, blocks), members in _alike(spectra).items():
        plan = _search_plan(fset, length, df, tolerance, background_hz, shaft_hz)
        padded = _padded([spectra[m].amplitude for m in members], length)
        masks = [excludes[m] for m in members] if excludes is not None else []
        stacked_masks = None
        if any(mask is not None for mask in masks):
            stacked_masks = np.stack([mask if mask is not None else np.zeros(length, dtype=bool) for mask in masks])
        if length < 3:  # no line can count (`_heights`): every height 0
            snr = np.zeros((len(members), *plan.freqs.shape))
        else:
            # the harmonics' and the lines' heights in one pass (`_heights_at` of each, with the lines'
            # validity known only once the present harmonics are masked)
            background = _medians(padded, plan.windows)
            heights = _snr(_three_bin_maxima(padded[:, :length])[:, plan.peak], background[:, plan.background])
            readable = plan.valid & np.isfinite(background)[:, plan.background]
            # converted in one pass: a line later masked by a present harmonic is converted for nothing,
            # but each value is what converting it alone gives
            _as_single_block(heights, readable, blocks)
            count = len(plan.guard)
            if plan.harmonics is not None:
                present = readable[:, :count] & (heights[:, :count] >= _SHAFT_REPORTED_FROM)
                guard = _guard_mask(present, plan.guard, length)
                stacked_masks = guard if stacked_masks is None else stacked_masks | guard
            shape = (len(members), *plan.freqs.shape)
            valid = readable[:, count:].reshape(shape)
            if stacked_masks is not None:
                valid &= ~stacked_masks[:, plan.lines.idx]
            snr = np.where(valid, heights[:, count:].reshape(shape), 0.0)
        # each family's best candidate: the summed positive heights of its lines (one reduceat for all
        # families; padded candidates sum to 0 after every real one, so argmax never picks them)
        positive = np.maximum(snr, 0.0)
        best = np.argmax(np.add.reduceat(positive, fset.line_starts, axis=2), axis=1)  # members x families
        at = best[:, fset.family_of_line]  # members x lines: the candidate each line is read at
        line_heights = positive[np.arange(len(members))[:, None], at, plan.line_index].tolist()
        line_hz = plan.freqs[at, plan.line_index].tolist()
        base_hz = plan.candidates[np.arange(len(fset.names)), best].tolist()
        for row, member in enumerate(members):
            found = [LineEvidence(label, hz, round(height, 2))
                     for label, hz, height in zip(fset.labels, line_hz[row], line_heights[row], strict=True)]
            source, bases, out = spectra[member].label, base_hz[row], results[member]
            for i, (name, first, end) in enumerate(fset.slices):
                out[name] = FamilyEvidence(name, bases[i], tuple(found[first:end]), source)
    return results


def _guard_mask(present: np.ndarray, guard: np.ndarray, length: int) -> np.ndarray:
    """(spectra, length) mask: the `guard` bins of each harmonic `present` (spectra x harmonics) in each spectrum."""
    masks = np.zeros((len(present), length + 1), dtype=bool)  # one bin past the end for guard bins outside
    rows, which = np.nonzero(present)
    masks[rows[:, None], guard[which]] = True
    return masks[:, :length]


def _present_guard(peaks: np.ndarray, harmonics: _LineBins, guard: np.ndarray, blocks: int,
                   background: np.ndarray) -> np.ndarray:
    """(spectra, bins) mask: the `guard` bins of each harmonic present in each spectrum.

    A harmonic counts when its height as reported (rounded to 0.01 dB) reaches SHAFT_PRESENT_DB.
    """
    present = _heights_at(peaks, harmonics, blocks, background, None)[:, 0, :] >= _SHAFT_REPORTED_FROM
    return _guard_mask(present, guard, peaks.shape[1] + 2)


def measure_families(
    es: EnvelopeSpectrum,
    families: Mapping[str, tuple[float, Sequence[LineSpec]]],
    *,
    tolerance: float,
    background_hz: float,
    exclude: np.ndarray | None = None,
) -> dict[str, FamilyEvidence]:
    """`measure_family` for several families (name -> (base_hz, lines)) of one spectrum at once."""
    return search_families([es], families, tolerance=tolerance, background_hz=background_hz,
                           excludes=[exclude])[0]


def measure_family(
    es: EnvelopeSpectrum,
    fault: str,
    base_hz: float,
    lines: Sequence[LineSpec],
    *,
    tolerance: float,
    background_hz: float,
    exclude: np.ndarray | None = None,
) -> FamilyEvidence:
    """Find the fundamental within base_hz * (1 +/- tolerance) that best explains all `lines`.

    Every candidate fundamental f is scored by the summed positive dB heights of its lines
    (order * f + offset); the best one is reported. One fundamental for all harmonics keeps the
    slip consistent across them and stops unrelated lines from being picked per harmonic. A
    line's height is its amplitude (maximum over the nearest three bins, which absorbs the
    scalloping of the Hann window) over the median of the spectrum within +/- `background_hz`
    (at most half the line frequency, at least MIN_BACKGROUND_BINS bins) around the line's
    nominal position. Lines closer to 0 Hz than MIN_LINE_BINS bins (the block is too short to
    resolve them) count as absent, so a family whose fundamental is that low cannot be present.
    `exclude` (one bool per spectrum bin) marks bins that are not evidence, such as shaft
    harmonics (`shaft_harmonic_mask`). Heights in an averaged spectrum (`es.blocks` > 1) are
    single-block-equivalent dB. Several families of one spectrum: `measure_families`.
    """
    return measure_families(es, {fault: (base_hz, lines)}, tolerance=tolerance, background_hz=background_hz,
                            exclude=exclude)[fault]


def shaft_lines(es: EnvelopeSpectrum, shaft_hz: float, *, tolerance: float,
                background_hz: float) -> FamilyEvidence:
    """The shaft rate within +/- tolerance of `shaft_hz` that best explains 1x-4x in `es`.

    Only the first SHAFT_REFINE_HARMONICS harmonics are used: higher ones would let strong defect
    lines pull the estimate. `base_hz` is the refined rate; each line's height says whether the
    shaft modulates the envelope at all (if not, `base_hz` means nothing).
    """
    return shaft_lines_of([es], shaft_hz, tolerance=tolerance, background_hz=background_hz)[0]


def shaft_lines_of(spectra: Sequence[EnvelopeSpectrum], shaft_hz: float, *, tolerance: float,
                   background_hz: float) -> list[FamilyEvidence]:
    """`shaft_lines` of each spectrum; spectra with the same harmonics are searched in one pass."""
    by_count: dict[int, list[int]] = {}
    for i, es in enumerate(spectra):
        count = min(int((len(es.amplitude) - 2) * es.df / (shaft_hz * (1 + tolerance))), SHAFT_REFINE_HARMONICS)
        by_count.setdefault(max(count, 1), []).append(i)
    out: dict[int, FamilyEvidence] = {}
    for count, members in by_count.items():
        found = search_families([spectra[i] for i in members], _shaft_family(shaft_hz, count), tolerance=tolerance,
                                background_hz=background_hz)
        out.update((i, result["shaft"]) for i, result in zip(members, found, strict=True))
    return [out[i] for i in range(len(spectra))]


@functools.lru_cache(maxsize=64)
def _shaft_family(shaft_hz: float, count: int) -> FamilySet:
    """The shaft rate's first `count` harmonics as a family (cached: a configured speed recurs)."""
    return family_set({"shaft": (shaft_hz, tuple(LineSpec(k, 0.0, f"{k}x") for k in range(1, count + 1)))})


def shaft_harmonic_masks(spectra: Sequence[EnvelopeSpectrum], shaft_hz: float, *,
                         background_hz: float) -> list[np.ndarray]:
    """Bins of each spectrum within SHAFT_GUARD_BINS of a shaft harmonic that is present in it.

    Looseness, rubs and misalignment modulate the envelope at 1x, 2x, 3x... shaft speed; those
    lines say nothing about the bearing, yet one can fall inside a defect line's slip window
    (e.g. 10x next to 2 x BPFI - 1x). Every harmonic of `shaft_hz` (give the refined rate,
    `shaft_lines`) at least SHAFT_PRESENT_DB above the background is masked, so a spectrum
    without shaft lines loses nothing. Half orders (looseness, rubs) are not masked: in a short
    block they are so dense that masking them would hide the defect lines too.
    (`search_families(..., shaft_hz=...)` applies these masks with one background pass for both.)
    """
    masks = [np.zeros(len(es.amplitude), dtype=bool) for es in spectra]
    for (length, df, blocks), members in _alike(spectra).items():
        freqs = _harmonics(length, df, shaft_hz)
        if len(freqs) == 0:
            continue
        amps = np.stack([spectra[m].amplitude for m in members])
        rows = _present_guard(_three_bin_maxima(amps), _line_bins(length, df, freqs[None, :]),
                              _guard_bins(freqs, df, length), blocks, _local_medians(amps, df, freqs, background_hz))
        for row, member in enumerate(members):
            masks[member] = rows[row]
    return masks


def _harmonics(length: int, df: float, shaft_hz: float) -> np.ndarray:
    """The shaft harmonics below the top of a spectrum of `length` bins."""
    count = int((length - 2) * df / shaft_hz) if shaft_hz > 0 else 0
    return np.arange(1, count + 1, dtype=np.float64) * shaft_hz


def shaft_harmonic_mask(es: EnvelopeSpectrum, shaft_hz: float, *, background_hz: float) -> np.ndarray:
    """`shaft_harmonic_masks` for one spectrum."""
    return shaft_harmonic_masks([es], shaft_hz, background_hz=background_hz)[0]
