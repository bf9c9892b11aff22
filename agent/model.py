"""Core data model shared by connectors, the twin and the uplink (plain dataclasses, no I/O)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AssetSpec", "PointSpec", "Quality", "Reading", "Value", "VibrationSpec", "now_ns"]

Value = float | bool | str | np.ndarray


class Quality(enum.IntEnum):
    """OPC-UA style quality. Values match protos.twin.v1 Quality."""

    GOOD = 1
    UNCERTAIN = 2
    BAD = 3


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point at one instant, as produced by a connector.

    `value` is None when the reading is BAD and no value could be obtained (timeout, exception
    response); a BAD reading never repeats an old value with a new timestamp.
    """

    asset: str
    point: str
    value: Value | None
    ts_ns: int
    quality: Quality = Quality.GOOD
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PointSpec:
    """What the twin knows about a point regardless of the protocol that reads it."""

    asset: str
    name: str
    unit: str = ""
    kind: str = "measurement"  # measurement | setpoint | state | counter | waveform
    expected_interval_s: float = 10.0  # silent for ~3x this => stale
    deadband: float = 0.0
    sample_rate_hz: float = 0.0  # waveform points only


@dataclass(frozen=True, slots=True)
class VibrationSpec:
    """How to analyse an asset's vibration waveforms (see agent/analytics)."""

    sensor_points: tuple[str, ...] = ()
    speed_point: str = ""
    nominal_rpm: float = 0.0
    bearing: str = ""  # catalogue model, e.g. "6205-2RS"
    bpfo: float = 0.0  # defect multipliers (x shaft rate) when no model is given
    bpfi: float = 0.0
    bsf: float = 0.0
    ftf: float = 0.0
    machine_group: int = 2
    foundation: str = "rigid"
    average_blocks: int = 8  # consecutive blocks whose envelope spectra are averaged (1: off)


@dataclass(frozen=True, slots=True)
class AssetSpec:
    id: str
    type: str
    name: str = ""
    depends_on: tuple[str, ...] = ()
    vibration: VibrationSpec | None = None
    points: tuple[PointSpec, ...] = field(default_factory=tuple)


def now_ns() -> int:
    return time.time_ns()
