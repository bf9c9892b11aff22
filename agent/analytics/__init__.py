"""Pure analytics of the agent: interval summaries and vibration indicators (numpy only, no I/O)."""

from agent.analytics.averaging import AveragedDiagnosis, EnvelopeAverager, with_averaged
from agent.analytics.bearings import CATALOGUE, BearingDefects, BearingGeometry, bearing_defects, lookup
from agent.analytics.diagnosis import (
    CALIBRATION,
    UNDETERMINED,
    LocationCalibration,
    LocationEvidence,
    merge_evidence,
)
from agent.analytics.iso10816 import ZONE_BOUNDARIES_MM_S, iso_zone, velocity_band_hz, zone_boundaries
from agent.analytics.vibration import (
    FAULTS,
    RPM_SOURCES,
    BearingFindings,
    BlockAnalysis,
    DiagnosisEntry,
    VibrationIndicators,
    analyze_block,
    analyze_block_evidence,
    bearing_findings,
    estimate_shaft_hz,
    with_bearing_evidence,
)

__all__ = [
    "CALIBRATION",
    "CATALOGUE",
    "FAULTS",
    "RPM_SOURCES",
    "UNDETERMINED",
    "ZONE_BOUNDARIES_MM_S",
    "AveragedDiagnosis",
    "BearingDefects",
    "BearingFindings",
    "BearingGeometry",
    "BlockAnalysis",
    "DiagnosisEntry",
    "EnvelopeAverager",
    "LocationCalibration",
    "LocationEvidence",
    "VibrationIndicators",
    "analyze_block",
    "analyze_block_evidence",
    "bearing_defects",
    "bearing_findings",
    "estimate_shaft_hz",
    "iso_zone",
    "lookup",
    "merge_evidence",
    "velocity_band_hz",
    "with_averaged",
    "with_bearing_evidence",
    "zone_boundaries",
]
