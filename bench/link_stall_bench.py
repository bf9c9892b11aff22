"""How long a silently failed link goes unnoticed: a frozen collector (SIGSTOP) and a silent partition.

Real processes at default settings (10 s summary interval, default ack timeout and keepalive): a
Modbus device, the collector (embedded store, HTTP API on) and the agent (metrics endpoint on). At a
random moment the collector is frozen, or the TCP proxy between agent and collector starts dropping
everything; the bench then watches the agent's /metrics and the collector's /health every 0.2 s
and prints how long each side kept calling the link healthy:

    agent stalled        twin_agent_uplink_stalled turns 1
    agent disconnected   twin_agent_uplink_connected turns 0 (the stream was given up)
    collector stalled    /health per_agent link == "stalled"
    collector closed     /health per_agent connected == false (keepalive closed the stream)

"never" when that state was not reached within --watch seconds (or does not exist in the version
measured); keepalive often closes the stream before the agent calls it stalled. The reference is
the summary interval: a batch is due every interval, so a link silent for a few intervals is the
earliest anyone can call stalled. Asserts nothing.

    python bench/link_stall_bench.py [--trials 2] [--watch 90]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
)
from tests.servers import free_port, wait_for
from tests.tcp_proxy import TcpProxy

INTERVAL_S = 10.0  # the agent's default summary interval


def agent_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def collector_view(api_port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=2) as resp:
            return json.loads(resp.read())["ingest"]["per_agent"].get("gw-a", {})
    except (OSError, ValueError, KeyError):
        return {}


def trial(work: Path, scenario: str, watch_s: float) -> dict[str, float | None]:
    api_port, metrics_port = free_port(), free_port()
    seen: dict[str, float | None] = {"agent stalled": None, "agent disconnected": None,
                                     "collector stalled": None, "collector closed": None}
    with Processes() as procs:
        device = procs.add(pattern_device(work))
        collector = procs.add(collector_process(work / "c",
                                                collector_extra=f'\n[api]\nlisten = "127.0.0.1:{api_port}"\n'))
        with TcpProxy(collector.port) as proxy:
            toml = pattern_agent_toml(work / "a" / "state", proxy.port, device.port, summary_interval_s=INTERVAL_S)
            procs.add(agent_process(work / "a", toml + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'))
            wait_for(lambda: agent_metrics(metrics_port).get("twin_agent_uplink_acked_batches_total", 0) >= 1, 60,
                     "a first ack")
            time.sleep(random.uniform(0, INTERVAL_S))  # fail at a random phase of the interval
            t0 = time.monotonic()
            if scenario == "frozen collector":
                os.kill(collector.pid, signal.SIGSTOP)
            else:
                proxy.silent = True
            try:
                watch(seen, scenario, t0, watch_s, metrics_port, api_port)
            finally:
                if scenario == "frozen collector":
                    os.kill(collector.pid, signal.SIGCONT)
    return seen


def watch(seen: dict[str, float | None], scenario: str, t0: float, watch_s: float, metrics_port: int,
          api_port: int) -> None:
    while time.monotonic() - t0 < watch_s and None in seen.values():
        now = time.monotonic() - t0
        m = agent_metrics(metrics_port)
        if m.get("twin_agent_uplink_stalled") == 1.0 and seen["agent stalled"] is None:
            seen["agent stalled"] = now
        if m.get("twin_agent_uplink_connected") == 0.0 and seen["agent disconnected"] is None:
            seen["agent disconnected"] = now
        if scenario != "frozen collector":  # a frozen collector cannot answer /health
            c = collector_view(api_port)
            if c.get("link") == "stalled" and seen["collector stalled"] is None:
                seen["collector stalled"] = now
            if c.get("connected") is False and seen["collector closed"] is None:
                seen["collector closed"] = now
        elif seen["agent stalled"] is not None and seen["agent disconnected"] is not None:
            break
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--watch", type=float, default=90.0)
    args = parser.parse_args()
    print(f"summary interval {INTERVAL_S:g} s (a batch, and so an ack, is due every interval); "
          f"watched for {args.watch:g} s; seconds after the failure, median of {args.trials} trials:")
    for scenario in ("frozen collector", "silent partition"):
        runs = []
        for i in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="link-stall-") as tmp:
                runs.append(trial(Path(tmp) / str(i), scenario, args.watch))
        cells = []
        for key in runs[0]:
            values = [r[key] for r in runs if r[key] is not None]
            if scenario == "frozen collector" and key.startswith("collector"):
                continue  # a frozen collector answers nothing
            if not values:
                cells.append(f"{key} never")
                continue
            cells.append(f"{key} {statistics.median(values):.1f}s" + (
                f" (in {len(values)} of {len(runs)}; else disconnected first)" if len(values) < len(runs) else ""))
        print(f"  {scenario:<17} " + ", ".join(cells))


if __name__ == "__main__":
    main()
