"""Prometheus scrape throughput: 1,000 points from a 2,000-series exposition (gauges, counters, histograms).

An exporter (aiohttp, in its own process on loopback) serves a fixed exposition: for each of 100
racks, 10 gauges, 5 counters and one 4-bucket histogram (2,300 samples). The connector maps 10
series per rack to points (asset from the `rack` label): gauges as values, counters as rates,
the histogram as mean and 95th percentile. Measured in the same run, on this process's CPU time
(points per second per core) and wall time:

    raw        bare aiohttp GET + prometheus_client's text parser, back to back (the limit of this
               machine and these libraries for the exposition)
    connector  PrometheusConnector.scrape_once(cycles): the same GET and parse, then selection,
               relabelling, rates and quantiles, Reading objects

No assertions: numbers depend on the machine.

    .venv/bin/python bench/prometheus_bench.py [--cycles 30]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import textwrap
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.connectors.prometheus.connector import PrometheusConnector, build

RACKS = 100
GAUGES = 10
COUNTERS = 5

SERVER = textwrap.dedent('''
    import sys
    from aiohttp import web
    racks, gauges, counters = (int(a) for a in sys.argv[2:5])

    def exposition(n):  # counters and histograms move on with every scrape: a rate and a mean each time
        lines = []
        for g in range(gauges):
            lines.append(f"# TYPE rack_gauge_{g} gauge")
            lines += [f'rack_gauge_{g}{{rack="r{r}",site="a"}} {20 + r % 7 + g / 10}' for r in range(racks)]
        for c in range(counters):
            lines.append(f"# TYPE rack_events_{c}_total counter")
            lines += [f'rack_events_{c}_total{{rack="r{r}"}} {1000 * r + c + 3 * n}' for r in range(racks)]
        lines.append("# TYPE rack_latency_seconds histogram")
        for r in range(racks):
            for le, count in (("0.1", 5), ("0.5", 20), ("1", 28), ("+Inf", 30)):
                lines.append(f'rack_latency_seconds_bucket{{rack="r{r}",le="{le}"}} {count * (n + 1)}')
            lines += [f'rack_latency_seconds_sum{{rack="r{r}"}} {9.5 * (n + 1)}',
                      f'rack_latency_seconds_count{{rack="r{r}"}} {30 * (n + 1)}']
        return ("\\n".join(lines) + "\\n").encode()

    scrapes = [0]

    async def metrics(request):
        scrapes[0] += 1
        return web.Response(body=exposition(scrapes[0]),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_exporter(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(RACKS), str(GAUGES), str(COUNTERS)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the exporter did not start")


async def raw(url: str, cycles: int) -> tuple[int, int, float, float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            await resp.text()
        samples, cpu, wall = 0, time.process_time(), time.perf_counter()
        for _ in range(cycles):
            async with session.get(url) as resp:
                text = await resp.text()
            samples += sum(len(f.samples) for f in text_string_to_metric_families(text))
        return samples // cycles, cycles, time.process_time() - cpu, time.perf_counter() - wall


def connector(url: str) -> PrometheusConnector:
    racks = {f"r{r}": f"rack-{r}" for r in range(RACKS)}
    points = [{"asset_label": "rack", "asset_map": racks, "name": f"g{g}", "metric": f"rack_gauge_{g}"}
              for g in range(7)]
    points += [{"asset_label": "rack", "asset_map": racks, "name": "events", "metric": "rack_events_0_total"},
               {"asset_label": "rack", "asset_map": racks, "name": "latency_mean", "metric": "rack_latency_seconds"},
               {"asset_label": "rack", "asset_map": racks, "name": "latency_p95", "metric": "rack_latency_seconds",
                "function": "quantile", "quantile": 0.95}]
    return build({"name": "bench", "interval_s": 60.0, "targets": [{"name": "racks", "url": url}],
                  "points": points}, "bench")


async def through_connector(url: str, cycles: int) -> tuple[int, float, float]:
    c = connector(url)
    await c.scrape_once(1)  # the first scrape is the counters' and histograms' baseline
    cpu, wall = time.process_time(), time.perf_counter()
    readings = await c.scrape_once(cycles)
    return len(readings), time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    port = free_port()
    exporter = start_exporter(port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        samples, cycles, cpu_raw, wall_raw = asyncio.run(raw(url, args.cycles))
        n_con, cpu_con, wall_con = asyncio.run(through_connector(url, args.cycles))
    finally:
        exporter.terminate()
        exporter.wait(10)
    points = n_con // args.cycles
    print(f"Prometheus: {samples} samples per scrape, {points} points selected, {args.cycles} scrapes")
    print(f"  raw aiohttp + parser  {cycles / cpu_raw:7.1f} scrapes/s per core  ({samples * cycles / cpu_raw:9.0f} "
          f"samples/s)   {cycles / wall_raw:7.1f} scrapes/s wall")
    print(f"  connector             {args.cycles / cpu_con:7.1f} scrapes/s per core  ({n_con / cpu_con:9.0f} points/s)"
          f"    {args.cycles / wall_con:7.1f} scrapes/s wall")
    print(f"  ratio connector / raw (scrapes): {(args.cycles / cpu_con) / (cycles / cpu_raw):.2f} per core, "
          f"{(args.cycles / wall_con) / (cycles / wall_raw):.2f} wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
