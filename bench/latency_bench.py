"""Change -> upstream latency at slow polls: a register changes on a real Modbus device; how long until
the real collector has stored the new value?

For each poll period P (the summary interval is P too, as in the field report), the bench serves a
Modbus device in its own process (so it knows exactly when a value changed and when the agent read
it), starts the collector (embedded store) and the agent (several times, at random moments: where
the agent's polls fall against the summary boundaries is set when it starts), then changes a
holding register at random moments, one change at a time, and watches the collector's store (every
5 ms) for the first summary whose `last` is the new value. It prints, over all changes:

    change -> upstream   the register changed -> the collector has stored the value
    read -> upstream     the agent's read that was answered with it -> stored: the age of the newest
                         value at delivery, what the agent adds to polling
    bare poll            change -> seen by a bare pymodbus client polling the same value every P
                         seconds: the raw limit of polling at P (uniform in [0, P] plus a round trip)

The goal is p99 change -> upstream <= P + 100 ms. Asserts nothing.

    python bench/latency_bench.py [--periods 1 10] [--changes 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from simulator.modbus_device import ModbusDeviceServer, pattern_memory
from tests.integration.daemons import Processes, agent_process, collector_process, pattern_agent_toml

REGISTER = 0  # r0 of the pattern agent (unit 1): 1000 at start
BARE_UNIT = 2  # the bare poller reads its own unit, so the device can tell its requests apart


class WatchedRegisters(list[int]):
    """Holding registers that note when a read served which value of REGISTER (the device copies a
    slice of them into each answer), so the bench knows when the agent saw a change."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(values)
        self.served: list[tuple[float, int]] = []

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        out = super().__getitem__(key)
        if isinstance(key, slice) and (key.start or 0) <= REGISTER < (key.stop or len(self)):
            self.served.append((time.monotonic(), super().__getitem__(REGISTER)))
        return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Store:
    """The collector's embedded point store, read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def has(self, value: float, since_ns: int) -> bool:
        """Whether an r0 summary stored under a timestamp after `since_ns` has `last` == value."""
        if self.conn is None:
            if not self.path.exists():
                return False
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            rows = self.conn.execute(
                "SELECT fields FROM summary_points WHERE measurement = 'telemetry' AND ts_ns > ? "
                "AND series LIKE '%\"point\":\"r0\"%'", (since_ns,)).fetchall()
        except sqlite3.OperationalError:  # the table does not exist yet
            return False
        return any(json.loads(fields).get("last") == value for (fields,) in rows)


async def bare_poller(port: int, period: float, seen: dict[int, float], stop: asyncio.Event) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        while not stop.is_set():
            rr = await client.read_holding_registers(REGISTER, count=1, device_id=BARE_UNIT)
            if not rr.isError():
                seen.setdefault(rr.registers[0], time.monotonic())
            await asyncio.sleep(period)
    finally:
        client.close()


async def until(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)


async def measure(period: float, changes: int, runs: int, work: Path) -> dict[str, list[float]]:
    """`runs` agent starts at random moments (the phase of its polls against the summary boundaries
    is set at start), `changes` changes in all."""
    units = {1: pattern_memory(1, 20, 0, 0), BARE_UNIT: pattern_memory(1, 20, 0, 0)}
    watched = units[1].holding = WatchedRegisters(units[1].holding)
    device = ModbusDeviceServer(units)
    await device.start()
    store = Store(work / "c" / "state" / "summaries.sqlite")
    out: dict[str, list[float]] = {"change": [], "read": [], "bare": []}
    bare_seen: dict[int, float] = {}
    stop = asyncio.Event()
    poller = asyncio.create_task(bare_poller(device.port, period, bare_seen, stop))
    value = 2000
    try:
        with Processes() as procs:
            collector = procs.add(collector_process(work / "c"))
            for run in range(runs):
                await asyncio.sleep(random.uniform(0, period))
                with Processes() as this_run:
                    this_run.add(agent_process(work / f"a{run}", pattern_agent_toml(
                        work / f"a{run}" / "state", collector.port, device.port, summary_interval_s=period,
                        poll_interval_s=period)))
                    started_ns = time.time_ns()
                    await until(lambda t=started_ns: store.has(float(units[1].holding[REGISTER]), t), 60,
                                "the agent's first summary at the collector")
                    for _ in range(changes // runs):
                        await asyncio.sleep(random.uniform(0, period))  # a change at a random phase
                        value += 1
                        for mem in units.values():
                            mem.holding[REGISTER] = value
                        changed = time.monotonic()
                        since = time.time_ns() - int(5e9)
                        await until(lambda v=float(value), t=since: store.has(v, t), 3 * period + 30,
                                    f"value {value} at the collector")
                        stored = time.monotonic()
                        read = next(at for at, v in watched.served if v == value)
                        out["change"].append(stored - changed)
                        out["read"].append(stored - read)
                        await until(lambda v=value: v in bare_seen, 2 * period + 5, "the bare poller")
                        out["bare"].append(bare_seen[value] - changed)
    finally:
        stop.set()
        await poller
        await device.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--periods", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3, help="agent starts (poll phases) the changes are spread over")
    args = parser.parse_args()
    for period in args.periods:
        with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
            r = asyncio.run(measure(period, args.changes, args.runs, Path(tmp)))
        ms = {k: [1000 * x for x in v] for k, v in r.items()}
        line = ", ".join(f"{name} p50 {statistics.median(ms[k]):.0f} / p99 {pct(ms[k], 0.99):.0f} ms"
                         for k, name in (("change", "change->upstream"), ("read", "read->upstream"),
                                         ("bare", "bare poll")))
        goal = pct(ms["change"], 0.99) - 1000 * period
        print(f"poll {period:g} s, summary {period:g} s, {len(ms['change'])} changes over {args.runs} agent starts: "
              f"{line}; "
              f"p99 change->upstream - poll period = {goal:+.0f} ms (goal <= +100)")


if __name__ == "__main__":
    main()
