"""`twin-agent probe prometheus`: scrape a target once and list what could become points.

For each metric family (optionally filtered by a regular expression): its type, the function the
connector applies by default, and every series with its labels and current value, so a person can
write `metric`, `match` and `asset_label` without reading raw exposition text.

    twin-agent probe prometheus --url http://127.0.0.1:9100/metrics --metric 'node_load.*'
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Mapping

import aiohttp

from agent.connectors.prometheus.codec import DEFAULT_FUNCTION, Family, parse_exposition, series_of
from agent.connectors.prometheus.scrape import Scraper
from runtime.errors import SourceError

__all__ = ["add_arguments", "describe", "run"]

MAX_SERIES_SHOWN = 20
EXPOSED_SUFFIX = {"counter": "_total", "info": "_info"}  # the name as it appears in the exposition


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the target, e.g. http://127.0.0.1:9100/metrics")
    parser.add_argument("--metric", default="", help="only families whose name matches this regular expression")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")


def _value(family: Family, labels: Mapping[str, str], value: float | None, count: float | None) -> str:
    if family.type in ("histogram", "summary", "gaugehistogram"):
        return f"count={count:g}" if count is not None else "(no count)"
    if family.type == "stateset":
        return ""
    return "" if value is None else f"{value:g}"


def describe(families: Mapping[str, Family], metric_filter: str = "") -> str:
    """The report for one scrape (pure; tested)."""
    pattern = re.compile(metric_filter) if metric_filter else None
    lines = []
    for name in sorted(families):
        family = families[name]
        if pattern is not None and not pattern.search(name):
            continue
        series = series_of(family)
        default = DEFAULT_FUNCTION.get(family.type, "value")
        shown = name + EXPOSED_SUFFIX.get(family.type, "")
        lines.append(f"{shown}  ({family.type}, default function {default}, {len(series)} series)")
        for n, st in enumerate(series.values()):
            if n == MAX_SERIES_SHOWN:
                lines.append(f"    ... {len(series) - n} more")
                break
            labels = ",".join(f'{k}="{v}"' for k, v in st.labels.items())
            extra = f"  states={','.join(st.states) or '-'}" if family.type == "stateset" else ""
            lines.append(f"    {{{labels}}}  {_value(family, st.labels, st.value, st.count)}{extra}".rstrip())
    if not lines:
        return "no metric family matches" if pattern else "the target exposes no metrics"
    return "\n".join(lines)


async def _scrape(url: str, timeout_s: float) -> tuple[str, str]:
    async with aiohttp.ClientSession() as session:
        scrape = await Scraper(session, url, timeout_s, 64 * 1024 * 1024).get()
    return scrape.text, scrape.content_type


def run(args: argparse.Namespace) -> int:
    """Probe once; 0 on success, 1 if the target is down or its body does not parse."""
    print(f"Prometheus probe: {args.url}")
    try:
        text, content_type = asyncio.run(_scrape(args.url, args.timeout))
        families = parse_exposition(text, content_type)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"content type: {content_type}, {len(families)} families\n")
    print(describe(families, args.metric))
    return 0
