"""Ingest with many agents at once: group commit, the conversion bound, the InfluxDB connection pool,
and agents of both wire versions on one collector."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.uplink.client import ChannelSettings, UplinkClient
from agent.uplink.queue import StoreAndForwardQueue
from collector.config import hash_token
from collector.fleet import FleetTwin
from collector.ingest import IngestServicer, register_ingest
from collector.summary_store import SqliteSummarySink
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from tests.integration.daemons import TOKENS, collector_process, fleet_token
from tests.integration.influx_query import influxql
from tests.servers import influxd_server

T0 = 1_700_000_000_000_000_000
POINTS = 20


def hello(agent_id: str, asset: str, epoch: str = "e1") -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id=agent_id, site="s", version="t", queue_epoch=epoch, assets=[
        twin_pb2.AssetDescriptor(id=asset, type="ahu", points=[
            twin_pb2.PointDescriptor(name=f"p{k}", unit="degC") for k in range(POINTS)])])


def batch(asset: str, seq: int) -> twin_pb2.Batch:
    end = T0 + seq * 10**10
    return twin_pb2.Batch(seq=seq, created_ns=end, health=twin_pb2.AgentHealth(ts_ns=end, queue_batches=1),
                          summaries=[twin_pb2.Summary(asset=asset, point=f"p{k}", unit="degC", first_ns=end - 10**9,
                                                      last_ns=end - 1, interval_end_ns=end, mean=20.0 + k + seq,
                                                      min=19.0, max=30.0 + seq, last=20.5, count=10,
                                                      quality=twin_pb2.GOOD) for k in range(POINTS)])


async def agent_stream(port: int, token: str, agent_id: str, asset: str, batches: int) -> list[int]:
    """Hello, then every batch without waiting (an agent catching up); the acks received."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = twin_pb2_grpc.CollectorStub(channel).Connect(metadata=(("authorization", f"Bearer {token}"),))
        await call.write(twin_pb2.AgentMessage(hello=hello(agent_id, asset)))
        acks = [(await call.read()).ack.seq]
        for seq in range(1, batches + 1):
            await call.write(twin_pb2.AgentMessage(batch=batch(asset, seq)))
        while acks[-1] < batches:
            acks.append((await call.read()).ack.seq)
        await call.done_writing()
        return acks


def test_200_agents_into_influxdb_v1_need_no_more_connections_than_writes(tmp_path: Path) -> None:
    influx = influxd_server(tmp_path / "influx")
    agents, batches = 200, 3
    collector = collector_process(
        tmp_path / "c", rules="", fleet_agents=agents,
        influx=f'[influx]\napi = "v1"\nurl = "http://127.0.0.1:{influx.port}"\ndatabase = "twin"\n')
    try:
        async def everyone() -> list[list[int]]:
            gate = asyncio.Semaphore(100)

            async def one(i: int) -> list[int]:
                async with gate:
                    return await agent_stream(collector.port, fleet_token(i), f"fleet-{i}", f"ahu-{i}", batches)
            return list(await asyncio.gather(*(one(i) for i in range(agents))))

        for acks in asyncio.run(everyone()):
            assert acks[0] == 0 and acks[-1] == batches
        rows = influxql(f"http://127.0.0.1:{influx.port}", "twin", "SELECT count(mean) FROM telemetry")
        assert rows[0]["count"] == agents * batches * POINTS, "every summary stored, once"
        log = collector.log_path.read_text()
        assert "Connection pool is full" not in log
        assert "Traceback" not in log
    finally:
        collector.stop()
        influx.stop()


