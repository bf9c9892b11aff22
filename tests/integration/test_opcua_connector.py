"""The OPC-UA connector against the simulated power meter (a real asyncua server on loopback).

Each test runs its own simulator inside `asyncio.run`; the waits poll with generous timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.connectors import build_connector
from agent.connectors.opcua.connector import OpcUaConnector, build
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait
from simulator.power_meter import NODES, WAVEFORM_SAMPLES, PowerMeterSimulator
from tests.servers import free_port, python_server

pytestmark = pytest.mark.integration

ASSET = "msb-meter"
SAMPLE = Path(__file__).resolve().parents[2] / "agent/connectors/opcua/sample.toml"
WAIT_S = 20.0


class Readings:
    """The connector's `emit`, keeping everything for the assertions."""

    def __init__(self) -> None:
        self.items: list[Reading] = []

    def __call__(self, batch: Sequence[Reading]) -> None:
        self.items.extend(batch)

    def of(self, point: str, quality: Quality | None = None, since: int = 0) -> list[Reading]:
        return [r for r in self.items[since:] if r.point == point and (quality is None or r.quality is quality)]

    async def wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                tail = [(r.point, r.quality.name, r.reason) for r in self.items[-8:]]
                raise AssertionError(f"timed out after {WAIT_S:.0f}s waiting for {what}; last readings: {tail}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(connector: OpcUaConnector, readings: Readings) -> AsyncIterator[None]:
    task = asyncio.create_task(connector.run(readings))
    try:
        yield
        assert not task.done(), "run() must only return on cancellation"
    finally:
        await cancel_and_wait([task])  # as the daemon stops it


def point(node_name: str, *, by: str = "node_id", **extra: Any) -> dict[str, Any]:
    """A point on one of the simulator's nodes, by node id or browse path; `extra` overrides keys."""
    node = NODES[node_name]
    table: dict[str, Any] = {"asset": ASSET, "name": node_name, "unit": node.unit, by: getattr(node, by)}
    if node.kind == "waveform":
        table.update(kind="waveform", sample_rate_hz=6400.0)
    table.update(extra)
    return table


def source(sim: PowerMeterSimulator, points: list[dict[str, Any]], **extra: Any) -> OpcUaConnector:
    table = {"name": "main-switchboard-meter", "endpoint": sim.endpoint, "publishing_interval_ms": 100,
             "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "points": points, **extra}
    return build(table, "sources[0]")


def on_grid(r: Reading, period_s: float) -> bool:
    """The simulator stamps values on its measurement grid; receive times never land exactly on it."""
    return r.ts_ns % round(period_s * 1e9) == 0


def test_subscription_timestamps_deadband_waveform_and_status() -> None:
    async def main() -> None:
        sim = PowerMeterSimulator(seed=3, update_interval_s=0.1)
        await sim.start()
        try:
            readings = Readings()
            connector = source(sim, [
                point("voltage_l1"),
                point("voltage_l1", name="voltage_l1_deadband", deadband=20.0),
                point("current_l1", by="browse_path"),
                point("energy", unit="kWh"),
                point("voltage_waveform_l1"),
            ])
            # The documented sample runs against the same meter, beside the test's own connector.
            table = tomllib.loads(SAMPLE.read_text())["sources"][0] | {"endpoint": sim.endpoint}
            sample = build_connector(table, "sources[0]")
            assert isinstance(sample, OpcUaConnector)
            sample_readings = Readings()
            async with running(connector, readings), running(sample, sample_readings):
                await readings.wait(lambda: len(readings.of("voltage_l1", Quality.GOOD)) >= 10
                                    and len(readings.of("voltage_waveform_l1", Quality.GOOD)) >= 2,
                                    "10 voltage values and 2 waveforms")
                await sample_readings.wait(lambda: all(sample_readings.of(p.name, Quality.GOOD)
                                                       for p in sample.points()), "every sample point")
                assert not any(r.quality is not Quality.GOOD for r in sample_readings.items)
                volts = readings.of("voltage_l1", Quality.GOOD)
                assert all(200.0 < r.value < 260.0 for r in volts)  # type: ignore[operator]
                assert all(on_grid(r, 0.1) for r in volts), "SourceTimestamp must be used"
                assert abs(volts[-1].ts_ns - time.time_ns()) < 10e9
                current = readings.of("current_l1", Quality.GOOD)
                assert current and all(90.0 < r.value < 160.0 for r in current)  # type: ignore[operator]
                energy = [r.value for r in readings.of("energy", Quality.GOOD)]
                assert energy == sorted(energy)
                wave = readings.of("voltage_waveform_l1", Quality.GOOD)[-1].value
                assert isinstance(wave, np.ndarray) and wave.dtype == np.float64
                assert wave.shape == (WAVEFORM_SAMPLES,)
                assert 280.0 < float(np.max(np.abs(wave))) < 380.0  # 230 V rms * sqrt(2) plus harmonics

                # Noise of ~0.3 V never crosses a 20 V deadband: only the initial value arrives.
                assert len(readings.of("voltage_l1_deadband")) == 1

                # A 20 % sag on L1 does.
                mark = len(readings.items)
                sim.inject("phase_imbalance", phase=1, voltage_sag=0.2)
                await readings.wait(lambda: bool(readings.of("voltage_l1_deadband", since=mark)),
                                    "the sag to pass the deadband")
                assert readings.of("voltage_l1_deadband", since=mark)[0].value < 200.0  # type: ignore[operator]

                # The meter behind the server goes offline: values turn BAD with the OPC-UA status.
                sim.inject("offline")
                mark = len(readings.items)
                await readings.wait(lambda: all(readings.of(p, Quality.BAD, since=mark) for p in (
                    "voltage_l1", "current_l1", "energy", "voltage_waveform_l1")), "BAD from the offline meter")
                bad = readings.of("voltage_l1", Quality.BAD, since=mark)[0]
                assert bad.value is None and bad.reason == "BadNoCommunication"
                sim.clear("offline")
                mark = len(readings.items)
                await readings.wait(lambda: bool(readings.of("energy", Quality.GOOD, since=mark)), "recovery")
            assert connector.stats.errors == 0 and connector.stats.decode_errors == 0
            assert connector.stats.polls >= 10
        finally:
            await sim.stop()

    asyncio.run(main())


def test_poll_mode_reads_values_and_isolates_missing_nodes() -> None:
    async def main() -> None:
        sim = PowerMeterSimulator(seed=4, update_interval_s=0.1)
        await sim.start()
        try:
            readings = Readings()
            connector = source(sim, [
                point("voltage_l2"),
                point("active_power", by="browse_path", unit="kW"),
                point("voltage_waveform_l1"),
                {"asset": ASSET, "name": "missing_node", "node_id": "ns=2;s=Meter.NoSuchThing"},
                {"asset": ASSET, "name": "missing_path", "browse_path": "0:Objects/2:Meter/2:NoSuchThing"},
            ], mode="poll", poll_interval_s=0.5, timeout_s=0.45)
            async with running(connector, readings):
                await readings.wait(lambda: len(readings.of("voltage_l2", Quality.GOOD)) >= 3, "3 polls")
                volts = readings.of("voltage_l2", Quality.GOOD)
                assert all(on_grid(r, 0.1) for r in volts), "SourceTimestamp must be used when polling"
                assert all(20.0 < r.value < 150.0 for r in readings.of("active_power", Quality.GOOD))  # type: ignore[operator]
                wave = readings.of("voltage_waveform_l1", Quality.GOOD)[-1].value
                assert isinstance(wave, np.ndarray) and wave.shape == (WAVEFORM_SAMPLES,)
                missing = readings.of("missing_node")
                assert missing and all(r.quality is Quality.BAD and r.reason == "BadNodeIdUnknown"
                                       and r.value is None for r in missing)
                assert [r.reason for r in readings.of("missing_path")] == ["BadNoMatch"]  # reported once
            assert connector.stats.polls >= 3
        finally:
            await sim.stop()

    asyncio.run(main())


def test_server_restart_marks_bad_then_recovers_resubscribed() -> None:
    names = ("voltage_l3", "frequency", "energy")

    async def main() -> None:
        sim = PowerMeterSimulator(seed=5, update_interval_s=0.1)
        await sim.start()
        try:
            readings = Readings()
            connector = source(sim, [point("voltage_l3"), point("frequency", by="browse_path"),
                                     point("energy", unit="kWh")], backoff_max_s=0.5)
            async with running(connector, readings):
                await readings.wait(lambda: all(readings.of(n, Quality.GOOD) for n in names), "first values")
                mark = len(readings.items)
                await sim.stop()
                await readings.wait(lambda: all(readings.of(n, Quality.BAD, since=mark) for n in names),
                                    "BAD after the server stopped")
                await asyncio.sleep(1.0)  # the connector retries meanwhile; nothing new may appear
                first_bad = next(i for i in range(mark, len(readings.items))
                                 if readings.items[i].quality is Quality.BAD)
                outage = readings.items[first_bad:]
                assert {r.reason for r in outage} == {"disconnected"}
                assert all(r.quality is Quality.BAD and r.value is None for r in outage)
                assert len(outage) == len(names), "each point is marked BAD once per outage"

                # The PLC restarts; its meter nodes appear only 2 s after the server listens.
                sim.boot_delay_s = 2.0
                await sim.start()
                restarted = len(readings.items)
                await readings.wait(lambda: all(readings.of(n, Quality.GOOD, since=restarted) for n in names),
                                    "GOOD values after the restart")
                reasons = {r.reason for r in readings.items[restarted:] if r.quality is Quality.BAD}
                assert reasons <= {"BadNodeIdUnknown", "BadNoMatch"}
                assert "BadNodeIdUnknown" in reasons, "the connector should have met the booting PLC"
                for n in names:  # still flowing, not stuck: several fresh values per point
                    count = len(readings.of(n, Quality.GOOD, since=restarted))
                    await readings.wait(lambda n=n, count=count: len(readings.of(n, Quality.GOOD, since=restarted))
                                        > count, f"more values of {n}")
                assert connector.stats.reconnects >= 1
                assert connector.stats.devices_online == {sim.endpoint: True}
        finally:
            await sim.stop()

    asyncio.run(main())


def test_simulator_runs_as_a_process_with_a_scheduled_fault(tmp_path: Path) -> None:
    port = free_port()
    proc = python_server("power-meter", ["-m", "simulator.power_meter", "--port", str(port), "--seed", "7",
                                         "--fault", "phase_imbalance@0"], tmp_path, port)

    async def main() -> None:
        readings = Readings()
        connector = build({"name": "meter", "endpoint": f"opc.tcp://127.0.0.1:{port}/facility/",
                           "mode": "poll", "poll_interval_s": 0.5, "timeout_s": 0.45,
                           "points": [point("current_l1"), point("current_l2")]}, "sources[0]")
        async with running(connector, readings):
            await readings.wait(lambda: bool(readings.of("current_l1", Quality.GOOD)
                                             and readings.of("current_l2", Quality.GOOD)), "currents")
        l1, l2 = (readings.of(n, Quality.GOOD)[-1].value for n in ("current_l1", "current_l2"))
        assert l1 > 1.3 * l2  # type: ignore[operator]  # the imbalanced phase draws ~1.5x

    try:
        asyncio.run(main())
    finally:
        proc.stop()
