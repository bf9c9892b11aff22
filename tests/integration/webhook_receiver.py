"""A real HTTP server on loopback standing in for the ITSM tool the collector's webhooks post to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.servers import LOOPBACK


async def serve_webhook(handle: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int,
                        path: str = "/hook") -> web.AppRunner:
    """Answer POSTs to `path` with `handle` on LOOPBACK:`port`; stop it with `runner.cleanup()`."""
    app = web.Application()
    app.router.add_post(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    return runner
