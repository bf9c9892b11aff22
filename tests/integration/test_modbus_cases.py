"""The data-driven decoding cases (tests/cases/modbus_*) end to end, over real Modbus TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.connectors import build_connector
from agent.connectors.modbus.connector import ModbusConnector
from simulator.modbus_device import ModbusDeviceServer, UnitMemory
from tests.unit.test_modbus_cases import CASES, check_readings, load_case

pytestmark = pytest.mark.integration

FIELDS = {"holding": "holding", "input": "input", "coils": "coils", "discrete": "discrete"}


def memory_for(tables: dict[str, dict[int, object]]) -> UnitMemory:
    mem = UnitMemory.sized(coils=16, discrete=16, holding=16, input=16)
    for table, cells in tables.items():
        column = getattr(mem, FIELDS[table])
        blank = False if table in ("coils", "discrete") else 0
        column.extend([blank] * (max(cells) + 1 - len(column)))
        for address, value in cells.items():
            column[address] = value
    return mem


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_over_modbus_tcp(case: Path) -> None:
    source, memory, expected = load_case(case)

    async def scenario() -> None:
        async with ModbusDeviceServer({unit: memory_for(tables) for unit, tables in memory.items()}) as server:
            connector = build_connector({**source, "port": server.port, "timeout_s": 2.0}, "sources[0]")
            assert isinstance(connector, ModbusConnector)
            readings = await connector.read_once()
            connector.close()
            assert server.request_count.total() == len(connector.requests)
        check_readings(readings, expected)

    asyncio.run(scenario())
