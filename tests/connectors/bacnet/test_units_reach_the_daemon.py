"""Engineering units read from a BACnet device become the unit of a point configured without one:
in the daemon's summaries, its status and the Hello the collector's fleet twin registers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import build_agent_config
from agent.daemon import AgentDaemon
from agent.model import Quality
from tests.connectors.peers import bacnet_ahu_server, free_udp_port
from tests.connectors.recorder import Readings, running
from tests.servers import LOOPBACK

pytestmark = pytest.mark.integration


def test_learned_units_reach_summaries_status_and_hello(tmp_path: Path) -> None:
    device = bacnet_ahu_server(tmp_path / "ahu", 1001)
    config = build_agent_config({
        "agent": {"id": "gw-a", "site": "plant-a", "state_dir": str(tmp_path / "state")},
        "uplink": {"collector": f"{LOOPBACK}:1", "token": "0123456789abcdef"},
        "assets": [{"id": "ahu-1", "type": "ahu"}],
        "sources": [{"type": "bacnet", "name": "bms", "local_address": f"{LOOPBACK}:{free_udp_port()}",
                     "poll_interval_s": 1.2, "apdu_timeout_s": 0.5, "apdu_retries": 1,
                     "devices": [{"instance": 1001, "address": f"{LOOPBACK}:{device.port}"}],
                     "points": [{"asset": "ahu-1", "name": "filter_dp", "device": 1001, "object": "AI:3"},
                                {"asset": "ahu-1", "name": "return_temp", "device": 1001, "object": "AI:2",
                                 "unit": "degC"}]}],
    })
    daemon = AgentDaemon(config)
    connector = config.connectors[0]
    assert [p.unit for p in config.assets[0].points] == ["", "degC"]

    async def main() -> None:
        readings = Readings()

        def emit(batch: list) -> None:  # type: ignore[type-arg]
            readings(batch)
            daemon.emit(batch)

        async with running(connector, emit):  # type: ignore[arg-type]
            await readings.wait(lambda: bool(readings.of("filter_dp", Quality.GOOD)), "a value")

    try:
        asyncio.run(main())
    finally:
        device.stop()
    assert daemon.point_specs[("ahu-1", "filter_dp")].unit == "Pa"
    assert daemon.point_specs[("ahu-1", "return_temp")].unit == "degC"  # a configured unit is kept
    hello = {p.name: p.unit for p in daemon._hello().assets[0].points}
    assert hello == {"filter_dp": "Pa", "return_temp": "degC"}
    assert daemon.twin.snapshot()["ahu-1"]["points"]["filter_dp"]["unit"] == "Pa"  # type: ignore[index]
