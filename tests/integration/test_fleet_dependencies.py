"""A `depends_on` id that no agent declares is warned about (a typo would silently break the context
of work orders); one that another agent declares later stops being reported."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from collector.fleet import FleetTwin
from protos.twin.v1 import twin_pb2


def _hello(agent: str, assets: list[tuple[str, list[str]]]) -> twin_pb2.Hello:
    return twin_pb2.Hello(agent_id=agent, site="plant", version="test", queue_epoch="e1", assets=[
        twin_pb2.AssetDescriptor(id=a, type="ahu", name=a, depends_on=deps) for a, deps in assets])


def test_undeclared_dependencies_are_warned_until_declared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        fleet = FleetTwin(tmp_path / "collector.sqlite")
        await fleet.open()
        try:
            with caplog.at_level(logging.WARNING, "twin.collector.fleet"):
                await fleet.register_hello(_hello("gw-a", [("ahu-1", ["chiller-1", "msb-meter"]),
                                                           ("vav-2", ["ahu-1"])]))
            before = await fleet.undeclared_dependencies()
            await fleet.register_hello(_hello("gw-b", [("chiller-1", [])]))
            return before, await fleet.undeclared_dependencies()
        finally:
            await fleet.close()

    before, after = asyncio.run(scenario())
    assert before == [("ahu-1", "chiller-1"), ("ahu-1", "msb-meter")]
    assert after == [("ahu-1", "msb-meter")]
    warned = [r.getMessage() for r in caplog.records]
    assert any("ahu-1 (agent gw-a) depends on msb-meter, which no agent declares" in m for m in warned), warned
    assert not any("vav-2" in m for m in warned)
