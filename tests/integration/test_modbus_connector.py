"""The Modbus connector against real Modbus TCP servers on loopback (pymodbus, via simulator/)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from agent.connectors.modbus.connector import ModbusConnector, build
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait
from simulator.modbus_device import ModbusDeviceServer, UnitMemory, pattern_memory
from tests.unit.test_modbus_plan import fewest_requests, span

pytestmark = pytest.mark.integration

FC_HOLDING = 3


class Received:
    """What the connector emitted, by point."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def emit(self, batch: Sequence[Reading]) -> None:
        self.readings.extend(batch)

    def of(self, point: str) -> list[Reading]:
        return [r for r in self.readings if r.point == point]

    def good(self, point: str) -> list[Reading]:
        return [r for r in self.of(point) if r.quality is Quality.GOOD]

    def last(self, point: str) -> Reading | None:
        got = self.of(point)
        return got[-1] if got else None


async def wait_until(predicate: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(connector: ModbusConnector) -> AsyncIterator[Received]:
    received = Received()
    task = asyncio.create_task(connector.run(received.emit))
    try:
        yield received
    finally:
        await cancel_and_wait([task])  # as the daemon stops it
        assert task.cancelled() or task.exception() is None


def source(port: int, points: list[dict[str, Any]], **options: Any) -> ModbusConnector:
    table = {"name": "test", "host": "127.0.0.1", "port": port, "timeout_s": 0.25, "retries": 0,
             "poll_interval_s": 0.3, "backoff_max_s": 0.6, **options, "points": points}
    return build(table, "sources[0]")


def test_200_scattered_registers_take_the_minimal_number_of_requests() -> None:
    rng = random.Random(7)
    addresses = sorted(rng.sample(range(1500), 200))
    limit, max_gap = 125, 10
    minimal = fewest_requests([span(i, a) for i, a in enumerate(addresses)], limit, max_gap)
    assert 10 < minimal < 100  # a layout where coalescing has real choices to make

    async def scenario() -> None:
        memory = pattern_memory(1, holding=1600, input_registers=1, coils=1)
        async with ModbusDeviceServer({1: memory}) as server:
            points = [{"asset": "a", "name": f"r{a}", "address": a} for a in addresses]
            connector = source(server.port, points, max_gap=max_gap, max_registers_per_request=limit)
            readings = await connector.read_once()
            connector.close()
            assert server.request_count[FC_HOLDING] == minimal == connector.requests_sent
            assert all(r.count <= limit for r in server.request_log)
            assert {r.point: r.value for r in readings} == {f"r{a}": float(1000 + a) for a in addresses}

    asyncio.run(scenario())


def test_fast_and_slow_points_are_polled_apart_within_the_size_limit() -> None:
    async def scenario() -> None:
        async with ModbusDeviceServer({1: pattern_memory(1, 32, 1, 1)}) as server:
            fast = [{"asset": "a", "name": f"fast{a}", "address": a, "poll_interval_s": 0.3} for a in (0, 2, 4, 6)]
            slow = [{"asset": "a", "name": f"slow{a}", "address": a, "poll_interval_s": 30.0} for a in (1, 3, 5, 7)]
            connector = source(server.port, fast + slow, max_registers_per_request=3)
            async with running(connector) as got:
                await wait_until(lambda: len(got.good("fast6")) >= 4, "four fast polls")
            requests = [(r.address, r.count) for r in server.request_log]
            assert set(requests) == {(0, 3), (4, 3), (1, 3), (5, 3)}
            assert requests.count((1, 3)) == requests.count((5, 3)) == 1
            assert requests.count((0, 3)) >= 4 and requests.count((4, 3)) >= 4
            assert len(got.good("slow7")) == 1 and got.good("slow7")[0].value == 1007.0

    asyncio.run(scenario())


def test_a_silent_unit_goes_offline_without_stalling_its_neighbour_and_recovers() -> None:
    async def scenario() -> None:
        units = {1: pattern_memory(1, 8, 1, 1), 2: pattern_memory(2, 8, 1, 1)}
        async with ModbusDeviceServer(units) as server:
            points = [{"asset": "a", "name": "u1", "unit_id": 1, "address": 1},
                      {"asset": "a", "name": "u1b", "unit_id": 1, "address": 5, "poll_interval_s": 0.5},
                      {"asset": "b", "name": "u2", "unit_id": 2, "address": 1},
                      {"asset": "b", "name": "u2b", "unit_id": 2, "address": 5, "poll_interval_s": 0.5}]
            connector = source(server.port, points)
            async with running(connector) as got:
                await wait_until(lambda: got.good("u1") and got.good("u2"), "both units answering")
                assert connector.stats.devices_online == {"unit-1": True, "unit-2": True}

                server.set_unresponsive(2)
                await wait_until(lambda: connector.stats.devices_online["unit-2"] is False, "unit 2 offline")
                first_bad = next(r for r in got.of("u2") if r.quality is Quality.BAD)
                assert first_bad.value is None and first_bad.reason == "timeout"
                good_u1_before = len(got.good("u1"))
                await wait_until(lambda: len(got.good("u1")) >= good_u1_before + 5, "unit 1 still polled")
                bad_u2 = [r for r in got.of("u2") + got.of("u2b") if r.ts_ns >= first_bad.ts_ns]
                assert bad_u2 and all(r.quality is Quality.BAD and r.value is None for r in bad_u2)
                # "timeout (connection lost)" if the link reopened a silent connection meanwhile
                assert all(r.reason.startswith("timeout") for r in bad_u2)
                assert connector.stats.devices_online["unit-1"] is True
                assert connector.stats.errors >= 1 and "unit-2" in connector.stats.last_error

                server.set_unresponsive(2, False)
                await wait_until(lambda: got.last("u2") is not None and got.last("u2").quality is Quality.GOOD,
                                 "unit 2 answering again")
                assert connector.stats.devices_online == {"unit-1": True, "unit-2": True}
                assert got.last("u2").value == 2001.0

    asyncio.run(scenario())


def test_reconnects_after_the_server_restarts() -> None:
    async def scenario() -> None:
        server = ModbusDeviceServer({1: pattern_memory(1, 8, 1, 1)})
        await server.start()
        connector = source(server.port, [{"asset": "a", "name": "x", "address": 3}])
        try:
            async with running(connector) as got:
                await wait_until(lambda: len(got.good("x")) >= 2, "first readings")
                await server.stop()
                await wait_until(lambda: got.last("x").quality is Quality.BAD, "BAD while the server is down")
                assert connector.stats.devices_online["unit-1"] is False
                await server.start()  # same port
                n = len(got.good("x"))
                await wait_until(lambda: len(got.good("x")) > n + 1, "readings after the restart")
                assert connector.stats.reconnects >= 1
                assert connector.stats.devices_online["unit-1"] is True
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_busy_unit_is_asked_again_and_refusals_are_bad_readings() -> None:
    async def scenario() -> None:
        async with ModbusDeviceServer({1: pattern_memory(1, 8, 1, 1)}) as server:
            points = [{"asset": "a", "name": "ok", "address": 2},
                      {"asset": "a", "name": "missing", "address": 500}]
            connector = source(server.port, points, busy_retries=3, busy_delay_s=0.01)
            server.set_busy(1, 2)
            readings = {r.point: r for r in await connector.read_once()}
            assert server.busy_answers == 2
            assert readings["ok"].quality is Quality.GOOD and readings["ok"].value == 1002.0
            assert readings["missing"].quality is Quality.BAD and readings["missing"].value is None
            assert readings["missing"].reason == "exception 2 illegal data address"
            assert connector.stats.devices_online["unit-1"] is True  # it answered, it is online

            server.set_busy(1, 100)
            readings = {r.point: r for r in await connector.read_once()}
            assert readings["ok"].reason == "exception 6 server device busy"
            assert connector.stats.devices_online["unit-1"] is True
            connector.close()

    asyncio.run(scenario())


def test_unknown_unit_times_out_and_connection_refused_is_bad() -> None:
    async def scenario() -> None:
        async with ModbusDeviceServer({1: UnitMemory.sized()}) as server:
            connector = source(server.port, [{"asset": "a", "name": "x", "unit_id": 9, "address": 0}])
            (reading,) = await connector.read_once()
            assert (reading.quality, reading.value, reading.reason) == (Quality.BAD, None, "timeout")
            connector.close()
            port = server.port
        connector = source(port, [{"asset": "a", "name": "x", "address": 0}])
        (reading,) = await connector.read_once()
        assert reading.quality is Quality.BAD and "cannot connect" in reading.reason
        assert connector.stats.devices_online == {"unit-1": False}
        connector.close()

    asyncio.run(scenario())


def test_a_failing_cycle_is_counted_and_polling_goes_on() -> None:
    async def scenario() -> None:
        async with ModbusDeviceServer({1: pattern_memory(1, 8, 1, 1)}) as server:
            connector = source(server.port, [{"asset": "a", "name": "x", "address": 4}])
            received: list[Reading] = []
            calls = 0

            def flaky_emit(batch: Sequence[Reading]) -> None:
                nonlocal calls
                calls += 1
                if calls <= 2:
                    raise RuntimeError("sink hiccup")
                received.extend(batch)

            task = asyncio.create_task(connector.run(flaky_emit))
            try:
                await wait_until(lambda: len(received) >= 2, "readings after two failed cycles")
            finally:
                await cancel_and_wait([task])
            assert connector.stats.errors == 2
            assert "RuntimeError: sink hiccup" in connector.stats.last_error
            assert all(r.value == 1004.0 for r in received)

    asyncio.run(scenario())
