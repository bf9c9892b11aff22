"""The point sinks against real stores: InfluxDB 1.x (v1 /write), VictoriaMetrics (v2 API), SQLite."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from collector.influx import InfluxSettings, InfluxV1Sink, InfluxV2Sink, build_sink
from collector.points import (
    Point,
    PointSink,
    PointsRejectedError,
    batch_to_points,
    storable_fields,
    work_order_point,
)
from collector.summary_store import SCHEMA as SUMMARY_SCHEMA
from collector.summary_store import SqliteSummarySink
from protos.twin.v1 import twin_pb2
from runtime.errors import ConfigError, SinkError
from runtime.tomlconfig import parse_model
from tests.integration.influx_query import influxql, victoria_export
from tests.servers import LOOPBACK, ServerProcess, influxd_server, victoria_metrics_server

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_123_000_000  # whole milliseconds, so VictoriaMetrics keeps them exactly
SEC = 1_000_000_000
VM_DEDUP_FLAG = "-dedup.minScrapeInterval=1ms"
FIELD_TYPES = {  # what InfluxDB must report for each field (SHOW FIELD KEYS)
    "telemetry": {"mean": "float", "min": "float", "max": "float", "last": "float", "count": "integer",
                  "bad": "integer", "text": "string"},
    "asset_state": {"state": "string", "health": "float"},
    "agent_health": {"queue_batches": "integer", "queue_bytes": "integer", "dropped": "integer",
                     "sent": "integer", "acked": "integer", "connector_errors": "integer",
                     "stale_points": "integer", "rss_mb": "float", "uptime_s": "float"},
    "work_order": {"id": "string", "title": "string", "status": "string"},
}


def sample_points() -> list[Point]:
    """Every measurement, with names that need escaping (spaces, commas, equals, quotes, slashes)."""
    batch = twin_pb2.Batch(
        seq=7, created_ns=T0,
        summaries=[
            twin_pb2.Summary(asset="AHU 1,north", point="supply temp", unit="degC", interval_end_ns=T0,
                             mean=18.25, min=17.5, max=19.0, last=18.0, count=10, bad_count=1),
            twin_pb2.Summary(asset="AHU 1,north", point="fan=speed", unit="m/s^2",
                             interval_end_ns=T0 + SEC, mean=3.0, min=2.0, max=4.0, last=4.0, count=5),
            twin_pb2.Summary(asset="pump-2", point="mode", interval_end_ns=T0, last_text='run "auto" \\ 2',
                             count=3, min=float("inf"), max=float("-inf")),
            twin_pb2.Summary(asset="pump-2", point="pressure", unit="bar", interval_end_ns=T0, count=0,
                             bad_count=6),
        ],
        vibration=[twin_pb2.VibrationIndicators(
            asset="pump-2", sensor="de accel", ts_ns=T0 + 2 * SEC, accel_rms=0.8, accel_peak=3.1,
            crest_factor=3.875, kurtosis=4.5, velocity_rms_mm_s=5.2, iso_zone="C", rpm=1780.0,
            amp_1x=0.2, amp_2x=0.05, amp_3x=0.01, bpfo=0.3, bpfi=0.02, bsf=0.01, ftf=0.004, health=42.0,
            fault="outer_race", confidence=0.9)],
        asset_states=[twin_pb2.AssetState(asset="pump-2", state="degraded", health=42.0, ts_ns=T0 + SEC)],
        health=twin_pb2.AgentHealth(ts_ns=T0, queue_batches=2, queue_bytes=4096, dropped=0, sent=7,
                                    acked=6, connector_errors=1, stale_points=0, rss_mb=55.5,
                                    uptime_s=120.0),
    )
    points = batch_to_points(batch, agent_id="gw-1", site="plant a",
                             asset_types={"AHU 1,north": "ahu", "pump-2": "pump"})
    points.append(work_order_point(site="plant a", asset="pump-2", severity="high", rule="iso_zone_cd",
                                   order_id=12, title="Vibration zone C on pump-2", status="open",
                                   opened_ns=T0 + 3 * SEC))
    return points


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def write_all(sink: PointSink, *batches: Sequence[Point], close: bool = True) -> None:
    try:
        for points in batches:
            await sink.write(points)
    finally:
        if close:
            await sink.close()


def base_url(server: ServerProcess) -> str:
    return f"http://{LOOPBACK}:{server.port}"


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = influxd_server(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = victoria_metrics_server(tmp_path_factory.mktemp("victoria"))
    if VM_DEDUP_FLAG not in server.argv:
        # One sample per timestamp, as InfluxDB keeps one point: see collector/influx.py.
        server.stop()
        server.argv.append(VM_DEDUP_FLAG)
        server.start()
    yield server
    server.stop()


# ---- InfluxDB 1.x through the v1 /write endpoint -------------------------------------------------

def stored_influx_points(url: str, db: str, measurement: str) -> list[Point]:
    rows = influxql(url, db, f'SELECT * FROM "{measurement}" GROUP BY *')
    tag_keys = {r["tagKey"] for r in influxql(url, db, f'SHOW TAG KEYS FROM "{measurement}"')}
    points = []
    for row in rows:
        tags = {k: row[k] for k in tag_keys if row.get(k)}
        fields = {k: v for k, v in row.items() if k not in tag_keys | {"time", "measurement"} and v is not None}
        points.append(Point(measurement, tags, fields, row["time"]))
    return points


def as_comparable(points: Sequence[Point]) -> list[tuple[str, tuple[tuple[str, str], ...], int, dict]]:
    return sorted(((p.measurement, tuple(sorted(p.tags.items())), p.ts_ns, storable_fields(p.fields))
                   for p in points), key=lambda t: (t[0], t[1], t[2]))


def test_v1_stores_every_measurement_exactly_and_a_resend_overwrites(influxd: ServerProcess) -> None:
    url, db = base_url(influxd), "twin_roundtrip"
    points = sample_points()
    sink = InfluxV1Sink(url, database=db, max_points_per_write=3)  # creates the database
    run(write_all(sink, points, points))  # the second write is a resent batch
    assert sink.stats.points_written == 2 * len(points)

    for measurement in ("telemetry", "vibration", "asset_state", "agent_health", "work_order"):
        expected = [p for p in points if p.measurement == measurement]
        assert as_comparable(stored_influx_points(url, db, measurement)) == as_comparable(expected)
    for measurement, types in FIELD_TYPES.items():
        reported = {r["fieldKey"]: r["fieldType"]
                    for r in influxql(url, db, f'SHOW FIELD KEYS FROM "{measurement}"')}
        assert reported == types
    vibration_types = {r["fieldKey"]: r["fieldType"] for r in influxql(url, db, "SHOW FIELD KEYS FROM vibration")}
    assert {k for k, t in vibration_types.items() if t == "string"} == {"iso_zone", "fault"}
    assert {t for k, t in vibration_types.items() if k not in ("iso_zone", "fault")} == {"float"}
    # escaped names arrive intact
    rows = influxql(url, db, """SELECT "mean" FROM telemetry WHERE asset = 'AHU 1,north' AND unit = 'm/s^2'""")
    assert [(r["time"], r["mean"]) for r in rows] == [(T0 + SEC, 3)]
    [text] = influxql(url, db, "SELECT \"text\" FROM telemetry WHERE point = 'mode'")
    assert text["text"] == 'run "auto" \\ 2' and text["time"] == T0


def test_v1_rejected_points_are_isolated_and_the_rest_stored(influxd: ServerProcess) -> None:
    url, db = base_url(influxd), "twin_reject"
    first = Point("conflict", {"asset": "a"}, {"value": "text"}, T0)
    good = [Point("conflict", {"asset": f"g{i}"}, {"other": float(i)}, T0 + i) for i in range(6)]
    clash = Point("conflict", {"asset": "b"}, {"value": 1.5}, T0 + 10)  # field type conflict
    empty = Point("conflict", {"asset": "c"}, {"value": float("nan")}, T0 + 11)  # nothing storable
    sink = InfluxV1Sink(url, database=db, max_points_per_write=4)
    run(write_all(sink, [first], close=False))
    with pytest.raises(PointsRejectedError) as info:
        run(write_all(sink, [*good[:3], clash, *good[3:], empty]))
    assert [p for p, _ in info.value.rejected] == [empty, clash]
    assert "field type conflict" in info.value.rejected[1][1]
    assert sink.stats.points_rejected == 2
    assert len(influxql(url, db, "SELECT other FROM conflict")) == len(good)


def test_v1_missing_database_is_retryable_when_not_created(influxd: ServerProcess) -> None:
    sink = InfluxV1Sink(base_url(influxd), database="never_created", create_database=False)
    with pytest.raises(SinkError, match="HTTP 404: database not found") as info:
        run(write_all(sink, sample_points()))
    assert not isinstance(info.value, PointsRejectedError)


def test_v1_stopped_server_raises_and_the_same_write_succeeds_after_restart(influxd: ServerProcess) -> None:
    url, db = base_url(influxd), "twin_restart"
    points = sample_points()
    sink = InfluxV1Sink(url, database=db)

    async def scenario() -> None:
        await sink.write(points[:1])
        influxd.stop()
        try:
            with pytest.raises(SinkError, match=f"InfluxDB v1 at {url}") as info:
                await sink.write(points)
            assert not isinstance(info.value, PointsRejectedError)
        finally:
            influxd.start()
        await sink.write(points)
        await sink.close()

    run(scenario())
    assert sink.stats.write_errors == 1
    assert len(influxql(url, db, "SELECT * FROM telemetry")) == 4


def test_unanswered_write_times_out_with_sink_error() -> None:
    with socket.socket() as listener:  # accepts connections into the backlog, never answers
        listener.bind((LOOPBACK, 0))
        listener.listen(8)
        url = f"http://{LOOPBACK}:{listener.getsockname()[1]}"
        sinks: list[PointSink] = [InfluxV1Sink(url, database="d", create_database=False, timeout_s=0.5),
                                  InfluxV2Sink(url, bucket="b", timeout_s=0.5)]
        for sink in sinks:
            with pytest.raises(SinkError, match=r"(?i)timed out"):
                run(write_all(sink, sample_points()))


# ---- VictoriaMetrics through the v2 write API -----------------------------------------------------

def expected_samples(points: Sequence[Point]) -> list[tuple[str, tuple[tuple[str, str], ...], float, int]]:
    """What VictoriaMetrics keeps: every field as `<measurement>_<field>`, timestamps in ms; a string
    field keeps its value only if it reads as a number, else it is stored as 0."""
    out = []
    for p in points:
        for field, value in storable_fields(p.fields).items():
            number = float(value) if not isinstance(value, str) or value.isdigit() else 0.0
            out.append((f"{p.measurement}_{field}", tuple(sorted(p.tags.items())), number,
                        p.ts_ns // 1_000_000))
    return sorted(out)


def test_v2_into_victoria_metrics_exact_and_idempotent(victoria: ServerProcess) -> None:
    url = base_url(victoria)
    points = sample_points()
    sink = InfluxV2Sink(url, bucket="twin", org="ops", max_points_per_write=3)
    run(write_all(sink, points, points))

    measurements = "telemetry|vibration|asset_state|agent_health|work_order"
    expected = expected_samples(points)
    samples = victoria_export(url, f'{{__name__=~"({measurements})_.*", site="plant a"}}', at_least=len(expected))
    got = sorted((s.name, tuple(sorted(s.labels.items())), s.value, s.ts_ms) for s in samples)
    assert got == expected  # one sample per timestamp despite the resend
    [mean] = [s for s in samples if s.name == "telemetry_mean" and s.labels.get("unit") == "m/s^2"]
    assert mean.labels["asset"] == "AHU 1,north" and mean.labels["point"] == "fan=speed"
    assert mean.ts_ms * 1_000_000 == T0 + SEC


def test_v2_stopped_server_raises_and_the_same_write_succeeds_after_restart(victoria: ServerProcess) -> None:
    url = base_url(victoria)
    points = [Point("restart", {"site": "s", "asset": f"a{i}"}, {"v": float(i)}, T0 + i * 1_000_000)
              for i in range(5)]
    sink = InfluxV2Sink(url, bucket="twin")

    async def scenario() -> None:
        victoria.stop()
        try:
            with pytest.raises(SinkError, match=f"InfluxDB v2 API at {url}") as info:
                await sink.write(points)
            assert not isinstance(info.value, PointsRejectedError)
        finally:
            victoria.start()
        await sink.write(points)
        await sink.close()

    run(scenario())
    samples = victoria_export(url, '{__name__="restart_v"}', at_least=5)
    assert [(s.labels["asset"], s.value, s.ts_ms) for s in samples] == [
        (f"a{i}", float(i), (T0 + i * 1_000_000) // 1_000_000) for i in range(5)]


# ---- the embedded SQLite store --------------------------------------------------------------------

def test_sqlite_resend_overwrites_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite"
    points = sample_points()
    run(write_all(SqliteSummarySink(path), points, points))

    async def read_back() -> None:
        sink = SqliteSummarySink(path)
        try:
            stored = []
            for measurement in ("telemetry", "vibration", "asset_state", "agent_health", "work_order"):
                stored += await sink.rows(measurement)
            assert as_comparable(stored) == as_comparable(points)
            assert await sink.count("telemetry") == 4
            assert await sink.count("telemetry", {"asset": "AHU 1,north"}) == 2
            assert await sink.count("telemetry", {"asset": "AHU 1,north"}, start_ns=T0 + 1) == 1
            [row] = await sink.rows("telemetry", {"point": "fan=speed", "unit": "m/s^2"})
            assert row.ts_ns == T0 + SEC and row.fields["mean"] == 3.0
            assert type(row.fields["mean"]) is float and type(row.fields["count"]) is int
            assert len(await sink.rows("telemetry", limit=2)) == 2
        finally:
            await sink.close()

    run(read_back())


def test_sqlite_same_point_merges_fields_like_influxdb(tmp_path: Path) -> None:
    sink = SqliteSummarySink(tmp_path / "c.sqlite")
    tags = {"site": "s", "asset": "a", "unit": ""}

    async def scenario() -> list[Point]:
        await sink.write([Point("m", tags, {"a": 1.0, "b": 2, "ok": True}, T0)])
        await sink.write([Point("m", {"asset": "a", "site": "s"}, {"a": 3.0, "t": "x"}, T0)])
        await sink.write([Point("m", tags, {"a": 4.0}, T0 + 1)])
        rows = await sink.rows("m")
        await sink.close()
        return rows

    assert run(scenario()) == [
        Point("m", {"asset": "a", "site": "s"}, {"a": 3.0, "b": 2, "ok": True, "t": "x"}, T0),
        Point("m", {"asset": "a", "site": "s"}, {"a": 4.0}, T0 + 1),
    ]


def test_sqlite_rejects_unstorable_points_and_keeps_the_rest(tmp_path: Path) -> None:
    sink = SqliteSummarySink(tmp_path / "c.sqlite")
    bad = Point("m", {"asset": "a"}, {"v": float("inf")}, T0)
    good = Point("m", {"asset": "b"}, {"v": 1.0}, T0)

    async def scenario() -> int:
        with pytest.raises(PointsRejectedError, match="1 of 2 points rejected") as info:
            await sink.write([bad, good])
        assert info.value.rejected[0][0] == bad
        n = await sink.count("m")
        await sink.close()
        return n

    assert run(scenario()) == 1


def test_sqlite_write_is_durable_without_close(tmp_path: Path) -> None:
    """A process that dies right after `write` returned still has its points on disk."""
    path = tmp_path / "c.sqlite"
    code = (
        "import asyncio, os\n"
        "from collector.points import Point\n"
        "from collector.summary_store import SqliteSummarySink\n"
        "async def main():\n"
        f"    sink = SqliteSummarySink({str(path)!r})\n"
        f"    await sink.write([Point('m', {{'asset': 'a'}}, {{'v': float(i)}}, {T0} + i) for i in range(50)])\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[2])

    async def count() -> int:
        sink = SqliteSummarySink(path)
        try:
            return await sink.count("m")
        finally:
            await sink.close()

    assert run(count()) == 50


# ---- configuration and build_sink ------------------------------------------------------------------

@pytest.mark.parametrize(("table", "message"), [
    ({"url": "http://h:8086", "token": "t"}, 'influx.bucket: required when api = "v2"'),
    ({"url": "http://h:8086", "bucket": "b"}, "influx.token: required when api"),
    ({"url": "ftp://h", "bucket": "b", "anonymous": True}, "influx.url: must be an http:// or https:// URL"),
    ({"url": "http://u:p@h", "bucket": "b", "anonymous": True}, "influx.url: must not contain credentials"),
    ({"url": "http://h", "bucket": "b", "token": "t", "token_env": "X"}, "influx.token_env: set only one"),
    ({"api": "v1", "url": "http://h"}, 'influx.database: required when api = "v1"'),
    ({"api": "v1", "url": "http://h", "database": "d", "bucket": "b"}, 'influx.bucket: only applies to api = "v2"'),
    ({"api": "v1", "url": "http://h", "database": "d", "password": "p"}, "influx.username: required when"),
    ({"api": "v1", "url": "http://h", "database": "d", "max_points_per_write": 0},
     "influx.max_points_per_write: Input should be greater than 0"),
    ({"api": "v3", "url": "http://h"}, "influx.api:"),
    ({"url": "http://h", "bucket": "b", "anonymous": True, "tokn": "x"}, "influx.tokn: unknown key"),
])
def test_settings_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_model(InfluxSettings, table, "influx")


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"influx\.token_file: cannot read"):
        parse_model(InfluxSettings, {"url": "http://h", "bucket": "b", "token_file": str(tmp_path / "no")},
                    "influx")
    settings = parse_model(InfluxSettings, {"api": "v1", "url": "http://h", "database": "d", "username": "u",
                                            "password_env": "TWIN_TEST_UNSET_PASSWORD"}, "influx")
    with pytest.raises(ConfigError, match=r"influx\.password_env: environment variable"):
        build_sink(settings, tmp_path / "c.sqlite")


def test_build_sink_writes_through_each_configured_store(
    tmp_path: Path, influxd: ServerProcess, victoria: ServerProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    v2 = parse_model(InfluxSettings, {"url": base_url(victoria), "bucket": "twin",
                                      "token_file": str(token_file)}, "influx")
    monkeypatch.setenv("TWIN_TEST_INFLUX_PASSWORD", "s3cret-password")
    v1 = parse_model(InfluxSettings, {"api": "v1", "url": base_url(influxd), "database": "twin_build",
                                      "username": "collector", "password_env": "TWIN_TEST_INFLUX_PASSWORD"},
                     "influx")
    assert "s3cret" not in repr(v2) + repr(v1)
    assert v2.token_value() == "s3cret-token"

    point = Point("built", {"site": "s"}, {"v": 2.5}, T0)
    sinks = [build_sink(v2, tmp_path / "x"), build_sink(v1, tmp_path / "x"), build_sink(None, tmp_path / "c")]
    assert [type(s) for s in sinks] == [InfluxV2Sink, InfluxV1Sink, SqliteSummarySink]
    for sink in sinks:
        run(write_all(sink, [point]))

    assert [(s.value, s.ts_ms) for s in victoria_export(base_url(victoria), '{__name__="built_v"}', at_least=1)] == [
        (2.5, T0 // 1_000_000)]
    assert [(r["time"], r["v"]) for r in influxql(base_url(influxd), "twin_build", "SELECT v FROM built")] == [
        (T0, 2.5)]
    sqlite = SqliteSummarySink(tmp_path / "c")
    assert run(sqlite.rows("built")) == [point]
    run(sqlite.close())
    assert not os.path.exists(tmp_path / "x")


def test_sqlite_failed_write_never_takes_a_concurrent_write_with_it(tmp_path: Path) -> None:
    """Two agents' streams write at once; one write fails (here: a corrupt stored row, standing in for
    disk full or a locked file). The other must be stored, or fail too: never 'success' with nothing stored."""
    path = tmp_path / "summaries.sqlite"
    with sqlite3.connect(path) as conn:  # create the table, then plant a row whose upsert will fail
        conn.executescript(SUMMARY_SCHEMA)
        conn.execute("INSERT INTO summary_points VALUES ('telemetry', '{\"a\":\"1\"}', 1, 'not json')")

    async def scenario() -> tuple[object, object, int]:
        sink = SqliteSummarySink(path)
        bad = [Point("telemetry", {"a": "1"}, {"mean": 1.0}, 1)]
        good = [Point("telemetry", {"a": "2"}, {"mean": float(i)}, 100 + i) for i in range(50)]
        results = await asyncio.gather(sink.write(bad), sink.write(good), return_exceptions=True)
        stored = await sink.count("telemetry", {"a": "2"})
        await sink.close()
        return results[0], results[1], stored

    first, second, stored = asyncio.run(scenario())
    assert isinstance(first, SinkError)
    assert second is None and stored == 50, "the concurrent write reported success, so all of it is stored"
