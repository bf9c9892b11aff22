"""Process lifecycle shared by twin-agent and twin-collector: signals, reload, metrics, systemd.

SIGTERM/SIGINT stop the daemon cleanly. SIGHUP reloads: the file is validated first, and a broken
one is logged while the running configuration stays; a valid one stops the daemon's components and
starts new ones in-process. Everything durable is on disk (the agent's queue, the collector's
SQLite), so a reload loses nothing. The Prometheus endpoint is rebuilt for each configuration and
the systemd watchdog runs across reloads.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from runtime.errors import ConfigError
from runtime.metrics_server import MetricsSettings, start_metrics_server
from runtime.systemd_notify import Notifier

__all__ = ["Daemon", "serve"]

log = logging.getLogger("twin.service")


class Daemon(Protocol):
    running: asyncio.Event  # set once the daemon serves

    async def run(self) -> None: ...
    def request_stop(self) -> None: ...


C = TypeVar("C")
D = TypeVar("D", bound=Daemon)


class _Hooks(Generic[C]):
    def __init__(self) -> None:
        self.stopping = False
        self.next_config: C | None = None


async def serve(
    config: C,
    load: Callable[[], C],
    make_daemon: Callable[[C], D],
    metrics: Callable[[C], MetricsSettings],
    registry: Callable[[D], CollectorRegistry],
) -> None:
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    watchdog = asyncio.create_task(notifier.run_watchdog())
    try:
        while True:
            daemon = make_daemon(config)
            hooks: _Hooks[C] = _Hooks()

            def on_stop(d: D = daemon, h: _Hooks[C] = hooks) -> None:
                h.stopping = True
                d.request_stop()

            def on_reload(d: D = daemon, h: _Hooks[C] = hooks) -> None:
                try:
                    h.next_config = load()
                except ConfigError as exc:
                    log.error("reload refused, the running configuration stays: %s", exc)
                    return
                log.info("reloading the configuration")
                notifier.reloading()
                d.request_stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_stop)
            loop.add_signal_handler(signal.SIGHUP, on_reload)
            runner = asyncio.create_task(daemon.run())
            up = asyncio.create_task(daemon.running.wait())
            await asyncio.wait({runner, up}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            endpoint = None
            if daemon.running.is_set():
                notifier.ready()
                listen = metrics(config).listen
                endpoint = start_metrics_server(registry(daemon), listen) if listen else None
            try:
                await runner
            finally:
                if endpoint is not None:
                    endpoint.close()
            if hooks.stopping or hooks.next_config is None:
                return
            config = hooks.next_config
    finally:
        notifier.stopping()
        watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        notifier.close()
