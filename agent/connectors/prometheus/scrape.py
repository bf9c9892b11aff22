"""HTTP transport: one GET of a target's exposition, with aiohttp's failures turned into ours.

This is the one place where aiohttp is imported and its exceptions caught: every failure leaves
as a `ScrapeFailed` (a SourceError) whose message is what an operator needs to read in the
point's BAD reason -- `HTTP 503 Service Unavailable`, `connection refused`, `timeout after 5 s`,
`body larger than 16 MiB`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from runtime.errors import ConnectError, SourceError

__all__ = ["ACCEPT", "Scrape", "ScrapeFailed", "Scraper", "TargetDown"]

ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
"""What Prometheus itself asks for: OpenMetrics if the exporter has it, else the text format."""


class ScrapeFailed(SourceError):
    """The target answered, but not with a usable exposition (HTTP error status, body too large)."""


class TargetDown(ConnectError):
    """No answer from the target (refused, reset, DNS, timeout)."""


@dataclass(frozen=True, slots=True)
class Scrape:
    text: str
    content_type: str
    received_ns: int  # wall clock when the body had arrived
    seconds: float  # how long the scrape took


class Scraper:
    """GETs of one target over a session shared by the source. Create inside the event loop."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout_s: float, max_body_bytes: int,
                 bearer_token: str | None = None) -> None:
        self.url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_body = max_body_bytes
        self._headers = {"Accept": ACCEPT, "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"

    async def get(self) -> Scrape:
        started = time.monotonic()
        try:
            async with self._session.get(self.url, headers=self._headers, timeout=self._timeout,
                                         allow_redirects=True) as resp:
                if resp.status >= 400:
                    raise ScrapeFailed(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                if resp.content_length is not None and resp.content_length > self._max_body:
                    raise ScrapeFailed(f"body of {resp.content_length} bytes is larger than the limit")
                body = await resp.content.read(self._max_body + 1)
                if len(body) > self._max_body:
                    raise ScrapeFailed(f"body larger than {self._max_body} bytes")
                text = body.decode(resp.charset or "utf-8", errors="replace")
                content_type = resp.headers.get("Content-Type", "text/plain")
        except TimeoutError:
            raise TargetDown(f"timeout after {self._timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            reason = "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else str(exc.os_error)
            raise TargetDown(reason) from None
        except aiohttp.ServerDisconnectedError:
            raise TargetDown("server disconnected") from None
        except aiohttp.ClientPayloadError as exc:
            raise TargetDown(f"body cut short: {exc}") from None
        except aiohttp.ClientError as exc:
            raise TargetDown(f"{type(exc).__name__}: {exc}") from None
        return Scrape(text, content_type, time.time_ns(), time.monotonic() - started)
