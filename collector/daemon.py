"""The collector daemon: gRPC ingest + sink + fleet twin, the periodic check, the ITSM forwarder and the
HTTP API, with a clean shutdown.

The periodic check also keeps the collector honest about itself: outages of its sink or state database
(collector/health.py) become its own incident (collector/workorders/collector_health.py) instead of
field work orders, agents are judged offline from their streams (never while the collector fails),
and each asset's link and condition are refreshed and written to the sink (`asset_state`).

Components start in dependency order and stop in reverse: fleet twin (its state database) first, then the
forwarder, the API and the gRPC server; `stop` reverses `start`. Background loops are started with
`_spawn`, which names the task and keeps it for shutdown; each loop catches and logs its own failures
so none dies silently. To add a component (e.g. a metrics endpoint), start it in `start`, stop it
in `stop`, and put any loop in `_spawn`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc

from collector.api import ApiServer, build_app
from collector.config import CollectorConfig
from collector.fleet import AssetStatus, FleetTwin
from collector.health import CollectorHealth
from collector.influx import build_sink
from collector.ingest import MAX_MESSAGE_BYTES, IngestServicer, register_ingest
from collector.itsm import Forwarder, Outbox
from collector.points import PointsRejectedError, asset_status_point
from collector.prognosis.export import RemainingLifeExport
from collector.workorders.annotations import WorkOrderAnnotations
from collector.workorders.collector_health import Outage, collector_health_rule, outage_findings
from runtime.cancellation import cancel_and_wait
from runtime.errors import SinkError
from runtime.logs import RateLimitedLog

__all__ = ["CollectorDaemon"]

log = logging.getLogger("twin.collector")

SERVER_OPTIONS = [
    # Agents ping every 10 s to detect dead links (agent/uplink/client.py); allow it. The collector
    # pings too, so the stream of an agent that froze or went silent behind a partition is closed
    # (and the agent shown disconnected) within ~40 s instead of the 2 h gRPC default.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),  # what gRPC >= 1.5x actually waits for a ping's answer
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # A larger message is refused (RESOURCE_EXHAUSTED) as soon as its length prefix arrives.
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Each stream's HTTP/2 receive window stays at 32 KiB instead of growing to megabytes: what a
    # thousand agents may have in flight in the collector's buffers stays ~32 MB, and the ingest
    # receive budget (collector/ingest.py) decides how much is read. One agent still gets ~650 KB/s
    # through a 50 ms link: a backlog of ~7,000 summaries/s.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 32 * 1024),
]
PRUNE_INTERVAL_S = 3600.0
ASSET_STATUS_REFRESH_S = 300.0  # every asset's link and condition reach the sink at least this often
READY_PROBE_TIMEOUT_S = 2.0
STREAM_GRACE_S = 5.0  # at shutdown: for streams to finish the group they are storing


def sink_names(cfg: CollectorConfig) -> tuple[str, str]:
    """(short name, which one) of the configured sink, for logs, /ready and the collector's incident."""
    influx = cfg.influx
    if influx is None:
        return "embedded summary store", str(cfg.state_dir / "summaries.sqlite")
    where = f"database {influx.database}" if influx.api == "v1" else f"bucket {influx.bucket}"
    return "InfluxDB", f"InfluxDB {influx.api} at {influx.url} ({where})"


def server_credentials(cfg: CollectorConfig) -> grpc.ServerCredentials | None:
    c = cfg.collector
    if not c.tls_cert_file:
        return None
    key, cert = Path(c.tls_key_file).read_bytes(), Path(c.tls_cert_file).read_bytes()
    ca = Path(c.client_ca_file).read_bytes() if c.client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


