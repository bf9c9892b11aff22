"""The Prometheus connector against real HTTP peers: Debian's node_exporter and a server of fixture files.

The fixture server is aiohttp's web server on a loopback port serving the exposition files under
cases/ (one file per scrape, switchable), so every metric type and the HTTP failure paths are
checked against known values; node_exporter checks that a real exporter's output is read, with
known values injected through its textfile collector.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.connectors import build_connector
from agent.connectors.prometheus.connector import PrometheusConnector
from agent.model import Quality
from tests.connectors.peers import node_exporter_server
from tests.connectors.recorder import Readings, running
from tests.servers import LOOPBACK, free_port

pytestmark = pytest.mark.integration

CASES = Path(__file__).parent / "cases"
SAMPLE = Path(__file__).resolve().parents[3] / "agent/connectors/prometheus/sample.toml"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Exposition:
    """A real HTTP server whose /metrics body and status the test sets."""

    def __init__(self, case: str, content_type: str = TEXT) -> None:
        self.body = (CASES / case).read_text()
        self.content_type = content_type
        self.status = 200
        self.scrapes = 0
        self.port = free_port()

    def serve(self, case: str) -> None:
        self.body = (CASES / case).read_text()

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.status != 200:
            return web.Response(status=self.status, text="exporter is unhappy\n")
        return web.Response(body=self.body.encode(), headers={"Content-Type": self.content_type})

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/metrics"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Exposition]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, self.port)
        await site.start()
        try:
            yield self
        finally:
            await runner.cleanup()


def connector(targets: list[dict[str, Any]], points: list[dict[str, Any]], **extra: Any) -> PrometheusConnector:
    table = {"type": "prometheus", "name": "exporters", "interval_s": 0.3, "timeout_s": 0.25,
             "targets": targets, "points": points, **extra}
    built = build_connector(table, "sources[0]")
    assert isinstance(built, PrometheusConnector)
    return built


CRAC_UNITS = {"crac-1": "crac-1", "crac-2": "crac-2", "crac-3": "crac-3"}


def test_every_text_format_type_through_the_running_connector() -> None:
    async def main() -> None:
        async with Exposition("every_type_1.prom").running() as server:
            c = connector([{"name": "cooling", "url": server.url}], [
                {"asset_label": "unit", "asset_map": CRAC_UNITS, "name": "supply_air", "metric":
                 "crac_supply_air_celsius", "unit": "°C"},
                {"asset_label": "unit", "asset_map": {"crac-1": "crac-1", "crac-2": "crac-2"}, "name": "starts",
                 "metric": "crac_compressor_starts_total", "function": "increase"},
                {"asset_label": "unit", "asset_map": {"crac-1": "crac-1"}, "name": "starts_rate",
                 "metric": "crac_compressor_starts_total"},
                {"asset": "plant", "name": "valve_p95", "metric": "crac_valve_response_seconds",
                 "function": "quantile", "quantile": 0.95},
                {"asset": "plant", "name": "valve_mean", "metric": "crac_valve_response_seconds"},
                {"asset": "plant", "name": "poll_p99", "metric": "crac_poll_seconds", "function": "quantile",
                 "quantile": 0.99},
                {"asset": "plant", "name": "poll_mean", "metric": "crac_poll_seconds"},
                {"asset": "crac-1", "name": "fan_speed", "metric": "crac_fan_speed_rpm", "scale": 0.5},
                {"asset": "plant", "name": "supply_max", "metric": "crac_supply_air_celsius",
                 "match_regex": {"unit": "crac-[12]"}, "aggregate": "max"},
                {"asset": "plant", "name": "absent", "metric": "crac_no_such_metric"},
            ])
            readings = Readings()
            async with running(c, readings):
                await readings.wait(lambda: bool(readings.of("supply_air", Quality.GOOD)), "the first scrape")
                first = readings.last("crac-1", "supply_air")
                assert first is not None and first.value == 18.5
                assert readings.last("crac-2", "supply_air").value == 19.25  # type: ignore[union-attr]
                nan = readings.last("crac-3", "supply_air")
                assert nan is not None and nan.quality is Quality.BAD and nan.reason.startswith("NaN")
                fan = readings.last("crac-1", "fan_speed")
                assert fan is not None and fan.value == 725.0 and fan.ts_ns == 1_700_000_000 * 10**9
                absent = readings.last("plant", "absent")
                assert absent is not None and absent.reason == "metric crac_no_such_metric absent from the scrape"
                assert readings.last("plant", "supply_max").value == 19.25  # type: ignore[union-attr]
                assert not readings.of("starts"), "an increase needs two scrapes"
                server.serve("every_type_2.prom")
                await readings.wait(lambda: any(r.value == 30.0 for r in readings.of("starts", asset="crac-1")),
                                    "the increase over the interval")
                increases = {r.asset: r.value for r in readings.items if r.point == "starts" and r.value}
                assert increases == {"crac-1": 30.0, "crac-2": 7.0}  # crac-2 was reset: 7 counted since
                await readings.wait(lambda: any(r.value == 1.1 for r in readings.of("poll_p99")), "summary")
                assert 1.9 in [pytest.approx(r.value) for r in readings.of("valve_p95")]
                assert 1.5 in [pytest.approx(r.value) for r in readings.of("valve_mean")]
                assert 0.3 in [pytest.approx(r.value) for r in readings.of("poll_mean")]
                rate = next(r for r in readings.of("starts_rate") if r.value)
                assert 0 < rate.value < 30.0 / 0.2  # type: ignore[operator]  # 30 starts over one interval
            assert c.stats.devices_online == {"cooling": True}
            assert c.stats.errors == 0 and c.stats.decode_errors == 0

    asyncio.run(main())


def test_openmetrics_types_stateset_info_gaugehistogram() -> None:
    async def main() -> None:
        async with Exposition("every_type.om", OPENMETRICS).running() as server:
            c = connector([{"name": "cooling", "url": server.url}], [
                {"asset": "crac-1", "name": "mode", "metric": "crac_mode", "kind": "state"},
                {"asset": "crac-1", "name": "firmware", "metric": "crac_firmware_info", "value_label": "version"},
                {"asset": "crac-1", "name": "filter_dp_median", "metric": "crac_filter_pressure_pa",
                 "function": "quantile", "quantile": 0.5},
                {"asset": "crac-1", "name": "alarm", "metric": "crac_alarm_code"},
                {"asset": "crac-1", "name": "firmware_bad", "metric": "crac_firmware_info"},
            ])
            readings = Readings()
            async with running(c, readings):
                await readings.wait(lambda: bool(readings.of("mode")), "the first scrape")
            values = {r.point: r.value for r in readings.items}
            assert values == {"mode": "cooling", "firmware": "4.2.1", "filter_dp_median": 75.0, "alarm": 17.0,
                              "firmware_bad": None}
            bad = readings.last("crac-1", "firmware_bad")
            assert bad is not None and "value_label" in bad.reason and c.stats.decode_errors >= 1

    asyncio.run(main())


def test_http_error_marks_the_targets_points_bad_with_the_reason_then_recovers() -> None:
    async def main() -> None:
        async with Exposition("every_type_1.prom").running() as server:
            c = connector([{"name": "cooling", "url": server.url}], [
                {"asset": "crac-1", "name": "supply_air", "metric": "crac_supply_air_celsius",
                 "match": {"unit": "crac-1"}}])
            readings = Readings()
            async with running(c, readings):
                await readings.wait(lambda: bool(readings.of("supply_air", Quality.GOOD)), "a good scrape")
                server.status = 503
                mark = readings.mark()
                await readings.wait(lambda: bool(readings.of("supply_air", Quality.BAD, since=mark)), "BAD")
                bad = readings.of("supply_air", Quality.BAD, since=mark)[0]
                assert (bad.value, bad.reason) == (None, "HTTP 503 Service Unavailable")
                assert c.stats.devices_online == {"cooling": False}
                server.status = 200
                mark = readings.mark()
                await readings.wait(lambda: bool(readings.of("supply_air", Quality.GOOD, since=mark)), "recovery")
                assert c.stats.devices_online == {"cooling": True}
                server.body = "crac_supply_air_celsius{unit=\"crac-1\" 18\n"
                mark = readings.mark()
                await readings.wait(lambda: bool(readings.of("supply_air", Quality.BAD, since=mark)), "parse error")
                assert readings.of("supply_air", Quality.BAD, since=mark)[0].reason.startswith("parse error: ")
            assert c.stats.decode_errors >= 1

    asyncio.run(main())


def test_a_silent_target_does_not_stall_the_others() -> None:
    async def main() -> None:
        silent = socket.socket()
        silent.bind((LOOPBACK, 0))
        silent.listen(8)  # accepts connections (the kernel does) and never answers
        try:
            async with Exposition("every_type_1.prom").running() as server:
                c = connector([{"name": "good", "url": server.url},
                               {"name": "silent", "url": f"http://{LOOPBACK}:{silent.getsockname()[1]}/metrics"}], [
                    {"asset_label": "__target__", "asset_map": {"good": "crac-1", "silent": "crac-9"},
                     "name": "supply_air", "metric": "crac_supply_air_celsius", "match": {"unit": "crac-1"}}])
                readings = Readings()
                async with running(c, readings):
                    await readings.wait(lambda: len(readings.of("supply_air", Quality.BAD, asset="crac-9")) >= 3,
                                        "three timeouts of the silent target")
                    timeouts = [i for i, r in enumerate(readings.items) if r.asset == "crac-9"]
                    between = readings.items[timeouts[0]:timeouts[-1]]
                    assert any(r.asset == "crac-1" and r.quality is Quality.GOOD for r in between), \
                        "the good target must be scraped while the silent one times out"
                    assert readings.items[timeouts[0]].reason == "timeout after 0.25 s"
                    assert {r.asset for r in readings.items} == {"crac-1", "crac-9"}
                assert c.stats.devices_online == {"good": True, "silent": False}
        finally:
            silent.close()

    asyncio.run(main())


def write_textfile(directory: Path, starts: int, supply: float) -> None:
    """node_exporter's textfile collector reads *.prom; write-then-rename so it never sees half a file."""
    tmp = directory / "crac.prom.tmp"
    tmp.write_text("# TYPE crac_supply_air_celsius gauge\n"
                   f'crac_supply_air_celsius{{unit="crac-1"}} {supply}\n'
                   "# TYPE crac_compressor_starts_total counter\n"
                   f'crac_compressor_starts_total{{unit="crac-1"}} {starts}\n')
    os.replace(tmp, directory / "crac.prom")


