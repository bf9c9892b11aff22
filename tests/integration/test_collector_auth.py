"""The collector refuses wrong tokens and mismatched agent ids, and stores nothing they send;
an authorised agent's batches are stored once even when resent (dedup by agent, epoch, seq)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from collector.state import StateLocation
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from tests.conftest import collector_state, query_state, state_toml
from tests.integration.daemons import TOKENS, collector_process, exchange
from tests.servers import wait_for


def batch(seq: int, value: float) -> twin_pb2.Batch:
    return twin_pb2.Batch(seq=seq, created_ns=1_700_000_000_000_000_000 + seq * 10**9, summaries=[
        twin_pb2.Summary(asset="ahu-1", point="supply_air_temp", unit="degC", first_ns=1, last_ns=2,
                         interval_end_ns=1_700_000_000_000_000_000 + seq * 10**9, mean=value, min=value,
                         max=value, last=value, count=1, quality=twin_pb2.GOOD)])


def hello(agent_id: str, epoch: str = "epoch-1") -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id=agent_id, site="s", version="t", queue_epoch=epoch, assets=[
        twin_pb2.AssetDescriptor(id="ahu-1", type="ahu", name="AHU 1",
                                 points=[twin_pb2.PointDescriptor(name="supply_air_temp", unit="degC")])])


def stored_points(state_dir: Path) -> int:
    db = state_dir / "summaries.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM summary_points WHERE measurement = 'telemetry'").fetchone()[0]


def committed_batches(state: StateLocation, epoch: str) -> int:
    rows = query_state(state, "SELECT batches FROM watermarks WHERE agent_id = 'gw-a' AND epoch = ?", (epoch,))
    return int(rows[0][0]) if rows else 0


def test_auth_and_dedup(tmp_path: Path, state_location: StateLocation) -> None:
    collector = collector_process(tmp_path / "c", state=state_toml(state_location, tmp_path))
    state_location = collector_state(state_location, tmp_path / "c" / "state")
    port = collector.port
    try:
        # wrong token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(exchange(port, "not-a-valid-token-000000000000", hello("gw-a"), [batch(1, 20.0)]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # no token at all
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(exchange(port, "", hello("gw-a"), [batch(1, 20.0)]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # gw-b's valid token, but claiming to be gw-a
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(exchange(port, TOKENS["gw-b"], hello("gw-a"), [batch(1, 20.0)]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert stored_points(tmp_path / "c" / "state") == 0, "nothing from a refused stream is stored"

        # the real gw-a: stored, acked; a resend of the same seqs is acked but stored once
        acks = asyncio.run(exchange(port, TOKENS["gw-a"], hello("gw-a"), [batch(1, 20.0), batch(2, 21.0)]))
        assert acks == [0, 1, 2]
        state = tmp_path / "c" / "state"
        assert stored_points(state) == 2
        assert committed_batches(state_location, "epoch-1") == 2
        acks = asyncio.run(exchange(port, TOKENS["gw-a"], hello("gw-a"), [batch(1, 20.0), batch(2, 21.0),
                                                                          batch(3, 22.0)]))
        assert acks == [2, 1, 2, 3], "the Hello is answered with the watermark; duplicates are re-acked"
        assert stored_points(state) == 3
        assert committed_batches(state_location, "epoch-1") == 3, "resent batches 1 and 2 were not committed again"
        # a new queue epoch (agent state wiped) starts again at seq 1 and is not mistaken for duplicates
        acks = asyncio.run(exchange(port, TOKENS["gw-a"], hello("gw-a", "epoch-2"), [batch(1, 30.0)]))
        assert acks == [0, 1]
        assert committed_batches(state_location, "epoch-2") == 1
    finally:
        collector.stop()


def test_malformed_batch_is_counted_and_does_not_block_the_agent(tmp_path: Path) -> None:
    collector = collector_process(tmp_path / "c")
    try:
        bad = twin_pb2.Batch(seq=1, summaries=[twin_pb2.Summary(asset="ahu-1", point="supply_air_temp", count=1,
                                                                 mean=1.0)])  # no timestamp anywhere
        acks = asyncio.run(exchange(collector.port, TOKENS["gw-a"], hello("gw-a"), [bad, batch(2, 21.0)]))
        assert acks == [0, 1, 2], "acked: it can never be stored, and must not block the batches behind it"
        assert stored_points(tmp_path / "c" / "state") == 1, "the good batch behind it is stored"
        assert "batch 1: malformed" in collector.log_path.read_text()
        assert collector.running()
    finally:
        collector.stop()


def test_empty_bearer_token_is_refused(tmp_path: Path) -> None:
    collector = collector_process(tmp_path / "c")
    try:
        for header in ("Bearer ", "Bearer", "bearer  "):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                asyncio.run(exchange(collector.port, "", hello("gw-a"), [], authorization=header))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        collector.stop()


def test_non_finite_indicators_do_not_poison_the_stream(tmp_path: Path, state_location: StateLocation) -> None:
    """NaN/inf from an agent's analytics are stored as nulls; the batches behind them are not blocked."""
    collector = collector_process(tmp_path / "c", state=state_toml(state_location, tmp_path))
    state_location = collector_state(state_location, tmp_path / "c" / "state")
    try:
        nan = float("nan")
        odd = batch(1, 20.0)
        odd.vibration.append(twin_pb2.VibrationIndicators(
            asset="ahu-1", sensor="fan_de", ts_ns=odd.created_ns, velocity_rms_mm_s=nan, health=float("inf"),
            iso_zone="D", fault="outer_race", confidence=nan))
        acks = asyncio.run(exchange(collector.port, TOKENS["gw-a"], hello("gw-a"), [odd, batch(2, 21.0)]))
        assert acks == [0, 1, 2]
        assert committed_batches(state_location, "epoch-1") == 2
        assert stored_points(tmp_path / "c" / "state") == 2
    finally:
        collector.stop()


