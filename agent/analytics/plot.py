"""A one-page PNG of a vibration diagnosis: waveform, spectra and the envelope evidence.

Optional: needs matplotlib (`pip install 'facility-twin[plot]'`), imported only when a plot is
drawn, so the edge install stays numpy-only. The figure shows what the diagnosis looked at: the
acceleration waveform, the velocity spectrum with the shaft harmonics, the acceleration spectrum
with the demodulation band chosen by spectral kurtosis, and the squared envelope spectrum that
holds the strongest bearing evidence with each defect family's expected lines marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.analytics.bearings import BearingDefects
from agent.analytics.iso10816 import velocity_band_hz
from agent.analytics.vibration import STANDARD_GRAVITY, VibrationIndicators, bearing_findings

__all__ = ["plot_diagnosis"]

_FAMILY_COLOURS = {"outer_race": "tab:red", "inner_race": "tab:blue", "ball": "tab:green", "cage": "tab:purple"}


def plot_diagnosis(path: str | Path, x: np.ndarray, fs: float, indicators: VibrationIndicators,
                   bearing: BearingDefects | None, *, units: str = "g", title: str = "") -> Path:
    """Write the PNG to `path` and return it; RuntimeError if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'facility-twin[plot]'") from None

    xg = np.asarray(x, dtype=np.float64)
    if units != "g":
        xg = xg / STANDARD_GRAVITY
    xg = xg - xg.mean()
    n = len(xg)
    fr = indicators.rpm / 60.0
    spectrum = np.fft.rfft(xg)
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    window = np.hanning(n)
    amp = np.abs(np.fft.rfft(xg * window)) * 2 / window.sum()  # peak amplitude, g
    velocity = np.zeros_like(amp)
    velocity[1:] = amp[1:] * STANDARD_GRAVITY * 1000 / (2 * np.pi * freqs[1:]) / np.sqrt(2)  # mm/s r.m.s.

    fig, axes = plt.subplots(4, 1, figsize=(11, 13))
    fig.suptitle(f"{title}\nfault {indicators.fault} ({indicators.confidence:.2f}), health "
                 f"{indicators.health:.0f}/100, ISO zone {indicators.iso_zone} "
                 f"({indicators.velocity_rms_mm_s:.2f} mm/s), {indicators.rpm:.0f} r/min ({indicators.rpm_source})")

    t = np.arange(n) / fs
    axes[0].plot(t, xg, lw=0.4)
    axes[0].set(xlabel="time (s)", ylabel="acceleration (g)",
                title=f"waveform: r.m.s. {indicators.accel_rms:.3f} g, crest {indicators.crest_factor:.1f}, "
                f"kurtosis {indicators.kurtosis:.1f}")

    low, high = velocity_band_hz(indicators.rpm)
    band = (freqs >= low) & (freqs <= min(high, fs / 2))
    axes[1].plot(freqs[band], velocity[band], lw=0.6)
    for h in (1, 2, 3):
        axes[1].axvline(h * fr, color="tab:orange", ls="--", lw=0.8)
        axes[1].text(h * fr, axes[1].get_ylim()[1] * 0.9, f"{h}x", color="tab:orange")
    axes[1].set(xlabel="frequency (Hz)", ylabel="velocity (mm/s r.m.s.)",
                title=f"velocity spectrum, ISO band {low:g}-{high:g} Hz")

    axes[2].semilogy(freqs, np.maximum(amp, 1e-12), lw=0.4)
    lo, hi = indicators.envelope_band_hz
    if hi > lo:
        axes[2].axvspan(lo, hi, color="tab:green", alpha=0.2,
                        label=f"demodulation band (SK {indicators.band_kurtosis:.1f})")
        axes[2].legend(loc="upper right")
    axes[2].set(xlabel="frequency (Hz)", ylabel="acceleration (g)", title="acceleration spectrum")

    if bearing is None:
        axes[3].text(0.5, 0.5, "no bearing configured: no envelope analysis", ha="center", va="center",
                     transform=axes[3].transAxes)
        axes[3].set_axis_off()
    else:
        found = bearing_findings(spectrum, n, fs, fr, bearing)
        best = max(found.families.values(), key=lambda ev: ev.strength_db)
        es = next(s for s in found.spectra if s.label == best.source)
        top = max(line.hz for ev in found.families.values() for line in ev.lines) * 1.1
        keep = es.freqs <= top
        axes[3].plot(es.freqs[keep], es.amplitude[keep], lw=0.6, color="0.3")
        for fault, ev in found.families.items():
            for k, line in enumerate(ev.lines):
                axes[3].axvline(line.hz, color=_FAMILY_COLOURS[fault], lw=0.8, ls="-" if k == 0 else ":",
                                alpha=0.8, label=f"{fault} ({ev.fundamental_db:.0f} dB)" if k == 0 else None)
        axes[3].legend(loc="upper right", fontsize="small")
        axes[3].set(xlabel="frequency (Hz)", ylabel="squared envelope",
                    title=f"squared envelope spectrum, {es.label}: solid = defect frequency, dotted = "
                    "harmonics and sidebands")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
