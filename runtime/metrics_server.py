"""The Prometheus /metrics endpoint both daemons serve, and its `[metrics]` settings.

The endpoint runs in its own thread (prometheus_client's WSGI server), so it answers even while the
event loop is busy. It has no authentication, which is why it listens on loopback by default.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from pydantic import field_validator

from runtime.errors import ConfigError
from runtime.tomlconfig import StrictModel

__all__ = [
    "DEFAULT_AGENT_METRICS_LISTEN",
    "DEFAULT_COLLECTOR_METRICS_LISTEN",
    "MetricsServer",
    "MetricsSettings",
    "is_loopback",
    "parse_listen",
    "start_metrics_server",
]

log = logging.getLogger("twin.metrics")

DEFAULT_AGENT_METRICS_LISTEN = "127.0.0.1:9851"
DEFAULT_COLLECTOR_METRICS_LISTEN = "127.0.0.1:9852"
_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port). Raises ValueError with the reason."""
    match = _LISTEN.match(listen)
    if match is None:
        raise ValueError(f"must be host:port (or [ipv6]:port), got {listen!r}")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsSettings(StrictModel):
    """The `[metrics]` table of either daemon: `listen = "127.0.0.1:9851"`; empty = no endpoint."""

    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v:
            parse_listen(v)
        return v


@dataclass
class MetricsServer:
    """A running /metrics endpoint; `close()` stops it and frees the port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_metrics_server(registry: CollectorRegistry, listen: str, key: str = "metrics.listen") -> MetricsServer:
    """Serve `registry` at http://<listen>/metrics from a daemon thread (port 0 = any free port).

    Raises ConfigError naming `key` when the address is malformed or cannot be bound.
    """
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {listen}: {exc.strerror or exc}") from None
    running = MetricsServer(server, thread)
    if is_loopback(host):
        log.info("metrics at %s", running.url)
    else:
        log.warning("metrics at %s: not loopback, and the endpoint has no authentication", running.url)
    return running
