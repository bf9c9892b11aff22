"""A Modbus device (one or several unit ids) whose register map is plain Python lists.

Simulators write their model into `UnitMemory` lists; clients read them over real Modbus TCP or
RTU (a pymodbus server underneath, bound to loopback or to a serial port). The memory is the
source of truth: it is copied into the pymodbus datastore on each read and writes from clients
land in it, so a model sees a new setpoint on its next step.

Faults a test needs and a real bus produces:
    unresponsive  a unit id stops answering (requests time out), `set_unresponsive(unit, True)`
    busy          a unit answers "server device busy" (exception 6) to the next N requests
    read limit    reads of more than `max_registers_per_request` registers are refused with
                  exception 3 (illegal data value), as an Eastron SDM630 does beyond 60

`request_count` counts the requests served per function code (dropped ones in `dropped`) and
`request_log` keeps the last requests served (`ServedRequest`: unit id, function code, address,
count, monotonic arrival time), so a test can verify on the server side what a client really sent.

    python -m simulator.modbus_device --port 15020 --units 1-20 --holding 200
runs a device with a deterministic register pattern (value = unit * 1000 + address) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from simulator.termination import until_terminated

__all__ = ["ModbusDeviceServer", "ServedRequest", "UnitMemory", "pattern_memory"]

log = logging.getLogger("twin.sim.modbus")

LOOPBACK = "127.0.0.1"
REQUEST_LOG_SIZE = 100_000
_REGISTER_FUNCTIONS = {3: "holding", 6: "holding", 16: "holding", 23: "holding", 4: "input"}
_BIT_FUNCTIONS = {1: "coils", 5: "coils", 15: "coils", 2: "discrete"}


class ServedRequest(NamedTuple):
    unit_id: int
    function_code: int
    address: int
    count: int
    at: float  # time.monotonic() when the request arrived


@dataclass
class UnitMemory:
    """The four Modbus tables of one unit id, indexed by protocol (0-based) address.

    `writable_holding` / `writable_coils` list the addresses clients may write (None = all).
    """

    coils: list[bool] = field(default_factory=lambda: [False] * 16)
    discrete: list[bool] = field(default_factory=lambda: [False] * 16)
    holding: list[int] = field(default_factory=lambda: [0] * 16)
    input: list[int] = field(default_factory=lambda: [0] * 16)
    writable_holding: set[int] | None = None
    writable_coils: set[int] | None = None

    @classmethod
    def sized(cls, coils: int = 16, discrete: int = 16, holding: int = 16, input: int = 16) -> UnitMemory:
        return cls([False] * coils, [False] * discrete, [0] * holding, [0] * input)

    def sim_device(self, unit_id: int, action: object) -> SimDevice:
        def bits(n: int) -> list[SimData]:
            return [SimData(0, values=[False] * _round16(max(n, 1)), datatype=DataType.BITS)]

        def regs(n: int) -> list[SimData]:
            return [SimData(0, count=max(n, 1), values=0, datatype=DataType.REGISTERS)]

        return SimDevice(unit_id, simdata=(bits(len(self.coils)), bits(len(self.discrete)),
                                           regs(len(self.holding)), regs(len(self.input))),
                         action=action)  # type: ignore[arg-type]


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


class ModbusDeviceServer:
    """Serves `units` over Modbus TCP on `host:port` (port 0 = any free one) or RTU on `serial_port`."""

    def __init__(self, units: dict[int, UnitMemory], host: str = LOOPBACK, port: int = 0,
                 serial_port: str | None = None, baudrate: int = 9600,
                 max_registers_per_request: int | None = None) -> None:
        if host in ("0.0.0.0", "::", ""):
            raise ValueError("the simulator binds a specific address, never all interfaces")
        self.units = units
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.request_count: Counter[int] = Counter()
        self.requests_by_unit: Counter[int] = Counter()
        self.request_log: deque[ServedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        self.dropped = 0
        self.busy_answers = 0
        self.max_registers_per_request = max_registers_per_request
        self.refused_too_long = 0
        self._unresponsive: set[int] = set()
        self._busy: Counter[int] = Counter()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    # -- faults ---------------------------------------------------------------------------------

    def set_unresponsive(self, unit_id: int, silent: bool = True) -> None:
        if silent:
            self._unresponsive.add(unit_id)
        else:
            self._unresponsive.discard(unit_id)

    def set_busy(self, unit_id: int, requests: int) -> None:
        """Answer the next `requests` reads of `unit_id` with exception 6 (server device busy)."""
        self._busy[unit_id] = requests

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        devices = [mem.sim_device(uid, functools.partial(self._action, uid)) for uid, mem in self.units.items()]
        if self.serial_port:
            self._server = ModbusSerialServer(devices, framer=FramerType.RTU, port=self.serial_port,
                                              baudrate=self.baudrate, trace_pdu=self._trace_pdu)
        else:
            self._server = ModbusTcpServer(devices, address=(self.host, self.port), trace_pdu=self._trace_pdu)
        await self._server.serve_forever(background=True)
        if not self.serial_port:
            self.port = int(self._server.transport.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> ModbusDeviceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- pymodbus hooks -------------------------------------------------------------------------

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """Count requests; return None (= no answer at all) for silent or unknown unit ids."""
        if sending:
            return pdu
        if pdu.dev_id in self._unresponsive or pdu.dev_id not in self.units:
            self.dropped += 1
            return None
        self.request_count[pdu.function_code] += 1
        self.requests_by_unit[pdu.dev_id] += 1
        self.request_log.append(ServedRequest(pdu.dev_id, pdu.function_code, int(getattr(pdu, "address", 0)),
                                              int(getattr(pdu, "count", 0)), time.monotonic()))
        return pdu

    async def _action(self, unit_id: int, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Copy between UnitMemory and the pymodbus block for every request that reaches the store."""
        if self._busy[unit_id] > 0:
            self._busy[unit_id] -= 1
            self.busy_answers += 1
            return ExcCodes.DEVICE_BUSY
        limit = self.max_registers_per_request
        if limit is not None and function_code in _REGISTER_FUNCTIONS and values is None and count > limit:
            self.refused_too_long += 1
            return ExcCodes.ILLEGAL_VALUE
        mem = self.units[unit_id]
        if function_code in _BIT_FUNCTIONS:
            table: list[bool] = getattr(mem, _BIT_FUNCTIONS[function_code])
            if values is not None:
                if mem.writable_coils is not None and any(
                        a not in mem.writable_coils for a in range(address, address + len(values))):
                    return ExcCodes.ILLEGAL_ADDRESS
                table[address:address + len(values)] = [bool(v) for v in values]
            padded = table + [False] * (_round16(len(table)) - len(table))
            words = SimUtils.bitsToRegisters(padded)
            registers[:len(words)] = words  # bit blocks start at address 0
            return None
        regs: list[int] = getattr(mem, _REGISTER_FUNCTIONS[function_code])
        if values is not None:
            if mem.writable_holding is not None and any(
                    a not in mem.writable_holding for a in range(address, address + len(values))):
                return ExcCodes.ILLEGAL_ADDRESS
            regs[address:address + len(values)] = [int(v) & 0xFFFF for v in values]
        offset = address - start_address
        registers[offset:offset + count] = [v & 0xFFFF for v in regs[address:address + count]]
        return None


