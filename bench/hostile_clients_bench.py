"""What clients without a valid token, and many agents on one InfluxDB writer, cost the real collector.

Three loads on the real `python -m collector run` (log level "warning", as in production):

1. memory: 12 streams without a token and 12 with a wrong one, each sending a 15 MB message (just
   under the 16 MiB message limit), then 12 sending 50 MB (over it). The collector's RSS is sampled
   every 20 ms: before, peak, and 5 s after. The raw limit is the same collector's RSS at rest.
2. log volume: 200 connections that send a corrupt first message, 200 without a token and 200 with
   a wrong agent id: the bytes the collector logged for them, against one line per kind per minute.
3. InfluxDB 1.x writer: 201 agents (10 summaries per batch, one batch per second each) for 30 s
   into a real InfluxDB 1.6: "Connection pool is full" warnings, and points stored against points sent.

Asserts nothing; prints the figures. Run: `python bench/hostile_clients_bench.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest_load import (
    CONNECT_METHOD,
    LOOPBACK,
    CollectorProcess,
    SimAgent,
    connect_all,
    hello_for,
    make_template,
    paced,
    token,
)
from protos.twin.v1 import twin_pb2
from tests.servers import influxd_server

STREAMS = 12
BIG_MB = 15
OVER_LIMIT_MB = 50
REFUSED = 200


class RssSampler:
    """Samples a process's RSS in the background; keeps the peak."""

    def __init__(self, server: CollectorProcess) -> None:
        self.server = server
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.server.rss_mb())
            await asyncio.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = self.server.rss_mb()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def send_raw(port: int, metadata: tuple[tuple[str, str], ...], payload: bytes) -> str:
    """Open a stream, write one message, read the answer: the status code the client saw."""
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=[
            ("grpc.max_send_message_length", -1)]) as channel:
        call = channel.stream_stream(CONNECT_METHOD["v1"], request_serializer=lambda b: b,
                                     response_deserializer=twin_pb2.CollectorMessage.FromString)(metadata=metadata)
        try:
            await call.write(payload)
            await call.read()
            await call.done_writing()
            return (await call.code()).name
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return (await call.code()).name


def hello_message(index: int) -> bytes:
    return twin_pb2.AgentMessage(hello=hello_for(index, make_template(index, 1))).SerializeToString()


async def memory(tmp: Path) -> None:
    server = CollectorProcess.collector(tmp / "memory", agents=2)
    try:
        await server.wait_ready()
        await asyncio.sleep(2.0)
        at_rest = server.rss_mb()
        big = b"\x0a" + b"\xff" * (BIG_MB * 1024 * 1024)  # a Hello field that never ends: garbage to parse
        over = b"\x00" * (OVER_LIMIT_MB * 1024 * 1024)
        with RssSampler(server) as rss:
            no_token = await asyncio.gather(*(send_raw(server.port, (), big) for _ in range(STREAMS)))
            wrong = await asyncio.gather(*(send_raw(server.port, (("authorization", "Bearer not-a-token"),), big)
                                           for _ in range(STREAMS)))
            oversize = await asyncio.gather(*(send_raw(server.port, (("authorization", f"Bearer {token(0)}"),),
                                                       over) for _ in range(STREAMS)))
            await asyncio.sleep(5.0)
            after = server.rss_mb()
        codes = sorted(set(no_token)), sorted(set(wrong)), sorted(set(oversize))
        print(f"== memory: {STREAMS} streams without a token and {STREAMS} with a wrong one x {BIG_MB} MB, "
              f"{STREAMS} x {OVER_LIMIT_MB} MB with a valid token")
        print(f"  collector RSS at rest {at_rest:.0f} MB, peak {rss.peak:.0f} MB (+{rss.peak - at_rest:.0f}), "
              f"5 s after {after:.0f} MB (+{after - at_rest:.0f}); clients saw {codes[0]} / {codes[1]} / {codes[2]}")
        print(f"  raw limit: the {STREAMS * 2 * BIG_MB + STREAMS * OVER_LIMIT_MB} MB offered; before (issue 11.6): "
              f"93 -> 864 MB, 804 MB kept, for 12 x 50 MB without a token")
    finally:
        server.stop()


async def log_volume(tmp: Path) -> None:
    server = CollectorProcess.collector(tmp / "logs", agents=2)
    try:
        await server.wait_ready()
        await asyncio.sleep(1.0)
        start = server.log_path.stat().st_size
        good = (("authorization", f"Bearer {token(0)}"),)
        loads = {
            "corrupt first message": (good, b"\xff\xff\xff\xff\x0f"),
            "no token": ((), hello_message(0)),
            "wrong agent id for the token": (good, hello_message(1)),
        }
        for label, (metadata, payload) in loads.items():
            before = server.log_path.stat().st_size
            codes = await asyncio.gather(*(send_raw(server.port, metadata, payload) for _ in range(REFUSED)))
            await asyncio.sleep(0.5)
            grown = server.log_path.stat().st_size - before
            print(f"  {REFUSED} x {label:<30} -> {sorted(set(codes))}, {grown} bytes of log")
        total = server.log_path.stat().st_size - start
        lines = server.log_path.read_text(errors="replace").splitlines()
        tracebacks = sum(1 for x in lines if x.startswith("Traceback"))
        print(f"  total for {3 * REFUSED} refused streams: {total} bytes, {tracebacks} tracebacks "
              f"(before, issue 11.7: 271 KB for 200 connections, a 15-line traceback per corrupt message)")
    finally:
        server.stop()


def influx_points(port: int, database: str) -> int:
    query = urllib.parse.urlencode({"db": database, "q": "SELECT count(\"count\") FROM telemetry"})
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/query?{query}", timeout=30) as resp:
        series = json.load(resp)["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


async def influx_pool(tmp: Path, agents: int, seconds: float) -> None:
    influx = influxd_server(tmp / "influxd")
    try:
        cfg = f'[influx]\napi = "v1"\nurl = "http://{LOOPBACK}:{influx.port}"\ndatabase = "pool"\n'
        server = CollectorProcess.collector(tmp / "pool", agents, cfg)
        try:
            await server.wait_ready()
            sims = [SimAgent(i, server.port, per_batch=10) for i in range(agents)]
            await connect_all(sims)
            tally = await paced(sims, rate_summaries_s=agents * 10.0, duration_s=seconds, window=16)
            for a in sims:
                await a.close()
            await asyncio.sleep(1.0)
            text = server.log_path.read_text(errors="replace")
            warnings = text.count("Connection pool is full")
            stored = influx_points(influx.port, "pool")
            print(f"== InfluxDB 1.x writer: {agents} agents x 10 summaries/s for {seconds:.0f} s")
            print(f"  'Connection pool is full' warnings: {warnings} (before, issue 11.8: 7,234 in 160 s with 201 "
                  f"agents); log {len(text)} bytes; summaries acked {tally.summaries}, stored in InfluxDB {stored} "
                  f"(ratio {stored / max(tally.summaries, 1):.3f}); errors {len(tally.errors)}")
        finally:
            server.stop()
    finally:
        influx.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=201)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as d:
        tmp = Path(d)
        t0 = time.monotonic()
        await memory(tmp)
        print("== log volume (one rate-limited line per kind per minute)")
        await log_volume(tmp)
        await influx_pool(tmp, args.agents, args.seconds)
        print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
