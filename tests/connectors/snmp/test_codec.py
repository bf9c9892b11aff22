"""SNMP value decoding against known answers: syntaxes, textual conventions, counters, entity sensors."""

from __future__ import annotations

import pytest

from agent.connectors.snmp.codec import Decoding, SnmpValue, counter_delta, date_and_time, decode, entity_sensor
from runtime.errors import DecodeError

PLAIN = Decoding()


def test_numbers_scale_offset_and_timeticks() -> None:
    assert decode(SnmpValue("Integer32", 174), Decoding(scale=0.1)) == pytest.approx(17.4)
    assert decode(SnmpValue("Gauge32", 40), PLAIN) == 40.0
    assert decode(SnmpValue("Integer32", 25), Decoding(scale=2.0, offset=-1.0)) == 49.0
    assert decode(SnmpValue("TimeTicks", 12345), PLAIN) == 123.45  # hundredths of a second


def test_enumerations_booleans_and_truth_value() -> None:
    status = Decoding(enum=(("1", "unknown"), ("2", "normal"), ("3", "low")))
    assert decode(SnmpValue("Integer32", 3), status) == "low"
    with pytest.raises(DecodeError, match=r"9 is not one of the enumeration's values \['1', '2', '3'\]"):
        decode(SnmpValue("Integer32", 9), status)
    on_battery = Decoding(true_values=frozenset({5}))
    assert decode(SnmpValue("Integer32", 5), on_battery) is True
    assert decode(SnmpValue("Integer32", 3), on_battery) is False
    assert decode(SnmpValue("Integer32", 2), Decoding(tc="TruthValue")) is False
    with pytest.raises(DecodeError, match="TruthValue is 1"):
        decode(SnmpValue("Integer32", 0), Decoding(tc="TruthValue"))


def test_octet_strings_by_textual_convention() -> None:
    assert decode(SnmpValue("OctetString", b"Acme UPS 10k"), PLAIN) == "Acme UPS 10k"
    assert decode(SnmpValue("OctetString", b"\x00\x1b\x21\xab\xcd\xef"), PLAIN) == "001b21abcdef"  # not text: hex
    assert decode(SnmpValue("OctetString", b"\x00\x1b\x21\xab\xcd\xef"), Decoding(tc="PhysAddress")) == \
        "00:1b:21:ab:cd:ef"
    raw = bytes([0x07, 0xEA, 12, 6, 15, 30, 5, 3, ord("+"), 1, 0])
    assert decode(SnmpValue("OctetString", raw), Decoding(tc="DateAndTime")) == "2026-12-06T15:30:05.3+01:00"
    with pytest.raises(DecodeError, match="8 or 11 octets"):
        date_and_time(b"\x07\xea")
    with pytest.raises(DecodeError, match="DisplayString is not valid text"):
        decode(SnmpValue("OctetString", b"\xff\xfe"), Decoding(tc="DisplayString"))


def test_oids_ip_addresses_and_absent_values() -> None:
    alarm = Decoding(enum=((".1.3.6.1.2.1.33.1.6.3.2", "on_battery"),))
    assert decode(SnmpValue("ObjectIdentifier", (1, 3, 6, 1, 2, 1, 33, 1, 6, 3, 2)), alarm) == "on_battery"
    assert decode(SnmpValue("ObjectIdentifier", (1, 3, 6, 1, 4, 1, 318)), PLAIN) == "1.3.6.1.4.1.318"
    assert decode(SnmpValue("IpAddress", bytes([127, 0, 0, 1])), PLAIN) == "127.0.0.1"
    for absent in ("noSuchObject", "noSuchInstance"):
        with pytest.raises(DecodeError, match=absent):
            decode(SnmpValue(absent), PLAIN)


def test_counter_delta_wraps_at_its_width() -> None:
    assert counter_delta(150, 100, 32) == 50
    assert counter_delta(10, 2**32 - 6, 32) == 16
    assert counter_delta(5, 2**64 - 5, 64) == 10


def _row(kind: int, scale: int, precision: int, value: int, status: int = 1) -> dict[int, SnmpValue]:
    return {n: SnmpValue("Integer32", v) for n, v in zip((1, 2, 3, 4, 5), (kind, scale, precision, value, status),
                                                          strict=True)}


def test_entity_sensor_scale_precision_unit_and_status() -> None:
    temp = entity_sensor(_row(kind=8, scale=9, precision=1, value=235))
    assert (temp.value, temp.unit, temp.status) == (pytest.approx(23.5), "°C", "ok")
    amps = entity_sensor(_row(kind=5, scale=8, precision=0, value=3250, status=2))  # milli-amperes
    assert (amps.value, amps.unit, amps.status) == (pytest.approx(3.25), "A", "unavailable")
    kw = entity_sensor(_row(kind=6, scale=10, precision=2, value=150))  # kilo-watts, 2 decimals
    assert kw.value == pytest.approx(1500.0)
    assert entity_sensor(_row(kind=12, scale=9, precision=0, value=1)).value == 1.0  # truthvalue true(1)
    with pytest.raises(DecodeError, match="entPhySensorScale 42"):
        entity_sensor(_row(kind=8, scale=42, precision=0, value=1))
    row = _row(kind=8, scale=9, precision=0, value=1)
    row[4] = SnmpValue("noSuchInstance")
    with pytest.raises(DecodeError, match="lacks value"):
        entity_sensor(row)
