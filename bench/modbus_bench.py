"""Modbus polling throughput: 20 devices x 50 registers, coalesced vs one request per point.

A Modbus device (simulator.modbus_device, 20 unit ids behind one TCP port, like an RS-485 gateway)
runs as its own process on loopback. Each mode is measured twice in the same run:

    raw        a bare pymodbus client issuing exactly the requests of the mode back to back
               (the limit of this machine, server and library for that request pattern)
    connector  ModbusConnector.read_once() over the same points (planning, locking, decoding,
               Reading objects: the cost of the connector itself)

Printed: points/s, requests per poll cycle, the connector's share of the raw limit, and the
speed-up of coalescing. No assertions: numbers depend on the machine.

    .venv/bin/python bench/modbus_bench.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from agent.connectors.modbus.connector import ModbusConnector, build

DEVICES = 20
POINTS_PER_DEVICE = 50
STRIDE = 2  # points at registers 0, 2, ..., 98: scattered, but close enough to coalesce
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_device(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.modbus_device", "--port", str(port), "--units", f"1-{DEVICES}",
         "--holding", str(POINTS_PER_DEVICE * STRIDE + 10), "--input", "1", "--coils", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the Modbus device process did not start")


def connector(port: int, per_point: bool) -> ModbusConnector:
    points = [{"asset": f"dev-{u}", "name": f"r{a}", "unit_id": u, "address": a}
              for u in range(1, DEVICES + 1) for a in range(0, POINTS_PER_DEVICE * STRIDE, STRIDE)]
    table = {"name": "bench", "host": "127.0.0.1", "port": port, "timeout_s": 2.0, "poll_interval_s": 5.0,
             "max_registers_per_request": 1 if per_point else 125, "points": points}
    return build(table, "sources[0]")


async def raw_rate(port: int, requests: list[tuple[int, int, int]], seconds: float) -> tuple[float, int]:
    """Poll cycles per second of a bare client sending `requests` (unit, address, count) in turn."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0, reconnect_delay=0)
    await client.connect()
    cycles, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds or cycles < 2:
            for unit, address, count in requests:
                response = await client.read_holding_registers(address, count=count, device_id=unit)
                if response.isError():
                    raise RuntimeError(f"unexpected exception response {response}")
            cycles += 1
    finally:
        client.close()
    return cycles / (time.perf_counter() - start), cycles


async def connector_rate(conn: ModbusConnector, seconds: float) -> tuple[float, float]:
    """(poll cycles per second, requests per cycle) of read_once() on the connector."""
    cycles, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds or cycles < 2:
            readings = await conn.read_once()
            if len(readings) != DEVICES * POINTS_PER_DEVICE or any(r.value is None for r in readings):
                raise RuntimeError(f"bad readings: {[r for r in readings if r.value is None][:3]}")
            cycles += 1
        return cycles / (time.perf_counter() - start), conn.requests_sent / cycles
    finally:
        conn.close()


async def measure(port: int, seconds: float) -> None:
    points = DEVICES * POINTS_PER_DEVICE
    rows = []
    for mode, per_point in (("coalesced", False), ("per point", True)):
        conn = connector(port, per_point)
        plan = [(r.unit_id, r.address, r.count) for r in conn.requests]
        raw_cps, _ = await raw_rate(port, plan, seconds)
        conn_cps, req_per_cycle = await connector_rate(conn, seconds)
        rows.append((mode, req_per_cycle, raw_cps * points, conn_cps * points, conn_cps / raw_cps))
    print(f"Modbus TCP, {DEVICES} devices x {POINTS_PER_DEVICE} uint16 points (every {STRIDE}nd register), "
          f"one connection, {seconds:g} s per measurement")
    print(f"{'mode':<10} {'requests/cycle':>14} {'raw points/s':>13} {'connector points/s':>19} "
          f"{'connector/raw':>13}")
    for mode, req, raw, conn, ratio in rows:
        print(f"{mode:<10} {req:>14.0f} {raw:>13.0f} {conn:>19.0f} {ratio:>13.2f}")
    print(f"coalescing speed-up (connector, coalesced / per point): {rows[0][3] / rows[1][3]:.1f}x; "
          f"requests per cycle {rows[1][1]:.0f} -> {rows[0][1]:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()
    port = free_port()
    device = start_device(port)
    try:
        asyncio.run(measure(port, args.seconds))
    finally:
        device.terminate()
        device.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
