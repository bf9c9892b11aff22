"""Several collectors on PostgreSQL: what a gateway costs each part, for sizing.

One run, real servers on loopback: PostgreSQL 15 (durable: fsync on) as the shared state database,
InfluxDB 1.6 as the sink, 1 or 2 collector processes, and a fleet of light agents (the agent's real
queue and uplink, tests/integration/light_fleet.py) in a process of its own, each sending one
batch of P summaries per interval. Over a steady window it measures the CPU time of each part
(/proc: collector processes; PostgreSQL's postmaster and backends; influxd), PostgreSQL's commits
and WAL bytes, and the summaries acked. Two batch sizes separate the cost per batch from the cost
per summary; the sizing follows from those.

Raw limits in the same run, for the ratios: the same points written straight to InfluxDB (same
batch size, line protocol over /write), and the same state rows (points, rule history, watermark)
written straight to PostgreSQL through the same SQL, one transaction per batch, without gRPC,
the collector's Python or the rules.

    python bench/multicollector_bench.py [--agents 100] [--interval 1] [--points 10,100] [--seconds 15]

The load generator shares the machine (2 cores here): the figures are CPU time per unit of work,
not a throughput limit of this machine; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.config import hash_token  # noqa: E402
from collector.fleet import FleetTwin  # noqa: E402
from collector.state import PostgresLocation  # noqa: E402
from collector.workorders import history  # noqa: E402
from protos.twin.v1 import twin_pb2  # noqa: E402
from tests.integration.light_fleet import EXTRA_POINTS  # noqa: E402
from tests.servers import (  # noqa: E402
    LOOPBACK,
    POSTGRES_PASSWORD,
    PostgresServer,
    ServerProcess,
    free_port,
    influxd_server,
    postgres_server,
    tcp_open,
    wait_for,
)

DB = "facility_twin"
TICK = os.sysconf("SC_CLK_TCK")
RULES = """
[[rules]]
name = "filter_clogged"
asset_type = "ahu"
point = "filter_dp"
above = 300.0
escalate_at = 420.0
severity = "major"
[[rules]]
name = "stale_data"
kind = "stale"
asset_type = "ahu"
"""


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


class PgMeter:
    """CPU of the postmaster and every backend (backends come and go: sampled, summed per pid)."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.seen: dict[int, float] = {}

    def sample(self) -> float:
        for pid in [self.server.pid, *children(self.server.pid)]:
            self.seen[pid] = max(self.seen.get(pid, 0.0), cpu_s(pid))
        return sum(self.seen.values())

    def stats(self, database: str) -> tuple[int, int]:
        """(commits, WAL bytes so far)."""
        out = self.server.psql(f"SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
                               f"FROM pg_stat_database WHERE datname = '{database}'")
        commits, wal = out.strip().split("|")
        return int(commits), int(wal)


def points_of(count: int) -> list[str]:
    extra = [*EXTRA_POINTS, *(f"p{i}" for i in range(len(EXTRA_POINTS), count))]
    return ["filter_dp", *extra[:count - 1]]


def make_batch(seq: int, asset: str, points: list[str], end_ns: int) -> twin_pb2.Batch:
    return twin_pb2.Batch(seq=seq, created_ns=end_ns, summaries=[
        twin_pb2.Summary(asset=asset, point=p, unit="u", first_ns=end_ns - 10**9, last_ns=end_ns,
                         interval_end_ns=end_ns, mean=20.0, min=19.0, max=21.0, last=20.0, count=5,
                         quality=twin_pb2.GOOD) for p in points])


# ---- raw limits ---------------------------------------------------------------------------------------

