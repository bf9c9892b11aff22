"""ISO 10816-3 / ISO 20816-3 evaluation zones for broadband velocity: the one table of boundaries.

Zone meaning (ISO 10816-3:2009 clause 5.3.1, unchanged in ISO 20816-3:2022):
A  newly commissioned machines;
B  acceptable for unrestricted long-term operation;
C  unsatisfactory for long-term continuous operation: plan remedial action;
D  severe enough to cause damage.

The boundaries below are the r.m.s. vibration velocity in mm/s measured on the bearing housings,
ISO 10816-3:2009 Annex A, Table A.1 (group 1: rated power above 300 kW up to 50 MW, or electrical
machines with shaft height H >= 315 mm) and Table A.2 (group 2: 15 kW to 300 kW, or 160 mm <= H <
315 mm); ISO 20816-3:2022 Annex A keeps the same values. The measurement band is 10-1000 Hz for
machines running above 600 r/min and 2-1000 Hz for 120-600 r/min (10816-3 clause 4.1), which is
what `velocity_band_hz` returns. Rotodynamic pumps have their own table in ISO 10816-7; this module
does not cover it.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["FOUNDATIONS", "MACHINE_GROUPS", "ZONE_BOUNDARIES_MM_S", "iso_zone", "velocity_band_hz",
           "zone_boundaries"]

Foundation = Literal["rigid", "flexible"]

# (machine group, foundation) -> (A/B, B/C, C/D) boundaries, velocity r.m.s. in mm/s.
ZONE_BOUNDARIES_MM_S: Final[dict[tuple[int, str], tuple[float, float, float]]] = {
    (1, "rigid"): (2.3, 4.5, 7.1),      # ISO 10816-3 Table A.1, rigid foundation
    (1, "flexible"): (3.5, 7.1, 11.0),  # ISO 10816-3 Table A.1, flexible foundation
    (2, "rigid"): (1.4, 2.8, 4.5),      # ISO 10816-3 Table A.2, rigid foundation
    (2, "flexible"): (2.3, 4.5, 7.1),   # ISO 10816-3 Table A.2, flexible foundation
}
MACHINE_GROUPS: Final = (1, 2)
FOUNDATIONS: Final = ("rigid", "flexible")
SLOW_MACHINE_RPM: Final = 600.0  # at or below: band starts at 2 Hz instead of 10 Hz


def zone_boundaries(machine_group: int, foundation: str) -> tuple[float, float, float]:
    """The A/B, B/C and C/D boundaries in mm/s; ValueError for an unknown group or foundation."""
    try:
        return ZONE_BOUNDARIES_MM_S[(machine_group, foundation)]
    except KeyError:
        raise ValueError(
            f"machine_group must be one of {MACHINE_GROUPS} and foundation one of {FOUNDATIONS}, "
            f"got {machine_group!r}, {foundation!r}"
        ) from None


def iso_zone(velocity_rms_mm_s: float, machine_group: int = 2, foundation: str = "rigid") -> str:
    """Zone "A".."D" for a broadband r.m.s. velocity; a value on a boundary belongs to the worse zone."""
    ab, bc, cd = zone_boundaries(machine_group, foundation)
    if velocity_rms_mm_s < ab:
        return "A"
    if velocity_rms_mm_s < bc:
        return "B"
    if velocity_rms_mm_s < cd:
        return "C"
    return "D"


def velocity_band_hz(rpm: float | None) -> tuple[float, float]:
    """Measurement band for the velocity r.m.s.: 2-1000 Hz for slow machines, else 10-1000 Hz."""
    if rpm is not None and 0 < rpm <= SLOW_MACHINE_RPM:
        return (2.0, 1000.0)
    return (10.0, 1000.0)
