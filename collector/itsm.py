"""ITSM forwarding: a durable outbox of work-order changes, POSTed to webhooks.

Every change of a work order (raised, recurred, escalated, condition_cleared, acknowledged, closed)
is queued in the `outbox` table by `Outbox.work_order_changed`, which the work-order store calls
inside the transaction that makes the change: the change and its forwarding are stored together
or not at all. `Forwarder` delivers the queue, one FIFO per webhook (a receiver sees the changes
of a work order in order), with exponential backoff and jitter while a receiver is down, slow or
failing, and keeps going across collector restarts because the queue is in the state database.
Each row is marked delivered after a 2xx answer, so each change reaches each webhook once; if the
collector dies between the receiver's answer and that mark, the change is sent again with the
same `Idempotency-Key`, which is how the receiver recognises it.

Several collectors on one PostgreSQL database each run a forwarder: a forwarder claims the head
of a webhook's queue (the oldest undelivered row) with FOR UPDATE SKIP LOCKED and holds it while
it POSTs, so exactly one collector delivers a change and the others find the head taken and wait
for the next poll; the queue stays in order. A collector that dies mid-POST releases its claim
with its connection, and another sends the change again, with the same key. Answers 400/413/415/422 mean the
receiver will never take the payload: the row is set aside as rejected (kept, counted in /health,
logged) instead of blocking the queue; every other failure is retried.

Each request carries:
    Content-Type: application/json
    Idempotency-Key: <work order ref>-<event id>, e.g. WO-000042-317 (stable per change)
    X-Twin-Event: the change (raised, escalated, ...)
    X-Twin-Signature: sha256=<hex HMAC-SHA256 of the raw body with the webhook's secret>
    Authorization: Basic ... or Bearer ... (when configured)

Generic payload (`format = "generic"`), schema "facility-twin.work-order-event/1":
    {"schema": ..., "idempotency_key": "WO-000042-317",
     "event": {"id": 317, "action": "raised", "ts_ns": ..., "ts": "2025-01-31T10:15:00Z", "detail": "..."},
     "work_order": {"ref", "id", "asset", "rule", "category", "severity", "status", "title", "description",
                    "evidence", "context", "created_ns", "updated_ns", "condition_cleared_ns",
                    "acknowledged_by", "acknowledged_ns", "closed_by", "closed_ns", "note",
                    "probable_cause": {"ref", "asset", "rule", "title", "relation"} or null}}

Routing: a webhook takes the categories in its `categories` (default the field ones: corrective,
preventive, data_quality) at or above `min_severity`. The collector's own incidents (category
`collector`: its sink or state database failing) go only to webhooks that list "collector", e.g. the
platform team's queue, so the field's ITSM queue never gets tickets for an outage of the monitoring.

ServiceNow payload (`format = "servicenow"`): the fields of an incident record, for the Table API
(`/api/now/table/incident`, which creates one record per POST) or better an Import Set table with
a transform map coalescing on `correlation_id` (one incident per work order, updated by each change):
    short_description, description, urgency and impact (1 high .. 3 low, from the severity),
    cmdb_ci (the asset), correlation_id (the work order ref), correlation_display ("facility-twin"),
    category, subcategory (the rule), state (1 New, 2 In Progress, 6 Resolved), work_notes (the change),
    close_code and close_notes when closed, assignment_group and caller_id when configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from pydantic import Field, field_validator, model_validator

from collector.state import StateConnection, StateDatabase
from collector.workorders.rules import FIELD_CATEGORIES, SEVERITIES, Severity
from collector.workorders.store import WorkOrder, WorkOrderEvent
from runtime.errors import ConfigError
from runtime.schema import SchemaPart
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel

__all__ = ["SCHEMA", "SCHEMA_PART", "Forwarder", "Outbox", "Webhook", "WebhookSettings", "load_webhooks",
           "render_generic", "render_servicenow", "sign"]

log = logging.getLogger("twin.collector.itsm")


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, webhook TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    work_order INTEGER NOT NULL, event INTEGER NOT NULL, action TEXT NOT NULL, body BLOB NOT NULL,
    created_ns INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ns INTEGER NOT NULL,
    last_error TEXT NOT NULL DEFAULT '', delivered_ns INTEGER, rejected_ns INTEGER,
    UNIQUE (webhook, idempotency_key));
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (webhook, id) WHERE delivered_ns IS NULL AND rejected_ns IS NULL;
"""
# Registered with the fleet database (collector/fleet.py, runtime/schema.py).
SCHEMA_PART = SchemaPart("outbox", SCHEMA)

