"""Data-driven decoding cases: tests/cases/modbus_*/{config.toml, registers.json, expected.json}.

config.toml holds one `[[sources]]` table; registers.json the device memory as
{unit_id: {table: {start_address: [values...]}}} with tables holding/input/coils/discrete;
expected.json maps "asset/point" to the decoded value, or to {"bad": "<reason substring>"}.
Here the connector's planned requests are answered from that memory without a network; the
integration test runs the same cases against a real Modbus server.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.modbus.connector import ModbusConnector
from agent.model import Quality, Reading

CASES_DIR = Path(__file__).resolve().parents[1] / "cases"
CASES = sorted(p for p in CASES_DIR.glob("modbus_*") if p.is_dir())
TABLES = {"holding": "holding", "input": "input", "coil": "coils", "discrete": "discrete"}


def load_case(case: Path) -> tuple[dict[str, Any], dict[int, dict[str, dict[int, Any]]], dict[str, Any]]:
    source = tomllib.loads((case / "config.toml").read_text())["sources"][0]
    raw = json.loads((case / "registers.json").read_text())
    memory: dict[int, dict[str, dict[int, Any]]] = {}
    for unit, tables in raw.items():
        memory[int(unit)] = {}
        for table, blocks in tables.items():
            cells: dict[int, Any] = {}
            for start, values in blocks.items():
                for i, v in enumerate(values):
                    cells[int(start) + i] = v
            memory[int(unit)][table] = cells
    expected = json.loads((case / "expected.json").read_text())
    return source, memory, expected


def check_readings(readings: list[Reading], expected: dict[str, Any]) -> None:
    got = {f"{r.asset}/{r.point}": r for r in readings}
    assert set(got) == set(expected)
    for key, want in expected.items():
        r = got[key]
        if isinstance(want, dict):
            assert r.quality is Quality.BAD and r.value is None, key
            assert want["bad"] in r.reason, (key, r.reason)
        elif isinstance(want, bool) or isinstance(want, str):
            assert r.quality is Quality.GOOD, (key, r.reason)
            assert r.value == want, key
        else:
            assert r.quality is Quality.GOOD, (key, r.reason)
            assert isinstance(r.value, float), key
            assert math.isclose(r.value, want, rel_tol=1e-9, abs_tol=1e-9), (key, r.value, want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_decodes_from_memory(case: Path) -> None:
    source, memory, expected = load_case(case)
    connector = build_connector(source, "sources[0]")
    assert isinstance(connector, ModbusConnector)
    readings: list[Reading] = []
    for req in connector.requests:
        cells = memory[req.unit_id][TABLES[req.function]]
        blank: Any = False if req.function in ("coil", "discrete") else 0
        values = [cells.get(a, blank) for a in range(req.address, req.address + req.count)]
        readings.extend(connector.decode_response(req, values, ts_ns=1))
    check_readings(readings, expected)


def test_there_are_cases() -> None:
    assert len(CASES) >= 5
