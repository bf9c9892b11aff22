"""The prognosis rule in the real collector: an agent's vibration indicators of a pump whose bearing wears
(exponential growth after a healthy start) arrive over gRPC; the collector raises one preventive work
order carrying the remaining life and its interval, shows the remaining life in the asset's twin (HTTP
API and `twin-collector assets list`), and writes it to a real InfluxDB 1.x as the `remaining_life`
measurement. The same indicators replayed by the backtest give the same work order and estimate:
production and backtest run one code path."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from collector.backtest import replay
from collector.config import build_collector_config, hash_token
from collector.daemon import CollectorDaemon
from collector.state import StateLocation
from collector.workorders.evaluate import parse_rules
from protos.twin.v1 import twin_pb2
from runtime.errors import SinkError
from tests.conftest import state_table, state_toml
from tests.integration.daemons import TOKENS, exchange
from tests.integration.influx_query import influxql
from tests.servers import free_port, influxd_server, wait_for

pytestmark = pytest.mark.integration

DB = "facility_twin"
STEP_S = 10
BLOCKS = 300
RULE = {"name": "remaining_life", "kind": "prognosis", "asset_type": "pump", "baseline_blocks": 30,
        "smooth_blocks": 5, "sustain_blocks": 5, "alert_ratio": 1.3, "alert_sigma": 4.0, "failure_ratio": 6.0,
        "fit_window_s": 600.0, "horizon_s": 1800.0, "confidence": 0.9, "life_scale_s": 50_000.0,
        "life_shape": 2.0, "life_quantile": 0.2}


def pump_blocks(start_ns: int) -> list[twin_pb2.VibrationIndicators]:
    """Healthy for 200 blocks, then the r.m.s. grows exponentially (6x the baseline 1500 s after the start)."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(BLOCKS):
        growth = max(0, i - 200) * STEP_S * math.log(6.0) / 1500.0
        rms = 0.3 * math.exp(growth + rng.normal(0, 0.05))
        out.append(twin_pb2.VibrationIndicators(
            asset="pump-1", sensor="de_accel", ts_ns=start_ns + i * STEP_S * 10**9, accel_rms=rms,
            accel_peak=4 * rms, crest_factor=4.0, kurtosis=3.0, velocity_rms_mm_s=1.0 + rms, iso_zone="A",
            rpm=1480.0, rpm_source="speed_point", health=95.0, fault="normal", confidence=0.9))
    return out


def hello() -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id="gw-a", site="plant-a", version="test", queue_epoch="e1", assets=[
        twin_pb2.AssetDescriptor(id="pump-1", type="pump", name="CHW pump 1", points=[
            twin_pb2.PointDescriptor(name="de_accel", unit="g", kind="waveform")])])


