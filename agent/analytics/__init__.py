"""Pure analytics of the agent: interval summaries and vibration indicators (numpy only, no I/O)."""

from agent.analytics.averaging import AveragedDiagnosis, EnvelopeAverager, with_averaged
from agent.analytics.bearings import CATALOGUE, BearingDefects, BearingGeometry, bearing_defects, lookup
from agent.analytics.iso10816 import ZONE_BOUNDARIES_MM_S, iso_zone, velocity_band_hz, zone_boundaries
from agent.analytics.vibration import (
    FAULTS,
    RPM_SOURCES,
    BearingFindings,
    DiagnosisEntry,
    VibrationIndicators,
    analyze_block,
    bearing_findings,
    estimate_shaft_hz,
)

__all__ = [
    "CATALOGUE",
    "FAULTS",
    "RPM_SOURCES",
    "ZONE_BOUNDARIES_MM_S",
    "AveragedDiagnosis",
    "BearingDefects",
    "BearingFindings",
    "BearingGeometry",
    "DiagnosisEntry",
    "EnvelopeAverager",
    "VibrationIndicators",
    "analyze_block",
    "bearing_defects",
    "bearing_findings",
    "estimate_shaft_hz",
    "iso_zone",
    "lookup",
    "velocity_band_hz",
    "with_averaged",
    "zone_boundaries",
]
