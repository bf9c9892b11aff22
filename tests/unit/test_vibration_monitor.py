"""The agent's VibrationMonitor with a speed point that reads nonsense (wrong word order, stopped machine)."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from agent.model import AssetSpec, PointSpec, Reading, VibrationSpec
from agent.vibration_monitor import VibrationMonitor

FS = 12800.0


def monitor(nominal_rpm: float) -> VibrationMonitor:
    spec = VibrationSpec(sensor_points=("de_accel",), speed_point="speed", nominal_rpm=nominal_rpm,
                         bearing="6205-2RS", average_blocks=1)
    points = (PointSpec(asset="pump-1", name="de_accel", unit="g", kind="waveform", sample_rate_hz=FS),
              PointSpec(asset="pump-1", name="speed", unit="rpm"))
    return VibrationMonitor([AssetSpec(id="pump-1", type="pump", vibration=spec, points=points)])


async def analyse(m: VibrationMonitor, speed: float, blocks: int = 3) -> list[object]:
    rng = np.random.default_rng(1)
    t = np.arange(8192) / FS
    out: list[object] = []
    for i in range(blocks):
        m.observe_scalar(Reading("pump-1", "speed", speed, ts_ns=i))
        m.submit(Reading("pump-1", "de_accel", 0.2 * np.sin(2 * np.pi * 24.7 * t) + 0.01 * rng.standard_normal(8192),
                         ts_ns=i + 1))
        deadline = time.monotonic() + 60
        while m.analysed_blocks + m.errors < i + 1:  # one block at a time
            assert time.monotonic() < deadline, f"block {i} not analysed within 60 s"
            await asyncio.sleep(0.01)
        out += await m.drain()
    await m.close()
    return out


@pytest.mark.parametrize("speed", [1e9, 1e12, -5.0, 0.0])
def test_implausible_speed_falls_back_to_nominal(speed: float, caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(nominal_rpm=1480.0)
    with caplog.at_level(logging.WARNING, logger="twin.agent.vibration"):
        msgs = asyncio.run(analyse(m, speed))
    assert len(msgs) == 3 and m.errors == 0
    assert all(msg.rpm == 1480.0 and msg.rpm_source == "config" for msg in msgs)
    assert m.rejected_speeds == 3
    assert len([r for r in caplog.records if "outside" in r.getMessage()]) == 1, "logged once, not per block"


def test_plausible_speed_is_used() -> None:
    msgs = asyncio.run(analyse(monitor(nominal_rpm=1480.0), 1482.0))
    assert all(m.rpm == pytest.approx(1482.0) and m.rpm_source == "speed_point" for m in msgs)


# --- two sensors on one asset: a second opinion -------------------------------------------------------------


def two_sensor_monitor() -> VibrationMonitor:
    spec = VibrationSpec(sensor_points=("de_accel", "fe_accel"), nominal_rpm=1800.0, bearing="6205-2RS",
                         average_blocks=1)
    points = tuple(PointSpec(asset="pump-1", name=name, unit="g", kind="waveform", sample_rate_hz=FS)
                   for name in spec.sensor_points)
    return VibrationMonitor([AssetSpec(id="pump-1", type="pump", vibration=spec, points=points)])


async def feed(m: VibrationMonitor, readings: list[Reading]) -> list[object]:
    out: list[object] = []
    for i, reading in enumerate(readings):
        m.submit(reading)
        deadline = time.monotonic() + 60
        while m.analysed_blocks + m.errors < i + 1:  # one block at a time
            assert time.monotonic() < deadline, f"block {i} not analysed within 60 s"
            await asyncio.sleep(0.01)
        out += await m.drain()
    await m.close()
    return out


def test_two_sensors_that_point_to_different_races_give_an_undetermined_location() -> None:
    from agent.analytics.bearings import lookup
    from tests.unit.test_vibration import impacts, noise

    bearing, fr, n = lookup("6205-2RS"), 30.0, 32768  # 2.56 s blocks
    outer = impacts(bearing.bpfo * fr, seed=1, n=n) + noise(0.1, seed=2, n=n)
    load_zone = lambda t: 0.5 * (1 + np.cos(2 * np.pi * fr * t))  # noqa: E731
    inner = impacts(bearing.bpfi * fr, seed=3, n=n, modulation=load_zone) + noise(0.1, seed=4, n=n)
    second = 2_000_000_000
    m = two_sensor_monitor()
    msgs = asyncio.run(feed(m, [
        Reading("pump-1", "de_accel", outer, ts_ns=second),
        Reading("pump-1", "fe_accel", inner, ts_ns=second + 100_000_000),  # the same moment: merged
        Reading("pump-1", "fe_accel", inner, ts_ns=60 * second),  # a minute later, alone
    ]))
    assert [msg.sensor for msg in msgs] == ["de_accel", "fe_accel", "fe_accel"]
    assert msgs[0].fault == "outer_race"  # nothing to merge with yet
    assert msgs[1].fault == "bearing" and m.merged_blocks == 1
    first = msgs[1].diagnosis[0]
    assert "location undetermined" in first.evidence and "on de_accel" in first.evidence \
        and "on fe_accel" in first.evidence
    assert {d.fault for d in msgs[1].diagnosis} >= {"bearing", "outer_race", "inner_race"}
    assert msgs[2].fault == "inner_race"
