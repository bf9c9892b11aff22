"""The SNMP connector against Debian's snmpd (net-snmp) on a loopback port, as an unprivileged user.

snmpd answers SNMPv2c and SNMPv3 authPriv (SHA/AES) itself and serves the UPS-MIB, ENTITY-SENSOR-MIB
and counter fixtures through `pass_persist` (pass_persist_fixture.py), so values are known; IF-MIB is
snmpd's own (a real table walk). Tests rewrite a fixture file to change a value while snmpd runs.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.snmp.connector import SnmpConnector
from agent.model import Quality
from tests.connectors.peers import (
    SNMP_AUTH_KEY,
    SNMP_COMMUNITY,
    SNMP_PRIV_KEY,
    SNMP_USER,
    SnmpdProcess,
    free_udp_port,
    snmpd_server,
)
from tests.connectors.recorder import Readings, running
from tests.servers import LOOPBACK

pytestmark = pytest.mark.integration

CASES = Path(__file__).parent / "cases"
SENSORS = {"1001": {"asset": "rack-a1", "name": "inlet_temp", "unit": "°C"},
           "1002": {"asset": "rack-a1", "name": "inlet_humidity"},
           "1003": {"asset": "rack-a1", "name": "voltage"},
           "1004": {"asset": "rack-a1", "name": "current"}}


@pytest.fixture
def snmpd() -> Iterator[SnmpdProcess]:
    agent = snmpd_server({"1.3.6.1.2.1.33": CASES / "ups.json", "1.3.6.1.2.1.99": CASES / "entity_sensors.json",
                          "1.3.6.1.4.1.99999": CASES / "counters.json"})
    try:
        yield agent
    finally:
        agent.remove()


@pytest.fixture
def v3_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SNMP_AUTH", SNMP_AUTH_KEY)
    monkeypatch.setenv("TEST_SNMP_PRIV", SNMP_PRIV_KEY)


def v2c(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": LOOPBACK, "port": port, "community": SNMP_COMMUNITY, **extra}


def v3(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": LOOPBACK, "port": port, "version": "3", "user": SNMP_USER, "auth_key_env": "TEST_SNMP_AUTH",
            "priv_key_env": "TEST_SNMP_PRIV", **extra}


def connector(devices: list[dict[str, Any]], **extra: Any) -> SnmpConnector:
    table = {"type": "snmp", "name": "power", "interval_s": 1.2, "timeout_s": 0.5, "retries": 1,
             "backoff_max_s": 1.0, "local_address": LOOPBACK, "devices": devices, **extra}
    built = build_connector(table, "sources[0]")
    assert isinstance(built, SnmpConnector)
    return built


def rewrite(path: Path, changes: dict[str, list[Any]]) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new mtime even within a tick


def test_ups_mib_profile_v2c_and_entity_sensors_v3_known_values(snmpd: SnmpdProcess, v3_keys: None) -> None:
    c = connector([
        {"name": "ups-a", "asset": "ups-a", "profile": "ups-mib", **v2c(snmpd.port)},
        {"name": "pdu-a1", "profile": "entity-sensor-mib", "index_map": SENSORS, **v3(snmpd.port)},
    ])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: bool(readings.of("inlet_temp")) and bool(readings.of("load")), "both devices")
            ups = {r.point: r.value for r in readings.items if r.asset == "ups-a"}
            assert ups == {
                "input_voltage": 0.0, "input_frequency": pytest.approx(50.0), "output_voltage": 230.0,
                "output_current": pytest.approx(17.4), "output_power": 4000.0, "load": 40.0, "battery_charge": 87.0,
                "runtime_remaining": 42.0, "battery_status": "normal", "on_battery": True, "output_source": "battery",
                "alarms_present": 1.0, "seconds_on_battery": 120.0}
            sensors = {r.point: (r.value, r.quality, r.reason) for r in readings.items if r.asset == "rack-a1"}
            assert sensors == {"inlet_temp": (pytest.approx(23.5), Quality.GOOD, ""),
                               "inlet_humidity": (41.0, Quality.GOOD, ""), "voltage": (229.0, Quality.GOOD, ""),
                               "current": (None, Quality.BAD, "sensor unavailable")}

            # Mains is back: the same agent now reports the UPS on line.
            rewrite(snmpd.fixture("ups.json"), {"1.3.6.1.2.1.33.1.4.1.0": ["integer", 3],
                                                "1.3.6.1.2.1.33.1.3.3.1.3.1": ["integer", 229]})
            mark = readings.mark()
            await readings.wait(lambda: any(r.value is False for r in readings.of("on_battery", since=mark)), "mains")
            assert readings.last("ups-a", "input_voltage").value == 229.0  # type: ignore[union-attr]
            assert readings.last("ups-a", "output_source").value == "normal"  # type: ignore[union-attr]
        assert c.stats.devices_online == {"ups-a": True, "pdu-a1": True}
        assert c.stats.errors == 0 and c.stats.decode_errors == 0

    asyncio.run(main())


def test_table_walk_of_snmpds_own_if_mib_with_index_to_asset(snmpd: SnmpdProcess) -> None:
    c = connector([{"name": "gw", **v2c(snmpd.port), "max_repetitions": 2, "tables": [{
        "name": "ifTable", "index_map": {"1": "lo", "4242": "ghost"},
        "columns": [{"name": "if_name", "oid": "1.3.6.1.2.1.2.2.1.2", "tc": "DisplayString"},
                    {"name": "in_octets", "oid": "1.3.6.1.2.1.2.2.1.10", "unit": "B/s"},
                    {"name": "mtu", "oid": "1.3.6.1.2.1.2.2.1.4"}]}]}])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: bool(readings.of("in_octets", asset="lo")), "a rate after two walks")
        assert readings.last("lo", "if_name").value == "lo"  # type: ignore[union-attr]
        assert readings.last("lo", "mtu").value == 65536.0  # type: ignore[union-attr]
        rate = readings.last("lo", "in_octets")
        assert rate is not None and rate.quality is Quality.GOOD and rate.value >= 0.0  # type: ignore[operator]
        ghost = readings.last("ghost", "mtu")
        assert ghost is not None and ghost.reason == "no row 4242 in ifTable"
        # 4 rows in pages of max_repetitions = 2: a GET (sysUpTime) and three GETBULKs per poll
        assert c.requests_sent >= 4 * c.stats.polls > 0

    asyncio.run(main())


def test_counters_wrap_and_an_agent_restart_is_a_reset_not_a_wrap(snmpd: SnmpdProcess) -> None:
    c = connector([{"name": "pdu", "asset": "pdu", **v2c(snmpd.port), "points": [
        {"name": "energy_1", "oid": "1.3.6.1.4.1.99999.1.1.2.1", "function": "increase"},
        {"name": "energy_2", "oid": "1.3.6.1.4.1.99999.1.1.2.2", "function": "increase"},
        {"name": "energy_2_rate", "oid": "1.3.6.1.4.1.99999.1.1.2.2"},
        {"name": "energy_2_total", "oid": "1.3.6.1.4.1.99999.1.1.2.2", "function": "value"}]}])
    counters = snmpd.fixture("counters.json")

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: bool(readings.of("energy_1")), "a baseline and a first increase")
            assert readings.last("pdu", "energy_2_total").value == 1000.0  # type: ignore[union-attr]
            rewrite(counters, {"1.3.6.1.4.1.99999.1.1.2.1": ["counter", 10],
                               "1.3.6.1.4.1.99999.1.1.2.2": ["counter64", 1500]})
            await readings.wait(lambda: any(r.value == 16.0 for r in readings.of("energy_1")), "the Counter32 wrap")
            assert 500.0 in [r.value for r in readings.of("energy_2")]
            assert any(r.value and r.value > 0 for r in readings.of("energy_2_rate"))

            snmpd.stop()  # the PDU reboots; its counters come back lower: a reset, not a wrap
            rewrite(counters, {"1.3.6.1.4.1.99999.1.1.2.1": ["counter", 3]})
            mark = readings.mark()
            await readings.wait(lambda: bool(readings.of("energy_1", Quality.BAD, since=mark)), "BAD while down")
            snmpd.start()
            mark = readings.mark()
            await readings.wait(lambda: len(readings.of("energy_2_total", Quality.GOOD, since=mark)) >= 2,
                                "two polls after the restart")
            after = [r.value for r in readings.of("energy_1", Quality.GOOD, since=mark)]
            assert after and set(after) == {0.0}, f"a restart must not count as a wrap: {after}"
        assert all(r.value >= 0 for r in readings.of("energy_1", Quality.GOOD))  # type: ignore[operator]

    asyncio.run(main())


def test_agent_restart_down_then_up_for_v2c_and_v3(snmpd: SnmpdProcess, v3_keys: None) -> None:
    c = connector([{"name": "ups-v2c", "asset": "ups-a", "profile": "ups-mib", **v2c(snmpd.port)},
                   {"name": "ups-v3", "asset": "ups-b", "profile": "ups-mib", **v3(snmpd.port)}])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: all(readings.of("load", Quality.GOOD, asset=a) for a in ("ups-a", "ups-b")),
                                "both")
            snmpd.stop()
            mark = readings.mark()
            await readings.wait(lambda: all(readings.of("load", Quality.BAD, since=mark, asset=a)
                                            for a in ("ups-a", "ups-b")), "BAD while snmpd is down")
            bad = readings.of("load", Quality.BAD, since=mark)[0]
            assert bad.value is None and bad.reason == "timeout after 0.5 s x 2 attempts"
            assert c.stats.devices_online == {"ups-v2c": False, "ups-v3": False}
            snmpd.start()
            mark = readings.mark()
            await readings.wait(lambda: all(readings.of("load", Quality.GOOD, since=mark, asset=a)
                                            for a in ("ups-a", "ups-b")), "both back after the restart", 40.0)
        assert c.stats.devices_online == {"ups-v2c": True, "ups-v3": True}

    asyncio.run(main())


def test_wrong_v3_key_and_a_silent_device_do_not_stall_the_others(snmpd: SnmpdProcess,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SNMP_AUTH", "not-the-auth-key")
    monkeypatch.setenv("TEST_SNMP_PRIV", SNMP_PRIV_KEY)
    silent_port = free_udp_port()  # nothing listens there: requests time out
    c = connector([{"name": "good", "asset": "ups-a", "profile": "ups-mib", **v2c(snmpd.port)},
                   {"name": "wrong-key", "asset": "ups-b", "profile": "ups-mib", **v3(snmpd.port)},
                   {"name": "silent", "asset": "ups-c", "profile": "ups-mib", **v2c(silent_port)}])

    async def main() -> None:
        readings = Readings()
        async with running(c, readings):
            await readings.wait(lambda: len(readings.of("load", Quality.BAD, asset="ups-c")) >= 2, "two timeouts")
            first, last = (i for i in (next(i for i, r in enumerate(readings.items) if r.asset == "ups-c"),
                                       max(i for i, r in enumerate(readings.items) if r.asset == "ups-c")))
            assert any(r.asset == "ups-a" and r.quality is Quality.GOOD for r in readings.items[first:last]), \
                "the good UPS must be polled while the silent one times out"
        refused = readings.last("ups-b", "load")
        assert refused is not None and refused.reason == "authentication failed (wrong auth key or protocol)"
        assert readings.last("ups-c", "load").reason.startswith("timeout after")  # type: ignore[union-attr]
        assert c.stats.devices_online == {"good": True, "wrong-key": False, "silent": False}
        assert {r.quality for r in readings.items if r.asset == "ups-a"} == {Quality.GOOD}

    asyncio.run(main())


def test_probe_cli_reads_a_profile_and_walks_a_table(snmpd: SnmpdProcess, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main as cli

    monkeypatch.setenv("TEST_COMMUNITY", SNMP_COMMUNITY)
    base = ["probe", "snmp", "--host", LOOPBACK, "--port", str(snmpd.port), "--community-env", "TEST_COMMUNITY"]
    assert cli([*base, "--profile", "ups-mib"]) == 0
    out = capsys.readouterr().out
    assert "on_battery" in out and "1.3.6.1.2.1.33.1.4.1.0  Integer32  True" in out
    assert "load" in out and "1.3.6.1.2.1.33.1.4.4.1.5.1  Integer32  40.0" in out
    monkeypatch.setenv("TWIN_SNMP_AUTH_KEY", SNMP_AUTH_KEY)
    monkeypatch.setenv("TWIN_SNMP_PRIV_KEY", SNMP_PRIV_KEY)
    assert cli(["probe", "snmp", "--host", LOOPBACK, "--port", str(snmpd.port), "--user", SNMP_USER,
                "--walk", "1.3.6.1.2.1.99.1.1.1.4"]) == 0
    assert "1.3.6.1.2.1.99.1.1.1.4.1004  Integer32  3250.0" in capsys.readouterr().out
    monkeypatch.setenv("TWIN_SNMP_AUTH_KEY", "wrong-auth-key")
    assert cli(["probe", "snmp", "--host", LOOPBACK, "--port", str(snmpd.port), "--user", SNMP_USER,
                "--get", "1.3.6.1.2.1.1.3.0", "--timeout", "0.5"]) == 1
    assert "authentication failed" in capsys.readouterr().err
