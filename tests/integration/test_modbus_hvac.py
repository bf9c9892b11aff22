"""The simulated AHU read by the Modbus connector: register map, dynamics, faults, process mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.connectors.modbus.connector import ModbusConnector, build
from agent.model import Quality
from simulator.hvac import REGISTER_MAP, HvacSimulator, source_points
from tests.integration.test_modbus_connector import running, wait_until
from tests.servers import free_port, python_server

pytestmark = pytest.mark.integration


def ahu_connector(port: int, **options: object) -> ModbusConnector:
    table = {"name": "ahu", "host": "127.0.0.1", "port": port, "timeout_s": 0.25, "retries": 0,
             "poll_interval_s": 0.3, "backoff_max_s": 0.6, **options, "points": source_points("ahu-1")}
    return build(table, "sources[0]")


def test_register_map_reads_as_documented() -> None:
    async def scenario() -> None:
        sim = HvacSimulator(seed=3)
        await sim.start()
        try:
            connector = ahu_connector(sim.port)
            readings = {r.point: r for r in await connector.read_once()}
            connector.close()
        finally:
            await sim.stop()
        assert set(readings) == {r.name for r in REGISTER_MAP}
        assert all(r.quality is Quality.GOOD for r in readings.values()), readings
        v = {name: r.value for name, r in readings.items()}
        s = sim.state
        assert v["supply_air_temp"] == pytest.approx(s.supply_air_temp, abs=0.5)
        assert v["return_air_temp"] == pytest.approx(s.return_air_temp, abs=0.5)
        assert v["supply_air_setpoint"] == 14.0
        assert v["filter_dp"] == pytest.approx(120.0, abs=10.0)
        assert v["fan_speed"] == pytest.approx(48.0, abs=2.0)
        assert 0.0 < v["valve_position"] < 100.0
        assert v["compressor_running"] is True and v["fan_running"] is True and v["filter_alarm"] is False
        assert int(v["status_word"]) & 0b111 == 0b011  # fan, compressor, no filter alarm
        # The map's four tables are read with one request each (coalesced, same interval).
        assert sim.request_count == {1: 1, 2: 1, 3: 1, 4: 1}

    asyncio.run(scenario())


def test_clogging_filter_crosses_the_alarm_and_the_fan_compensates() -> None:
    async def scenario() -> None:
        sim = HvacSimulator(seed=1, time_scale=10.0)
        sim.schedule.append((2.0, "clogging_filter"))  # simulated seconds after start
        await sim.start()
        try:
            async with running(ahu_connector(sim.port)) as got:
                # The alarm bit follows the device's true dP while the register carries sensor noise
                # and is read in another request, so wait for both rather than expect them in one poll.
                await wait_until(lambda: any(r.value is True for r in got.good("filter_alarm"))
                                 and any(r.value > 300.0 for r in got.good("filter_dp")),
                                 "filter alarm and a dP reading above 300 Pa", within_s=30.0)
                dp = [r.value for r in got.good("filter_dp")]
                assert dp[0] < 150.0 and max(dp) > 300.0
                first_alarm = min(r.ts_ns for r in got.good("filter_alarm") if r.value is True)
                dp_before_alarm = [r.value for r in got.good("filter_dp") if r.ts_ns < first_alarm]
                assert max(dp_before_alarm) > 250.0, "the alarm came on while the filter was still clean"
                fan = [r.value for r in got.good("fan_speed")]
                assert max(fan) > fan[0] * 1.2
                # The fan holds the airflow, so the PI loop still holds the supply temperature.
                assert got.good("supply_air_temp")[-1].value == pytest.approx(14.0, abs=1.5)
        finally:
            await sim.stop()

    asyncio.run(scenario())


def test_setpoint_write_stuck_valve_and_unresponsive() -> None:
    async def scenario() -> None:
        sim = HvacSimulator(seed=2, time_scale=5.0)
        await sim.start()
        try:
            async with running(ahu_connector(sim.port)) as got:
                async with AsyncModbusTcpClient("127.0.0.1", port=sim.port) as client:
                    assert not (await client.write_register(0, 160, device_id=1)).isError()
                    refused = await client.write_register(5, 1, device_id=1)  # input-only quantity
                    assert refused.isError()
                await wait_until(lambda: any(r.value == 16.0 for r in got.good("supply_air_setpoint")),
                                 "new setpoint read back")

                sim.inject("stuck_valve", position=10.0)
                await wait_until(lambda: got.good("valve_position")[-1].value == 10.0, "valve stuck at 10 %")
                await wait_until(lambda: got.good("valve_command")[-1].value >= 90.0,
                                 "PI loop asking for far more cooling than the stuck valve gives")
                assert got.good("valve_position")[-1].value == 10.0
                assert got.good("supply_air_temp")[-1].value > 17.0
                sim.clear("stuck_valve")

                sim.inject("unresponsive")
                await wait_until(lambda: got.last("supply_air_temp").reason.startswith("timeout"), "timeouts")
                assert got.last("supply_air_temp").value is None
                sim.clear("unresponsive")
                await wait_until(lambda: got.last("supply_air_temp").quality is Quality.GOOD, "answers again")
        finally:
            await sim.stop()

    asyncio.run(scenario())


def test_runs_as_a_process_with_a_scheduled_fault(tmp_path: Path) -> None:
    port = free_port()
    proc = python_server("hvac", ["-m", "simulator.hvac", "--port", str(port), "--time-scale", "20",
                                  "--fault", "clogging_filter@0"], tmp_path, port)
    try:
        async def scenario() -> None:
            async with running(ahu_connector(port)) as got:
                await wait_until(lambda: any(r.value is True for r in got.good("filter_alarm")),
                                 "the scheduled clogging to raise the filter alarm", within_s=30.0)

        asyncio.run(scenario())
    finally:
        proc.stop()
    assert "hvac: unit 1 on 127.0.0.1" in proc.log_tail()
