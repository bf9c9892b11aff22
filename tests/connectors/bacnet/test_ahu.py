"""The BACnet connector against the simulated AHU controller (BACpypes3 in its own process, loopback UDP).

Every Who-Is is unicast to the device's address: nothing is broadcast. Faults are injected through
the simulator's faults file (it polls it); a device restart is a stop and a start of its process
on the same port.
"""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.bacnet.connector import BacnetConnector
from agent.model import PointSpec, Quality
from simulator.bacnet_ahu import AHU_OBJECTS, SUPPLY_SEQUENCE
from tests.connectors.peers import bacnet_ahu_server, free_udp_port
from tests.connectors.recorder import Readings, running
from tests.servers import LOOPBACK, ServerProcess

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[3] / "agent/connectors/bacnet/sample.toml"
POINTS = {  # point name -> object id, for every object of the simulated controller
    "supply_temp": "AI:1", "return_temp": "AI:2", "filter_dp": "AI:3", "valve": "AO:1", "setpoint": "AV:1",
    "filter_alarm": "BI:1", "fan_command": "BO:1", "occupied": "BV:1", "fan_speed": "MSI:1", "damper": "MSO:1",
    "mode": "MSV:1",
}
EXPECTED = {"return_temp": 24.0, "filter_dp": 120.0, "valve": 35.0, "setpoint": 13.0, "filter_alarm": False,
            "fan_command": True, "occupied": True, "fan_speed": "medium", "damper": "closed", "mode": "cooling"}


@pytest.fixture
def ahu(tmp_path: Path) -> Iterator[ServerProcess]:
    device = bacnet_ahu_server(tmp_path / "ahu", 1001, "--step-s", "0.4", "--faults", str(tmp_path / "faults.json"))
    try:
        yield device
    finally:
        device.stop()


def inject(path: Path, faults: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, path)


def connector(devices: list[dict[str, Any]], points: list[dict[str, Any]], **extra: Any) -> BacnetConnector:
    table = {"type": "bacnet", "name": "bms", "local_address": f"{LOOPBACK}:{free_udp_port()}",
             "poll_interval_s": 1.2, "apdu_timeout_s": 0.5, "apdu_retries": 1, "discovery_timeout_s": 0.5,
             "cov_lifetime_s": 30, "backoff_max_s": 1.0, "devices": devices, "points": points, **extra}
    built = build_connector(table, "sources[0]")
    assert isinstance(built, BacnetConnector)
    return built


def every_point(instance: int, asset: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"asset": asset, "name": name, "device": instance, "object": obj, **extra} for name, obj in POINTS.items()]


def test_cov_and_polling_known_values_units_and_state_texts(ahu: ServerProcess) -> None:
    c = connector([{"instance": 1001, "address": f"{LOOPBACK}:{ahu.port}"}], every_point(1001, "ahu-1"))
    learned: list[PointSpec] = []
    c.spec_listener = learned.append

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: len({r.value for r in readings.of("supply_temp", Quality.GOOD)}) >= 3,
                                "three supply temperatures by COV")
            await readings.wait(lambda: all(readings.of(n, Quality.GOOD) for n in EXPECTED), "every point")
        values = {n: readings.last("ahu-1", n).value for n in EXPECTED}  # type: ignore[union-attr]
        assert values == EXPECTED
        assert {r.value for r in readings.of("supply_temp")} <= set(SUPPLY_SEQUENCE)
        assert c.cov_notifications >= 3
        assert {r.quality for r in readings.items} == {Quality.GOOD}
        units = {p.name: p.unit for p in c.points()}
        assert units["supply_temp"] == units["setpoint"] == "°C"
        assert (units["filter_dp"], units["valve"], units["mode"]) == ("Pa", "%", "")
        assert {(p.name, p.unit) for p in learned} >= {("supply_temp", "°C"), ("filter_dp", "Pa")}
        assert c.stats.devices_online == {"device-1001": True} and c.stats.errors == 0

    asyncio.run(main())


def test_device_without_cov_and_with_a_small_apdu_is_polled_in_sized_requests(tmp_path: Path) -> None:
    device = bacnet_ahu_server(tmp_path / "small", 1002, "--no-cov", "--max-apdu", "206", "--no-segmentation")
    c = connector([{"instance": 1002, "address": f"{LOOPBACK}:{device.port}", "mode": "cov"}],
                  every_point(1002, "ahu-2"))

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: c.stats.polls >= 3, "three polls")
        assert {n: readings.last("ahu-2", n).value for n in EXPECTED} == EXPECTED  # type: ignore[union-attr]
        assert c.cov_notifications == 0
        # 11 objects, 4 per request (206-octet APDU, no segmentation): 3 ReadPropertyMultiple per poll, after
        # 9 requests when connecting (services supported, units of 5 analog objects, texts of 3 multi-state)
        polling = c.requests_sent - 9 * (1 + c.stats.reconnects)
        assert 3 * c.stats.polls <= polling < 3 * (c.stats.polls + 1), (c.requests_sent, c.stats.polls)

    try:
        asyncio.run(main())
    finally:
        device.stop()


