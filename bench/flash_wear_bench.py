"""Flash wear: the agent's bytes written per hour at default settings with 1000 points, against the
payload it must keep (the batches stored in its queue).

A Modbus device served by the bench (20 units x 50 holding registers whose values move every second,
like live measurements), the real collector, and the agent with nothing but the defaults (summary
interval, poll period, twin flush, status interval, queue) reading all 1000 registers. After a
warm-up, the bench reads the agent's write_bytes from /proc/PID/io (bytes the process caused to be
written to the block device: SQLite, WAL, status file) at the start and the end of a window, and
the payload stored in the queue over the same window: the agent's own counter
(twin_agent_queue_payload_bytes_stored_total, the batches before the queue compresses them); and the
bytes a TCP proxy forwarded from the agent to the collector, which stand in for the payload in
versions without that counter (they sent the batches as they are, plus a little gRPC framing). The state
directory must be on a real disk (tmpfs writes are not counted). Goal: written <= payload + 10 %.
Asserts nothing.

    python bench/flash_wear_bench.py [--seconds 600] [--agent-setting "twin_flush_interval_s = 3600"]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families

from simulator.modbus_device import ModbusDeviceServer, pattern_memory
from tests.integration.daemons import TOKENS, Processes, agent_process, collector_process
from tests.servers import free_port
from tests.tcp_proxy import TcpProxy

UNITS = 20
REGISTERS = 50


def agent_toml(state_dir: Path, collector_port: int, device_port: int, metrics_port: int, extra: str = "") -> str:
    """Defaults everywhere but the addresses: one asset per unit, 50 uint16 points each."""
    assets = "".join(f'[[assets]]\nid = "ahu-{u}"\ntype = "ahu"\n\n' for u in range(1, UNITS + 1))
    devices = "".join(f"  [[sources.devices]]\n  unit_id = {u}\n" for u in range(1, UNITS + 1))
    points = "".join(f'  [[sources.points]]\n  asset = "ahu-{u}"\n  name = "p{a}"\n  unit = "degC"\n'
                     f"  unit_id = {u}\n  address = {a}\n  scale = 0.1\n"
                     for u in range(1, UNITS + 1) for a in range(REGISTERS))
    return textwrap.dedent(f"""
        [agent]
        id = "gw-a"
        site = "plant-a"
        state_dir = "{state_dir}"
        {extra}

        [uplink]
        collector = "127.0.0.1:{collector_port}"
        token = "{TOKENS['gw-a']}"

        [metrics]
        listen = "127.0.0.1:{metrics_port}"

        """) + assets + textwrap.dedent(f"""
        [[sources]]
        type = "modbus"
        name = "plant"
        host = "127.0.0.1"
        port = {device_port}
        """) + devices + points


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def payload_counter(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "twin_agent_queue_payload_bytes_stored_total":
                return s.value
    return None


async def live_values(units: dict[int, object], stop: asyncio.Event) -> None:
    """Every register walks by a small random step each second, like a live measurement."""
    rng = random.Random(1)
    while not stop.is_set():
        for mem in units.values():
            regs = mem.holding  # type: ignore[attr-defined]
            for a in range(REGISTERS):
                regs[a] = max(0, min(0xFFFF, regs[a] + rng.randint(-3, 3)))
        await asyncio.sleep(1.0)


async def run(seconds: float, work: Path, extra: str) -> None:
    units = {u: pattern_memory(u, REGISTERS, 0, 0) for u in range(1, UNITS + 1)}
    device = ModbusDeviceServer(units)  # type: ignore[arg-type]
    await device.start()
    stop = asyncio.Event()
    walker = asyncio.create_task(live_values(units, stop))
    try:
        with Processes() as procs, TcpProxy(procs.add(collector_process(work / "c")).port) as proxy:
            metrics_port = free_port()
            agent = procs.add(agent_process(work / "a", agent_toml(work / "a" / "state", proxy.port, device.port,
                                                                   metrics_port, extra)))
            await asyncio.sleep(30)  # warm-up: connections, first intervals, the status written at start
            w0, p0, f0, t0 = (write_bytes(agent.pid), payload_counter(metrics_port), proxy.forwarded_bytes,
                              time.monotonic())
            await asyncio.sleep(seconds)
            w1, p1, f1, t1 = (write_bytes(agent.pid), payload_counter(metrics_port), proxy.forwarded_bytes,
                              time.monotonic())
    finally:
        stop.set()
        await walker
        await device.stop()
    per_hour = 3600.0 / (t1 - t0)
    written, sent = (w1 - w0) * per_hour, (f1 - f0) * per_hour
    print(f"1000 points, default settings, {t1 - t0:.0f} s window: agent wrote {written / 1e6:.1f} MB/h")
    if p0 is not None and p1 is not None:
        payload = (p1 - p0) * per_hour
        print(f"  queue payload (the batches stored, before compression; agent's counter): {payload / 1e6:.1f} MB/h "
              f"-> written / payload = {written / payload:.2f} (goal <= 1.10)")
        print(f"  sent upstream (TCP bytes, after any wire interning and gRPC compression): {sent / 1e6:.1f} MB/h")
    else:  # a version without the counter, which sent its batches uncompressed: the wire bytes stand in
        print(f"  sent upstream (TCP bytes: the batches plus gRPC framing): {sent / 1e6:.1f} MB/h -> written / sent = "
              f"{written / sent:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--agent-setting", action="append", default=[],
                        help='an [agent] line instead of its default, e.g. "twin_flush_interval_s = 3600"')
    args = parser.parse_args()
    if args.agent_setting:
        print("non-default: " + "; ".join(args.agent_setting))
    with tempfile.TemporaryDirectory(prefix="flash-wear-", dir="/var/tmp") as tmp:
        asyncio.run(run(args.seconds, Path(tmp), "\n".join(args.agent_setting)))


if __name__ == "__main__":
    main()
