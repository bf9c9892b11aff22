"""BACnet polling throughput: ReadPropertyMultiple of 200 objects from one controller.

The simulated controller (simulator.bacnet_ahu with 200 extra analog inputs, max APDU 1476,
segmentation) runs as its own process on loopback. Measured in the same run, on this process's
CPU time (points per second per core) and wall time:

    raw        bare BACpypes3: read_property_multiple of the same objects and 4 properties, in the
               same request sizes, back to back (the limit of this machine, device and library)
    connector  BacnetConnector.read_once(cycles): request sizing, quality from status flags and
               reliability, value decoding, Reading objects

No assertions: numbers depend on the machine.

    .venv/bin/python bench/bacnet_bench.py [--cycles 20]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

from agent.connectors.bacnet.codec import POLLED_PROPERTIES, objects_per_request, split
from agent.connectors.bacnet.connector import BacnetConnector, build
from agent.connectors.bacnet.link import BacnetLink

ROOT = Path(__file__).resolve().parents[1]
OBJECTS = 200
INSTANCE = 1001


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_device(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.bacnet_ahu", "--address", f"127.0.0.1:{port}", "--instance", str(INSTANCE),
         "--extra-analog", str(OBJECTS), "--step-s", "3600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    if "bacnet ahu device" not in proc.stdout.readline().decode():
        proc.kill()
        raise RuntimeError("the BACnet device process did not start")
    return proc


def objects() -> list[tuple[str, int]]:
    return [("analog-input", 100 + n) for n in range(OBJECTS)]


async def raw(port: int, cycles: int) -> tuple[int, float, float]:
    link = BacnetLink(f"127.0.0.1:{free_udp_port()}", 4194300, 2.0, 1)
    link.open()
    try:
        batches = split(objects(), objects_per_request(1476, "segmented-both"))
        address = f"127.0.0.1:{port}"
        await link.read_multiple(address, batches[0], POLLED_PROPERTIES)  # warm up
        values, cpu, wall = 0, time.process_time(), time.perf_counter()
        for _ in range(cycles):
            for batch in batches:
                values += len(await link.read_multiple(address, batch, POLLED_PROPERTIES))
        return values, time.process_time() - cpu, time.perf_counter() - wall
    finally:
        link.close()


def connector(port: int) -> BacnetConnector:
    return build({
        "name": "bench", "local_address": f"127.0.0.1:{free_udp_port()}", "poll_interval_s": 30.0,
        "apdu_timeout_s": 2.0, "apdu_retries": 1, "devices": [{"instance": INSTANCE, "address": f"127.0.0.1:{port}"}],
        "points": [{"asset": "zones", "name": f"zone_{i}", "device": INSTANCE, "object": f"AI:{obj[1]}"}
                   for i, obj in enumerate(objects())],
    }, "bench")


async def through_connector(port: int, cycles: int) -> tuple[int, float, float]:
    await connector(port).read_once(1)  # warm up
    c = connector(port)
    cpu, wall = time.process_time(), time.perf_counter()
    readings = await c.read_once(cycles)
    return len(readings), time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    port = free_udp_port()
    device = start_device(port)
    try:
        n_raw, cpu_raw, wall_raw = asyncio.run(raw(port, args.cycles))
        n_con, cpu_con, wall_con = asyncio.run(through_connector(port, args.cycles))
    finally:
        device.terminate()
        device.wait(10)
    per = objects_per_request(1476, "segmented-both")
    print(f"BACnet: {OBJECTS} analog inputs, {per} objects per ReadPropertyMultiple, {args.cycles} cycles")
    print(f"  raw BACpypes3  {n_raw / cpu_raw:9.0f} points/s per core   {n_raw / wall_raw:9.0f} points/s wall")
    print(f"  connector      {n_con / cpu_con:9.0f} points/s per core   {n_con / wall_con:9.0f} points/s wall "
          "(connect and discovery included)")
    print(f"  ratio connector / raw: {(n_con / cpu_con) / (n_raw / cpu_raw):.2f} per core, "
          f"{(n_con / wall_con) / (n_raw / wall_raw):.2f} wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
