"""A loopback TCP proxy that can turn into a silent partition, for link fault tests and benches.

`silent = True` keeps every connection open but drops all bytes both ways from then on, and new
connections are accepted but never reach the target: what a firewall dropping packets, a dead
switch or a NAT that lost its state looks like to both ends (no reset, no FIN, just nothing).
Runs its own event loop in a thread, so tests that wait synchronously can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.servers import LOOPBACK, free_port

__all__ = ["TcpProxy"]

CHUNK = 65536


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.silent = False
        self.dropped_bytes = 0
        self.forwarded_bytes = 0  # client -> target only
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.silent:
            await self._pump(reader, None)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer, upstream=True), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                    upstream: bool = False) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self.silent or writer is None:
                    self.dropped_bytes += len(data)
                    continue
                if upstream:
                    self.forwarded_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if writer is not None and not self.silent:
                writer.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
