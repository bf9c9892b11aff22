"""Reading back what the sinks stored: InfluxQL against InfluxDB 1.x, export from VictoriaMetrics.

Plain stdlib HTTP so the assertions do not depend on the client library under test.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["VmSample", "influxql", "victoria_export", "victoria_flush"]

TIMEOUT_S = 10.0


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        return bytes(resp.read())


def influxql(base_url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query with ns timestamps: one dict per row with `time`, the columns,
    the GROUP BY tags and `measurement`. Raises RuntimeError when InfluxDB reports an error."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ns"})
    doc = json.loads(_get(f"{base_url.rstrip('/')}/query?{params}"))
    if doc.get("error"):
        raise RuntimeError(f"InfluxQL {query!r}: {doc['error']}")
    rows: list[dict[str, Any]] = []
    for result in doc.get("results", []):
        if result.get("error"):
            raise RuntimeError(f"InfluxQL {query!r}: {result['error']}")
        for series in result.get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                row.update(series.get("tags", {}))
                row["measurement"] = series["name"]
                rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class VmSample:
    """One VictoriaMetrics sample: metric name (`<measurement>_<field>`), labels, value, ms time."""

    name: str
    labels: dict[str, str]
    value: float
    ts_ms: int


def victoria_flush(base_url: str) -> None:
    """Make everything written so far visible to queries."""
    _get(f"{base_url.rstrip('/')}/internal/force_flush")


def victoria_export(base_url: str, match: str, at_least: int = 0, flush: bool = True) -> list[VmSample]:
    """Every raw sample of the series matching the selector `match`, e.g. `{__name__=~"telemetry_.*"}`,
    sorted by (name, labels, time).

    VictoriaMetrics acknowledges a write before the rows are searchable, and a force_flush right
    after can still miss the newest ones; with `at_least`, export again (up to TIMEOUT_S) until that
    many samples are visible. The caller still asserts the exact count, so duplicates are caught.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        if flush:
            victoria_flush(base_url)
        samples = _export(base_url, match)
        if len(samples) >= at_least or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def _export(base_url: str, match: str) -> list[VmSample]:
    params = urllib.parse.urlencode({"match[]": match})
    samples = []
    for line in _get(f"{base_url.rstrip('/')}/api/v1/export?{params}").decode().splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        labels = dict(doc["metric"])
        name = labels.pop("__name__")
        for value, ts in zip(doc["values"], doc["timestamps"], strict=True):
            samples.append(VmSample(name, labels, float(value), int(ts)))
    return sorted(samples, key=lambda s: (s.name, sorted(s.labels.items()), s.ts_ms))
