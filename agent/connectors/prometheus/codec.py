"""Exposition text -> series -> one value per point (pure; no I/O).

Parsing is prometheus_client's (the text format 0.0.4 and OpenMetrics 1.0 parsers the Prometheus
project maintains for Python); this module groups the samples of each family into series (a
histogram's buckets, sum and count belong to one series) and turns a series into a number the
way PromQL would over one scrape interval:

    counter          rate (default) = increase / seconds, increase, value (the raw total)
    gauge, unknown   value
    histogram        mean (default) = delta sum / delta count, quantile (histogram_quantile of
                     the bucket deltas), count_rate = delta count / seconds
    summary          mean (default), quantile (one the exporter exposes), count_rate
    gaugehistogram   mean (default) = gsum / gcount, quantile of the current buckets
    info             value = the value of `value_label`
    stateset         value = the state(s) that are true, comma-separated

A counter that went down was reset (the exporter restarted): its increase over the interval is
its new value, as in PromQL's `increase()`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent.connectors.prometheus.config import TARGET_LABEL, Function
from runtime.errors import DecodeError

__all__ = [
    "DEFAULT_FUNCTION",
    "Family",
    "SeriesKey",
    "SeriesState",
    "evaluate",
    "histogram_quantile",
    "parse_exposition",
    "select",
    "series_of",
]

OPENMETRICS = "application/openmetrics-text"
DEFAULT_FUNCTION: dict[str, Function] = {
    "counter": "rate", "gauge": "value", "unknown": "value", "untyped": "value",
    "histogram": "mean", "summary": "mean", "gaugehistogram": "mean", "info": "value", "stateset": "value",
}
FUNCTIONS_BY_TYPE: dict[str, frozenset[str]] = {
    "counter": frozenset({"rate", "increase", "value"}),
    "gauge": frozenset({"value"}), "unknown": frozenset({"value"}), "untyped": frozenset({"value"}),
    "histogram": frozenset({"mean", "quantile", "count_rate"}),
    "summary": frozenset({"mean", "quantile", "count_rate"}),
    "gaugehistogram": frozenset({"mean", "quantile"}),
    "info": frozenset({"value"}), "stateset": frozenset({"value"}),
}
STRUCTURAL_LABELS = ("le", "quantile")

SeriesKey = tuple[tuple[str, str], ...]
"""A series' identity: its labels (without le / quantile / the stateset label), sorted."""


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family; its samples are prometheus_client's (name, labels, value, timestamp in s, ...)."""

    name: str
    type: str
    samples: Sequence[Any]


@dataclass(slots=True)
class SeriesState:
    """One series of a family at one scrape, in the shape its type needs."""

    labels: dict[str, str]
    value: float | None = None  # counter total, gauge, unknown
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    quantiles: dict[float, float] = field(default_factory=dict)
    sum: float | None = None
    count: float | None = None
    states: list[str] = field(default_factory=list)  # stateset: the true states
    timestamp_s: float | None = None  # the exporter's own timestamp, if it gave one


def parse_exposition(text: str, content_type: str = "text/plain") -> dict[str, Family]:
    """Parse one scrape; DecodeError (with the parser's message) if the body is not valid exposition."""
    parser = parse_openmetrics if content_type.startswith(OPENMETRICS) else parse_text
    families: dict[str, Family] = {}
    try:
        for f in parser(text):
            families[f.name] = Family(f.name, f.type, f.samples)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise DecodeError(f"not valid exposition format: {exc}") from None
    return families


def lookup(families: Mapping[str, Family], metric: str) -> Family | None:
    """The family of `metric`, also when named by a sample name (`x_total` of counter `x`, `i_info`)."""
    if metric in families:
        return families[metric]
    for suffix in ("_total", "_info"):
        if metric.endswith(suffix) and metric[: -len(suffix)] in families:
            return families[metric[: -len(suffix)]]
    return None


def _key(labels: Mapping[str, str], drop: Iterable[str]) -> SeriesKey:
    dropped = set(drop)
    return tuple(sorted((k, v) for k, v in labels.items() if k not in dropped))


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf") else float(text)


def series_of(family: Family) -> dict[SeriesKey, SeriesState]:
    """Group the samples of `family` into series."""
    out: dict[SeriesKey, SeriesState] = {}
    drop: tuple[str, ...] = (*STRUCTURAL_LABELS, family.name) if family.type == "stateset" else STRUCTURAL_LABELS
    name = family.name
    for s in family.samples:
        key = _key(s.labels, drop)
        st = out.get(key)
        if st is None:
            st = out[key] = SeriesState(labels=dict(key))
        if s.timestamp is not None:
            st.timestamp_s = float(s.timestamp)
        suffix = s.name[len(name):] if s.name.startswith(name) else s.name
        if suffix == "_bucket":
            st.buckets.append((_le(s.labels.get("le", "+Inf")), float(s.value)))
        elif suffix in ("_sum", "_gsum"):
            st.sum = float(s.value)
        elif suffix in ("_count", "_gcount"):
            st.count = float(s.value)
        elif suffix == "_created":
            continue
        elif family.type == "summary" and "quantile" in s.labels:
            st.quantiles[float(s.labels["quantile"])] = float(s.value)
        elif family.type == "stateset":
            if s.value:
                st.states.append(s.labels.get(name, ""))
        else:  # counter _total, gauge, unknown, info
            st.value = float(s.value)
    for st in out.values():
        st.buckets.sort()
    return out