def _parse_units(text: str) -> list[int]:
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        units.extend(range(int(lo), int(hi or lo) + 1))
    return units


def pattern_memory(unit_id: int, holding: int, input_registers: int, coils: int) -> UnitMemory:
    """Registers hold unit * 1000 + address (mod 2^16); coils alternate: easy to check by eye."""
    return UnitMemory(
        coils=[a % 2 == 0 for a in range(coils)],
        discrete=[a % 3 == 0 for a in range(coils)],
        holding=[(unit_id * 1000 + a) & 0xFFFF for a in range(holding)],
        input=[(unit_id * 1000 + a) & 0xFFFF for a in range(input_registers)],
    )


async def _serve(args: argparse.Namespace) -> None:
    units = {u: pattern_memory(u, args.holding, args.input, args.coils) for u in _parse_units(args.units)}
    server = ModbusDeviceServer(units, host=args.host, port=args.port, serial_port=args.serial_port,
                                baudrate=args.baudrate, max_registers_per_request=args.max_registers_per_request)
    await server.start()
    where = args.serial_port or f"{args.host}:{server.port}"
    print(f"modbus device: units {args.units} on {where}", flush=True)
    await until_terminated()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.modbus_device", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serial-port", help="serve Modbus RTU on this serial port instead of TCP")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--units", default="1", help="unit ids, e.g. 1-20 or 1,3,5")
    parser.add_argument("--holding", type=int, default=200, help="holding registers per unit")
    parser.add_argument("--input", type=int, default=200, help="input registers per unit")
    parser.add_argument("--coils", type=int, default=64, help="coils and discrete inputs per unit")
    parser.add_argument("--max-registers-per-request", type=int,
                        help="refuse longer register reads with exception 3, as some meters do")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
