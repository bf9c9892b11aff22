"""The collector against hostile or broken clients (issue 11, items 6 and 7), as a real process.

- The token is checked from the call metadata before any message is read: clients without one
  see UNAUTHENTICATED however large their messages, and the collector's memory does not grow.
- The Hello is capped small (MAX_HELLO_BYTES), any message at MAX_MESSAGE_BYTES.
- A corrupt first message is INVALID_ARGUMENT for an authenticated client (UNAUTHENTICATED
  otherwise), never UNKNOWN; refused streams and unparseable HTTP requests are a rate-limited line
  each kind, never a traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import urllib.request
from pathlib import Path

import grpc
import pytest

from collector.ingest import MAX_HELLO_BYTES, MAX_MESSAGE_BYTES
from protos.twin.v1 import twin_pb2
from tests.integration.daemons import TOKENS, collector_process, exchange
from tests.servers import ServerProcess, free_port, tcp_open, wait_for

CONNECT = "/twin.v1.Collector/Connect"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def hello(agent_id: str = "gw-a", padding: int = 0) -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id=agent_id, site="s", version="x" * padding, queue_epoch="e1",
                          assets=[twin_pb2.AssetDescriptor(id="ahu-1", type="ahu")])


def send_raw(port: int, authorization: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """One stream that sends `payload` as its first message; the status the collector ended it with.

    gRPC's synchronous client: when the collector ends a stream while the client is still writing
    a large message, the asyncio client sometimes reports its own cut-off write ("Internal error
    from Core") instead of the status the collector sent; the synchronous one reports that status.
    """
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        connect = channel.stream_stream(CONNECT, request_serializer=lambda b: b,
                                        response_deserializer=twin_pb2.CollectorMessage.FromString)
        metadata = (("authorization", authorization),) if authorization else ()
        try:
            for _ in connect(iter([payload]), metadata=metadata):
                pass
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def run_many(port: int, authorization: str, payload: bytes, n: int, at_once: int = 12) -> list[grpc.StatusCode]:
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        return [code for code, _ in pool.map(lambda _: send_raw(port, authorization, payload), range(n))]


@pytest.fixture
def collector(tmp_path: Path) -> ServerProcess:
    api_port = free_port()
    proc = collector_process(tmp_path / "c", rules="")
    proc.stop()
    cfg = Path(proc.config_path)  # type: ignore[attr-defined]
    cfg.write_text(cfg.read_text() + f'\n[api]\nlisten = "127.0.0.1:{api_port}"\n')
    proc.start()
    wait_for(lambda: tcp_open(api_port), 20, "the API")
    proc.api_port = api_port  # type: ignore[attr-defined]
    # everything a working stream needs is loaded before memory is measured
    assert asyncio.run(exchange(proc.port, TOKENS["gw-a"], hello(), [])) == [0]
    yield proc
    proc.stop()


def test_unauthenticated_streams_with_large_messages_neither_read_nor_held(collector: ServerProcess) -> None:
    big = twin_pb2.AgentMessage(hello=hello(padding=50 * 1024 * 1024)).SerializeToString()
    before = rss_mb(collector.pid)
    codes = run_many(collector.port, "", big, 12) + run_many(collector.port, "Bearer not-a-token-0123456789", big, 12)
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
    after = rss_mb(collector.pid)
    # 24 x 50 MB offered; before the fix the collector read each first message (to 864 MB, 804 MB kept)
    assert after - before < 60, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
    assert collector.running()
    # and the authorised agent is still served
    assert asyncio.run(exchange(collector.port, TOKENS["gw-a"], hello(), [])) == [0]


def test_oversized_messages_of_an_agent_are_refused_by_size(collector: ServerProcess) -> None:
    bearer = f"Bearer {TOKENS['gw-a']}"
    code, details = send_raw(collector.port, bearer, twin_pb2.AgentMessage(
        hello=hello(padding=MAX_HELLO_BYTES + 1)).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Hello may be at most" in details
    code, _ = send_raw(collector.port, bearer, b"\x0a" * (MAX_MESSAGE_BYTES + 10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own limit, before the message is read
    assert collector.running()


def test_corrupt_first_messages_and_refusals_are_statuses_and_rate_limited_lines(collector: ServerProcess) -> None:
    corrupt = b"\x0a\xff\xff\xff\xff\x0f this is not a protobuf message"
    log_before = collector.log_path.stat().st_size
    assert set(run_many(collector.port, f"Bearer {TOKENS['gw-a']}", corrupt, 60)) == {
        grpc.StatusCode.INVALID_ARGUMENT}
    assert set(run_many(collector.port, "", corrupt, 100)) == {grpc.StatusCode.UNAUTHENTICATED}
    assert set(run_many(collector.port, "Bearer wrong-token-0000000000000", b"", 100)) == {
        grpc.StatusCode.UNAUTHENTICATED}
    not_hello = twin_pb2.AgentMessage(batch=twin_pb2.Batch(seq=1)).SerializeToString()
    assert set(run_many(collector.port, f"Bearer {TOKENS['gw-a']}", not_hello, 20)) == {
        grpc.StatusCode.INVALID_ARGUMENT}

    # unparseable HTTP requests to the API: a 400 each, no traceback
    for payload in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"):
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", collector.api_port)) as s:  # type: ignore[attr-defined]
                s.sendall(payload)
                assert s.recv(64).startswith(b"HTTP/1.")
    with urllib.request.urlopen(f"http://127.0.0.1:{collector.api_port}/health") as resp:  # type: ignore[attr-defined]
        assert resp.status == 200, "the API still answers"

    with collector.log_path.open("rb") as f:
        f.seek(log_before)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log
    refused = [line for line in log.splitlines() if "refused stream" in line]
    invalid = [line for line in log.splitlines() if "unparseable HTTP request" in line]
    # 280 refused streams of 3 kinds and 90 bad requests of 3 kinds: one line per kind per minute
    assert 1 <= len(refused) <= 3 * 2, refused
    assert 1 <= len(invalid) <= 3 * 2, invalid
    assert len(log) < 10_000, f"{len(log)} bytes of log"
    assert any("corrupt first message" in line for line in refused)
    assert collector.running()
