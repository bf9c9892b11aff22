"""Bytes on the wire per summary, wire v1 vs v2, with and without gRPC compression; prints, asserts nothing.

The real agent uplink (UplinkClient + StoreAndForwardQueue, batches built by agent/batch.py) sends
the same batches to the real collector through a loopback TCP proxy that counts every byte the
agent sends (HTTP/2 framing, headers, Hello, pings included). Two loads, 1000 points over 50
assets: a short interval with one reading per point per interval (min = max = mean = last, the
case where v1 repeats the most), and ten readings per interval. v1 without compression is the
wire before v2 existed.

The agent's CPU for what changes (v2 conversion of a queued batch, gzip of the message) is
measured apart, in this process, without the network, against v1's own parse + serialize.

    python bench/wire_bench.py [--batches 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.analytics.summarize import PointSummary
from agent.batch import build_batch, build_hello
from agent.model import AssetSpec, PointSpec
from agent.uplink.client import ChannelSettings, UplinkClient
from agent.uplink.queue import StoreAndForwardQueue
from agent.uplink.wire import encoder
from bench.ingest_load import LOOPBACK, CollectorProcess, token
from protos.twin.v1 import twin_pb2

POINTS = (("supply_air_temp", "degC"), ("return_air_temp", "degC"), ("filter_dp", "Pa"), ("fan_speed", "%"),
          ("valve_pos", "%"), ("supply_air_rh", "%"), ("damper_pos", "%"), ("coil_temp", "degC"),
          ("power_kw", "kW"), ("energy_kwh", "kWh"), ("flow_m3h", "m3/h"), ("pressure_bar", "bar"),
          ("motor_current_a", "A"), ("voltage_v", "V"), ("frequency_hz", "Hz"), ("setpoint_temp", "degC"),
          ("outdoor_temp", "degC"), ("co2_ppm", "ppm"), ("runtime_h", "h"), ("alarm_code", ""))


def assets() -> list[AssetSpec]:
    return [AssetSpec(id=f"ahu-{a:02d}", type="ahu", name=f"AHU {a}",
                      points=tuple(PointSpec(asset=f"ahu-{a:02d}", name=n, unit=u, expected_interval_s=1.0)
                                   for n, u in POINTS)) for a in range(50)]


def make_batches(specs: list[AssetSpec], n: int, readings: int, interval_ns: int) -> list[twin_pb2.Batch]:
    rng = random.Random(3)
    point_specs = {(p.asset, p.name): p for a in specs for p in a.points}
    t0 = time.time_ns() - n * interval_ns
    out = []
    for k in range(n):
        end = t0 + (k + 1) * interval_ns
        summaries = []
        for (asset, point), _ in point_specs.items():
            values = [round(20 + rng.gauss(0, 2), 2) for _ in range(readings)]
            times = sorted(end - rng.randrange(interval_ns) for _ in range(readings))
            summaries.append(PointSummary(asset=asset, point=point, first_ns=times[0], last_ns=times[-1],
                                          count=readings, total=sum(values), min=min(values), max=max(values),
                                          last=values[-1]))
        out.append(build_batch(summaries=summaries, point_specs=point_specs, interval_end_ns=end, changes=(),
                               asset_states={a.id: ("online", 100.0) for a in specs}, vibration=(),
                               health=twin_pb2.AgentHealth(ts_ns=end, queue_batches=1, rss_mb=45.0)))
    return out


class CountingProxy:
    """Loopback TCP relay that counts the bytes flowing agent -> collector."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upstream = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        self._writers += [writer, up_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.upstream += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the bench is over
            await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def send_all(tmp: Path, batches: list[twin_pb2.Batch], specs: list[AssetSpec], wire: str,
                   compression: str) -> int:
    """Bytes the agent sent to deliver `batches` (a fresh collector, queue and connection)."""
    collector = CollectorProcess.collector(tmp / f"c-{wire}-{compression}", 1)
    await collector.wait_ready()
    proxy = CountingProxy(collector.port)
    await proxy.start()
    queue = StoreAndForwardQueue(tmp / f"q-{wire}-{compression}.sqlite", 1 << 30)
    await queue.open()
    try:
        for b in batches:
            await queue.put(lambda seq, b=b: twin_pb2.Batch(seq=seq, created_ns=b.created_ns, summaries=b.summaries,
                                                             asset_states=b.asset_states,
                                                             health=b.health).SerializeToString(),
                            b.created_ns, summaries=len(b.summaries))
        hello = build_hello("bench-00000", "bench", "bench", queue.epoch, specs)
        client = UplinkClient(ChannelSettings(f"{LOOPBACK}:{proxy.port}", token(0), compression=compression),
                              queue, lambda: hello, max_in_flight=16, wire=wire)
        task = asyncio.create_task(client.run())
        await drained(queue)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if client.wire != wire:
            raise RuntimeError(f"the collector did not accept wire {wire}")
        return proxy.upstream
    finally:
        await queue.close()
        await proxy.stop()
        collector.stop()


async def drained(queue: StoreAndForwardQueue) -> None:
    """Until every batch is acked (the queue's count is all there is to watch)."""
    for _ in iter(int, 1):
        if queue.stats().batches == 0:
            return
        await asyncio.sleep(0.05)


def encode_cpu_us(payloads: list[bytes], wire: str, gzip: bool) -> float:
    """Agent CPU per summary to turn queued payloads into the stream's messages (and gzip them)."""
    summaries = sum(len(twin_pb2.Batch.FromString(p).summaries) for p in payloads)
    enc = encoder(wire)
    started = time.process_time()
    for p in payloads:
        data = enc.batch(p).SerializeToString()
        if gzip:
            zlib.compress(data)
    return (time.process_time() - started) / summaries * 1e6


async def main_async(n: int) -> None:
    specs = assets()
    with tempfile.TemporaryDirectory(prefix="wire-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for label, readings in (("1 reading per point per interval", 1), ("10 readings per point per interval", 10)):
            batches = make_batches(specs, n, readings, 1_000_000_000)
            summaries = sum(len(b.summaries) for b in batches)
            print(f"\n== {label}: {n} batches x {len(batches[0].summaries)} summaries")
            payloads = [b.SerializeToString() for b in batches]
            base = None
            for wire in ("v1", "v2"):
                for compression in ("none", "gzip"):
                    sent = await send_all(tmp, batches, specs, wire, compression)
                    per = sent / summaries
                    base = base or per
                    cpu = encode_cpu_us(payloads, wire, compression == "gzip")
                    print(f"  wire {wire}, compression {compression:<4}: {per:6.1f} bytes/summary on the wire "
                          f"({per / base:4.2f}x of v1 uncompressed); agent CPU to encode {cpu:5.2f} us/summary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    asyncio.run(main_async(parser.parse_args().batches))


if __name__ == "__main__":
    main()
