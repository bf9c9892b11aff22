"""The daemon wires it together: its periodic check raises an agent-offline work order without any batch,
the outbox forwards it to a webhook, and the API lists it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from collector.config import build_collector_config, hash_token
from collector.daemon import CollectorDaemon
from collector.state import StateLocation
from protos.twin.v1 import twin_pb2
from tests.conftest import state_table
from tests.integration.daemons import TOKENS
from tests.integration.test_collector_auth import exchange
from tests.integration.test_workorders_lifecycle import hello, summary
from tests.integration.webhook_receiver import serve_webhook
from tests.servers import free_port


def test_periodic_check_outbox_and_api(tmp_path: Path, state_location: StateLocation) -> None:
    async def main() -> None:
        hook_port = free_port()
        received: list[dict[str, object]] = []
        arrived = asyncio.Event()

        async def handle(request: web.Request) -> web.Response:
            received.append(json.loads(await request.read()))
            arrived.set()
            return web.Response(status=204)

        runner = await serve_webhook(handle, hook_port)
        config = build_collector_config({
            "collector": {"listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / "state"),
                          "check_interval_s": 0.2},
            "agents": [{"id": "gw-a", "token_sha256": hash_token(TOKENS["gw-a"])}],
            "rules": [{"name": "agent_offline", "kind": "agent_offline", "offline_after_s": 1.0}],
            "webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{hook_port}/hook", "retry_initial_s": 0.05}],
            "api": {"listen": "127.0.0.1:0"},
            "state": state_table(state_location, tmp_path),
        })
        daemon = CollectorDaemon(config)
        await daemon.start()
        try:
            batch = twin_pb2.Batch(seq=1, summaries=[summary("pump-1", "flow", time.time_ns(), 40.0)])
            assert await exchange(daemon.port, TOKENS["gw-a"], hello(), [batch]) == [0, 1]
            await asyncio.wait_for(arrived.wait(), 20)  # offline after 1 s, judged every 0.2 s
            assert [(r["event"]["action"], r["work_order"]["rule"], r["work_order"]["asset"])  # type: ignore[index]
                    for r in received] == [("raised", "agent_offline", "gw-a")]
            assert daemon.api is not None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{daemon.api.port}/work-orders?category=data_quality") as r:
                    orders = await r.json()
                async with http.get(f"http://127.0.0.1:{daemon.api.port}/health") as r:
                    health = await r.json()
            assert [(o["rule"], o["asset"]) for o in orders] == [("agent_offline", "gw-a")]
            assert health["outbox"]["ops"]["delivered"] == 1 and health["periodic_check_failures"] == 0
        finally:
            await daemon.stop()
            await runner.cleanup()

    asyncio.run(main())
