"""`twin-agent probe modbus`: read a few registers and print every way they could be meant.

The commonest support problem with Modbus is not the network but the meaning of the numbers: the
manual's register 40001 is protocol address 0, a float32 arrives word-swapped, a temperature is an
int16 in tenths. Reading the registers once and showing them as int16/uint16 and, for every 32- and
64-bit window, as int/uint/float in the four byte/word orders lets a person match a value they can
see on the device display to the right type, order and address in one go.

    python -m agent.connectors.modbus.probe --host 127.0.0.1 --port 502 --unit 1 --address 0 --count 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from agent.connectors.modbus.codec import ORDERS, decode_registers
from agent.connectors.modbus.link import EXCEPTION_NAMES

__all__ = ["add_arguments", "describe", "main", "run"]

REFERENCE_PREFIX = {"holding": 4, "input": 3}
WIDE_TYPES = (("int32", "uint32", "float32", 2), ("int64", "uint64", "float64", 4))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `probe modbus` (shared by twin-agent and `python -m ...probe`)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP device or gateway")
    where.add_argument("--serial-port", help="Modbus RTU serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--unit", type=int, default=1, help="unit / slave / device id (default 1)")
    parser.add_argument("--address", type=int, required=True, help="first register to read")
    parser.add_argument("--count", type=int, default=4, help="registers to read, 1..125 (default 4)")
    parser.add_argument("--function", choices=["holding", "input"], default="holding",
                        help="holding registers (FC 3, default) or input registers (FC 4)")
    parser.add_argument("--address-base", type=int, choices=[0, 1], default=0,
                        help="1 if --address is the manual's 1-based register number")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")


def _plausible(value: float) -> bool:
    """A float that could be a physical reading (marks the likely order in the tables)."""
    return math.isfinite(value) and (value == 0.0 or 1e-3 <= abs(value) <= 1e9)


def _fmt_float(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return f"{text} *" if _plausible(value) and value != 0.0 else text


def _reference(prefix: int, number: int) -> str:
    """Modicon-style reference: 40001..49999, or the 6-digit 400001.. form beyond 9999."""
    return f"{prefix}{number:04d}" if number <= 9999 else f"{prefix}{number:05d}"


def _ascii(register: int) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in register.to_bytes(2, "big"))


def describe(registers: Sequence[int], address: int, function: str = "holding") -> str:
    """The report for `registers` read from protocol address `address` (pure; tested)."""
    regs = [int(r) & 0xFFFF for r in registers]
    prefix = REFERENCE_PREFIX.get(function, 4)
    lines = [
        "Registers (protocol address = what goes on the wire, 0-based):",
        f"  {'address':>7}  {'1-based':>7}  {'ref':>6}  {'hex':>6}  {'uint16':>6}  {'int16':>6}  ascii",
    ]
    for i, r in enumerate(regs):
        a = address + i
        ref = _reference(prefix, a + 1) if a + 1 <= 65536 else "-"
        lines.append(f"  {a:>7}  {a + 1:>7}  {ref:>6}  0x{r:04X}  {r:>6}  "
                     f"{decode_registers([r], 'int16'):>6}  {_ascii(r)}")
    for int_t, uint_t, float_t, width in WIDE_TYPES:
        if len(regs) < width:
            continue
        bits = 16 * width
        lines += ["", f"{bits}-bit windows ({width} registers from each address; * = plausible float):",
                  f"  {'address':>7}  order  {'hex (as received)':<{4 * width + 2}}  {int_t:>20}  {uint_t:>20}  "
                  f"{float_t}"]
        for start in range(len(regs) - width + 1):
            window = regs[start:start + width]
            raw_hex = "0x" + "".join(f"{r:04X}" for r in window)
            for n, (order, (byte_order, word_order)) in enumerate(ORDERS.items()):
                i_val = decode_registers(window, int_t, byte_order, word_order)
                u_val = decode_registers(window, uint_t, byte_order, word_order)
                f_val = decode_registers(window, float_t, byte_order, word_order)
                assert isinstance(f_val, float)
                head = f"{address + start:>7}" if n == 0 else " " * 7
                shown = raw_hex if n == 0 else ""
                lines.append(f"  {head}  {order}   {shown:<{4 * width + 2}}  {i_val:>20}  {u_val:>20}  "
                             f"{_fmt_float(f_val, 7 if width == 2 else 15)}")
    lines += [
        "",
        "Orders: ABCD = byte_order big, word_order big;  CDAB = big, little (word swap, common in meters);",
        "        BADC = little, big (byte swap);          DCBA = little, little.",
        f"Address base: protocol address {address} is register {address + 1} in 1-based documentation",
        f"        (\"{_reference(prefix, address + 1)}\" style). If the manual numbers registers from 1, "
        "configure address = manual",
        "        number with address_base = 1 (or subtract 1 and keep address_base = 0). Values that look",
        "        right but one register off mean the address base is wrong.",
    ]
    return "\n".join(lines)


async def _read(args: argparse.Namespace, address: int) -> list[int]:
    client: AsyncModbusTcpClient | AsyncModbusSerialClient
    backstop = args.timeout + 1.0  # pymodbus' own timeout; ours (wait_for below) fires first
    if args.host:
        client = AsyncModbusTcpClient(args.host, port=args.port, timeout=backstop, retries=0, reconnect_delay=0)
        where = f"{args.host}:{args.port}"
    else:
        client = AsyncModbusSerialClient(args.serial_port, baudrate=args.baudrate, parity=args.parity,
                                         stopbits=args.stopbits, timeout=backstop, retries=0, reconnect_delay=0)
        where = args.serial_port
    try:
        if not await asyncio.wait_for(client.connect(), backstop):
            raise ConnectionError(f"cannot connect to {where}")
        read = client.read_holding_registers if args.function == "holding" else client.read_input_registers
        try:
            response = await asyncio.wait_for(read(address, count=args.count, device_id=args.unit), args.timeout)
        except (TimeoutError, ModbusException):
            hint = (", baudrate, parity and wiring (A/B swapped?)" if args.serial_port
                    else " (a gateway needs the unit id of the device behind it)")
            raise TimeoutError(f"no answer from unit {args.unit} at {where} within {args.timeout:g} s: "
                               f"check the unit id{hint}") from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            hint = {2: " (address or count outside the device's map: try --address +/- 1 or a smaller --count)",
                    1: " (the device does not support this function: try --function input/holding)"}.get(code, "")
            raise LookupError(f"exception {code} {EXCEPTION_NAMES.get(code, 'unknown')}{hint}")
        return list(response.registers)
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    """Probe once and print the report; 0 on success, 1 if the device refused or was silent, 2 on usage."""
    address = args.address - args.address_base
    if not 1 <= args.count <= 125:
        print("--count must be 1..125", file=sys.stderr)
        return 2
    if address < 0 or address + args.count - 1 > 65535:
        print(f"--address {args.address} (base {args.address_base}) is outside 0..65535", file=sys.stderr)
        return 2
    where = f"{args.host}:{args.port}" if args.host else args.serial_port
    fc = 3 if args.function == "holding" else 4
    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # this command reports failures itself
    print(f"Modbus probe: {where} unit {args.unit}, {args.function} registers (FC {fc}), "
          f"protocol address {address}, count {args.count}")
    try:
        registers = asyncio.run(_read(args, address))
    except (ConnectionError, TimeoutError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(registers, address, args.function))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.connectors.modbus.probe", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
