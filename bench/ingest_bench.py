"""Collector ingest: summaries/s through the gRPC stream into the SQLite sink, vs a bare gRPC loop.

Both runs use the same process, the same messages and the same stream protocol (Hello, then batches
with up to WINDOW unacked); the bare servicer acks every batch without storing anything, which is
the raw limit of gRPC + protobuf on this machine. Prints the ratio; asserts nothing.

    python bench/ingest_bench.py [--batches 300] [--summaries 100]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from collector.config import hash_token
from collector.fleet import FleetTwin
from collector.ingest import IngestServicer
from collector.summary_store import SqliteSummarySink
from protos.twin.v1 import twin_pb2, twin_pb2_grpc

TOKEN = "bench-token-0123456789abcdef"
WINDOW = 16


class BareServicer(twin_pb2_grpc.CollectorServicer):
    async def Connect(self, request_iterator: AsyncIterator[twin_pb2.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[twin_pb2.CollectorMessage]:
        async for msg in request_iterator:
            yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=msg.batch.seq if msg.HasField("batch") else 0))


def make_batches(n: int, per_batch: int) -> list[twin_pb2.Batch]:
    t0 = time.time_ns() - n * 10**10
    out = []
    for seq in range(1, n + 1):
        end = t0 + seq * 10**10
        out.append(twin_pb2.Batch(seq=seq, created_ns=end, summaries=[
            twin_pb2.Summary(asset=f"ahu-{i % 10}", point=f"p{i}", unit="degC", first_ns=end - 10**10, last_ns=end,
                             interval_end_ns=end, mean=20.0 + i, min=19.0, max=21.0 + i, last=20.5, count=10,
                             quality=twin_pb2.GOOD) for i in range(per_batch)],
            health=twin_pb2.AgentHealth(ts_ns=end, queue_batches=1)))
    return out


async def stream(port: int, batches: list[twin_pb2.Batch]) -> float:
    hello = twin_pb2.Hello(agent_id="bench", site="b", version="bench", queue_epoch="e", assets=[
        twin_pb2.AssetDescriptor(id=f"ahu-{i}", type="ahu") for i in range(10)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = twin_pb2_grpc.CollectorStub(channel).Connect(metadata=(("authorization", f"Bearer {TOKEN}"),))
        started = time.perf_counter()
        await call.write(twin_pb2.AgentMessage(hello=hello))
        await call.read()  # the collector answers the Hello (the bare loop echoes seq 0)
        window = asyncio.Semaphore(WINDOW)
        in_flight: deque[int] = deque()

        async def send() -> None:
            for b in batches:
                await window.acquire()
                in_flight.append(b.seq)
                await call.write(twin_pb2.AgentMessage(batch=b))

        sender = asyncio.create_task(send())
        last = batches[-1].seq
        while True:
            msg = await call.read()
            while in_flight and in_flight[0] <= msg.ack.seq:  # acks are cumulative, as in the agent
                in_flight.popleft()
                window.release()
            if msg.ack.seq >= last:
                break
        elapsed = time.perf_counter() - started
        await sender
        await call.done_writing()
        return elapsed


async def run_server(servicer: twin_pb2_grpc.CollectorServicer, batches: list[twin_pb2.Batch]) -> float:
    server = grpc.aio.server()
    twin_pb2_grpc.add_CollectorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await stream(port, batches)
    finally:
        await server.stop(None)


async def main_async(n: int, per_batch: int) -> None:
    batches = make_batches(n, per_batch)
    summaries = n * per_batch
    bare = await run_server(BareServicer(), batches)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = FleetTwin(Path(tmp) / "collector.sqlite")
        await fleet.open()
        sink = SqliteSummarySink(Path(tmp) / "summaries.sqlite")
        ours = await run_server(IngestServicer(fleet, sink, {hash_token(TOKEN): "bench"}, "b"), batches)
        await sink.close()
        await fleet.close()
    print(f"collector ingest: {n} batches x {per_batch} summaries = {summaries} summaries")
    print(f"  bare gRPC loop (no-op servicer): {summaries / bare:10.0f} summaries/s ({n / bare:7.1f} batches/s)")
    print(f"  ingest -> SQLite sink + twin:    {summaries / ours:10.0f} summaries/s ({n / ours:7.1f} batches/s)")
    print(f"  ratio ingest / bare: {bare / ours:.3f}  (1.0 = as fast as gRPC alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--summaries", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main_async(args.batches, args.summaries))


if __name__ == "__main__":
    main()