def select(series: Mapping[SeriesKey, SeriesState], target: str, match: Mapping[str, str],
           match_regex: Mapping[str, re.Pattern[str]]) -> list[SeriesState]:
    """The series whose labels (plus `__target__`) equal `match` and fully match `match_regex`.

    A label missing from a series counts as the empty string, as in PromQL.
    """
    out = []
    for st in series.values():
        labels = {TARGET_LABEL: target, **st.labels}
        if all(labels.get(k, "") == v for k, v in match.items()) and all(
                p.fullmatch(labels.get(k, "")) for k, p in match_regex.items()):
            out.append(st)
    return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative (le, count) buckets; None without observations.

    Linear interpolation inside the bucket holding the rank; the lowest bucket starts at 0 (if its
    bound is positive); a rank in the +Inf bucket gives the highest finite bound.
    """
    if not buckets or buckets[-1][0] != math.inf:
        raise DecodeError("histogram without a +Inf bucket")
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if le == math.inf:
                return buckets[i - 1][0] if i > 0 else None
            start = prev_le if i > 0 else (0.0 if le > 0 else le)
            in_bucket = count - prev_count
            return le if in_bucket <= 0 else start + (le - start) * (rank - prev_count) / in_bucket
        prev_le, prev_count = le, count
    return buckets[-1][0]


def _increase(now: float, before: float) -> float:
    """Counter increase; a counter that went down was reset and has counted `now` since."""
    return now - before if now >= before else now


def _delta_buckets(now: SeriesState, before: SeriesState) -> list[tuple[float, float]]:
    if (now.count or 0.0) < (before.count or 0.0) or [le for le, _ in now.buckets] != [le for le, _ in before.buckets]:
        return list(now.buckets)  # reset or new bucket layout: everything counted since
    return [(le, c - b) for (le, c), (_, b) in zip(now.buckets, before.buckets, strict=True)]


def evaluate(family_type: str, function: Function, now: SeriesState, before: SeriesState | None,
             seconds: float, quantile: float | None = None, value_label: str | None = None
             ) -> float | str | None:
    """One series -> one value. None: no value this scrape (first scrape of a rate, no observations).

    DecodeError when `function` does not apply to `family_type` or the series lacks what it needs.
    """
    allowed = FUNCTIONS_BY_TYPE.get(family_type)
    if allowed is None:
        raise DecodeError(f"unsupported metric type {family_type!r}")
    if function not in allowed:
        raise DecodeError(f'function "{function}" does not apply to a {family_type}; use one of {sorted(allowed)}')
    if family_type == "info":
        if value_label is None:
            raise DecodeError('an info metric needs value_label = "<label>" to say which label is the value')
        return now.labels.get(value_label, "")
    if family_type == "stateset":
        return ",".join(sorted(now.states))
    if function == "value":
        return now.value
    if function == "quantile":
        assert quantile is not None
        if family_type == "summary":
            if quantile not in now.quantiles:
                raise DecodeError(f"the summary exposes quantiles {sorted(now.quantiles)}, not {quantile:g}")
            return now.quantiles[quantile]
        if family_type == "gaugehistogram":
            return histogram_quantile(quantile, now.buckets)
        return None if before is None else histogram_quantile(quantile, _delta_buckets(now, before))
    if family_type == "gaugehistogram":  # mean
        return None if not now.count else (now.sum or 0.0) / now.count
    if before is None:
        return None  # rates and deltas need two scrapes
    if family_type == "counter":
        if now.value is None or before.value is None:
            return None
        increase = _increase(now.value, before.value)
        if function == "increase":
            return increase
        return increase / seconds if seconds > 0 else None
    if now.count is None or before.count is None:
        raise DecodeError(f"the {family_type} has no _count")
    count = _increase(now.count, before.count)
    if function == "count_rate":
        return count / seconds if seconds > 0 else None
    if count <= 0:
        return None  # no observations in the interval: no mean
    reset = now.count < before.count
    total = (now.sum or 0.0) if reset else (now.sum or 0.0) - (before.sum or 0.0)
    return total / count


def aggregate(how: str, values: Sequence[float]) -> float:
    if how == "sum":
        return math.fsum(values)
    if how == "avg":
        return math.fsum(values) / len(values)
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    return float(len(values))  # count
