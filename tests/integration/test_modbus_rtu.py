"""Modbus RTU for real: the connector and a pymodbus serial server on two ends of a pty pair.

The pair is what `socat pty,raw,echo=0 pty,raw,echo=0` makes: two pseudo-terminals whose master
sides are joined back to back, so bytes written to one serial device come out of the other. Here
a thread relays between the two masters, so no extra system package is needed. Both ends open
their tty with pyserial exactly like a USB RS-485 adapter, and the frames carry real RTU CRCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import select
import threading
import tty
from collections.abc import Iterator

import pytest

from agent.connectors.modbus.connector import ModbusConnector, build
from agent.model import Quality
from simulator.modbus_device import ModbusDeviceServer, pattern_memory
from tests.integration.test_modbus_connector import running, wait_until

pytestmark = pytest.mark.integration

BAUDRATE = 115200


class PtyPair:
    """Two serial device paths wired to each other (a null-modem cable in software)."""

    def __init__(self) -> None:
        self._master_a, self._slave_a = os.openpty()
        self._master_b, self._slave_b = os.openpty()
        for fd in (self._slave_a, self._slave_b):
            tty.setraw(fd)  # no echo, no line editing: a serial line, not a terminal
        self.a, self.b = os.ttyname(self._slave_a), os.ttyname(self._slave_b)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peer = {self._master_a: self._master_b, self._master_b: self._master_a}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # no process has the tty open at the moment
                    continue
                os.write(peer[fd], data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._master_a, self._slave_a, self._master_b, self._slave_b):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def ptys() -> Iterator[PtyPair]:
    pair = PtyPair()
    yield pair
    pair.close()


def rtu_connector(serial_port: str, points: list[dict[str, object]], **options: object) -> ModbusConnector:
    table = {"name": "bus", "transport": "rtu", "serial_port": serial_port, "baudrate": BAUDRATE,
             "timeout_s": 0.3, "retries": 0, "poll_interval_s": 0.5, "backoff_max_s": 0.8, **options,
             "points": points}
    return build(table, "sources[0]")


def test_units_on_one_bus_take_turns_with_a_pause(ptys: PtyPair) -> None:
    units = list(range(1, 6))
    points = [{"asset": f"vav-{u}", "name": name, "unit_id": u, "function": fn, "address": a}
              for u in units
              for name, fn, a in (("damper", "holding", 3), ("flow", "input", 7), ("occupied", "coil", 2))]

    async def scenario() -> None:
        memories = {u: pattern_memory(u, 16, 16, 16) for u in units}
        async with ModbusDeviceServer(memories, serial_port=ptys.a, baudrate=BAUDRATE) as server:
            delay = 0.02
            connector = rtu_connector(ptys.b, points, inter_request_delay_s=delay)
            async with running(connector) as got:
                await wait_until(lambda: len(got.good("flow")) >= 2 * len(units), "two polls of every unit")
            assert connector.stats.errors == 0 and connector.stats.decode_errors == 0
            bad = [r for r in got.readings if r.quality is not Quality.GOOD]
            assert not bad, bad[:3]
            for r in got.readings:
                u = int(r.asset.split("-")[1])
                expected = {"damper": float(u * 1000 + 3), "flow": float(u * 1000 + 7), "occupied": True}[r.point]
                assert r.value == expected
            # One request at a time, with the pause: a request reaches the device only after the
            # previous answer went out plus inter_request_delay_s (causal, not a speed assertion).
            times = [r.at for r in server.request_log]
            assert len(times) >= 3 * 2 * len(units)
            assert min(b - a for a, b in itertools.pairwise(times)) >= delay

    asyncio.run(scenario())


def test_silent_and_busy_units_on_a_serial_bus(ptys: PtyPair) -> None:
    points = [{"asset": "meter", "name": "power", "unit_id": 1, "address": 0, "type": "uint32",
               "word_order": "little"},
              {"asset": "vav", "name": "damper", "unit_id": 2, "address": 3}]

    async def scenario() -> None:
        memories = {1: pattern_memory(1, 8, 1, 1), 2: pattern_memory(2, 8, 1, 1)}
        memories[1].holding[0:2] = [0x5678, 0x1234]  # 0x12345678, low word first
        async with ModbusDeviceServer(memories, serial_port=ptys.a, baudrate=BAUDRATE) as server:
            connector = rtu_connector(ptys.b, points, busy_retries=2, busy_delay_s=0.05)
            server.set_busy(1, 2)
            async with running(connector) as got:
                await wait_until(lambda: got.good("power") and got.good("damper"), "both units")
                assert got.good("power")[0].value == float(0x12345678)
                server.set_unresponsive(2)
                await wait_until(lambda: connector.stats.devices_online.get("unit-2") is False, "unit 2 offline")
                assert got.last("damper").reason == "timeout" and got.last("damper").value is None
                n = len(got.good("power"))
                await wait_until(lambda: len(got.good("power")) >= n + 3, "unit 1 still polled")
                server.set_unresponsive(2, False)
                await wait_until(lambda: got.last("damper").quality is Quality.GOOD, "unit 2 back")
            # The two "busy" answers were absorbed by busy_retries: no BAD reading came of them.
            assert server.busy_answers == 2
            assert all(r.quality is Quality.GOOD for r in got.of("power"))

    asyncio.run(scenario())
