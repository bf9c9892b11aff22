"""Collector ingest against the raw limits, all measured in one run; prints ratios, asserts nothing.

1. Sinks: the same load (agents catching up, 100 summaries per batch) into the real collector with
   each sink, against that sink's own raw write rate: the same rows/points written directly by this
   process with the same batch size (one batch of an agent = one write), best of 1 and 8 writers
   for the HTTP sinks (SQLite has one writer).
   - embedded SQLite point store: bare `executemany(UPSERT) + COMMIT` of the rows it stores;
   - InfluxDB 1.x (`/write`) and VictoriaMetrics (`/api/v2/write`): POST of the line protocol.
2. Fan-in (embedded SQLite sink) at 10 / 100 / 1000 agents, every agent catching up with its
   window full: throughput, collector CPU per summary, ack latency p50/p99 (write -> ack), peak RSS
   of the collector (the catch-up storm at 1000 agents is issue 11's memory figure). The same load
   against a no-op gRPC servicer gives the gRPC + protobuf floor.
3. Knee at 1000 agents: paced live load (one batch per agent per period, random phase) stepped up;
   the knee is the highest offered rate at which the collector delivers >= 95 % of it with p99 ack
   (from when the batch was produced) under 1 s.

The collector is the real `python -m collector run` in its own process; `--code DIR` runs it from
another source tree (e.g. an export of an older commit) with the same load; `--compare DIR` runs
every measurement with that tree and then with this one, back to back, for before/after figures
taken under the same conditions (the machine's other load changes over minutes, not seconds).
Agents speak wire v1 (what every version accepts); `--wire v2` adds, for this tree, the fan-in at
1000 agents with v2 agents.

    python bench/ingest_bench.py [--quick] [--only sinks,fanin,knee] [--code DIR | --compare DIR] [--wire v2]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest_load import (
    LOOPBACK,
    CollectorProcess,
    SimAgent,
    Tally,
    agent_id,
    catch_up,
    connect_all,
    free_port,
    make_template,
    paced,
    serve_bare,
)
from tests.servers import influxd_server, victoria_metrics_server

WINDOW = 16
PER_BATCH = 100
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS summary_points (
    measurement TEXT NOT NULL, series TEXT NOT NULL, ts_ns INTEGER NOT NULL, fields TEXT NOT NULL,
    PRIMARY KEY (measurement, series, ts_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS summary_points_by_time ON summary_points (measurement, ts_ns);
"""
SQLITE_UPSERT = """
INSERT INTO summary_points (measurement, series, ts_ns, fields) VALUES (?, ?, ?, ?)
ON CONFLICT (measurement, series, ts_ns) DO UPDATE SET fields = json_patch(fields, excluded.fields)
"""


# ---- the points one agent batch becomes (the sinks' stored form), built without the collector ----
def batch_points(index: int, seq: int, end_ns: int) -> list[tuple[str, dict[str, str], dict[str, object], int]]:
    """(measurement, tags, fields, ts) of one simulated batch: 100 telemetry points + agent_health."""
    out: list[tuple[str, dict[str, str], dict[str, object], int]] = []
    for s in make_template(index, PER_BATCH).summaries:
        tags = {"agent": agent_id(index), "asset": s.asset, "asset_type": "ahu", "point": s.point,
                "site": "bench", "unit": s.unit}
        out.append(("telemetry", tags, {"count": s.count, "bad": s.bad_count, "mean": s.mean, "min": s.min,
                                        "max": s.max, "last": s.last}, end_ns))
    out.append(("agent_health", {"agent": agent_id(index), "site": "bench"},
                {"queue_batches": 1, "queue_bytes": 0, "dropped": 0, "sent": 0, "acked": 0, "connector_errors": 0,
                 "stale_points": 0, "rss_mb": 40.0, "uptime_s": 100.0}, end_ns))
    return out


def raw_batches(agents: int, backlog: int) -> list[list[tuple[str, dict[str, str], dict[str, object], int]]]:
    t0 = time.time_ns() - 10**15
    return [batch_points(10_000 + a, k, t0 + k * 10**10) for a in range(agents) for k in range(backlog)]


def sqlite_rows(batch: list[tuple[str, dict[str, str], dict[str, object], int]]) -> list[tuple[str, str, int, str]]:
    return [(m, json.dumps(tags, sort_keys=True, separators=(",", ":")), ts, json.dumps(fields))
            for m, tags, fields, ts in batch]


def line_protocol(batch: list[tuple[str, dict[str, str], dict[str, object], int]]) -> bytes:
    from influxdb_client import Point
    lines = []
    for m, tags, fields, ts in batch:
        p = Point(m)
        for k, v in tags.items():
            p.tag(k, v)
        for k, v in fields.items():
            p.field(k, v)
        lines.append(p.time(ts).to_line_protocol())
    return "\n".join(lines).encode()