def test_remaining_life_in_work_order_twin_and_influxdb(tmp_path: Path, state_location: StateLocation) -> None:
    influx = influxd_server(tmp_path / "influx")
    start_ns = (time.time_ns() - BLOCKS * STEP_S * 10**9) // 10**9 * 10**9
    blocks = pump_blocks(start_ns)
    config_doc: dict[str, Any] = {
        "collector": {"listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / "state"),
                      "check_interval_s": 0.2, "site": "plant-a"},
        "agents": [{"id": "gw-a", "token_sha256": hash_token(TOKENS["gw-a"])}],
        "rules": [RULE],
        "influx": {"api": "v1", "url": f"http://127.0.0.1:{influx.port}", "database": DB},
        "api": {"listen": "127.0.0.1:0"},
        "state": state_table(state_location, tmp_path),
    }

    influx_url = f"http://127.0.0.1:{influx.port}"
    expected_points = BLOCKS - RULE["baseline_blocks"] + 1  # one assessment per block once the baseline is taken

    def points() -> list[dict[str, Any]]:
        return influxql(influx_url, DB, 'SELECT * FROM "remaining_life" WHERE "asset" = \'pump-1\'')

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        daemon = CollectorDaemon(build_collector_config(config_doc))
        await daemon.start()
        try:
            batches = [twin_pb2.Batch(seq=i + 1, created_ns=b.ts_ns, vibration=[b]) for i, b in enumerate(blocks)]
            acks = await exchange(daemon.port, TOKENS["gw-a"], hello(), batches)
            assert acks[-1] == BLOCKS
            assert daemon.api is not None
            base = f"http://127.0.0.1:{daemon.api.port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/work-orders?category=preventive") as r:
                    orders = await r.json()
                for i, o in enumerate(orders):  # the list leaves the context out; one work order has it
                    async with http.get(f"{base}/work-orders/{o['ref']}") as r:
                        orders[i] = await r.json()
                async with http.get(f"{base}/assets/pump-1") as r:
                    twin = await r.json()
            # the periodic check writes the assessments to InfluxDB
            await asyncio.to_thread(wait_for, lambda: len(points()) >= expected_points, 30, "remaining_life points")
            return orders, twin
        finally:
            await daemon.stop()

    try:
        orders, twin = asyncio.run(main())
        # the work order: one, preventive, with the remaining life and its interval
        [wo] = orders
        assert (wo["asset"], wo["rule"], wo["category"]) == ("pump-1", "remaining_life", "preventive")
        ev = wo["evidence"]
        low, high = ev["remaining_life_band_s"]
        assert ev["kind"] == "prognosis" and ev["basis"] in ("trend", "reached")
        assert low <= ev["remaining_life_s"] <= high
        raised_after_s = (wo["created_ns"] - start_ns) / 1e9
        assert 2000 < raised_after_s < 3500  # after the growth starts (2000 s), before 6x (3500 s)
        assert "remaining_life" in wo["context"] and "de_accel" in wo["context"]["remaining_life"]

        # the twin: the latest assessment of the sensor
        rl = twin["remaining_life"]["de_accel"]
        assert rl["rule"] == "remaining_life" and rl["ts_ns"] == blocks[-1].ts_ns
        assert rl["basis"] in ("trend", "reached") and rl["degraded"] is True
        assert rl["low_s"] <= rl["estimate_s"] <= rl["high_s"]
        assert rl["ratio_to_baseline"] > 2.0

        # the backtest, on the same indicators, decides the same
        rule = parse_rules([RULE])

        def doc(b: twin_pb2.VibrationIndicators) -> dict[str, Any]:
            return {"accel_rms": b.accel_rms, "accel_peak": b.accel_peak, "kurtosis": b.kurtosis,
                    "velocity_rms_mm_s": b.velocity_rms_mm_s, "iso_zone": b.iso_zone}

        replayed, assessments = asyncio.run(replay(
            [((b.ts_ns - start_ns) / 1e9, doc(b)) for b in blocks], rule, asset="pump-1", asset_type="pump",
            sensor="de_accel"))
        assert [(w.rule, w.kind) for w in replayed] == [("remaining_life", "preventive")]
        assert replayed[0].t_s == raised_after_s
        assert assessments[-1].remaining_life.estimate_s == pytest.approx(rl["estimate_s"], abs=1e-3)

        # InfluxDB: the remaining_life measurement, one point per assessment, low-cardinality tags
        rows = points()
        assert len(rows) == expected_points
        last = max(rows, key=lambda p: p["time"])
        assert (last["site"], last["sensor"], last["rule"]) == ("plant-a", "de_accel", "remaining_life")
        assert last["estimate_s"] == pytest.approx(rl["estimate_s"], abs=1e-3) and last["basis"] == rl["basis"]
        assert {p["basis"] for p in rows} >= {"healthy", "trend"}

        # the CLI shows it where it shows the twin
        cfg = tmp_path / "collector.toml"
        cfg.write_text(f'[collector]\nlisten = "127.0.0.1:{free_port()}"\nstate_dir = "{tmp_path / "state"}"\n'
                       f'[[agents]]\nid = "gw-a"\ntoken_sha256 = "{hash_token(TOKENS["gw-a"])}"\n'
                       + state_toml(state_location, tmp_path))
        proc = subprocess.run([sys.executable, "-m", "collector", "assets", "--config", str(cfg), "list"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "remaining life de_accel: ~" in out
    finally:
        influx.stop()


def test_assessments_made_while_influxdb_is_down_arrive_once(tmp_path: Path, state_location: StateLocation) -> None:
    """The fleet stores each assessment with its batch; while InfluxDB is unreachable the export raises and
    keeps them; once it is back, each arrives once, and the fleet keeps only each sensor's latest."""
    influx = influxd_server(tmp_path / "influx")
    influx_url = f"http://127.0.0.1:{influx.port}"
    blocks = pump_blocks(time.time_ns() // 10**9 * 10**9 - BLOCKS * STEP_S * 10**9)[:60]
    settings: dict[str, Any] = {
        "collector": {"listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / "state"),
                      "check_interval_s": 0.2, "site": "plant-a"},
        "agents": [{"id": "gw-a", "token_sha256": hash_token(TOKENS["gw-a"])}],
        "rules": [RULE],
        "influx": {"api": "v1", "url": "http://127.0.0.1:1", "database": DB, "timeout_s": 1.0},
        "state": state_table(state_location, tmp_path),
    }
    made = len(blocks) - RULE["baseline_blocks"] + 1

    def count() -> int:
        try:
            return len(influxql(influx_url, DB, 'SELECT "estimate_s" FROM "remaining_life"'))
        except RuntimeError as exc:
            if "database not found" in str(exc):  # the sink creates it with its first write
                return 0
            raise

    async def main() -> None:
        down = CollectorDaemon(build_collector_config(settings))
        await down.fleet.open()  # nothing listens on port 1
        await down.fleet.register_hello(hello())
        for i, b in enumerate(blocks):
            await down.fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(seq=i + 1, created_ns=b.ts_ns, vibration=[b]))
        with pytest.raises(SinkError):
            await down.remaining_life.sync()
        async with down.fleet.reading() as db:
            waiting = await db.fetchval("SELECT COUNT(*) FROM remaining_life")
        assert waiting == made
        await down.fleet.close()

        settings["influx"]["url"] = influx_url
        daemon = CollectorDaemon(build_collector_config(settings))
        await daemon.start()
        try:
            await asyncio.to_thread(wait_for, lambda: count() >= made, 30, "the pending assessments in InfluxDB")
            await asyncio.sleep(1.0)  # a few more periodic checks: nothing is written twice
            assert count() == made
            async with daemon.fleet.reading() as db:
                kept = await db.fetchval("SELECT COUNT(*) FROM remaining_life")
            assert kept == 1, "only the sensor's latest assessment stays in the fleet database"
            twin = await daemon.fleet.twin("pump-1")
            assert twin is not None and twin["remaining_life"]["de_accel"]["ts_ns"] == blocks[-1].ts_ns
        finally:
            await daemon.stop()

    try:
        asyncio.run(main())
    finally:
        influx.stop()
