"""Modbus field quirks against a real pymodbus server: a meter that limits the request size, and
the first poll after start with a slow poll interval."""

from __future__ import annotations

import asyncio
import logging

import pytest

from simulator.modbus_device import ModbusDeviceServer, pattern_memory
from tests.integration.test_modbus_connector import running, source, wait_until

pytestmark = pytest.mark.integration

FC_HOLDING = 3


def test_exception_3_on_a_long_read_points_to_max_registers_per_request(caplog: pytest.LogCaptureFixture) -> None:
    """An Eastron SDM630 answers reads of more than 60 registers with exception 3 (illegal data
    value); points that coalesce into one longer read must say what to change."""
    caplog.set_level(logging.WARNING, logger="twin.agent.modbus")
    # Float32 values spread over 98 registers: one request of 98 registers with the default limits.
    points = [{"asset": "meter", "name": f"v{a}", "address": a, "type": "float32"} for a in range(0, 100, 6)]

    async def scenario() -> None:
        async with ModbusDeviceServer({1: pattern_memory(1, 200, 1, 1)}, max_registers_per_request=60) as server:
            connector = source(server.port, points, max_gap=20)
            async with running(connector) as got:
                await wait_until(lambda: bool(got.of("v96")), "the first refused read")
            assert server.refused_too_long >= 1
            first = got.of("v0")[0]
            assert first.value is None and first.reason.startswith("exception 3 illegal data value")
            assert "max_registers_per_request" in first.reason and "98 registers" in first.reason
            assert connector.stats.devices_online == {"unit-1": True}  # it answered: online, not offline
            logged = [r.getMessage() for r in caplog.records if "exception 3" in r.getMessage()]
            assert len(logged) == 1 and "max_registers_per_request" in logged[0], logged

            # The advice works: with the device's limit the same points read fine.
            limited = source(server.port, points, max_gap=20, max_registers_per_request=60)
            async with running(limited) as got:
                await wait_until(lambda: all(got.good(p["name"]) for p in points), "every point read")
            assert all(len(got.of(p["name"])) == len(got.good(p["name"])) for p in points)

    asyncio.run(scenario())


def test_with_a_one_hour_interval_every_unit_is_read_once_right_after_start() -> None:
    """The first poll is not delayed by a fraction of the poll interval: 20 units polled hourly are
    all read once soon after start (the deadline only bounds a failing run; nothing is timed)."""
    units = range(1, 21)

    async def scenario() -> None:
        async with ModbusDeviceServer({u: pattern_memory(u, 8, 1, 1) for u in units}) as server:
            points = [{"asset": f"a{u}", "name": "r1", "unit_id": u, "address": 1} for u in units]
            connector = source(server.port, points, poll_interval_s=3600.0, timeout_s=1.0)
            async with running(connector) as got:
                await wait_until(lambda: len(got.readings) == len(units), "one reading per unit", within_s=30.0)
                await asyncio.sleep(0.2)  # nothing else is due for an hour
            assert sorted((r.asset, r.value) for r in got.readings) == sorted(
                (f"a{u}", float(u * 1000 + 1)) for u in units)
            assert dict(server.requests_by_unit) == {u: 1 for u in units}
            assert server.request_count[FC_HOLDING] == len(units)

    asyncio.run(scenario())
