"""The collector daemon: gRPC ingest server + sink + fleet twin, with a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import grpc

from collector.config import CollectorConfig
from collector.fleet import FleetTwin
from collector.influx import build_sink
from collector.ingest import IngestServicer
from protos.twin.v1 import twin_pb2_grpc

__all__ = ["CollectorDaemon"]

log = logging.getLogger("twin.collector")

SERVER_OPTIONS = [
    # Agents ping every 20 s to detect dead links; allow it.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


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
        self.fleet = FleetTwin(config.db_path, config.rules)
        self.sink = build_sink(config.influx, config.state_dir / "summaries.sqlite")
        self.servicer = IngestServicer(self.fleet, self.sink, config.token_hashes, config.collector.site,
                                       config.collector.sink_retry_max_s)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        await self.fleet.open()
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        twin_pb2_grpc.add_CollectorServicer_to_server(self.servicer, self.server)
        creds = server_credentials(self.config)
        listen = self.config.collector.listen
        self.port = (self.server.add_secure_port(listen, creds) if creds
                     else self.server.add_insecure_port(listen))
        await self.server.start()
        sink = "InfluxDB " + self.config.influx.api if self.config.influx else "embedded SQLite store"
        log.info("collector listening on %s (%s), sink: %s, %d agents, %d rules", listen,
                 "TLS" if creds else "plaintext", sink, len(self.config.token_hashes), len(self.config.rules))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=5.0)
            self.server = None
        await self.sink.close()
        await self.fleet.close()

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            log.info("collector stopping")
            await self.stop()
