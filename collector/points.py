"""Agent batches as InfluxDB points (DESIGN section 7), and the contract every point store follows.

`batch_to_points` is pure: the same Batch always yields the same points with the same timestamps,
which is what makes a resent batch overwrite its points instead of adding new ones. It is the
definition of what is stored; ingest does not build `Point` objects for summaries (a dict of tags
and one of fields per summary was 40 % of the collector's CPU) but asks the sink for a
`BatchEncoder`, which writes the sink's own form (line protocol here, SQLite rows in
`collector.summary_store`) straight from the protobuf, with the tag strings of each series built
once per stream. Unit tests hold both encoders to `batch_to_points`.

Field types never change once written (InfluxDB refuses a field type change within a shard), so
each measurement has one fixed table below; integers are written with the `i` suffix, floats
without, strings quoted. Empty strings and non-finite floats are omitted (InfluxDB cannot store
NaN/inf), as are empty tag values (line protocol has no empty tag value).

    telemetry     tags site, agent, asset, asset_type, point, unit
                  float mean, min, max, last; int count, bad; string text
                  counter points also: float increase (across resets, as Prometheus' increase()); int resets
    vibration     tags site, asset, sensor
                  float accel_rms, accel_peak, crest_factor, kurtosis, velocity_rms_mm_s, rpm,
                        amp_1x, amp_2x, amp_3x, bpfo, bpfi, bsf, ftf, health, confidence
                  string iso_zone, fault, rpm_source
    asset_state   tags site, asset; string state; float health (from the agent, per batch)
                  string link, link_reason, condition, condition_reason (from the collector, on change
                  and at least every few minutes; see collector/condition.py)
    agent_health  tags site, agent
                  int queue_batches, queue_bytes, dropped, sent, acked, connector_errors, stale_points
                  float rss_mb, uptime_s
    work_order    tags site, asset, severity, rule; string id, title, status
    remaining_life  tags site, asset, sensor, rule
                  float estimate_s, low_s, high_s, health_indicator, ratio_to_baseline; int degraded;
                  string basis (healthy | trend | reached)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from sys import intern
from typing import Any, Protocol, TypeVar

from influxdb_client import Point as LineProtocolPoint

from protos.twin.v1 import twin_pb2
from runtime.errors import SinkError

__all__ = [
    "AGENT_HEALTH_FLOAT_FIELDS",
    "AGENT_HEALTH_INT_FIELDS",
    "MAX_CACHED_SERIES",
    "REMAINING_LIFE_FLOAT_FIELDS",
    "VIBRATION_FLOAT_FIELDS",
    "VIBRATION_STRING_FIELDS",
    "BatchEncoder",
    "FieldValue",
    "LineProtocolEncoder",
    "Point",
    "PointSink",
    "PointsRejectedError",
    "SeriesTexts",
    "SinkStats",
    "asset_status_point",
    "batch_to_points",
    "other_points",
    "remaining_life_point",
    "storable_fields",
    "summary_ts",
    "telemetry_point",
    "to_line_protocol",
    "work_order_point",
]

FieldValue = float | int | str | bool
R = TypeVar("R")  # a sink's record: a line of line protocol, a SQLite row

INT64_MAX = 2**63 - 1  # line protocol integers are signed 64-bit; uint64 counters are clamped

VIBRATION_FLOAT_FIELDS = (
    "accel_rms", "accel_peak", "crest_factor", "kurtosis", "velocity_rms_mm_s", "rpm",
    "amp_1x", "amp_2x", "amp_3x", "bpfo", "bpfi", "bsf", "ftf", "health", "confidence",
)
VIBRATION_STRING_FIELDS = ("iso_zone", "fault", "rpm_source")
AGENT_HEALTH_INT_FIELDS = (
    "queue_batches", "queue_bytes", "dropped", "sent", "acked", "connector_errors", "stale_points",
)
AGENT_HEALTH_FLOAT_FIELDS = ("rss_mb", "uptime_s")
REMAINING_LIFE_FLOAT_FIELDS = ("estimate_s", "low_s", "high_s", "health_indicator", "ratio_to_baseline")
MAX_CACHED_SERIES = 100_000  # per stream: an agent inventing point names cannot grow the cache forever


@dataclass(frozen=True, slots=True)
class Point:
    """One InfluxDB point: the series is (measurement, tags); a second write at ts_ns overwrites."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    ts_ns: int