def raw_influx(influx: ServerProcess, batches: int, points: int) -> tuple[float, float]:
    """Points/s and influxd CPU us/point writing line protocol directly, 4 writers."""
    end0 = time.time_ns() - batches * 10**9
    bodies = []
    for b in range(batches):
        end = end0 + b * 10**9
        bodies.append("\n".join(
            f"telemetry,agent=raw-{b % 50},asset=ahu-raw-{b % 50},asset_type=ahu,point={p},site=bench,unit=u "
            f"mean=20.0,min=19.0,max=21.0,last=20.0,count=5i,bad=0i {end}" for p in points_of(points)).encode())
    url = f"http://{LOOPBACK}:{influx.port}/write?db={DB}"

    def post(body: bytes) -> None:
        req = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    async def run() -> None:
        sem = asyncio.Semaphore(4)

        async def one(body: bytes) -> None:
            async with sem:
                await asyncio.to_thread(post, body)
        await asyncio.gather(*(one(b) for b in bodies))

    cpu0, t0 = cpu_s(influx.pid), time.perf_counter()
    asyncio.run(run())
    elapsed, cpu = time.perf_counter() - t0, cpu_s(influx.pid) - cpu0
    n = batches * points
    return n / elapsed, cpu / n * 1e6


def raw_postgres(pg: PostgresServer, location: PostgresLocation, batches: int, points: int) -> dict[str, float]:
    """The state rows of `batches` batches (points, history, watermark), one transaction each, 4 at once."""
    meter = PgMeter(pg)
    names = points_of(points)

    async def run() -> tuple[float, float]:
        fleet = FleetTwin(location)
        await fleet.open()
        settings = history.HistorySettings()
        end0 = time.time_ns() - batches * 10**9
        sem = asyncio.Semaphore(4)

        async def one(b: int) -> None:
            batch = make_batch(b + 1, f"ahu-raw-{b % 50}", names, end0 + b * 10**9)
            async with sem, fleet.state.transaction() as db:
                await fleet._store_summaries(db, batch)  # the collector's own statements, nothing else
                await history.record_batch(db, batch, settings)
                await db.execute("INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, 'e', ?, 1) "
                                 "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = excluded.seq, "
                                 "batches = watermarks.batches + 1", (f"raw-{b % 50}", b + 1))
        async with fleet.state.transaction() as db:  # the pool's connections exist: their CPU counts from here
            await db.fetchval("SELECT 1")
        cpu0 = meter.sample()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in range(batches)))
        elapsed = time.perf_counter() - t0
        cpu = meter.sample() - cpu0  # before the backends exit with the pool
        await fleet.close()
        return elapsed, cpu

    commits0, wal0 = meter.stats(location.url.rsplit("/", 1)[1])
    elapsed, cpu = asyncio.run(run())
    commits, wal = meter.stats(location.url.rsplit("/", 1)[1])
    return {"tx_per_s": batches / elapsed, "pg_cpu_us_per_batch": cpu / batches * 1e6,
            "wal_bytes_per_batch": (wal - wal0) / batches, "commits": commits - commits0}


# ---- the collectors under a fleet ----------------------------------------------------------------------

@dataclass
class Run:
    collectors: int
    points: int
    batches_per_s: float
    summaries_per_s: float
    collector_cpu_us_per_batch: float
    pg_cpu_us_per_batch: float
    influx_cpu_us_per_point: float
    pg_commits_per_batch: float
    wal_bytes_per_batch: float

    @property
    def collector_cpu_us_per_summary(self) -> float:
        return self.collector_cpu_us_per_batch / self.points


