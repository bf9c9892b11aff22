"""The collector daemon: gRPC ingest + sink + fleet twin, the periodic check, the ITSM forwarder and the
HTTP API, with a clean shutdown.

Components start in dependency order and stop in reverse: fleet twin (SQLite) first, then the
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
from collector.fleet import FleetTwin
from collector.influx import build_sink
from collector.ingest import IngestServicer
from collector.itsm import Forwarder, Outbox
from collector.prognosis.export import RemainingLifeExport
from collector.workorders.annotations import WorkOrderAnnotations
from protos.twin.v1 import twin_pb2_grpc
from runtime.cancellation import cancel_and_wait
from runtime.errors import SinkError
from runtime.logs import RateLimitedLog

__all__ = ["CollectorDaemon"]

log = logging.getLogger("twin.collector")

SERVER_OPTIONS = [
    # Agents ping every 20 s to detect dead links; allow it.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
PRUNE_INTERVAL_S = 3600.0
STREAM_GRACE_S = 5.0  # at shutdown: for streams to finish the group they are storing


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
        self.fleet = FleetTwin(config.db_path, config.rules, config.history, self.outbox)
        self.sink = build_sink(config.influx, config.state_dir / "summaries.sqlite")
        self.annotations = WorkOrderAnnotations(self.fleet, self.sink, config.collector.site)
        self.remaining_life = RemainingLifeExport(self.fleet, self.sink, config.collector.site)
        self.servicer = IngestServicer(self.fleet, self.sink, config.token_hashes, config.collector.site,
                                       config.collector.sink_retry_max_s, self.annotations)
        self._annotation_errors = RateLimitedLog(log, 300.0)
        self.forwarder = Forwarder(self.fleet, self.outbox) if config.webhooks else None
        self.api: ApiServer | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.check_failures = 0
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
                            health_extra=self._health)
            self.api = ApiServer(self.config.api, app)
            await self.api.start()
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        twin_pb2_grpc.add_CollectorServicer_to_server(self.servicer, self.server)
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
        log.info("collector listening on %s (%s), sink: %s, %d agents, %d rules, %d webhooks%s", listen,
                 "TLS" if creds else "plaintext", sink, len(self.config.token_hashes), len(self.config.rules),
                 len(self.config.webhooks), f", API on port {self.api.port}" if self.api else "")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.server is not None:
            self.servicer.close_streams()
            await self.server.stop(grace=STREAM_GRACE_S)
            self.server = None
            if not await self.servicer.wait_idle(STREAM_GRACE_S):
                log.warning("stream handlers still running after %gs; closing the stores anyway", STREAM_GRACE_S)
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
        """Silence rules (stale points, offline agents) need a clock, not a batch; work orders changed
        through the API or the CLI (or while the sink was down) and remaining-life assessments reach the
        sink; prune history hourly."""
        next_prune = 0.0
        while True:
            try:
                changed = await self.fleet.check()
                if changed:
                    await self.servicer.work_orders_changed(changed)
                try:
                    await self.annotations.sync()
                except SinkError as exc:
                    self._annotation_errors.warning("sink", f"work-order annotations not written yet: {exc}")
                try:
                    await self.remaining_life.sync()
                except SinkError as exc:
                    self._annotation_errors.warning("sink-rul", f"remaining-life assessments not written yet: {exc}")
                if time.monotonic() >= next_prune:
                    deleted = await self.fleet.prune_history()
                    if deleted:
                        log.info("pruned %d history rows older than %g days", deleted,
                                 self.config.history.retention_days)
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
            except asyncio.CancelledError:
                raise
            except Exception:
                self.check_failures += 1
                log.exception("periodic check failed (%d so far); trying again next interval", self.check_failures)
            await asyncio.sleep(self.config.collector.check_interval_s)

    async def _health(self) -> dict[str, Any]:
        totals = self.servicer.totals
        doc: dict[str, Any] = {
            "ingest": {"refused_streams": totals.refused_streams, "sink_errors": totals.sink_errors,
                       "per_agent": {a: {"connected": s.connected, "batches": s.batches, "duplicates": s.duplicates,
                                         "summaries": s.summaries} for a, s in totals.per_agent.items()}},
            "periodic_check_failures": self.check_failures,
        }
        if self.forwarder is not None:
            async with self.fleet.reading():
                doc["outbox"] = await self.forwarder.pending()
        return doc

