"""The collector's HTTP JSON API (aiohttp), described by collector/openapi.json (served at /openapi.json).

    GET  /health                          liveness, agents, work-order counts, ITSM outbox, dependencies;
                                          503 with the reasons while the sink or state database fails
    GET  /ready                           readiness: 200 when the sink is writable and the state database
                                          open, else 503 with the reasons
    GET  /assets                          every asset: state, health, open work orders
    GET  /assets/{asset}                  one asset's twin: state, latest values and vibration indicators,
                                          dependencies both ways with their states, open work orders
    GET  /work-orders                     filters: status (open|acknowledged|closed|active), asset, severity,
                                          rule, category, limit
    GET  /work-orders/{ref}               one work order with its context and events
    POST /work-orders/{ref}/acknowledge   {"note": "..."}                       (bearer token)
    POST /work-orders/{ref}/close         {"note": "..."}                       (bearer token); the answer
                                          carries a "warning" when the condition still holds
    POST /what-if                         {"rules": [...] | "rules_toml": "...", "since": "7d",
                                           "replace_all": false}                  (bearer token)

Binds 127.0.0.1 by default. Reads need no token (they expose what Grafana shows); changes need
`Authorization: Bearer <token>`. Each person has a token of their own: `[api.users]` maps a name to
the SHA-256 of that person's token (`twin-collector hash-token` prints it), and an acknowledge or
close records that name, whatever the body says. A shared token (`[api] token_file` or `token_env`,
compared in constant time) is for integrations: it must say `"by"`, which is recorded as given.
Without any token configured, changes are refused (403). Every error, unknown paths and methods
included, is JSON: `{"error": "..."}` with 400 (bad input), 401 (no or wrong token), 403, 404,
405 (with Allow), 409 (wrong state). Floats are rounded to 6 significant digits: more than any
sensor resolves, and no float32 noise (23.450000762939453 reads 23.45).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import Field, field_validator, model_validator

from collector.fleet import FleetTwin
from collector.whatif import parse_since, proposed_rules, run_whatif
from collector.workorders.collector_health import collector_health_rule
from collector.workorders.evaluate import Rule, parse_rules
from collector.workorders.rules import CATEGORIES, SEVERITIES
from collector.workorders.store import STATUSES, close_warning, parse_ref
from runtime.errors import ConfigError
from runtime.logs import RateLimitedLog
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel

__all__ = ["ApiServer", "ApiSettings", "build_app", "openapi_document", "read_api_token"]

log = logging.getLogger("twin.collector.api")

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
MAX_LIMIT = 1000
HEALTH_READ_TIMEOUT_S = 2.0
WHATIF_MAX_DAYS = 90.0


class ApiSettings(StrictModel):
    """`[api]`: the HTTP JSON API. Present = enabled."""

    listen: str = "127.0.0.1:8080"
    token_file: str = ""
    token_env: str = ""
    # person -> SHA-256 (hex) of their token: acknowledges and closes record the person
    users: dict[str, str] = Field(default_factory=dict)

    @field_validator("users")
    @classmethod
    def _user_hashes(cls, v: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, digest in v.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.@-]{0,63}", name):
                raise ValueError(f"{name!r}: a name is a letter then letters, digits, _ . @ - (at most 64)")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"{name}: must be 64 lowercase hex characters (twin-collector hash-token prints "
                                 "it)")
            if digest in seen:
                raise ValueError(f"{name}: same token as {seen[digest]}; every person needs their own")
            seen[digest] = name
        return v

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_token(self) -> ApiSettings:
        if self.token_file and self.token_env:
            raise ValueError("give at most one of token_file or token_env")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def openapi_document() -> dict[str, Any]:
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


SIGNIFICANT_DIGITS = 6


def rounded(data: Any) -> Any:
    """`data` with every float rounded to SIGNIFICANT_DIGITS (ints, such as timestamps, untouched)."""
    if isinstance(data, float):
        return float(f"{data:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: rounded(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [rounded(v) for v in data]
    return data


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(rounded(data), status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """aiohttp's own answers (unknown path, wrong method, body too large) as JSON like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return _error(405, f"{request.method} is not allowed on {request.path}; allowed: "
                          f"{', '.join(sorted(exc.allowed_methods))}", {"Allow": ",".join(sorted(exc.allowed_methods))})
        if isinstance(exc, web.HTTPNotFound):
            return _error(404, f"no such path: {request.path} (see /openapi.json)")
        return _error(exc.status, exc.reason)


class _Caller:
    """Who sent a change: a person (named by their token) or an integration with the shared token."""

    def __init__(self, person: str) -> None:
        self.person = person


Readiness = Callable[[], Awaitable[list[str]]]  # why the collector is not ready; empty when it is


