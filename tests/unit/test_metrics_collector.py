"""The collector's /metrics, scraped over real HTTP from a running collector that real gRPC
streams talk to: ingest counters per agent, refused streams, sink latency and work orders."""

from __future__ import annotations

import asyncio
import time
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.config import build_collector_config
from collector.daemon import CollectorDaemon
from collector.metrics import CollectorMetrics, collector_registry
from collector.state import StateLocation
from collector.summary_store import SqliteSummarySink
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from runtime.metrics_server import start_metrics_server
from tests.conftest import state_toml
from tests.integration.daemons import TOKENS, collector_toml, exchange
from tests.servers import free_port, wait_for

pytestmark = pytest.mark.integration

SEC = 1_000_000_000
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def hello(agent_id: str) -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id=agent_id, site="plant-a", version="test", queue_epoch=f"{agent_id}-epoch",
                          assets=[twin_pb2.AssetDescriptor(
                              id=f"ahu-{agent_id}", type="ahu", name="AHU",
                              points=[twin_pb2.PointDescriptor(name="filter_dp", unit="Pa")])])


def batch(agent_id: str, seq: int, t0: int, filter_dp: float) -> twin_pb2.Batch:
    end = t0 + seq * SEC
    return twin_pb2.Batch(
        seq=seq, created_ns=end,
        summaries=[twin_pb2.Summary(asset=f"ahu-{agent_id}", point="filter_dp", unit="Pa", interval_end_ns=end,
                                    first_ns=end - SEC, last_ns=end, mean=filter_dp, min=filter_dp,
                                    max=filter_dp, last=filter_dp, count=4, quality=twin_pb2.GOOD)],
        asset_states=[twin_pb2.AssetState(asset=f"ahu-{agent_id}", state="online", health=100.0, ts_ns=end)],
        health=twin_pb2.AgentHealth(ts_ns=end, queue_batches=1, sent=seq, acked=seq - 1, rss_mb=50.0))