def test_fault_and_out_of_service_become_quality_with_the_reason(ahu: ServerProcess, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    c = connector([{"instance": 1001, "address": f"{LOOPBACK}:{ahu.port}"}], [
        {"asset": "ahu-1", "name": "supply_temp", "device": 1001, "object": "AI:1"},  # COV
        {"asset": "ahu-1", "name": "return_temp", "device": 1001, "object": "AI:2", "mode": "poll"},
        {"asset": "ahu-1", "name": "filter_dp", "device": 1001, "object": "AI:3", "mode": "poll"}])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: all(readings.of(n, Quality.GOOD) for n in ("supply_temp", "filter_dp")),
                                "good values")
            inject(faults, {"analog-input,3": {"reliability": "openLoop"},
                            "analog-input,2": {"out_of_service": True, "value": 30.5},
                            "analog-input,1": {"reliability": "overRange", "value": 99.0}})
            mark = readings.mark()
            await readings.wait(lambda: bool(readings.of("filter_dp", Quality.BAD, since=mark))
                                and bool(readings.of("return_temp", Quality.UNCERTAIN, since=mark))
                                and bool(readings.of("supply_temp", Quality.BAD, since=mark)), "the faults")
            dp = readings.of("filter_dp", Quality.BAD, since=mark)[0]
            assert (dp.value, dp.reason) == (None, "fault: open-loop")
            oos = readings.of("return_temp", Quality.UNCERTAIN, since=mark)[0]
            assert (oos.value, oos.reason) == (30.5, "out of service")
            cov = readings.of("supply_temp", Quality.BAD, since=mark)[0]
            assert (cov.value, cov.reason) == (None, "fault: over-range")
            inject(faults, {})
            mark = readings.mark()
            await readings.wait(lambda: all(readings.of(n, Quality.GOOD, since=mark) for n in
                                            ("supply_temp", "return_temp", "filter_dp")), "recovery")

    asyncio.run(main())


def test_device_restart_marks_bad_then_resubscribes(ahu: ServerProcess) -> None:
    c = connector([{"instance": 1001, "address": f"{LOOPBACK}:{ahu.port}"}], [
        {"asset": "ahu-1", "name": "supply_temp", "device": 1001, "object": "AI:1"},
        {"asset": "ahu-1", "name": "fan_command", "device": 1001, "object": "BO:1"}])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: len(readings.of("supply_temp", Quality.GOOD)) >= 2, "COV values")
            ahu.stop()
            mark = readings.mark()
            await readings.wait(lambda: all(readings.of(n, Quality.BAD, since=mark)
                                            for n in ("supply_temp", "fan_command")), "BAD while the device is down")
            bad = readings.of("supply_temp", Quality.BAD, since=mark)[0]
            assert (bad.value, bad.reason) == (None, "no response")
            assert c.stats.devices_online == {"device-1001": False}
            notifications = c.cov_notifications
            ahu.start()
            mark = readings.mark()
            await readings.wait(lambda: len({r.value for r in readings.of("supply_temp", Quality.GOOD, since=mark)})
                                >= 2, "COV values after the restart")
            assert c.cov_notifications >= notifications + 2
        assert c.stats.reconnects >= 1 and c.stats.devices_online == {"device-1001": True}

    asyncio.run(main())


def test_cov_subscription_is_renewed_before_its_lifetime_ends(ahu: ServerProcess) -> None:
    lifetime = 3  # the device drops the subscription after 3 s unless it is renewed
    c = connector([{"instance": 1001, "address": f"{LOOPBACK}:{ahu.port}"}],
                  [{"asset": "ahu-1", "name": "supply_temp", "device": 1001, "object": "AI:1"}],
                  cov_lifetime_s=lifetime)

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: bool(readings.of("supply_temp", Quality.GOOD)), "the first notification")
            await asyncio.sleep(3 * lifetime)  # three lifetimes: only renewals keep the notifications coming
            mark = readings.mark()
            await readings.wait(lambda: len({r.value for r in readings.of("supply_temp", since=mark)}) >= 2,
                                "notifications three lifetimes later")
        assert c.stats.reconnects == 0 and c.stats.errors == 0

    asyncio.run(main())


def test_probe_finds_the_device_by_unicast_and_lists_its_objects(ahu: ServerProcess,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main as cli

    assert cli(["probe", "bacnet", "--local-address", f"{LOOPBACK}:{free_udp_port()}",
                "--address", f"{LOOPBACK}:{ahu.port}", "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert f"device 1001 at {LOOPBACK}:{ahu.port}: max APDU 1476, segmented-both" in out
    assert "COV: yes; ReadPropertyMultiple: yes" in out
    for obj, spec in AHU_OBJECTS.items():
        assert f"{obj:<22} {spec['name']}" in out
    assert "analog-input,3         filter-dp                120 Pa" in out
    assert '{ asset = "ASSET", name = "operating_mode", device = 1001, object = "MSV:1" },' in out
    assert cli(["probe", "bacnet", "--local-address", f"{LOOPBACK}:{free_udp_port()}",
                "--address", f"{LOOPBACK}:{free_udp_port()}", "--timeout", "0.3"]) == 1
    assert "no device answered the Who-Is" in capsys.readouterr().err


def test_sample_config_reads_the_simulated_controller(ahu: ServerProcess) -> None:
    table = tomllib.loads(SAMPLE.read_text())["sources"][0]
    table.update(local_address=f"{LOOPBACK}:{free_udp_port()}", poll_interval_s=1.2, apdu_timeout_s=0.5,
                 apdu_retries=1, discovery_timeout_s=0.5)
    table["devices"][0]["address"] = f"{LOOPBACK}:{ahu.port}"
    c = build_connector(table, "sources[0]")

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: all(readings.of(p.name, Quality.GOOD) for p in c.points()), "every point")
        assert readings.last("ahu-1", "operating_mode").value == "cooling"  # type: ignore[union-attr]
        assert {p.name: p.unit for p in c.points()}["supply_air_temp"] == "°C"

    asyncio.run(main())