def raw_sqlite(path: Path, bodies: list[list[tuple[str, str, int, str]]]) -> float:
    """Seconds to upsert + commit each batch's rows, one transaction per batch (the store's settings)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SQLITE_SCHEMA)
    started = time.perf_counter()
    for rows in bodies:
        conn.execute("BEGIN")
        conn.executemany(SQLITE_UPSERT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def raw_http(url: str, bodies: list[bytes], writers: int, headers: dict[str, str]) -> float:
    """Seconds to POST every body with `writers` threads (one body = one batch's points)."""
    pool = urllib3.PoolManager(maxsize=writers, retries=False)
    todo = list(bodies)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            resp = pool.request("POST", url, body=body, headers=headers)
            if resp.status >= 300:
                raise RuntimeError(f"raw write: HTTP {resp.status}: {resp.data[:200]!r}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(writers) as ex:
        for f in [ex.submit(work) for _ in range(writers)]:
            f.result()
    return time.perf_counter() - started


# ---- one collector run --------------------------------------------------------------------------
class Run:
    """Agents against one server process; samples its CPU and RSS."""

    def __init__(self, server: CollectorProcess, agents: int, wire: str = "v1") -> None:
        self.server = server
        self.agents = [SimAgent(i, server.port, PER_BATCH, wire) for i in range(agents)]

    async def __aenter__(self) -> Run:
        await self.server.wait_ready()
        await connect_all(self.agents)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)
        self.server.stop()

    async def measure(self, load: Callable[[], object]) -> dict[str, float]:
        cpu0, t0 = self.server.cpu_s(), time.perf_counter()
        sampling = True

        async def sample() -> None:
            while sampling:
                self.server.rss_mb()
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        tally: Tally = await load()  # type: ignore[misc]
        elapsed = time.perf_counter() - t0
        sampling = False
        await sampler
        cpu = self.server.cpu_s() - cpu0
        if tally.errors:
            print(f"    ! {len(tally.errors)} agent errors, first: {tally.errors[0]}")
        return {"rate": tally.summaries / elapsed, "cpu_us": cpu / max(tally.summaries, 1) * 1e6,
                "p50_ms": tally.percentile(50) * 1e3, "p99_ms": tally.percentile(99) * 1e3,
                "rss_mb": self.server.peak_rss_mb, "summaries": tally.summaries, "elapsed": elapsed}


async def ingest_run(workdir: Path, agents: int, backlog: int, influx: str, code: Path | None,
                     wire: str = "v1") -> dict[str, float]:
    server = CollectorProcess.collector(workdir, agents, influx, code)
    async with Run(server, agents, wire) as run:
        return await run.measure(lambda: catch_up(run.agents, backlog, WINDOW))


async def bare_run(workdir: Path, agents: int, backlog: int) -> dict[str, float]:
    port = free_port()
    server = CollectorProcess([sys.executable, __file__, "--serve-bare", str(port)], workdir, port)
    async with Run(server, agents) as run:
        return await run.measure(lambda: catch_up(run.agents, backlog, WINDOW))


def line(label: str, r: dict[str, float]) -> str:
    return (f"  {label:<34} {r['rate']:9.0f} summaries/s  CPU {r['cpu_us']:6.1f} us/summary  "
            f"ack p50 {r['p50_ms']:7.0f} ms  p99 {r['p99_ms']:7.0f} ms  peak RSS {r['rss_mb']:6.0f} MB")


# ---- sections -----------------------------------------------------------------------------------
Codes = list[tuple[str, Path | None]]


async def sinks(tmp: Path, codes: Codes, agents: int, backlog: int) -> None:
    print(f"\n== sinks: {agents} agents catching up, {backlog} batches x {PER_BATCH} summaries each "
          f"(+1 agent_health point per batch)")
    batches = raw_batches(agents, backlog)
    summaries = len(batches) * PER_BATCH

    rows = [sqlite_rows(b) for b in batches]
    raw = summaries / raw_sqlite(tmp / "raw.sqlite", rows)
    print(f"  embedded SQLite: raw upsert+commit per batch {raw:9.0f} summaries/s")
    for label, code in codes:
        got = await ingest_run(tmp / f"sqlite-{label}", agents, backlog, "", code)
        print(line(f"ingest -> embedded SQLite ({label})", got) + f"  ratio to raw {got['rate'] / raw:.2f}")

    bodies = [line_protocol(b) for b in batches]
    influx = influxd_server(tmp / "influxd")
    try:
        pool = urllib3.PoolManager()
        base = f"http://{LOOPBACK}:{influx.port}"
        for db in ("raw", *(f"ingest_{label}" for label, _ in codes)):
            pool.request("POST", f"{base}/query", fields={"q": f'CREATE DATABASE "{db}"'})
        url = f"{base}/write?db=raw&precision=ns"
        rates = {w: summaries / raw_http(url, bodies, w, {}) for w in (1, 8)}
        best = max(rates.values())
        print(f"  InfluxDB 1.x raw /write: {rates[1]:9.0f} summaries/s (1 writer), {rates[8]:9.0f} (8 writers)")
        for label, code in codes:
            cfg = f'[influx]\napi = "v1"\nurl = "{base}"\ndatabase = "ingest_{label}"\n'
            got = await ingest_run(tmp / f"influx-{label}", agents, backlog, cfg, code)
            print(line(f"ingest -> InfluxDB v1 ({label})", got) + f"  ratio to best raw {got['rate'] / best:.2f}")
    finally:
        influx.stop()

    vm = victoria_metrics_server(tmp / "vm")
    try:
        base = f"http://{LOOPBACK}:{vm.port}"
        url = f"{base}/api/v2/write?org=-&bucket=raw&precision=ns"
        rates = {w: summaries / raw_http(url, bodies, w, {}) for w in (1, 8)}
        best = max(rates.values())
        print(f"  VictoriaMetrics raw /api/v2/write: {rates[1]:9.0f} summaries/s (1 writer), "
              f"{rates[8]:9.0f} (8 writers)")
        for label, code in codes:
            cfg = f'[influx]\napi = "v2"\nurl = "{base}"\nbucket = "ingest"\nanonymous = true\n'
            got = await ingest_run(tmp / f"vm-{label}", agents, backlog, cfg, code)
            print(line(f"ingest -> VictoriaMetrics ({label})", got) + f"  ratio to best raw {got['rate'] / best:.2f}")
    finally:
        vm.stop()


async def fan_in(tmp: Path, codes: Codes, sizes: list[tuple[int, int]], wire: str) -> None:
    print(f"\n== fan-in, embedded SQLite sink, every agent catching up (window {WINDOW}, {PER_BATCH} summaries/batch)")
    for agents, backlog in sizes:
        floor = await bare_run(tmp / f"bare-{agents}", agents, backlog)
        print(f"  {agents} agents x {backlog} batches:")
        print(line("no-op gRPC servicer (floor)", floor))
        for label, code in codes:
            got = await ingest_run(tmp / f"fanin-{agents}-{label}", agents, backlog, "", code)
            print(line(f"collector ({label})", got) + f"  ratio to floor {got['rate'] / floor['rate']:.3f}")
        if wire == "v2" and agents == max(a for a, _ in sizes):
            got = await ingest_run(tmp / f"fanin-{agents}-v2", agents, backlog, "", None, "v2")
            print(line("collector, v2 agents (this tree)", got))


async def knee(tmp: Path, codes: Codes, agents: int, rates: list[float], step_s: float) -> None:
    print(f"\n== knee: {agents} agents x {PER_BATCH} points, paced live load, {step_s:g} s per step")
    for label, code in codes:
        server = CollectorProcess.collector(tmp / f"knee-{label}", agents, "", code)
        found = 0.0
        async with Run(server, agents) as run:
            await paced(run.agents, rates[0] / 2, 4.0, WINDOW)  # warm-up: caches, first points rows
            for rate in rates:
                r = await run.measure(lambda rate=rate: paced(run.agents, rate, step_s, WINDOW))
                ok = r["rate"] >= 0.95 * rate * min(1.0, r["elapsed"] / step_s) and r["p99_ms"] < 1000
                print(f"  ({label}) offered {rate:7.0f}/s:" + line("", r)[38:] + ("" if ok else "   <- past the knee"))
                if not ok:
                    break
                found = rate
        print(f"  ({label}) knee: {found:.0f} summaries/s (highest offered rate delivered with p99 ack < 1 s)")


async def main_async(args: argparse.Namespace, codes: Codes) -> None:
    only = set(args.only.split(","))
    print("collector code: " + ", ".join(f"{label} = {code or 'this tree'}" for label, code in codes))
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "sinks" in only:
            await sinks(tmp, codes, 8 if args.quick else 20, 10 if args.quick else 25)
        if "fanin" in only:
            sizes = [(10, 40), (100, 8), (1000, 3)] if args.quick else [(10, 200), (100, 20), (1000, 20)]
            await fan_in(tmp, codes, sizes, args.wire)
        if "knee" in only:
            ladder = [2500, 5000, 7500, 10000, 15000, 20000, 25000, 30000, 35000, 40000, 50000, 60000]
            await knee(tmp, codes, 1000, ladder, 6.0 if args.quick else 15.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads (a smoke run, not for figures)")
    parser.add_argument("--only", default="sinks,fanin,knee")
    parser.add_argument("--code", default="", help="run the collector from this source tree")
    parser.add_argument("--compare", default="", help="run each measurement with this tree, then with this one")
    parser.add_argument("--wire", default="v1", choices=["v1", "v2"])
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)  # the floor's server
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    if args.compare:
        codes: Codes = [("before", Path(args.compare).resolve()), ("after", None)]
    else:
        codes = [("this tree" if not args.code else "code", Path(args.code).resolve() if args.code else None)]
    asyncio.run(main_async(args, codes))


if __name__ == "__main__":
    main()