def test_node_exporter_known_values_counters_and_restart(tmp_path: Path) -> None:
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    write_textfile(textfiles, starts=100, supply=18.5)
    exporter = node_exporter_server(tmp_path / "node-exporter", textfiles)
    url = f"http://{LOOPBACK}:{exporter.port}/metrics"

    async def main() -> None:
        c = connector([{"name": "edge-gw", "url": url}], [
            {"asset": "edge-gw", "name": "load1", "metric": "node_load1"},
            {"asset": "edge-gw", "name": "cpu_busy", "metric": "node_cpu_seconds_total",
             "match_regex": {"mode": "user|system|nice|irq|softirq|iowait|steal"}, "aggregate": "sum"},
            {"asset": "edge-gw", "name": "mem_total", "metric": "node_memory_MemTotal_bytes", "scale": 2**-30},
            {"asset_label": "unit", "asset_map": {"crac-1": "crac-1"}, "name": "supply_air",
             "metric": "crac_supply_air_celsius"},
            {"asset_label": "unit", "asset_map": {"crac-1": "crac-1"}, "name": "starts",
             "metric": "crac_compressor_starts_total", "function": "increase"},
        ], interval_s=0.5, timeout_s=0.45)
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: bool(readings.of("cpu_busy", Quality.GOOD)), "two scrapes")
            assert readings.last("crac-1", "supply_air").value == 18.5  # type: ignore[union-attr]
            load = readings.last("edge-gw", "load1")
            assert load is not None and load.quality is Quality.GOOD and load.value >= 0.0  # type: ignore[operator]
            cpu = readings.last("edge-gw", "cpu_busy")
            assert cpu is not None and 0.0 <= cpu.value <= os.cpu_count() + 0.5  # type: ignore[operator]
            mem = readings.last("edge-gw", "mem_total")
            assert mem is not None and 0.1 < mem.value < 4096  # type: ignore[operator]  # GiB

            write_textfile(textfiles, starts=160, supply=19.0)
            await readings.wait(lambda: any(r.value == 60.0 for r in readings.of("starts")), "increase of 60")
            write_textfile(textfiles, starts=5, supply=19.0)  # the CRAC controller rebooted
            await readings.wait(lambda: any(r.value == 5.0 for r in readings.of("starts")), "increase after reset")
            assert all(r.value >= 0 for r in readings.of("starts", Quality.GOOD))  # type: ignore[operator]
            assert readings.last("crac-1", "supply_air").value == 19.0  # type: ignore[union-attr]

            exporter.stop()
            mark = readings.mark()
            await readings.wait(lambda: bool(readings.of("supply_air", Quality.BAD, since=mark)), "BAD when down")
            bad = readings.of("supply_air", Quality.BAD, since=mark)[0]
            assert bad.reason == "connection refused" and bad.value is None
            assert all(r.quality is Quality.BAD for r in readings.items[mark:])
            exporter.start()
            mark = readings.mark()
            await readings.wait(lambda: bool(readings.of("supply_air", Quality.GOOD, since=mark)), "recovery")
        assert c.stats.reconnects == 0 and c.stats.devices_online == {"edge-gw": True}

    try:
        asyncio.run(main())
    finally:
        exporter.stop()


def test_sample_config_scrapes_a_real_node_exporter(tmp_path: Path) -> None:
    exporter = node_exporter_server(tmp_path / "node-exporter", tmp_path / "textfile")
    table = tomllib.loads(SAMPLE.read_text())["sources"][0]
    table["targets"][0]["url"] = f"http://{LOOPBACK}:{exporter.port}/metrics"
    table["interval_s"], table["timeout_s"] = 0.5, 0.4
    table["targets"][1].update(interval_s=0.5, url=f"http://{LOOPBACK}:{free_port()}/metrics")  # nothing there
    try:
        c = build_connector(table, "sources[0]")

        async def main() -> None:
            readings = Readings()
            async with running(c, readings):
                await readings.wait(lambda: bool(readings.of("cpu_busy", Quality.GOOD)), "the sample's cpu rate")
            assert readings.last("edge-gw", "load1").quality is Quality.GOOD  # type: ignore[union-attr]
            cooling = readings.last("crac-1", "supply_air_temp")
            assert cooling is not None and cooling.reason == "connection refused"

        asyncio.run(main())
    finally:
        exporter.stop()