GENERIC_SCHEMA = "facility-twin.work-order-event/1"
REJECTING_STATUSES = frozenset({400, 413, 415, 422})  # the payload itself is refused: retrying cannot help
POLL_INTERVAL_S = 2.0  # also picks up changes made by another process (twin-collector work-orders ack)
SERVICENOW_URGENCY = {"critical": ("1", "1"), "major": ("2", "2"), "minor": ("3", "2"), "info": ("3", "3")}
SERVICENOW_STATE = {"open": "1", "acknowledged": "2", "closed": "6"}


class WebhookSettings(StrictModel):
    """One `[[webhooks]]` table."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    url: str
    format: Literal["generic", "servicenow"] = "generic"
    secret_file: str = ""  # HMAC-SHA256 key for X-Twin-Signature
    secret_env: str = ""
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    token_file: str = ""
    token_env: str = ""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    min_severity: Severity = "info"
    # field work by default; the collector's own incidents ("collector") only where asked for
    categories: list[Literal["corrective", "preventive", "data_quality", "collector"]] = list(FIELD_CATEGORIES)
    # ServiceNow record fields
    assignment_group: str = ""
    caller_id: str = ""
    category: str = "facility"

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _auth(self) -> WebhookSettings:
        if self.secret_file and self.secret_env:
            raise ValueError("give at most one of secret_file or secret_env")
        if self.auth == "basic" and (not self.username or bool(self.password_file) == bool(self.password_env)):
            raise ValueError("auth = \"basic\" needs username and one of password_file or password_env")
        if self.auth == "bearer" and bool(self.token_file) == bool(self.token_env):
            raise ValueError("auth = \"bearer\" needs one of token_file or token_env")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        return self


@dataclass(frozen=True)
class Webhook:
    """A webhook with its secrets read (never logged: repr hides them)."""

    settings: WebhookSettings
    secret: bytes = field(default=b"", repr=False)
    authorization: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    def wants(self, wo: WorkOrder) -> bool:
        return (wo.category in self.settings.categories
                and SEVERITIES.index(wo.severity) >= SEVERITIES.index(self.settings.min_severity))


def load_webhooks(settings: Sequence[WebhookSettings], prefix: str = "webhooks") -> tuple[Webhook, ...]:
    """Read each webhook's secrets; errors name the key (`webhooks[0].secret_file: cannot read ...`)."""
    out = []
    names: set[str] = set()
    for i, s in enumerate(settings):
        key = f"{prefix}[{i}]"
        if s.name in names:
            raise ConfigError(f"{key}.name: duplicate {s.name!r}")
        names.add(s.name)
        secret = read_secret(f"{key}.secret", file=s.secret_file, env=s.secret_env)
        auth = ""
        if s.auth == "basic":
            password = read_secret(f"{key}.password", file=s.password_file, env=s.password_env)
            auth = "Basic " + base64.b64encode(f"{s.username}:{password}".encode()).decode()
        elif s.auth == "bearer":
            auth = "Bearer " + read_secret(f"{key}.token", file=s.token_file, env=s.token_env)
        out.append(Webhook(s, secret.encode(), auth))
    return tuple(out)


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def idempotency_key(wo: WorkOrder, event: WorkOrderEvent) -> str:
    return f"{wo.ref}-{event.id}"


def render_generic(wo: WorkOrder, event: WorkOrderEvent) -> dict[str, Any]:
    return {"schema": GENERIC_SCHEMA, "idempotency_key": idempotency_key(wo, event),
            "event": {"id": event.id, "action": event.action, "ts_ns": event.ts_ns, "ts": _iso(event.ts_ns),
                      "detail": event.detail},
            "work_order": wo.to_dict()}


