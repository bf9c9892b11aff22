"""The ITSM outbox against a real local HTTP receiver that is down, then failing (500), then slow, across
a collector restart: every change arrives exactly once per webhook, in order, signed, with a stable
idempotency key; the ServiceNow mapping carries basic auth and incident fields."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.fleet import FleetTwin
from collector.itsm import Forwarder, Outbox, WebhookSettings, load_webhooks
from collector.state import StateLocation
from collector.workorders.evaluate import parse_rules
from tests.integration.test_workorders_lifecycle import FILTER_RULE, MIN, T0, Feeder, hello, summary
from tests.integration.webhook_receiver import serve_webhook
from tests.servers import free_port

SECRET = "hook-secret-0123456789"


@dataclass
class Receiver:
    """A webhook receiver: answers 500 to the first `fail_first` requests, then 200 after `delay_s`."""

    fail_first: int = 0
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request, whatever the answer
    accepted: list[dict[str, Any]] = field(default_factory=list)  # answered 2xx

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        entry = {"path": request.path, "key": request.headers.get("Idempotency-Key"), "body": body,
                 "signature": request.headers.get("X-Twin-Signature", ""),
                 "authorization": request.headers.get("Authorization", ""),
                 "event": request.headers.get("X-Twin-Event")}
        self.requests.append(entry)
        if len(self.requests) <= self.fail_first:
            entry["status"] = 500
            return web.Response(status=500, text="database unavailable")
        entry["status"] = 201
        await asyncio.sleep(self.delay_s)
        self.accepted.append(entry)
        return web.json_response({"result": "ok"}, status=201)


async def start_receiver(receiver: Receiver, port: int) -> web.AppRunner:
    return await serve_webhook(receiver.handle, port, "/{tail:.*}")


async def wait_until(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def webhooks(tmp_path: Path, port: int) -> tuple[Any, ...]:
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "snow.password").write_text("s3cret\n")
    fast = {"retry_initial_s": 0.05, "retry_max_s": 0.4, "timeout_s": 5.0}
    return load_webhooks([
        WebhookSettings(name="ops", url=f"http://127.0.0.1:{port}/generic", secret_file=str(tmp_path / "secret"),
                        **fast),
        WebhookSettings(name="snow", url=f"http://127.0.0.1:{port}/api/now/import/u_twin_work_order",
                        format="servicenow", auth="basic", username="twin",
                        password_file=str(tmp_path / "snow.password"), secret_file=str(tmp_path / "secret"),
                        assignment_group="Facilities", **fast),
    ])


async def start_collector(location: StateLocation, hooks: tuple[Any, ...]) -> tuple[FleetTwin, Forwarder]:
    outbox = Outbox(hooks)
    fleet = FleetTwin(location, parse_rules([FILTER_RULE]), listener=outbox)
    await fleet.open()
    forwarder = Forwarder(fleet.state, outbox, poll_interval_s=0.2)
    await forwarder.start()
    return fleet, forwarder


def test_outbox_survives_down_failing_slow_receiver_and_restart(tmp_path: Path, state_location: StateLocation) -> None:
    async def main() -> None:
        port = free_port()  # nothing listens yet: the receiver is down
        hooks = webhooks(tmp_path, port)
        fleet, forwarder = await start_collector(state_location, hooks)
        await fleet.register_hello(hello())
        feed = Feeder(fleet)
        t = T0
        for v in (310, 320, 330, 450, 240):  # raised, escalated, condition_cleared
            t += MIN
            await feed.batch(summaries=[summary("ahu-1", "filter_dp", t, v)])
        (wo,) = await fleet.work_orders.list()  # type: ignore[union-attr]
        await fleet.acknowledge(wo.id, "alice", "on it")
        await wait_until(lambda: forwarder.stats["ops"].failures >= 2, 10, "failed attempts while down")
        assert forwarder.stats["ops"].delivered == 0
        # restart the collector with everything still queued
        await forwarder.stop()
        await fleet.close()
        receiver = Receiver(fail_first=3, delay_s=0.2)
        runner = await start_receiver(receiver, port)
        try:
            fleet, forwarder = await start_collector(state_location, hooks)
            await fleet.close_work_order(wo.id, "alice", "filter replaced")  # a change made after the restart
            events = await fleet.work_orders.event_list(wo.id)  # type: ignore[union-attr]
            assert [e.action for e in events] == ["raised", "escalated", "condition_cleared", "acknowledged",
                                                  "closed"]
            expected = [f"{wo.ref}-{e.id}" for e in events]
            await wait_until(lambda: len(receiver.accepted) >= 2 * len(expected), 30, "all deliveries")
            await asyncio.sleep(0.5)  # nothing more may arrive
            pending = await forwarder.pending()
            await forwarder.stop()
            await fleet.close()
        finally:
            await runner.cleanup()

        for path, name in (("/generic", "ops"), ("/api/now/import/u_twin_work_order", "snow")):
            accepted = [r["key"] for r in receiver.accepted if r["path"] == path]
            assert accepted == expected, f"{name}: every change exactly once, in order"
            assert pending[name] == {"pending": 0, "delivered": len(expected), "rejected": 0}
        assert [r["status"] for r in receiver.requests].count(500) == 3, "the three 500s were retried"
        assert len(receiver.requests) == 3 + len(receiver.accepted)
        for r in receiver.requests:
            good = "sha256=" + hmac.new(SECRET.encode(), r["body"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(r["signature"], good), "signature verifies"
        # a retried change carries the same key and the same body
        by_key: dict[tuple[str, str], set[bytes]] = {}
        for r in receiver.requests:
            by_key.setdefault((r["path"], r["key"]), set()).add(r["body"])
        assert all(len(bodies) == 1 for bodies in by_key.values())

        generic = [json.loads(r["body"]) for r in receiver.accepted if r["path"] == "/generic"]
        assert generic[0]["schema"] == "facility-twin.work-order-event/1"
        assert [g["event"]["action"] for g in generic] == ["raised", "escalated", "condition_cleared",
                                                           "acknowledged", "closed"]
        assert generic[0]["work_order"]["context"]["trend"]["series"] == "point:filter_dp:mean"
        assert generic[-1]["work_order"]["status"] == "closed" and generic[-1]["work_order"]["closed_by"] == "alice"

        snow = [r for r in receiver.accepted if r["path"].startswith("/api/now")]
        assert all(r["authorization"] == "Basic " + base64.b64encode(b"twin:s3cret").decode() for r in snow)
        first, last = json.loads(snow[0]["body"]), json.loads(snow[-1]["body"])
        assert first["correlation_id"] == wo.ref and first["cmdb_ci"] == "ahu-1"
        assert (first["urgency"], first["impact"], first["state"]) == ("2", "2", "1")
        assert first["short_description"] == "Air filter clogged on ahu-1"
        assert "Evidence:" in first["description"] and "depends on chiller-1" in first["description"]
        assert json.loads(snow[1]["body"])["urgency"] == "1", "escalated to critical"
        assert last["state"] == "6" and last["close_notes"] == "filter replaced"
        assert first["assignment_group"] == "Facilities" and last["work_notes"].startswith("[closed]")

    asyncio.run(main())


def test_rejected_payload_is_set_aside_and_the_queue_moves_on(tmp_path: Path, state_location: StateLocation) -> None:
    async def main() -> None:
        port = free_port()
        seen: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            key = request.headers["Idempotency-Key"]
            seen.append(key)
            return web.Response(status=422 if len(seen) == 1 else 200)

        runner = await serve_webhook(handle, port)
        hooks = load_webhooks([WebhookSettings(name="ops", url=f"http://127.0.0.1:{port}/hook",
                                               retry_initial_s=0.05)])
        fleet, forwarder = await start_collector(state_location, hooks)
        try:
            await fleet.register_hello(hello())
            feed = Feeder(fleet)
            for k, v in enumerate((310, 320, 330)):
                await feed.batch(summaries=[summary("ahu-1", "filter_dp", T0 + k * MIN, v)])
            (wo,) = await fleet.work_orders.list()  # type: ignore[union-attr]
            await fleet.acknowledge(wo.id, "bob")
            await wait_until(lambda: len(seen) == 2, 10, "both changes tried")
            await asyncio.sleep(0.3)
            assert (await forwarder.pending())["ops"] == {"pending": 0, "delivered": 1, "rejected": 1}
            assert len(seen) == 2 and forwarder.stats["ops"].rejected == 1
        finally:
            await forwarder.stop()
            await fleet.close()
            await runner.cleanup()

    asyncio.run(main())
