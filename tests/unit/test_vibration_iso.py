"""The ISO 10816-3 zone table: the values DESIGN.md section 6 cites, and how zones are assigned."""

from __future__ import annotations

import pytest

from agent.analytics.iso10816 import ZONE_BOUNDARIES_MM_S, iso_zone, velocity_band_hz, zone_boundaries


def test_table_holds_the_standard_values() -> None:
    assert ZONE_BOUNDARIES_MM_S == {
        (1, "rigid"): (2.3, 4.5, 7.1),
        (1, "flexible"): (3.5, 7.1, 11.0),
        (2, "rigid"): (1.4, 2.8, 4.5),
        (2, "flexible"): (2.3, 4.5, 7.1),
    }


@pytest.mark.parametrize(
    ("velocity", "group", "foundation", "zone"),
    [
        (0.5, 2, "rigid", "A"),
        (1.4, 2, "rigid", "B"),  # on a boundary: the worse zone
        (2.79, 2, "rigid", "B"),
        (2.8, 2, "rigid", "C"),
        (4.5, 2, "rigid", "D"),
        (4.0, 2, "flexible", "B"),
        (4.0, 1, "rigid", "B"),
        (4.0, 1, "flexible", "B"),
        (7.1, 1, "flexible", "C"),
        (11.0, 1, "flexible", "D"),
        (0.0, 1, "rigid", "A"),
    ],
)
def test_zone(velocity: float, group: int, foundation: str, zone: str) -> None:
    assert iso_zone(velocity, group, foundation) == zone


@pytest.mark.parametrize(("group", "foundation"), [(3, "rigid"), (2, "soft"), (0, "flexible")])
def test_unknown_group_or_foundation_is_an_error(group: int, foundation: str) -> None:
    with pytest.raises(ValueError, match="machine_group"):
        zone_boundaries(group, foundation)


def test_measurement_band_follows_machine_speed() -> None:
    assert velocity_band_hz(1800.0) == (10.0, 1000.0)
    assert velocity_band_hz(None) == (10.0, 1000.0)
    assert velocity_band_hz(600.0) == (2.0, 1000.0)
    assert velocity_band_hz(300.0) == (2.0, 1000.0)