class _Handlers:
    def __init__(self, fleet: FleetTwin, token: str, rules: Sequence[Rule],
                 health_extra: Callable[[], Awaitable[dict[str, Any]]] | None,
                 readiness: Readiness | None = None, users: Mapping[str, str] | None = None) -> None:
        self.fleet = fleet
        self.token = token
        self.rules = tuple(rules)
        self.health_extra = health_extra
        self.readiness = readiness
        self.people = {digest: name for name, digest in (users or {}).items()}
        self.openapi = openapi_document()

    def _caller(self, request: web.Request) -> _Caller | web.Response:
        if not self.token and not self.people:
            return _error(403, "changes are disabled: no [api] users, token_file or token_env configured")
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if presented:
            # A SHA-256 lookup leaks nothing useful through timing: finding a preimage is the hard part.
            person = self.people.get(hashlib.sha256(presented.encode()).hexdigest())
            if person is not None:
                return _Caller(person)
            if self.token and hmac.compare_digest(presented.encode(), self.token.encode()):
                return _Caller("")
        return _error(401, "missing or wrong bearer token")

    def _authorized(self, request: web.Request) -> web.Response | None:
        caller = self._caller(request)
        return caller if isinstance(caller, web.Response) else None

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body must be a JSON object")
        return body if isinstance(body, dict) else _error(400, "body must be a JSON object")

    async def openapi_json(self, request: web.Request) -> web.Response:
        return _json(self.openapi)

    async def health(self, request: web.Request) -> web.Response:
        reasons = await self.readiness() if self.readiness is not None else []
        counts: dict[str, int] | None = None
        agents: list[dict[str, Any]] | None = None
        try:  # a liveness answer must not wait for a state database that is stuck
            async with asyncio.timeout(HEALTH_READ_TIMEOUT_S):
                counts = await self.fleet.work_orders.counts()
                agents = [{k: a[k] for k in ("id", "site", "version", "connected", "last_seen_ns")}
                          for a in await self.fleet.agents()]
        except TimeoutError:
            if not reasons:
                reasons = [f"state database did not answer within {HEALTH_READ_TIMEOUT_S:g} s"]
        doc: dict[str, Any] = {"status": "failing" if reasons else "ok", "time_ns": time.time_ns(), "agents": agents,
                               "work_orders": counts, "rules": len(self.rules)}
        if reasons:
            doc["reasons"] = reasons
        if self.health_extra is not None:
            doc |= await self.health_extra()
        return _json(doc, 503 if reasons else 200)

    async def ready(self, request: web.Request) -> web.Response:
        reasons = await self.readiness() if self.readiness is not None else []
        if reasons:
            return _json({"status": "not ready", "reasons": reasons}, 503)
        return _json({"status": "ready"})

    async def assets(self, request: web.Request) -> web.Response:
        return _json(await self.fleet.asset_summaries())

    async def asset(self, request: web.Request) -> web.Response:
        doc = await self.fleet.twin(request.match_info["asset"])
        if doc is None:
            return _error(404, f"no asset {request.match_info['asset']!r}")
        return _json(doc)

    async def work_orders(self, request: web.Request) -> web.Response:
        q = request.query
        status, severity, category = q.get("status"), q.get("severity"), q.get("category")
        if status and status not in (*STATUSES, "active"):
            return _error(400, f"status must be one of {', '.join((*STATUSES, 'active'))}")
        if severity and severity not in SEVERITIES:
            return _error(400, f"severity must be one of {', '.join(SEVERITIES)}")
        if category and category not in CATEGORIES:
            return _error(400, f"category must be one of {', '.join(CATEGORIES)}")
        try:
            limit = int(q.get("limit", "200"))
        except ValueError:
            return _error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be between 1 and {MAX_LIMIT}")
        orders = await self.fleet.work_orders.list(status=status, asset=q.get("asset"), limit=limit,
                                                   severity=severity, rule=q.get("rule"), category=category)
        full = q.get("context") == "true"
        return _json([o.to_dict() if full else {k: v for k, v in o.to_dict().items() if k != "context"}
                      for o in orders])

    async def work_order(self, request: web.Request) -> web.Response:
        try:
            wo_id = parse_ref(request.match_info["ref"])
        except ValueError as exc:
            return _error(400, str(exc))
        wo = await self.fleet.work_orders.get(wo_id)
        events = await self.fleet.work_orders.event_list(wo_id)
        if wo is None:
            return _error(404, f"no work order {request.match_info['ref']}")
        return _json(wo.to_dict() | {"events": [e.to_dict() for e in events]})

    async def _transition(self, request: web.Request, action: str) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        who, note = body.get("by", caller.person), body.get("note", "")
        if not isinstance(note, str):
            return _error(400, "note: must be a string")
        if caller.person and who != caller.person:
            return _error(400, f"by: this token is {caller.person}'s, and that is what is recorded; leave \"by\" "
                          "out")
        if not isinstance(who, str) or not who.strip():
            return _error(400, "give \"by\" (who, a non-empty string): the shared token does not say who you are "
                          "(per-person tokens in [api.users] do)")
        try:
            wo_id = parse_ref(request.match_info["ref"])
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            if action == "acknowledge":
                wo = await self.fleet.acknowledge(wo_id, who.strip(), note)
            else:
                wo = await self.fleet.close_work_order(wo_id, who.strip(), note)
        except LookupError:
            return _error(404, f"no work order {request.match_info['ref']}")
        except ValueError as exc:
            return _error(409, str(exc))
        log.info("%s %s by %s via the API", wo.ref, wo.status, who)
        doc = {k: v for k, v in wo.to_dict().items() if k != "context"}
        if action == "close":
            rule = next((r for r in self.rules if r.name == wo.rule), None) or collector_health_rule(self.rules)
            warning = close_warning(wo, rule.reraise_after_s if rule.name == wo.rule else 0.0)
            if warning:
                doc["warning"] = warning
        return _json(doc)

    async def acknowledge(self, request: web.Request) -> web.Response:
        return await self._transition(request, "acknowledge")

    async def close(self, request: web.Request) -> web.Response:
        return await self._transition(request, "close")

    async def what_if(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        try:
            if "rules_toml" in body:
                if not isinstance(body["rules_toml"], str):
                    raise ConfigError("rules_toml: must be a string")
                try:
                    tables = tomllib.loads(body["rules_toml"]).get("rules", [])
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"rules_toml: not valid TOML: {exc}") from None
            else:
                tables = body.get("rules")
            if not isinstance(tables, list):
                raise ConfigError("give rules (a list of rule tables) or rules_toml (TOML with [[rules]])")
            replace_all = body.get("replace_all", False)
            if not isinstance(replace_all, bool):
                raise ConfigError("replace_all: must be true or false")
            proposed = parse_rules(tables) if replace_all else proposed_rules(self.rules, tables)
            since = parse_since(str(body.get("since", "7d")))
        except ConfigError as exc:
            return _error(400, str(exc))
        if since > WHATIF_MAX_DAYS * 86_400e9:
            return _error(400, f"since: at most {WHATIF_MAX_DAYS:g} days")
        if not isinstance(self.fleet.location, Path):
            return _error(409, "what-if replays the embedded SQLite state; with [state] url (PostgreSQL) it is "
                               "not available yet")
        now = time.time_ns()
        report = await asyncio.to_thread(run_whatif, self.fleet.location, self.rules, proposed, now - since, now)
        return _json(report.to_dict())