def steady(tmp: Path, pg: PostgresServer, influx: ServerProcess, n_collectors: int, agents: int, points: int,
           interval: float, seconds: float, run_id: str) -> Run:
    location = PostgresLocation(pg.create_database(f"bench_{run_id}"), POSTGRES_PASSWORD)
    dbname = location.url.rsplit("/", 1)[1]
    secret = tmp / "pg.password"
    secret.write_text(POSTGRES_PASSWORD + "\n")
    ids = [f"gw-{run_id}-{i:04d}" for i in range(agents)]
    listens = [f"127.0.0.1:{free_port()}" for _ in range(n_collectors)]
    procs: list[ServerProcess] = []
    try:
        for i, listen in enumerate(listens):
            work = tmp / f"{run_id}-c{i}"
            work.mkdir()
            cfg = work / "collector.toml"
            cfg.write_text(textwrap.dedent(f"""
                [collector]
                listen = "{listen}"
                state_dir = "{work / 'state'}"
                log_level = "warning"
                [influx]
                api = "v1"
                url = "http://{LOOPBACK}:{influx.port}"
                database = "{DB}"
                [state]
                url = "{location.url}"
                password_file = "{secret}"
                pool_size = 10
                """) + "".join(f'[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token("t-" + a)}"\n' for a in ids)
                + RULES)
            port = int(listen.rsplit(":", 1)[1])
            argv = [sys.executable, "-m", "collector", "run", "--config", str(cfg)]
            procs.append(ServerProcess(f"collector{i}", argv, work, lambda port=port: tcp_open(port), port).start())
        status_file = tmp / f"{run_id}-fleet.json"
        fleet_cfg = tmp / f"{run_id}-fleet-cfg.json"
        fleet_cfg.write_text(json.dumps({
            "state_dir": str(tmp / f"{run_id}-fleet"), "status_file": str(status_file), "site": "bench",
            "collectors": listens, "interval_s": interval, "produce_s": seconds + 10, "points": points,
            "agents": [{"id": a, "token": "t-" + a, "asset": f"ahu-{a}", "escalating": False} for a in ids]}))
        fleet = ServerProcess("fleet", [sys.executable, "-m", "tests.integration.light_fleet", str(fleet_cfg)], tmp,
                              status_file.exists, 0, env={"PYTHONPATH": str(ROOT)}).start()
        procs.append(fleet)

        def acked() -> int:
            try:
                return sum(a["acked"] for a in json.loads(status_file.read_text())["agents"].values())
            except (OSError, ValueError):
                return 0

        wait_for(lambda: acked() >= agents * 2, 60, "the fleet connected")
        time.sleep(2.0)  # past the Hellos and first batches
        meter = PgMeter(pg)
        collector_pids = [p.pid for p in procs[:n_collectors]]
        pg0, c0, i0 = meter.sample(), sum(cpu_s(p) for p in collector_pids), cpu_s(influx.pid)
        commits0, wal0 = meter.stats(dbname)
        a0, t0 = acked(), time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            meter.sample()
            time.sleep(0.5)
        a1, elapsed = acked(), time.perf_counter() - t0
        pg1, c1, i1 = meter.sample(), sum(cpu_s(p) for p in collector_pids), cpu_s(influx.pid)
        commits1, wal1 = meter.stats(dbname)
        batches = max(a1 - a0, 1)
        return Run(n_collectors, points, batches / elapsed, batches * points / elapsed,
                   (c1 - c0) / batches * 1e6, (pg1 - pg0) / batches * 1e6, (i1 - i0) / (batches * points) * 1e6,
                   (commits1 - commits0) / batches, (wal1 - wal0) / batches)
    finally:
        for p in reversed(procs):
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--points", default="10,100")
    ap.add_argument("--collectors", default="1,2")
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    sizes = [int(p) for p in args.points.split(",")]
    with tempfile.TemporaryDirectory(prefix="twin-mcbench-") as d:
        tmp = Path(d)
        pg = postgres_server(tmp / "pg", durable=True)
        influx = influxd_server(tmp / "influx")
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://{LOOPBACK}:{influx.port}/query?q=CREATE+DATABASE+{DB}", method="POST"), timeout=10).read()
            print(f"raw limits (same run): PostgreSQL 15 fsync on, InfluxDB 1.6; {os.cpu_count()} cores shared")
            raw: dict[int, tuple[float, float, dict[str, float]]] = {}
            for p in sizes:
                rate, influx_us = raw_influx(influx, 400, p)
                pg_raw = raw_postgres(pg, PostgresLocation(pg.create_database(f"raw_{p}"), POSTGRES_PASSWORD), 400, p)
                raw[p] = (rate, influx_us, pg_raw)
                print(f"  P={p:>3}: InfluxDB direct {rate:,.0f} points/s, {influx_us:.1f} us CPU/point; PostgreSQL "
                      f"direct {pg_raw['tx_per_s']:,.0f} batches/s, {pg_raw['pg_cpu_us_per_batch']:,.0f} us CPU and "
                      f"{pg_raw['wal_bytes_per_batch']:,.0f} WAL bytes per batch")
            runs: list[Run] = []
            for n in (int(c) for c in args.collectors.split(",")):
                for p in sizes:
                    r = steady(tmp, pg, influx, n, args.agents, p, args.interval, args.seconds, f"c{n}p{p}")
                    runs.append(r)
                    rate, influx_us, pg_raw = raw[p]
                    pg_direct = pg_raw["pg_cpu_us_per_batch"]
                    print(f"{n} collector(s), {args.agents} agents x {p} points every {args.interval:g}s: "
                          f"{r.summaries_per_s:,.0f} summaries/s ({r.batches_per_s:,.0f} batches/s); CPU per batch: "
                          f"collectors {r.collector_cpu_us_per_batch:,.0f} us ({r.collector_cpu_us_per_summary:.1f} "
                          f"us/summary), PostgreSQL {r.pg_cpu_us_per_batch:,.0f} us (direct: "
                          f"{pg_direct:,.0f}, ratio {pg_direct / r.pg_cpu_us_per_batch:.2f}), "
                          f"InfluxDB {r.influx_cpu_us_per_point:.1f} us/point (direct {influx_us:.1f}, ratio "
                          f"{influx_us / r.influx_cpu_us_per_point:.2f}); {r.pg_commits_per_batch:.2f} commits and "
                          f"{r.wal_bytes_per_batch:,.0f} WAL bytes per batch")
            one = [r for r in runs if r.collectors == runs[0].collectors]
            if len(one) >= 2:
                a, b = one[0], one[-1]
                per_summary = (b.collector_cpu_us_per_batch - a.collector_cpu_us_per_batch) / (b.points - a.points)
                per_batch = a.collector_cpu_us_per_batch - per_summary * a.points
                pg_per_summary = (b.pg_cpu_us_per_batch - a.pg_cpu_us_per_batch) / (b.points - a.points)
                pg_per_batch = a.pg_cpu_us_per_batch - pg_per_summary * a.points
                wal_per_summary = (b.wal_bytes_per_batch - a.wal_bytes_per_batch) / (b.points - a.points)
                wal_per_batch = a.wal_bytes_per_batch - wal_per_summary * a.points
                print(f"fit: collector {per_batch:,.0f} us per batch + {per_summary:.1f} us per summary; PostgreSQL "
                      f"{pg_per_batch:,.0f} us per batch + {pg_per_summary:.1f} us per summary, WAL "
                      f"{wal_per_batch:,.0f} B per batch + {wal_per_summary:,.0f} B per summary")
                print("sizing (one collector core = 1e6 us CPU/s; per 1000 gateways):")
                influx_us = sum(r.influx_cpu_us_per_point for r in one) / len(one)
                for gw_points, gw_interval in ((20, 10.0), (100, 10.0), (100, 60.0), (500, 10.0)):
                    per_gw = (per_batch + per_summary * gw_points) / gw_interval  # us CPU per second per gateway
                    pg_cores = 1000 * (pg_per_batch + pg_per_summary * gw_points) / gw_interval / 1e6
                    wal = 1000 * (wal_per_batch + wal_per_summary * gw_points) / gw_interval
                    print(f"  {gw_points:>3} points every {gw_interval:>4g}s: {1e6 / per_gw:,.0f} gateways per "
                          f"collector core; per 1000 gateways: {1000 / gw_interval:,.0f} PostgreSQL commits/s, "
                          f"{pg_cores:.2f} PostgreSQL cores, {wal / 1e6:.2f} MB/s WAL, "
                          f"{1000 * gw_points / gw_interval:,.0f} InfluxDB points/s, "
                          f"{1000 * gw_points / gw_interval * influx_us / 1e6:.2f} InfluxDB cores")
        finally:
            influx.stop()
            pg.remove()


if __name__ == "__main__":
    main()
