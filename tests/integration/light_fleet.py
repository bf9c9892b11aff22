"""A fleet of light agents in one process, for multi-collector tests and benches.

Each light agent is the real agent's uplink: its `StoreAndForwardQueue` (SQLite, on disk), its
`UplinkClient` (the gRPC stream, Hello, acks, resend from the oldest unacked batch, backoff and
failover over the collector addresses) and the same wire messages. What it leaves out is what
produces the batches (connectors, local twin, summarizer): batches of synthetic summaries are put
in the queue at a fixed interval instead, so fifty agents fit on a small machine.

    python -m tests.integration.light_fleet fleet.json

fleet.json: {"state_dir", "status_file", "site", "collectors": [host:port, ...], "interval_s",
"produce_s", "points" (summaries per batch), "agents": [{"id", "token", "asset", "escalating": bool}]}. The status file
(JSON, rewritten every 0.5 s) holds, per agent: produced batches and summaries (from the queue's
persisted counters), queued batches, acked, connected, the collector in use and failovers.
Production stops after `produce_s`; the uplinks keep going until SIGTERM.

Values: `filter_dp` is 200 Pa; for an escalating agent it is 350 Pa from batch FILTER_RISE_AT and
450 Pa from FILTER_ESCALATE_AT (a threshold rule at 300 Pa, escalating at 420 Pa, raises one work
order and escalates it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from agent.uplink.addresses import CollectorAddresses
from agent.uplink.client import ChannelSettings, UplinkClient
from agent.uplink.queue import StoreAndForwardQueue
from protos.twin.v1 import twin_pb2
from runtime.backoff import Backoff

__all__ = ["FILTER_ESCALATE_AT", "FILTER_RISE_AT", "filter_dp"]

FILTER_RISE_AT = 20
FILTER_ESCALATE_AT = 50
EXTRA_POINTS = ("supply_air_temp", "fan_speed", "power", "return_air_temp", "humidity", "damper", "valve")


def filter_dp(seq: int, escalating: bool) -> float:
    if not escalating or seq < FILTER_RISE_AT:
        return 200.0
    return 350.0 if seq < FILTER_ESCALATE_AT else 450.0


class LightAgent:
    def __init__(self, spec: dict[str, Any], cfg: dict[str, Any]) -> None:
        self.spec = spec
        self.site = cfg["site"]
        self.interval_ns = int(cfg["interval_s"] * 1e9)
        count = int(cfg.get("points", 4))
        extra = [*EXTRA_POINTS, *(f"p{i}" for i in range(len(EXTRA_POINTS), count))]
        self.points = ["filter_dp", *extra[:max(0, count - 1)]]
        self.queue = StoreAndForwardQueue(Path(cfg["state_dir"]) / spec["id"] / "queue.sqlite", 64 * 1024 * 1024)
        self.addresses = CollectorAddresses(cfg["collectors"])
        self.client = UplinkClient(ChannelSettings(self.addresses.current, spec["token"]), self.queue, self.hello,
                                   max_in_flight=8, backoff=Backoff(0.2, 1.0), addresses=self.addresses)

    def hello(self) -> twin_pb2.Hello:
        return twin_pb2.Hello(agent_id=self.spec["id"], site=self.site, version="light", queue_epoch=self.queue.epoch,
                              assets=[twin_pb2.AssetDescriptor(
                                  id=self.spec["asset"], type="ahu", name=self.spec["asset"],
                                  points=[twin_pb2.PointDescriptor(name=p, unit="u") for p in self.points])])

    async def produce(self, until: float) -> None:
        start_ns = time.time_ns() - self.interval_ns
        while time.monotonic() < until:
            await self.put(start_ns)
            await asyncio.sleep(self.interval_ns / 1e9)

    async def put(self, start_ns: int) -> None:
        def encode(seq: int) -> bytes:
            end = start_ns + seq * self.interval_ns
            summaries = []
            for p in self.points:
                v = filter_dp(seq, self.spec["escalating"]) if p == "filter_dp" else 20.0 + seq % 7
                summaries.append(twin_pb2.Summary(
                    asset=self.spec["asset"], point=p, unit="u", first_ns=end - self.interval_ns + 1, last_ns=end,
                    interval_end_ns=end, mean=v, min=v, max=v, last=v, count=5, quality=twin_pb2.GOOD))
            return twin_pb2.Batch(seq=seq, created_ns=end, summaries=summaries).SerializeToString()

        await self.queue.put(encode, time.time_ns(), summaries=len(self.points))

    def status(self) -> dict[str, Any]:
        q = self.queue.stats()
        c = self.client.counters
        return {"batches": q.next_seq - 1, "summaries_total": q.summaries_total, "queued": q.batches,
                "dropped": q.dropped, "acked": c.acked, "connected": c.connected, "collector": self.addresses.current,
                "failovers": self.addresses.failovers, "reconnects": c.reconnects, "epoch": self.queue.epoch}


async def main(cfg: dict[str, Any]) -> None:
    agents = [LightAgent(spec, cfg) for spec in cfg["agents"]]
    for a in agents:
        await a.queue.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    until = time.monotonic() + cfg["produce_s"]
    tasks = [asyncio.create_task(a.client.run()) for a in agents]
    tasks += [asyncio.create_task(a.produce(until)) for a in agents]
    status_file = Path(cfg["status_file"])

    def write_status() -> None:
        tmp = status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"producing": time.monotonic() < until,
                                   "agents": {a.spec["id"]: a.status() for a in agents}}))
        os.replace(tmp, status_file)

    try:
        while not stop.is_set():
            write_status()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        write_status()
        for a in agents:
            await a.queue.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