def build_app(fleet: FleetTwin, *, token: str = "", rules: Sequence[Rule] = (),
              health_extra: Callable[[], Awaitable[dict[str, Any]]] | None = None,
              readiness: Readiness | None = None, users: Mapping[str, str] | None = None) -> web.Application:
    h = _Handlers(fleet, token, rules, health_extra, readiness, users)
    app = web.Application(client_max_size=1024 * 1024, middlewares=[json_errors])
    app.router.add_get("/openapi.json", h.openapi_json)
    app.router.add_get("/health", h.health)
    app.router.add_get("/ready", h.ready)
    app.router.add_get("/assets", h.assets)
    app.router.add_get("/assets/{asset}", h.asset)
    app.router.add_get("/work-orders", h.work_orders)
    app.router.add_get("/work-orders/{ref}", h.work_order)
    app.router.add_post("/work-orders/{ref}/acknowledge", h.acknowledge)
    app.router.add_post("/work-orders/{ref}/close", h.close)
    app.router.add_post("/what-if", h.what_if)
    return app


class BadRequestLog(logging.Filter):
    """A request aiohttp cannot parse is the client's fault: one rate-limited line, no traceback.

    aiohttp logs each one as "Error handling request" with the parser's traceback (10k malformed
    requests made 10k tracebacks); the client already gets its 400. Errors of the API's own
    handlers are not HttpProcessingError and keep their traceback.
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._lines = RateLimitedLog(log, interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = (exc.message or type(exc).__name__).strip().splitlines()[0]
        self._lines.warning(f"bad-request:{type(exc).__name__}",
                            f"unparseable HTTP request from {peer} answered 400: {reason}")
        return False


class ApiServer:
    """The API on its own aiohttp runner inside the daemon's event loop."""

    def __init__(self, settings: ApiSettings, app: web.Application) -> None:
        self.settings = settings
        self.app = app
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._bad_requests = BadRequestLog()

    async def start(self) -> None:
        logging.getLogger("aiohttp.server").addFilter(self._bad_requests)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses  # the bound port, also when listen asks for port 0
        self.port = int(addresses[0][1]) if addresses else self.settings.port
        log.info("HTTP API on http://%s:%d", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        logging.getLogger("aiohttp.server").removeFilter(self._bad_requests)


def read_api_token(settings: ApiSettings, key: str = "api") -> str:
    return read_secret(f"{key}.token", file=settings.token_file, env=settings.token_env)