def test_an_agent_cannot_write_another_agents_assets(tmp_path: Path, state_location: StateLocation) -> None:
    collector = collector_process(tmp_path / "c", state=state_toml(state_location, tmp_path))
    state_location = collector_state(state_location, tmp_path / "c" / "state")
    try:
        assert asyncio.run(exchange(collector.port, TOKENS["gw-a"], hello("gw-a"), [batch(1, 20.0)])) == [0, 1]
        # gw-b, with its own valid token, declares gw-a's ahu-1 and sends values for it
        acks = asyncio.run(exchange(collector.port, TOKENS["gw-b"], hello("gw-b", "epoch-b"), [batch(1, 99.0)]))
        assert acks == [0, 1]
        state = tmp_path / "c" / "state"
        ((owner,),) = query_state(state_location, "SELECT agent_id FROM assets WHERE asset = 'ahu-1'")
        ((last,),) = query_state(state_location,
                                 "SELECT last FROM points WHERE asset = 'ahu-1' AND point = 'supply_air_temp'")
        assert owner == "gw-a" and last == 20.0
        assert stored_points(state) == 1, "nothing of gw-b's values for ahu-1 reached the store"
        assert "belongs to agent gw-a" in collector.log_path.read_text()

        # the asset moved to gw-b's gateway: an operator releases it, and gw-b's next Hello claims it
        subprocess.run([sys.executable, "-m", "collector", "assets", "--config",
                        str(collector.config_path), "release", "ahu-1"],  # type: ignore[attr-defined]
                       check=True, capture_output=True)
        assert asyncio.run(exchange(collector.port, TOKENS["gw-b"], hello("gw-b", "epoch-b"),
                                    [batch(2, 55.0)])) == [1, 2]
        assert query_state(state_location, "SELECT agent_id FROM assets WHERE asset = 'ahu-1'") == [("gw-b",)]
        assert stored_points(state) == 2
    finally:
        collector.stop()


def test_an_old_stream_ending_does_not_disconnect_the_new_one(tmp_path: Path, state_location: StateLocation) -> None:
    collector = collector_process(tmp_path / "c", state=state_toml(state_location, tmp_path))
    state_location = collector_state(state_location, tmp_path / "c" / "state")

    def connected() -> int:
        return int(query_state(state_location, "SELECT connected FROM agents WHERE agent_id = 'gw-a'")[0][0])

    async def scenario() -> tuple[int, int]:
        meta = (("authorization", f"Bearer {TOKENS['gw-a']}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as old_ch, \
                grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as new_ch:
            old = twin_pb2_grpc.CollectorStub(old_ch).Connect(metadata=meta)
            await old.write(twin_pb2.AgentMessage(hello=hello("gw-a")))
            await old.read()
            new = twin_pb2_grpc.CollectorStub(new_ch).Connect(metadata=meta)
            await new.write(twin_pb2.AgentMessage(hello=hello("gw-a")))
            await new.read()
            await old.done_writing()
            wait_for(lambda: "1 still open" in collector.log_path.read_text(), 10, "the old stream to end")
            after_old = connected()
            await new.done_writing()
        wait_for(lambda: connected() == 0, 10, "the agent to show disconnected once its last stream ended")
        return after_old, connected()

    try:
        after_old, after_both = asyncio.run(scenario())
        assert after_old == 1, "the agent is still connected through its new stream"
        assert after_both == 0
    finally:
        collector.stop()