@contextlib.asynccontextmanager
async def in_process_collector(tmp: Path, agents: int, **limits: int) -> AsyncIterator[tuple[IngestServicer, int]]:
    """The real servicer, fleet twin and SQLite store behind a real gRPC server, in this process."""
    fleet = FleetTwin(tmp / "collector.sqlite")
    await fleet.open()
    sink = SqliteSummarySink(tmp / "summaries.sqlite")
    servicer = IngestServicer(fleet, sink, {hash_token(fleet_token(i)): f"fleet-{i}" for i in range(agents)}, "s",
                              **limits)
    server = grpc.aio.server()
    register_ingest(server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        servicer.close_streams()
        await server.stop(1)
        await servicer.close()
        await sink.close()
        await fleet.close()


def test_streams_share_commits_and_at_most_the_slots_hold_converted_data(tmp_path: Path) -> None:
    agents, batches = 40, 12

    async def scenario() -> tuple[IngestServicer, list[list[int]]]:
        async with in_process_collector(tmp_path, agents, conversion_slots=3,
                                        receive_budget_bytes=64 * 1024) as (servicer, port):
            acks = await asyncio.gather(*(agent_stream(port, fleet_token(i), f"fleet-{i}", f"ahu-{i}", batches)
                                          for i in range(agents)))
            return servicer, list(acks)

    servicer, acks = asyncio.run(scenario())
    assert all(a[-1] == batches for a in acks)
    assert servicer.converting_peak <= 3, "never more streams holding converted batches than slots"
    assert servicer.budget.peak <= 64 * 1024 and servicer.budget.used == 0
    committer = servicer.committer
    assert committer.items >= agents, "every stream's groups went through the group committer"
    assert committer.commits < committer.items, "streams that were ready together shared a commit"
    with sqlite3.connect(tmp_path / "summaries.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM summary_points WHERE measurement = 'telemetry'").fetchone()[0] == (
            agents * batches * POINTS)
    with sqlite3.connect(tmp_path / "collector.sqlite") as db:
        assert db.execute("SELECT SUM(batches), COUNT(*) FROM watermarks").fetchone() == (agents * batches, agents)


async def deliver_with_uplink(port: int, token: str, agent_id: str, state: Path, wire: str, compression: str,
                              batches: list[twin_pb2.Batch], asset: str = "ahu-1") -> str:
    """The agent's own uplink client delivers `batches` from its disk queue; the wire it ended up with."""
    queue = StoreAndForwardQueue(state / "queue.sqlite", 1 << 26)
    await queue.open()
    try:
        for b in batches:
            await queue.put(lambda seq, b=b: twin_pb2.Batch(seq=seq, created_ns=b.created_ns, summaries=b.summaries,
                                                             health=b.health).SerializeToString(),
                            b.created_ns, summaries=len(b.summaries))
        client = UplinkClient(ChannelSettings(f"127.0.0.1:{port}", token, compression=compression), queue,
                              lambda: hello(agent_id, asset, queue.epoch), wire=wire)
        task = asyncio.create_task(client.run())
        async with asyncio.timeout(60):
            for _ in iter(int, 1):  # until the collector has acked everything
                if not queue.stats().batches:
                    break
                await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return client.wire
    finally:
        await queue.close()


def stored(state_dir: Path, asset: str) -> list[tuple[int, str, str]]:
    """(ts, point, fields) of the telemetry points of `asset` in the embedded store."""
    with sqlite3.connect(state_dir / "summaries.sqlite") as db:
        return list(db.execute(
            "SELECT ts_ns, json_extract(series, '$.point'), fields FROM summary_points WHERE "
            "measurement = 'telemetry' AND json_extract(series, '$.asset') = ? ORDER BY 1, 2", (asset,)))


def test_old_and_new_agents_are_served_side_by_side(tmp_path: Path) -> None:
    """gw-a speaks v1 uncompressed (an agent of the previous release), gw-b v2 with gzip."""
    collector = collector_process(tmp_path / "c", rules="")
    try:
        for agent, asset, wire, compression in (("gw-a", "ahu-1", "v1", "none"), ("gw-b", "ahu-2", "v2", "gzip")):
            state = tmp_path / agent
            state.mkdir()
            used = asyncio.run(deliver_with_uplink(collector.port, TOKENS[agent], agent, state, wire, compression,
                                                   [batch(asset, seq) for seq in range(1, 6)], asset))
            assert used == wire
        log = collector.log_path.read_text()
        assert "agent gw-a connected from" in log and "(wire v1," in log and "(wire v2," in log
    finally:
        collector.stop()
    state_dir = tmp_path / "c" / "state"
    assert len(stored(state_dir, "ahu-1")) == 5 * POINTS
    assert stored(state_dir, "ahu-2") == stored(state_dir, "ahu-1")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_v1_and_v2_agents_store_identical_points(tmp_path: Path, compression: str) -> None:
    results = {}
    for wire in ("v1", "v2"):
        collector = collector_process(tmp_path / f"c-{wire}", rules="")
        try:
            state = tmp_path / f"agent-{wire}"
            state.mkdir()
            used = asyncio.run(deliver_with_uplink(collector.port, TOKENS["gw-a"], "gw-a", state, wire, compression,
                                                   [batch("ahu-1", seq) for seq in range(1, 8)]))
            assert used == wire
        finally:
            collector.stop()
        results[wire] = stored(tmp_path / f"c-{wire}" / "state", "ahu-1")
    assert len(results["v1"]) == 7 * POINTS
    assert results["v2"] == results["v1"]


def test_a_new_agent_falls_back_to_v1_against_a_collector_without_v2(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, int]:
        fleet = FleetTwin(tmp_path / "collector.sqlite")
        await fleet.open()
        sink = SqliteSummarySink(tmp_path / "summaries.sqlite")
        servicer = IngestServicer(fleet, sink, {hash_token(TOKENS["gw-a"]): "gw-a"}, "s")
        server = grpc.aio.server()
        # a collector of the previous release serves only twin.v1.Collector
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.Connect, response_serializer=twin_pb2.CollectorMessage.SerializeToString)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("twin.v1.Collector",
                                                                              {"Connect": handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            state = tmp_path / "agent"
            state.mkdir()
            wire = await deliver_with_uplink(port, TOKENS["gw-a"], "gw-a", state, "v2", "none",
                                             [batch("ahu-1", seq) for seq in range(1, 4)])
        finally:
            servicer.close_streams()
            await server.stop(1)
            await servicer.close()
            await sink.close()
            await fleet.close()
        with sqlite3.connect(tmp_path / "summaries.sqlite") as db:
            count = db.execute("SELECT COUNT(*) FROM summary_points WHERE measurement = 'telemetry'").fetchone()[0]
        return wire, count

    wire, count = asyncio.run(scenario())
    assert wire == "v1"
    assert count == 3 * POINTS