def _evidence_lines(wo: WorkOrder) -> list[str]:
    lines = [f"{k}: {v}" for k, v in wo.evidence.items()
             if not k.endswith("_ns") and k not in ("forecast", "series") and not isinstance(v, dict | list)]
    fc = wo.evidence.get("forecast")
    if isinstance(fc, list) and fc:
        lines.append("forecast: " + ", ".join(f"+{p['days']:g} d: {p['value']}" for p in fc))
    return lines


def _context_lines(wo: WorkOrder) -> list[str]:
    ctx = wo.context
    lines = []
    state = ctx.get("state") or {}
    if state.get("state"):
        lines.append(f"asset state: {state.get('state')} (health {state.get('health')})")
    for rel, label in (("depends_on", "depends on"), ("dependents", "needed by")):
        for n in ctx.get(rel, []):
            extra = f", open {', '.join(n['open_work_orders'])}" if n.get("open_work_orders") else ""
            lines.append(f"{label} {n['asset']}: {n['state']}{extra}")
    for c in ctx.get("recent_changes", [])[:5]:
        lines.append(f"change {_iso(c['ts_ns'])}: {c['point'] or 'asset'} {c['old']} -> {c['new']}")
    for e in ctx.get("earlier_work_orders", [])[:5]:
        lines.append(f"earlier {e['ref']} ({e['rule']}, {e['status']}): {e['title']}")
    return lines


def render_servicenow(wo: WorkOrder, event: WorkOrderEvent, s: WebhookSettings) -> dict[str, Any]:
    urgency, impact = SERVICENOW_URGENCY.get(wo.severity, ("3", "3"))
    cause = wo.probable_cause
    probable = [f"Probable cause: {cause['ref']} on {cause['asset']} ({cause['relation']}): {cause['title']}", ""] \
        if cause else []
    description = "\n".join([wo.description, "", *probable, "Evidence:", *_evidence_lines(wo), "", "Context:",
                             *_context_lines(wo), "", f"Work order {wo.ref}, rule {wo.rule}, category {wo.category}."])
    record: dict[str, Any] = {
        "short_description": wo.title[:160], "description": description, "urgency": urgency, "impact": impact,
        "cmdb_ci": wo.asset, "correlation_id": wo.ref, "correlation_display": "facility-twin",
        "category": s.category, "subcategory": wo.rule, "state": SERVICENOW_STATE.get(wo.status, "1"),
        "work_notes": f"[{event.action}] {_iso(event.ts_ns)} {event.detail}",
    }
    if wo.status == "closed":
        record |= {"close_code": "Solved (Permanently)", "close_notes": wo.note or f"closed by {wo.closed_by}"}
    if s.assignment_group:
        record["assignment_group"] = s.assignment_group
    if s.caller_id:
        record["caller_id"] = s.caller_id
    return record


def render(webhook: Webhook, wo: WorkOrder, event: WorkOrderEvent) -> bytes:
    doc = render_servicenow(wo, event, webhook.settings) if webhook.settings.format == "servicenow" \
        else render_generic(wo, event)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