def test_scraped_metrics_follow_ingest(tmp_path: Path, state_location: StateLocation) -> None:
    port = free_port()
    # One periodic check (at start): a later one could write asset-status points while a loaded machine runs this.
    config = build_collector_config(tomllib.loads(collector_toml(tmp_path / "state", port,
                                                                 collector_extra="check_interval_s = 3600\n",
                                                                 state=state_toml(state_location, tmp_path))))
    daemon = CollectorDaemon(config)
    t0 = time.time_ns() - 60 * SEC

    async def scenario() -> tuple[Samples, Samples, Samples]:
        await daemon.start()
        # The first periodic check runs at start; once it is done, the asset-status points it writes
        # (none: no agent has declared an asset yet) cannot race the Hellos below.
        await asyncio.to_thread(wait_for, lambda: daemon.checks_done > 0, 30, "the first periodic check", 0.01)
        server = start_metrics_server(collector_registry(daemon), "127.0.0.1:0")
        try:
            before = await asyncio.to_thread(scrape, server.url)
            # gw-a: six intervals with a clogged filter (rule: mean > 300 Pa for >= 4 s) -> a major work order
            acks = await exchange(port, TOKENS["gw-a"], hello("gw-a"),
                                [batch("gw-a", s, t0, 350.0) for s in range(1, 7)])
            assert acks == [0, 1, 2, 3, 4, 5, 6]
            # gw-a again: 5 and 6 are resent (duplicates), 7 is new
            await exchange(port, TOKENS["gw-a"], hello("gw-a"), [batch("gw-a", s, t0, 350.0) for s in (5, 6, 7)])
            # a refused stream: gw-b's token claiming to be gw-a
            with pytest.raises(grpc.aio.AioRpcError):
                await exchange(port, TOKENS["gw-b"], hello("gw-a"), [batch("gw-a", 8, t0, 1.0)])
            # gw-b stays connected while scraped
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = twin_pb2_grpc.CollectorStub(channel).Connect(
                    metadata=(("authorization", f"Bearer {TOKENS['gw-b']}"),))
                await call.write(twin_pb2.AgentMessage(hello=hello("gw-b")))
                await call.read()
                await call.write(twin_pb2.AgentMessage(batch=batch("gw-b", 1, t0, 120.0)))
                await call.read()
                during = await asyncio.to_thread(scrape, server.url)
                await call.done_writing()
            after = await asyncio.to_thread(scrape, server.url)
            return before, during, after
        finally:
            server.close()
            await daemon.stop()

    before, during, after = asyncio.run(scenario())

    assert value(before, "twin_collector_fleet_db_up") == 1
    assert value(before, "twin_collector_work_orders", status="open", severity="major") == 0
    assert value(before, "twin_collector_sink_write_seconds_count") == 0

    assert value(during, "twin_collector_agent_connected", agent="gw-b") == 1
    assert value(during, "twin_collector_agent_connected", agent="gw-a") == 0
    assert value(after, "twin_collector_agent_connected", agent="gw-b") == 0

    assert value(after, "twin_collector_agent_batches_total", agent="gw-a") == 7
    assert value(after, "twin_collector_agent_summaries_total", agent="gw-a") == 7
    assert value(after, "twin_collector_agent_duplicate_batches_total", agent="gw-a") == 2
    assert value(after, "twin_collector_agent_batches_total", agent="gw-b") == 1
    assert value(after, "twin_collector_agent_rejected_points_total", agent="gw-a") == 0
    assert value(after, "twin_collector_refused_streams_total") == 1
    assert value(after, "twin_collector_sink_write_errors_total") == 0
    writes = value(after, "twin_collector_sink_write_seconds_count")
    assert writes == daemon.servicer.totals.sink_writes >= 8
    assert value(after, "twin_collector_sink_write_seconds_sum") == pytest.approx(
        daemon.servicer.totals.sink_write_seconds)
    # 8 batches x (telemetry + asset_state + agent_health) + the work-order annotation point
    assert value(after, "twin_collector_sink_points_written_total") == daemon.sink.stats.points_written == 8 * 3 + 1
    assert value(after, "twin_collector_work_orders", status="open", severity="major") == 1
    assert sum(v for (n, _), v in after.items() if n == "twin_collector_work_orders") == 1
    assert value(after, "twin_collector_assets", state="online") == 2
    assert value(after, "twin_collector_agent_last_seen_timestamp_seconds", agent="gw-a") == pytest.approx(
        time.time(), abs=120)
    # the ingest pipeline: each new batch once through the group commit (duplicates are answered before
    # it), nothing left queued or held once the streams are done
    assert value(after, "twin_collector_group_batches_total") == daemon.servicer.committer.items == 8
    assert 1 <= value(after, "twin_collector_group_commits_total") <= 8
    assert value(after, "twin_collector_group_writes_total") >= value(after, "twin_collector_group_commits_total")
    assert value(after, "twin_collector_group_queued_batches") == 0
    assert value(after, "twin_collector_receive_budget_used_bytes") == 0
    assert value(after, "twin_collector_receive_budget_waiting_streams") == 0
    assert 0 < value(after, "twin_collector_receive_budget_peak_bytes") <= value(
        after, "twin_collector_receive_budget_bytes") == daemon.servicer.budget.capacity
    assert value(after, "process_open_fds") > 0, "standard process metrics are included"


def test_an_unreadable_fleet_database_is_reported_not_raised(tmp_path: Path) -> None:
    from collector.fleet import FleetTwin
    from collector.ingest import IngestServicer

    missing = tmp_path / "nowhere" / "collector.sqlite"
    sink = SqliteSummarySink(tmp_path / "summaries.sqlite")
    servicer = IngestServicer(FleetTwin(missing), sink, {}, "site")
    registry = CollectorRegistry()
    registry.register(CollectorMetrics(servicer, sink, missing))
    server = start_metrics_server(registry, "127.0.0.1:0")
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    assert value(samples, "twin_collector_fleet_db_up") == 0
    assert value(samples, "twin_collector_refused_streams_total") == 0
    assert not any(n == "twin_collector_work_orders" for n, _ in samples)