@dataclass(slots=True)
class SinkStats:
    """Counters a sink keeps for the collector's health metrics."""

    points_written: int = 0
    points_rejected: int = 0
    write_errors: int = 0
    last_error: str = ""


class PointsRejectedError(SinkError):
    """The store refused some points for good (malformed, field type conflict, too large).

    Every other point of the write *is* durably stored when this is raised. Sending the rejected
    points again fails the same way, so the caller must not retry them: count, log, and treat the
    batch as stored. A plain `SinkError` (server down, timeout, 5xx, authentication) means nothing
    is known to be stored and the whole write is to be retried later; writes are idempotent.
    `rejected` pairs each refused point (or encoded record) with the reason; `indices` are their
    positions in what was written.
    """

    def __init__(self, message: str, rejected: Sequence[tuple[Any, str]],
                 indices: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rejected: tuple[tuple[Any, str], ...] = tuple(rejected)
        self.indices: tuple[int, ...] = tuple(indices)


class BatchEncoder(Protocol):
    """One agent stream's batches in a sink's own record form (line protocol, SQLite rows).

    `encode` returns the records and the reasons for the points no store would accept (they are
    counted, not written). Raises ValueError when the batch has no timestamp to store under.
    """

    def encode(self, batch: twin_pb2.Batch) -> tuple[list[Any], list[str]]: ...


class PointSink(Protocol):
    """A durable point store. `write` / `write_records` return only once everything is stored.

    Raises `SinkError` when nothing can be promised (retry the same points later) and
    `PointsRejectedError` when the store accepted all but some permanently refused points.
    `write_concurrency` is how many writes may usefully run at once (1 for SQLite), and
    `records_per_write` how many records one of them should carry (ingest groups up to that).
    """

    stats: SinkStats
    write_concurrency: int
    records_per_write: int

    def encoder(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> BatchEncoder: ...

    async def write_records(self, records: Sequence[Any]) -> None: ...

    async def write(self, points: Sequence[Point]) -> None: ...

    async def close(self) -> None: ...


def storable_fields(fields: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    """The fields InfluxDB would keep: finite floats, ints, bools, strings (None dropped)."""
    out: dict[str, FieldValue] = {}
    for key, value in fields.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        if not isinstance(value, float | int | str | bool):
            raise ValueError(f"field {key!r} has unsupported type {type(value).__name__}")
        out[key] = value
    return out


def to_line_protocol(point: Point) -> str:
    """One line of InfluxDB line protocol (ns precision); escaping is done by influxdb-client.

    Raises ValueError when the point has no storable field, which no store would accept.
    """
    lp = LineProtocolPoint(point.measurement)
    for key, value in point.tags.items():
        lp.tag(key, value)
    for key, value in storable_fields(point.fields).items():
        lp.field(key, value)
    lp.time(point.ts_ns)
    line = lp.to_line_protocol()
    if not line:
        raise ValueError(f"{point.measurement} point at {point.ts_ns} has no storable field")
    return line


def _tags(**tags: str) -> dict[str, str]:
    return {k: v for k, v in tags.items() if v}


def _floats(**values: float) -> dict[str, FieldValue]:
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _strings(**values: str) -> dict[str, FieldValue]:
    return {k: v for k, v in values.items() if v}


def _ts(own_ns: int, batch: twin_pb2.Batch, what: str) -> int:
    """The message's own timestamp, else the batch's creation time (both survive a resend)."""
    ts = own_ns or batch.created_ns
    if ts <= 0:
        raise ValueError(f"batch seq {batch.seq}: {what} has no timestamp (and created_ns is 0)")
    return ts


def _telemetry(s: twin_pb2.Summary, batch: twin_pb2.Batch, base_tags: dict[str, str],
               asset_types: Mapping[str, str]) -> Point:
    tags = _tags(**base_tags, asset=s.asset, asset_type=asset_types.get(s.asset, ""),
                 point=s.point, unit=s.unit)
    fields: dict[str, FieldValue] = {"count": int(s.count), "bad": int(s.bad_count)}
    if s.count > 0:
        if s.last_text:
            fields["text"] = s.last_text
        elif s.min <= s.max:  # min > max marks "no numeric statistics" (inf/-inf start values)
            fields.update(_floats(mean=s.mean, min=s.min, max=s.max, last=s.last))
    if s.HasField("increase"):
        fields.update(_floats(increase=s.increase))
        fields["resets"] = int(s.resets)
    ts = _ts(s.interval_end_ns, batch, f"summary {s.asset}/{s.point}")
    return Point("telemetry", tags, fields, ts)


def _vibration(v: twin_pb2.VibrationIndicators, batch: twin_pb2.Batch, site: str) -> Point:
    fields = _floats(**{name: getattr(v, name) for name in VIBRATION_FLOAT_FIELDS})
    fields.update(_strings(**{name: getattr(v, name) for name in VIBRATION_STRING_FIELDS}))
    ts = _ts(v.ts_ns, batch, f"vibration {v.asset}/{v.sensor}")
    return Point("vibration", _tags(site=site, asset=v.asset, sensor=v.sensor), fields, ts)


def _asset_state(a: twin_pb2.AssetState, batch: twin_pb2.Batch, site: str) -> Point:
    fields = _strings(state=a.state) | _floats(health=a.health)
    return Point("asset_state", _tags(site=site, asset=a.asset), fields,
                 _ts(a.ts_ns, batch, f"asset_state {a.asset}"))


def _agent_health(h: twin_pb2.AgentHealth, batch: twin_pb2.Batch, site: str, agent_id: str) -> Point:
    fields: dict[str, FieldValue] = {
        name: min(int(getattr(h, name)), INT64_MAX) for name in AGENT_HEALTH_INT_FIELDS
    }
    fields.update(_floats(**{name: getattr(h, name) for name in AGENT_HEALTH_FLOAT_FIELDS}))
    return Point("agent_health", _tags(site=site, agent=agent_id), fields,
                 _ts(h.ts_ns, batch, "agent_health"))


def batch_to_points(batch: twin_pb2.Batch, *, agent_id: str, site: str,
                    asset_types: Mapping[str, str]) -> list[Point]:
    """All points of one batch: telemetry, vibration, asset_state and agent_health.

    `asset_types` maps asset id -> type (from the agent's Hello). State changes are not points:
    they belong to the fleet twin. Raises ValueError when a message has no timestamp at all
    (its own is 0 and so is the batch's created_ns): such a batch can never be stored correctly.
    """
    base = {"site": site, "agent": agent_id}
    points = [_telemetry(s, batch, base, asset_types) for s in batch.summaries]
    return points + other_points(batch, agent_id=agent_id, site=site)


def telemetry_point(s: twin_pb2.Summary, batch: twin_pb2.Batch, *, agent_id: str, site: str,
                    asset_types: Mapping[str, str]) -> Point:
    """One summary as a point: the encoders' general path for what their fast path leaves out
    (counter summaries, with increase and resets)."""
    return _telemetry(s, batch, {"site": site, "agent": agent_id}, asset_types)


def other_points(batch: twin_pb2.Batch, *, agent_id: str, site: str) -> list[Point]:
    """The points of a batch besides its summaries: a few per batch, so built as `Point`s."""
    points = [_vibration(v, batch, site) for v in batch.vibration]
    points += [_asset_state(a, batch, site) for a in batch.asset_states]
    if batch.HasField("health"):
        points.append(_agent_health(batch.health, batch, site, agent_id))
    return points


def asset_status_point(*, site: str, asset: str, link: str, link_reason: str, condition: str,
                       condition_reason: str, ts_ns: int) -> Point:
    """An asset's link and condition as the collector sees them (same series as the agent's asset_state)."""
    fields = _strings(link=link, link_reason=link_reason, condition=condition, condition_reason=condition_reason)
    return Point("asset_state", _tags(site=site, asset=asset), fields, ts_ns)


def _escape_tag(value: str) -> str:
    """A tag key or value as influxdb-client writes it (the reference for `to_line_protocol`)."""
    out = value.translate(_ESCAPE_KEY)
    return out + " " if out.endswith("\\") else out


_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r'\"', "\\": r"\\"})


def _number(x: float) -> str:
    """A float field value as influxdb-client writes it ("20" rather than "20.0": still a float)."""
    text = repr(x)
    return text[:-2] if text.endswith(".0") else text


class SeriesTexts:
    """The text a sink writes for each telemetry series of one agent stream, made once per
    (asset, point, unit): sorting and escaping the tags costs more than the rest of a summary.

    `render` turns the series' tags (empty values included) into the sink's own text (a line
    protocol head, the stored series JSON). Bounded by MAX_CACHED_SERIES, so an agent inventing
    point names cannot grow it forever.
    """

    def __init__(self, agent_id: str, site: str, asset_types: Mapping[str, str],
                 render: Callable[[dict[str, str]], str]) -> None:
        self.agent_id = agent_id
        self.site = site
        self.asset_types = asset_types
        self._render = render
        self.cached: dict[tuple[str, str, str], str] = {}

    def new(self, key: tuple[str, str, str]) -> str:
        # Kept with interned names: a stream's series share asset and unit, streams share point names.
        asset, point, unit = key = (intern(key[0]), intern(key[1]), intern(key[2]))
        text = self._render({"site": self.site, "agent": self.agent_id, "asset": asset,
                             "asset_type": self.asset_types.get(asset, ""), "point": point, "unit": unit})
        if len(self.cached) >= MAX_CACHED_SERIES:
            self.cached.clear()
        self.cached[key] = text
        return text

    def general_point(self, s: twin_pb2.Summary, batch: twin_pb2.Batch) -> Point:
        """The summary as a Point, for the few summaries the encoders leave to the general path."""
        return telemetry_point(s, batch, agent_id=self.agent_id, site=self.site, asset_types=self.asset_types)

    def other_records(self, batch: twin_pb2.Batch, encode: Callable[[Point], R]) -> tuple[list[R], list[str]]:
        """The batch's points other than telemetry, encoded, and the reasons for those refused."""
        records: list[R] = []
        rejected: list[str] = []
        for p in other_points(batch, agent_id=self.agent_id, site=self.site):
            try:
                records.append(encode(p))
            except ValueError as exc:
                rejected.append(str(exc))
        return records, rejected


def summary_ts(s: twin_pb2.Summary, batch: twin_pb2.Batch) -> int:
    """The time a summary is stored under: its interval end, else the batch's creation."""
    ts = s.interval_end_ns or batch.created_ns
    if ts <= 0:
        raise ValueError(f"batch seq {batch.seq}: summary {s.asset}/{s.point} has no timestamp "
                         "(and created_ns is 0)")
    return ts


def _line_protocol_head(tags: dict[str, str]) -> str:
    parts = [f"{_escape_tag(k)}={_escape_tag(v)}" for k, v in sorted(tags.items()) if v]
    return "telemetry" + "".join("," + p for p in parts) + " "


class LineProtocolEncoder:
    """InfluxDB line protocol for one agent stream, straight from the protobuf.

    The tag part of a telemetry line (`telemetry,agent=...,unit=... `) is built once per
    (asset, point, unit) and kept; a summary then costs one f-string. Lines are byte-identical to
    `to_line_protocol(batch_to_points(...))` (sorted tags and fields, the same escaping and number
    format), which the unit tests check.
    """

    def __init__(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> None:
        self.series = SeriesTexts(agent_id, site, asset_types, _line_protocol_head)

    def encode(self, batch: twin_pb2.Batch) -> tuple[list[str], list[str]]:
        isfinite = math.isfinite
        series = self.series
        heads = series.cached
        lines: list[str] = []
        for s in batch.summaries:
            if s.HasField("increase"):  # a counter point (few): the general path, byte for byte the same
                lines.append(to_line_protocol(series.general_point(s, batch)))
                continue
            key = (s.asset, s.point, s.unit)
            head = heads.get(key) or series.new(key)
            ts = summary_ts(s, batch)
            count = s.count
            if count:
                text = s.last_text
                if text:
                    escaped = text.translate(_ESCAPE_STRING)
                    lines.append(f'{head}bad={s.bad_count}i,count={count}i,text="{escaped}" {ts}')
                    continue
                low, high = s.min, s.max
                if low <= high:  # min > max marks "no numeric statistics"
                    last, mean = s.last, s.mean
                    if isfinite(last) and isfinite(high) and isfinite(mean) and isfinite(low):
                        # repr of a finite float never holds ",", so ".0," can only end a number
                        numbers = f"last={last!r},max={high!r},mean={mean!r},min={low!r},".replace(".0,", ",")
                        lines.append(f"{head}bad={s.bad_count}i,count={count}i,{numbers[:-1]} {ts}")
                        continue
                    fields = "".join(f",{name}={_number(value)}" for name, value in
                                     (("last", last), ("max", high), ("mean", mean), ("min", low)) if isfinite(value))
                    lines.append(f"{head}bad={s.bad_count}i,count={count}i{fields} {ts}")
                    continue
            lines.append(f"{head}bad={s.bad_count}i,count={count}i {ts}")
        others, rejected = series.other_records(batch, to_line_protocol)
        lines.extend(others)
        return lines, rejected


def work_order_point(*, site: str, asset: str, severity: str, rule: str, order_id: str | int,
                     title: str, status: str, opened_ns: int) -> Point:
    """A work order as a Grafana annotation point.

    Stored at the time the work order was opened, so writing it again with a new status
    (acknowledged, closed) updates the same point rather than adding one. `id` is always a string.
    """
    if opened_ns <= 0:
        raise ValueError(f"work order {order_id}: opened_ns must be positive, got {opened_ns}")
    fields: dict[str, FieldValue] = {"id": str(order_id), **_strings(title=title, status=status)}
    return Point("work_order", _tags(site=site, asset=asset, severity=severity, rule=rule),
                 fields, opened_ns)


def remaining_life_point(*, site: str, asset: str, sensor: str, rule: str, ts_ns: int, basis: str,
                         estimate_s: float | None, low_s: float | None, high_s: float | None, hi: float | None,
                         degraded: bool) -> Point:
    """A prognosis rule's assessment of one sensor (collector/prognosis): the remaining life and its
    interval in seconds, the health indicator (ln of the ratio to the machine's baseline) and that ratio."""
    if ts_ns <= 0:
        raise ValueError(f"remaining_life {asset}/{sensor}: ts_ns must be positive, got {ts_ns}")
    values = {"estimate_s": estimate_s, "low_s": low_s, "high_s": high_s, "health_indicator": hi,
              "ratio_to_baseline": math.exp(hi) if hi is not None and math.isfinite(hi) else None}
    fields: dict[str, FieldValue] = _floats(**{k: float(v) for k, v in values.items() if v is not None})
    fields |= {"degraded": int(degraded), **_strings(basis=basis)}
    return Point("remaining_life", _tags(site=site, asset=asset, sensor=sensor, rule=rule), fields, ts_ns)