class Outbox:
    """The WorkOrderListener that queues one row per (webhook, change) in the caller's transaction."""

    def __init__(self, webhooks: Sequence[Webhook]) -> None:
        self.webhooks = tuple(webhooks)
        self.wake: dict[str, asyncio.Event] = {}

    async def work_order_changed(self, db: StateConnection, wo: WorkOrder, event: WorkOrderEvent) -> None:
        now = time.time_ns()
        for w in self.webhooks:
            if not w.wants(wo):
                continue
            await db.execute(
                "INSERT INTO outbox (webhook, idempotency_key, work_order, event, action, body, created_ns, "
                "next_attempt_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook, idempotency_key) DO NOTHING",
                (w.name, idempotency_key(wo, event), wo.id, event.id, event.action, render(w, wo, event), now, now))
            if w.name in self.wake:
                self.wake[w.name].set()  # the forwarder waits for the lock, so it sees the row once committed


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with +-20 % jitter, so many collectors do not retry in lockstep."""
    return min(initial_s * 2 ** max(attempts - 1, 0), max_s) * random.uniform(0.8, 1.2)


@dataclass(slots=True)
class WebhookStats:
    delivered: int = 0
    failures: int = 0
    rejected: int = 0
    last_error: str = ""


class Forwarder:
    """Delivers the outbox: one task per webhook, strictly in order, retrying with backoff."""

    def __init__(self, state: StateDatabase, outbox: Outbox, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.state = state
        self.outbox = outbox
        self.poll_interval_s = poll_interval_s
        self.stats = {w.name: WebhookStats() for w in outbox.webhooks}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for w in self.outbox.webhooks:
            self.outbox.wake[w.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(w), name=f"webhook-{w.name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pending(self) -> dict[str, dict[str, int]]:
        """Per webhook: rows waiting, delivered and rejected (for /health)."""
        async with self.state.reading() as db:
            rows = await db.fetchall(
                "SELECT webhook, SUM(CASE WHEN delivered_ns IS NULL AND rejected_ns IS NULL THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN delivered_ns IS NOT NULL THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN rejected_ns IS NOT NULL THEN 1 ELSE 0 END) FROM outbox GROUP BY webhook")
        return {w: {"pending": int(p or 0), "delivered": int(d or 0), "rejected": int(r or 0)} for w, p, d, r in rows}

    async def _run(self, w: Webhook) -> None:
        wake = self.outbox.wake[w.name]
        while True:
            try:
                delay = await self._deliver_next(w)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the delivery task die silently
                log.exception("webhook %s: delivery loop failed; retrying", w.name)
                delay = w.settings.retry_initial_s
            if delay > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: it can drop a cancellation on 3.11
                        await wake.wait()

    async def _deliver_next(self, w: Webhook) -> float:
        """Try the oldest undelivered change; return how long to wait before the next try (0: at once).

        The row is claimed (held by this collector) from the moment it is read until it is marked;
        another collector's forwarder finds the head taken and waits for its next poll.
        """
        async with self.state.claim() as db:
            row = await db.fetchone(
                "SELECT id, idempotency_key, action, body, attempts, next_attempt_ns FROM outbox WHERE id = "
                "(SELECT MIN(id) FROM outbox WHERE webhook = ? AND delivered_ns IS NULL AND rejected_ns IS NULL) "
                f"AND delivered_ns IS NULL AND rejected_ns IS NULL{db.dialect.skip_locked}", (w.name,))
            if row is None:
                return self.poll_interval_s
            row_id, key, action, body, attempts, next_ns = row
            now = time.time_ns()
            if next_ns > now:
                return min((next_ns - now) / 1e9, self.poll_interval_s)
            status, error = await self._post(w, bytes(body), key, action)
            stats = self.stats[w.name]
            if status is not None and 200 <= status < 300:
                await db.execute("UPDATE outbox SET delivered_ns = ?, attempts = attempts + 1, last_error = '' "
                                 "WHERE id = ?", (time.time_ns(), row_id))
                stats.delivered += 1
                return 0.0
            if status in REJECTING_STATUSES:
                await db.execute("UPDATE outbox SET rejected_ns = ?, attempts = attempts + 1, last_error = ? "
                                 "WHERE id = ?", (time.time_ns(), error, row_id))
                stats.rejected += 1
                log.error("webhook %s rejected %s (%s): set aside, not retried", w.name, key, error)
                return 0.0
            wait = backoff_s(attempts + 1, w.settings.retry_initial_s, w.settings.retry_max_s)
            await db.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt_ns = ?, last_error = ? "
                             "WHERE id = ?", (time.time_ns() + int(wait * 1e9), error, row_id))
        stats.failures += 1
        stats.last_error = error
        if attempts == 0 or attempts % 10 == 0:  # rate-limited: first failure of a change, then every 10th
            log.warning("webhook %s: %s not delivered (attempt %d): %s; retrying in %.1fs", w.name, key,
                        attempts + 1, error, wait)
        return wait

    async def _post(self, w: Webhook, body: bytes, key: str, action: str) -> tuple[int | None, str]:
        assert self._session is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Twin-Event": action,
                   "User-Agent": "facility-twin-collector"}
        if w.secret:
            headers["X-Twin-Signature"] = sign(w.secret, body)
        if w.authorization:
            headers["Authorization"] = w.authorization
        try:
            async with self._session.post(w.settings.url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=w.settings.timeout_s)) as resp:
                text = (await resp.text(errors="replace"))[:200]
                return resp.status, "" if resp.status < 300 else f"HTTP {resp.status}: {text}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]
