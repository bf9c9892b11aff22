"""Two collectors on one state database at the same moment (two FleetTwins, each with its own
connections, as two collector processes have): a batch both receive is committed once, the rules of
an asset raise its work order once, the periodic check judges once, and (PostgreSQL, where several
collectors forward) each ITSM change is POSTed by one of them.

The same batch arriving at two collectors at once is what an agent that reconnects elsewhere while
its old stream is not yet dead produces; here it is forced with asyncio.gather on every batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aiohttp import web

from collector.fleet import FleetTwin
from collector.itsm import Forwarder, Outbox, WebhookSettings, load_webhooks
from collector.state import PostgresLocation, StateLocation
from collector.workorders.evaluate import parse_rules
from collector.workorders.store import WorkOrder
from protos.twin.v1 import twin_pb2
from tests.conftest import new_postgres_database
from tests.integration.test_itsm_outbox import wait_until
from tests.integration.test_workorders_lifecycle import FILTER_RULE, MIN, T0, hello, summary
from tests.integration.webhook_receiver import serve_webhook
from tests.servers import PostgresServer, free_port

VALUES = [200, 240, 280, 310, 320, 330, 350, 380, 450, 460, 470, 300, 240, 230, 220, 210]


async def two_collectors(location: StateLocation, rules: list[dict[str, object]],
                         outboxes: tuple[Outbox | None, Outbox | None] = (None, None)) -> tuple[FleetTwin, FleetTwin]:
    fleets = (FleetTwin(location, parse_rules(rules), listener=outboxes[0]),
              FleetTwin(location, parse_rules(rules), listener=outboxes[1]))
    await asyncio.gather(*(f.open() for f in fleets))  # both create the schema at once
    return fleets


def test_a_batch_two_collectors_receive_is_committed_once(state_location: StateLocation) -> None:
    async def main() -> None:
        a, b = await two_collectors(state_location, [FILTER_RULE])
        try:
            await asyncio.gather(a.register_hello(hello()), b.register_hello(hello()))
            changed: list[WorkOrder] = []
            for seq, v in enumerate(VALUES, start=1):
                batch = twin_pb2.Batch(seq=seq, summaries=[summary("ahu-1", "filter_dp", T0 + seq * MIN, v)])
                for result in await asyncio.gather(a.commit_batch("gw-a", "e1", batch),
                                                   b.commit_batch("gw-a", "e1", batch)):
                    changed += result
            assert await a.watermark("gw-a", "e1") == len(VALUES)
            async with a.reading() as db:
                ((batches,),) = await db.fetchall("SELECT batches FROM watermarks WHERE agent_id = 'gw-a'")
                ((count,),) = await db.fetchall("SELECT SUM(count) FROM summary_history WHERE asset = 'ahu-1'")
            assert batches == len(VALUES), "each batch committed by one of the two"
            assert count == 6 * len(VALUES), "the history holds each batch's summary once"
            (wo,) = await a.work_orders.list()
            assert [action for _, action, _ in await a.work_orders.events(wo.id)] == [
                "raised", "escalated", "condition_cleared"], "each change once"
            assert Counter(w.id for w in changed) == {wo.id: 3}, "each change reported by the collector that made it"
        finally:
            await asyncio.gather(a.close(), b.close())

    asyncio.run(main())


def test_the_periodic_check_judges_once(state_location: StateLocation) -> None:
    rules = [{"name": "agent_offline", "kind": "agent_offline", "offline_after_s": 60}]

    async def main() -> None:
        a, b = await two_collectors(state_location, rules)
        try:
            await a.register_hello(hello())
            await b.set_connected("gw-a", False)  # its stream ended: silence counts from its last message
            later = time.time_ns() + 600 * 10**9
            results = await asyncio.gather(a.check(later), b.check(later), a.check(later), b.check(later))
            raised = [wo for r in results for wo in r]
            assert [(w.rule, w.asset) for w in raised] == [("agent_offline", "gw-a")], "judged and raised once"
            assert len(await a.work_orders.list()) == 1
        finally:
            await asyncio.gather(a.close(), b.close())

    asyncio.run(main())


def test_two_collectors_forward_each_change_once(postgres: PostgresServer) -> None:
    """Only PostgreSQL has several collectors forwarding (an SQLite file has one collector)."""
    location: PostgresLocation = new_postgres_database(postgres)

    async def main() -> None:
        port = free_port()
        posts: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            posts.append(request.headers["Idempotency-Key"])
            await asyncio.sleep(0.05)  # slow enough that both forwarders see pending rows together
            return web.Response(status=200)

        runner = await serve_webhook(handle, port)
        hooks = load_webhooks([WebhookSettings(name="ops", url=f"http://127.0.0.1:{port}/hook",
                                               retry_initial_s=0.05)])
        outboxes = (Outbox(hooks), Outbox(hooks))
        a, b = await two_collectors(location, [FILTER_RULE], outboxes)
        forwarders = [Forwarder(a.state, outboxes[0], poll_interval_s=0.02),
                      Forwarder(b.state, outboxes[1], poll_interval_s=0.02)]
        try:
            for f in forwarders:
                await f.start()
            await a.register_hello(hello())
            for seq, v in enumerate(VALUES, start=1):
                fleet = a if seq % 2 else b
                await fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(
                    seq=seq, summaries=[summary("ahu-1", "filter_dp", T0 + seq * MIN, v)]))
            (wo,) = await a.work_orders.list()
            await b.acknowledge(wo.id, "alice")
            await a.close_work_order(wo.id, "alice", "filter replaced")
            keys = [f"{wo.ref}-{e.id}" for e in await a.work_orders.event_list(wo.id)]
            await wait_until(lambda: len(posts) >= len(keys), 20, "every change POSTed")
            await asyncio.sleep(0.5)  # nothing more may come
            assert posts == keys, "every change once, in order, whichever collector forwarded it"
            assert (await forwarders[0].pending())["ops"] == {"pending": 0, "delivered": len(keys), "rejected": 0}
            assert sum(f.stats["ops"].delivered for f in forwarders) == len(keys), "each by one of the two"
        finally:
            for f in forwarders:
                await f.stop()
            await asyncio.gather(a.close(), b.close())
            await runner.cleanup()

    asyncio.run(main())


def test_an_agent_on_another_collector_is_present(state_location: StateLocation) -> None:
    """Each collector records where its streams are; the one that judges sees the others' agents present,
    and an agent whose collector stopped recording (it died) is judged offline once the limit has passed."""
    rules = [{"name": "agent_offline", "kind": "agent_offline", "offline_after_s": 60}]

    async def main() -> None:
        a, b = await two_collectors(state_location, rules)
        try:
            await a.register_hello(hello())
            now = time.time_ns()
            await a.check(now, presence={"gw-a": now})  # a holds gw-a's stream
            assert await b.check(now + 30 * 10**9, presence={}) == [], "present through a"
            changed = await b.refresh_asset_status(now + 30 * 10**9, presence={})
            assert {s.asset: (s.link, s.link_reason) for s in changed}["ahu-1"] == (
                "degraded", "gateway gw-a disconnected 30 s ago"), "gone for less than the limit: degraded"
            (offline,) = await b.check(now + 120 * 10**9, presence={})  # a said nothing since: it is gone
            assert (offline.rule, offline.asset) == ("agent_offline", "gw-a")
            changed = await b.refresh_asset_status(now + 120 * 10**9, presence={})
            assert {s.asset: s.link for s in changed}["ahu-1"] == "offline", "its assets' link follows"
        finally:
            await asyncio.gather(a.close(), b.close())

    asyncio.run(main())
