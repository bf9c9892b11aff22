"""Simulated agents and a collector process for the ingest benches.

A `SimAgent` speaks the agent's stream protocol (Hello, then batches with up to `window` unacked,
cumulative acks) over its own gRPC channel, as a gateway does. Two ways to load the collector:

- catch-up: every agent has a backlog and sends it as fast as its window allows (saturation);
- paced: every agent produces one batch per period at a random phase, like live gateways; the ack
  latency is measured from when the batch was produced, so queueing at the agent counts too.

`CollectorProcess` runs the real `python -m collector run` with a generated configuration; with
`code_root` set, the collector's code is taken from there (PYTHONPATH), which is how the benches
measure an older version with the same load.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from protos.twin.v1 import twin_pb2

LOOPBACK = "127.0.0.1"
CONNECT_METHOD = {"v1": "/twin.v1.Collector/Connect", "v2": "/twin.v2.Collector/Connect"}
ASSETS_PER_AGENT = 10
POINT_NAMES = ("filter_dp", "supply_air_temp", "return_air_temp", "fan_speed", "valve_pos",
               "supply_air_rh", "damper_pos", "coil_temp", "power_kw", "runtime_h")
UNITS = ("Pa", "degC", "degC", "%", "%", "%", "%", "degC", "kW", "h")


def token(index: int) -> str:
    return f"bench-agent-token-{index:05d}-0123456789abcdef"


def agent_id(index: int) -> str:
    return f"bench-{index:05d}"


def collector_config(state_dir: Path, port: int, agents: int, influx: str = "") -> str:
    """A collector with `agents` tokens, one threshold rule on every AHU (evaluated, never firing)."""
    lines = [textwrap.dedent(f"""
        [collector]
        listen = "{LOOPBACK}:{port}"
        state_dir = "{state_dir}"
        site = "bench"
        log_level = "warning"
        check_interval_s = 3600
        """), influx]
    for i in range(agents):
        digest = hashlib.sha256(token(i).encode()).hexdigest()
        lines.append(f'[[agents]]\nid = "{agent_id(i)}"\ntoken_sha256 = "{digest}"\n')
    lines.append(textwrap.dedent("""
        [[rules]]
        name = "filter_clogged"
        asset_type = "ahu"
        point = "filter_dp"
        field = "mean"
        above = 300.0
        clear_at = 250.0
        min_duration_s = 60
        severity = "major"
        """))
    return "\n".join(lines)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class CollectorProcess:
    """The real collector (or any server command) as a child process, stopped by PID."""

    def __init__(self, argv: list[str], workdir: Path, port: int, code_root: Path | None = None) -> None:
        self.workdir = workdir
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if code_root is not None:
            env["PYTHONPATH"] = str(code_root)
        self.log_path = workdir / "server.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.peak_rss_mb = 0.0

    @classmethod
    def collector(cls, workdir: Path, agents: int, influx: str = "", code_root: Path | None = None
                  ) -> CollectorProcess:
        port = free_port()
        cfg = workdir / "collector.toml"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg.write_text(collector_config(workdir / "state", port, agents, influx))
        return cls([sys.executable, "-m", "collector", "run", "--config", str(cfg)], workdir, port, code_root)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError("server did not listen in time")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> float:
        rss = proc_rss_mb(self.pid)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Tally:
    """What the agents of one run saw."""

    summaries: int = 0
    batches: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def make_template(index: int, per_batch: int) -> twin_pb2.Batch:
    """One agent's batch: `per_batch` summaries over ASSETS_PER_AGENT AHUs (seq and times set per send)."""
    batch = twin_pb2.Batch(health=twin_pb2.AgentHealth(queue_batches=1, rss_mb=40.0, uptime_s=100.0))
    for i in range(per_batch):
        a, p = i % ASSETS_PER_AGENT, i // ASSETS_PER_AGENT % len(POINT_NAMES)
        name = POINT_NAMES[p] if i < ASSETS_PER_AGENT * len(POINT_NAMES) else f"{POINT_NAMES[p]}_{i}"
        value = 200.0 + i % 7 if p == 0 else 20.0 + (i % 13) * 0.5
        batch.summaries.add(asset=f"a{index:05d}-{a}", point=name, unit=UNITS[p], mean=value, min=value - 1.5,
                            max=value + 1.5, last=value + 0.25, count=10, quality=twin_pb2.GOOD)
    return batch


def hello_for(index: int, template: twin_pb2.Batch) -> twin_pb2.Hello:
    assets: dict[str, twin_pb2.AssetDescriptor] = {}
    for s in template.summaries:
        desc = assets.setdefault(s.asset, twin_pb2.AssetDescriptor(id=s.asset, type="ahu", name=s.asset))
        desc.points.add(name=s.point, unit=s.unit, kind="measurement", expected_interval_s=0.0)
    return twin_pb2.Hello(agent_id=agent_id(index), site="bench", version="bench", queue_epoch=f"epoch-{index}",
                          assets=list(assets.values()))