class CollectorDaemon:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.outbox = Outbox(config.webhooks)
        self.fleet = FleetTwin(config.state_database, config.rules, config.history, self.outbox)
        self.sink = build_sink(config.influx, config.state_dir / "summaries.sqlite")
        self.health = CollectorHealth(*sink_names(config), self.fleet.state.location)
        self.annotations = WorkOrderAnnotations(self.fleet.state, self.sink, config.collector.site)
        self.remaining_life = RemainingLifeExport(self.fleet.state, self.sink, config.collector.site)
        self.servicer = IngestServicer(self.fleet, self.sink, config.token_hashes, config.collector.site,
                                       config.collector.sink_retry_max_s, self.annotations, self.health)
        self.incident_rule = collector_health_rule(config.rules)
        self._incidents_due: list[Outage] = []  # outages whose incident is not recorded yet
        self._incidents_raised: set[tuple[str, int]] = set()  # (dependency, since_ns) already raised
        self._status_due: dict[str, AssetStatus] = {}
        self._status_refresh_at = 0.0
        self._annotation_errors = RateLimitedLog(log, 300.0)
        self.forwarder = Forwarder(self.fleet.state, self.outbox) if config.webhooks else None
        self.api: ApiServer | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.check_failures = 0
        self.checks_done = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.running = asyncio.Event()  # set once every component serves

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        await self.fleet.open()
        if self.forwarder is not None:
            await self.forwarder.start()
        if self.config.api is not None:
            app = build_app(self.fleet, token=self.config.api_token, rules=self.config.rules,
                            health_extra=self._health, readiness=self.readiness, users=self.config.api.users)
            self.api = ApiServer(self.config.api, app)
            await self.api.start()
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        register_ingest(self.server, self.servicer)
        creds = server_credentials(self.config)
        listen = self.config.collector.listen
        self.port = (self.server.add_secure_port(listen, creds) if creds
                     else self.server.add_insecure_port(listen))
        await self.server.start()
        host = listen.rsplit(":", 1)[0].strip("[]")
        if creds is None and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("gRPC on %s without TLS: agent tokens cross the network in clear; set tls_cert_file "
                        "and tls_key_file (see configs/collector.example.toml)", listen)
        self._spawn("periodic-check", self._periodic_check())
        self.running.set()
        sink = "InfluxDB " + self.config.influx.api if self.config.influx else "embedded SQLite store"
        log.info("collector listening on %s (%s), sink: %s, state: %s, %d agents, %d rules, %d webhooks%s", listen,
                 "TLS" if creds else "plaintext", sink, self.fleet.state.location, len(self.config.token_hashes),
                 len(self.config.rules), len(self.config.webhooks),
                 f", API on port {self.api.port}" if self.api else "")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.server is not None:
            self.servicer.close_streams()
            await self.server.stop(grace=STREAM_GRACE_S)
            self.server = None
            if not await self.servicer.wait_idle(STREAM_GRACE_S):
                log.warning("stream handlers still running after %gs; closing the stores anyway", STREAM_GRACE_S)
        await self.servicer.close()
        if self.api is not None:
            await self.api.stop()
            self.api = None
        if self.forwarder is not None:
            await self.forwarder.stop()
        await self.sink.close()
        await self.fleet.close()

    async def run(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            log.info("collector stopping")
            await self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def _periodic_check(self) -> None:
        """Every check_interval_s: the collector's own incidents, offline agents and work orders due to be
        raised again, each asset's link and condition (to the sink too), work orders changed through the
        API or the CLI (or while the sink was down) to the sink; history pruned hourly."""
        next_prune = 0.0
        while True:
            try:
                await self.check_once()
                self.checks_done += 1
                if time.monotonic() >= next_prune:
                    deleted = await self.fleet.prune_history()
                    if deleted:
                        log.info("pruned %d history rows older than %g days", deleted,
                                 self.config.history.retention_days)
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.check_failures += 1
                if self.fleet.state.is_transient(exc):  # the state database, not a bug of the check
                    self.health.state.failed(f"{type(exc).__name__}: {exc}")
                log.exception("periodic check failed (%d so far); trying again next interval", self.check_failures)
            await asyncio.sleep(self.config.collector.check_interval_s)

    async def check_once(self) -> None:
        now = time.time_ns()
        changed = await self._record_incidents(now)
        presence = self.servicer.presence(now)
        changed += await self.fleet.check(now, presence, judge_agents=self.health.ready(),
                                          watch_since_ns=self.health.watch_since_ns())
        statuses = await self.fleet.refresh_asset_status(now, presence)
        self.health.state.succeeded(self.servicer.held_batches())
        if changed:
            await self.servicer.work_orders_changed(changed)
        await self._write_asset_status(statuses, now)
        try:
            await self.annotations.sync()
        except SinkError as exc:
            self._annotation_errors.warning("sink", f"work-order annotations not written yet: {exc}")
        try:
            await self.remaining_life.sync()
        except SinkError as exc:
            self._annotation_errors.warning("sink-rul", f"remaining-life assessments not written yet: {exc}")

    async def _record_incidents(self, now: int) -> list[Any]:
        """The collector's own outages as its incident: raised once per outage that lasted the rule's
        min_duration_s, cleared when it ended. Kept until the state database takes them."""
        for dep in self.health.dependencies:
            self._incidents_due += dep.take_finished()
        due = list(self._incidents_due)
        ongoing = [d.current for d in self.health.dependencies if d.current is not None]
        findings = []
        for outage in [*due, *ongoing]:
            for f in outage_findings(self.incident_rule, outage, now):
                key = (outage.dependency, outage.since_ns)
                if f.action == "raise" and key in self._incidents_raised:
                    continue
                findings.append((key, f))
        changed = await self.fleet.apply_findings([f for _, f in findings])
        for key, f in findings:
            if f.action == "raise":
                self._incidents_raised.add(key)
            else:
                self._incidents_raised.discard(key)
        self._incidents_due = [o for o in self._incidents_due if o not in due]
        return changed

    async def _write_asset_status(self, changed: list[AssetStatus], now: int) -> None:
        """Each asset's link and condition to the sink: on change, and every asset every few minutes."""
        for st in changed:
            self._status_due[st.asset] = st
        if time.monotonic() >= self._status_refresh_at:
            for st in await self.fleet.asset_statuses():
                self._status_due.setdefault(st.asset, st)
            self._status_refresh_at = time.monotonic() + ASSET_STATUS_REFRESH_S
        if not self._status_due:
            return
        points = [asset_status_point(site=st.site or self.config.collector.site, asset=st.asset, link=st.link,
                                     link_reason=st.link_reason, condition=st.condition,
                                     condition_reason=st.condition_reason, ts_ns=now)
                  for st in self._status_due.values()]
        try:
            await self.sink.write(points)
        except PointsRejectedError as exc:
            log.warning("%d asset status points rejected by the sink: %s", len(exc.rejected), exc)
        except SinkError as exc:
            self.health.sink.failed(str(exc).removeprefix(f"{self.health.sink.label}: "))
            return  # kept for the next check
        else:
            self.health.sink.succeeded(self.servicer.held_batches())
        self._status_due.clear()

    async def readiness(self) -> list[str]:
        """Why the collector is not ready (empty: ready): its sink or state database failing, or closed."""
        reasons = self.health.reasons()
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
                async with self.fleet.reading() as db:
                    await db.fetchval("SELECT 1")
        except TimeoutError:
            reasons.append(f"state database {self.fleet.state.location} did not answer within "
                           f"{READY_PROBE_TIMEOUT_S:g} s")
        except Exception as exc:
            if not self.health.state.failing:
                reasons.append(f"state database {self.fleet.state.location} cannot be read: "
                               f"{type(exc).__name__}: {exc}")
        return reasons

    async def _health(self) -> dict[str, Any]:
        totals = self.servicer.totals
        doc: dict[str, Any] = {
            "ingest": {"refused_streams": totals.refused_streams, "sink_errors": totals.sink_errors,
                       "per_agent": {a: {"connected": s.connected, "link": s.link(), "batches": s.batches,
                                         "duplicates": s.duplicates, "summaries": s.summaries}
                                     for a, s in totals.per_agent.items()}},
            "periodic_checks": self.checks_done,
            "periodic_check_failures": self.check_failures,
            "dependencies": {d.dependency: {"label": d.label, "failing": d.failing,
                                            "since_ns": d.current.since_ns if d.current else None,
                                            "outages": d.outages_total, "late_batches": d.late_batches_total}
                             for d in self.health.dependencies},
        }
        if self.forwarder is not None:
            try:  # /health must answer while the state database is stuck
                async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
                    doc["outbox"] = await self.forwarder.pending()
            except TimeoutError:
                doc["outbox"] = None
        return doc

