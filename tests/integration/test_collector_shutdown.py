"""SIGTERM with agents connected: each stream finishes what it is storing, acks it and ends cleanly.

A stream cut mid-group would leave a batch stored but unacked (the agent then resends it, or, with
a full queue, counts it as dropped although it arrived), and a handler outliving the shutdown would
write to a closed database.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from tests.integration.daemons import TOKENS, collector_process
from tests.integration.test_collector_auth import batch, committed_batches, hello
from tests.servers import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.integration


async def stream_then_terminate(collector: ServerProcess, batches: int, wait_acks: bool,
                                before_kill: Callable[[], object] = lambda: None) -> tuple[list[int], str]:
    """Send a Hello and `batches` batches on one stream, SIGTERM the collector (after `before_kill`
    returns, run in a thread), read the stream to its end.

    Returns the acked seqs after the Hello's and the stream's final status code."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as channel:
        call = twin_pb2_grpc.CollectorStub(channel).Connect(
            metadata=(("authorization", f"Bearer {TOKENS['gw-a']}"),))
        await call.write(twin_pb2.AgentMessage(hello=hello("gw-a")))
        assert (await call.read()).ack.seq == 0
        acks: list[int] = []
        for seq in range(1, batches + 1):
            await call.write(twin_pb2.AgentMessage(batch=batch(seq, 20.0 + seq)))
            if wait_acks:
                acks.append((await call.read()).ack.seq)
        await asyncio.to_thread(before_kill)
        os.kill(collector.pid, signal.SIGTERM)
        while (msg := await call.read()) is not grpc.aio.EOF:
            acks.append(msg.ack.seq)
        return acks, (await call.code()).name


def exited_cleanly(collector: ServerProcess) -> str:
    assert collector.proc is not None
    assert collector.proc.wait(timeout=30) == 0
    log = collector.log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log, collector.log_tail()
    return log


def test_streams_end_cleanly_with_everything_stored_acked(tmp_path: Path) -> None:
    collector = collector_process(tmp_path / "c")
    try:
        acks, code = asyncio.run(stream_then_terminate(collector, batches=3, wait_acks=True))
        assert acks == [1, 2, 3]
        assert code == "OK", "the collector ended the stream itself instead of cancelling it"
        exited_cleanly(collector)
        assert committed_batches(tmp_path / "c" / "state" / "collector.sqlite", "epoch-1") == 3
    finally:
        collector.stop()


def test_a_group_waiting_for_a_down_sink_is_left_unacked(tmp_path: Path) -> None:
    down = free_port()  # nothing listens here: every write fails and is retried
    influx = f'[influx]\napi = "v1"\nurl = "http://127.0.0.1:{down}"\ndatabase = "twin"\ntimeout_s = 1.0\n'
    collector = collector_process(tmp_path / "c", influx=influx)
    try:
        acks, code = asyncio.run(stream_then_terminate(
            collector, batches=2, wait_acks=False,
            before_kill=lambda: wait_for(lambda: "sink write failed" in collector.log_path.read_text(), 30,
                                         "a failed write to the down sink")))
        assert acks == [], "nothing reached the sink, so nothing may be acked"
        assert code == "OK"
        exited_cleanly(collector)
        assert committed_batches(tmp_path / "c" / "state" / "collector.sqlite", "epoch-1") == 0
    finally:
        collector.stop()