class SimAgent:
    """One simulated gateway on its own channel."""

    def __init__(self, index: int, port: int, per_batch: int = 100, wire: str = "v1",
                 compression: grpc.Compression | None = None) -> None:
        self.index = index
        self.port = port
        self.template = make_template(index, per_batch)
        self.per_batch = per_batch
        self.wire = wire
        self.compression = compression
        self.seq = 0
        self.watermark = -1
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._encoder: object | None = None

    def _serialize(self, message: bytes) -> bytes:
        return message

    async def connect(self) -> None:
        self._channel = grpc.aio.insecure_channel(f"{LOOPBACK}:{self.port}", compression=self.compression)
        connect = self._channel.stream_stream(CONNECT_METHOD[self.wire], request_serializer=self._serialize,
                                              response_deserializer=twin_pb2.CollectorMessage.FromString)
        self._call = connect(metadata=(("authorization", f"Bearer {token(self.index)}"),))
        hello = hello_for(self.index, self.template)
        if self.wire == "v2":
            from agent.uplink.wire import V2Encoder  # only in versions that speak v2
            self._encoder = V2Encoder()
            await self._call.write(self._encoder.hello(hello).SerializeToString())
        else:
            await self._call.write(twin_pb2.AgentMessage(hello=hello).SerializeToString())
        reply = await self._call.read()
        self.watermark = reply.ack.seq

    def _next_batch(self, end_ns: int) -> bytes:
        self.seq += 1
        b = self.template
        b.seq = self.seq
        b.created_ns = end_ns
        b.health.ts_ns = end_ns
        for s in b.summaries:
            s.interval_end_ns = end_ns
            s.first_ns = end_ns - 9_500_000_000
            s.last_ns = end_ns - 500_000_000
        if self._encoder is not None:
            return self._encoder.batch(b.SerializeToString()).SerializeToString()  # type: ignore[attr-defined]
        return twin_pb2.AgentMessage(batch=b).SerializeToString()

    async def drive(self, schedule: list[float], end_ns: list[int], window: int, tally: Tally,
                    latency_from_schedule: bool) -> None:
        """Send one batch per scheduled time (monotonic seconds) with at most `window` unacked."""
        assert self._call is not None
        call = self._call
        slots = asyncio.Semaphore(window)
        in_flight: deque[tuple[int, float]] = deque()
        last_seq = self.seq + len(schedule)
        done = asyncio.Event()

        async def read_acks() -> None:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    raise ConnectionError("collector closed the stream")
                now = time.monotonic()
                while in_flight and in_flight[0][0] <= msg.ack.seq:
                    _, t0 = in_flight.popleft()
                    tally.latencies_s.append(now - t0)
                    tally.batches += 1
                    tally.summaries += self.per_batch
                    slots.release()
                if msg.ack.seq >= last_seq:
                    done.set()
                    return

        reader = asyncio.create_task(read_acks())
        try:
            for when, end in zip(schedule, end_ns, strict=True):
                delay = when - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                payload = self._next_batch(end)
                in_flight.append((self.seq, when if latency_from_schedule else time.monotonic()))
                await call.write(payload)
            await reader
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            tally.errors.append(f"agent {self.index}: {exc}")
        finally:
            reader.cancel()

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()


async def connect_all(agents: list[SimAgent], concurrency: int = 50) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(a: SimAgent) -> None:
        async with gate:
            await a.connect()

    await asyncio.gather(*(one(a) for a in agents))


async def catch_up(agents: list[SimAgent], backlog: int, window: int, interval_s: float = 10.0) -> Tally:
    """Every agent sends `backlog` batches (interval_s apart in time) as fast as acks allow."""
    tally = Tally()
    now = time.monotonic()
    t0 = time.time_ns() - int(backlog * interval_s * 1e9) - 10**12
    schedule = [now] * backlog
    await asyncio.gather(*(a.drive(schedule, [t0 + (a.seq + k + 1) * int(interval_s * 1e9) for k in range(backlog)],
                                   window, tally, latency_from_schedule=False) for a in agents))
    return tally


async def paced(agents: list[SimAgent], rate_summaries_s: float, duration_s: float, window: int) -> Tally:
    """Live load: each agent produces a batch every period (offered rate overall), random phase."""
    tally = Tally()
    per_agent = rate_summaries_s / len(agents) / agents[0].per_batch  # batches/s per agent
    period = 1.0 / per_agent
    count = max(1, int(duration_s / period))
    start = time.monotonic() + 0.2
    rng = random.Random(7)
    jobs = []
    for a in agents:
        phase = rng.uniform(0, period)
        schedule = [start + phase + k * period for k in range(count)]
        wall0 = time.time_ns() + int((phase + 0.2) * 1e9)
        ends = [wall0 + int(k * period * 1e9) for k in range(count)]
        jobs.append(a.drive(schedule, ends, window, tally, latency_from_schedule=True))
    await asyncio.gather(*jobs)
    return tally


def serve_bare(port: int) -> None:
    """A no-op collector: parse each message and ack it, storing nothing (the gRPC + protobuf floor)."""

    async def handle(request_iterator, context):  # type: ignore[no-untyped-def]
        async for raw in request_iterator:
            msg = twin_pb2.AgentMessage.FromString(raw)
            yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=msg.batch.seq if msg.HasField("batch") else 0))

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        handler = grpc.stream_stream_rpc_method_handler(handle, request_deserializer=None,
                                                        response_serializer=twin_pb2.CollectorMessage.SerializeToString)
        for service in ("twin.v1.Collector", "twin.v2.Collector"):
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {"Connect": handler})])
        server.add_insecure_port(f"{LOOPBACK}:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())
