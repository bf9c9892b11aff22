"""InfluxDB point sinks: the v2 write API (influxdb-client) and the InfluxDB 1.x `/write` endpoint.

`InfluxV2Sink` speaks `/api/v2/write`, which InfluxDB 2.x, 3.x, 1.8+ (bucket "db/rp") and
VictoriaMetrics accept. `InfluxV1Sink` speaks the 1.x `/write?db=&rp=&precision=ns` endpoint and
can create its database. With no `[influx]` table the collector keeps the same points in its own
SQLite file (`collector.summary_store`).

A write is durable once the server answered 2xx. Errors map onto two classes (see
`collector.points.PointsRejectedError`):

    HTTP 400 / 413 / 422           the write is split in halves until the refused points are
                                   isolated; the rest is stored, then PointsRejectedError names
                                   the refused points (never retry those)
    refused, timeout, 401/403/404, SinkError: nothing is promised, retry the same points later
    429, 5xx                       (authentication and a missing database need an operator, but
                                   data must not be dropped while one is found)

Ingest writes lines made by `LineProtocolEncoder` straight from the agents' batches, several
agents' lines per write, with up to `write_concurrency` writes at once; each sink's HTTP
connection pool holds that many connections (plus one for the work-order annotations), so
concurrent writes never open and discard extra connections.

VictoriaMetrics stores each field as a metric `<measurement>_<field>` with the tags as labels; a
string field is stored as a number if it reads as one, else as 0 (its text is lost). It keeps the
duplicate samples of a resent write unless started with `-dedup.minScrapeInterval=1ms`, which
makes it keep one sample per timestamp like InfluxDB.

Tokens and passwords are read from a file or an environment variable (or given inline), kept in
`SecretStr`, and never appear in logs or error messages.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collector.points import (
    LineProtocolEncoder,
    Point,
    PointSink,
    PointsRejectedError,
    SinkStats,
    to_line_protocol,
)
from collector.summary_store import SqliteSummarySink
from runtime.errors import SinkError
from runtime.secrets import read_secret, secret_file_error
from runtime.tomlconfig import StrictModel

__all__ = [
    "DEFAULT_MAX_POINTS_PER_WRITE",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WRITE_CONCURRENCY",
    "InfluxSettings",
    "InfluxV1Sink",
    "InfluxV2Sink",
    "build_sink",
]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_POINTS_PER_WRITE = 5000
DEFAULT_WRITE_CONCURRENCY = 4
SPARE_CONNECTIONS = 1  # the work-order annotation sync writes beside ingest
REJECTING_STATUSES = frozenset({400, 413, 422})  # the points themselves are at fault
MAX_SERVER_MESSAGE = 300


def _key_error(key: str, message: str, value: object) -> ValidationError:
    """A validation error located at `key`, so parse_model reports `influx.<key>: <message>`."""
    return ValidationError.from_exception_data("InfluxSettings", [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(key,), input=value),
    ])


def _secret(inline: SecretStr | None, file: str, env: str, key: str) -> str:
    """Resolve a secret given inline, as a file, or as an environment variable name."""
    return read_secret(f"influx.{key}", file=file, env=env, inline=inline.get_secret_value() if inline else "")


class InfluxSettings(StrictModel):
    """The collector's `[influx]` table.

    Both: timeout_s, max_points_per_write (points per HTTP request) and write_concurrency (requests
    in flight at once; ingest groups the agents' batches into that many writes).
    api = "v2": url, bucket, org (InfluxDB 2.x; ignored by VictoriaMetrics and InfluxDB 1.8) and one
    of token / token_file / token_env, or `anonymous = true` for servers without authentication.
    api = "v1": url, database, optional retention_policy, optional username with one of
    password / password_file / password_env; create_database issues `CREATE DATABASE` once.
    """

    api: Literal["v2", "v1"] = "v2"
    url: str
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    max_points_per_write: int = Field(default=DEFAULT_MAX_POINTS_PER_WRITE, gt=0)
    write_concurrency: int = Field(default=DEFAULT_WRITE_CONCURRENCY, ge=1, le=64)
    # v2
    org: str = ""
    bucket: str = ""
    token: SecretStr | None = None
    token_file: str = ""
    token_env: str = ""
    anonymous: bool = False
    # v1
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: SecretStr | None = None
    password_file: str = ""
    password_env: str = ""
    create_database: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use token_file or username/password_file")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        return v.rstrip("/")

    @field_validator("token_file", "password_file")
    @classmethod
    def _readable(cls, v: str, info: ValidationInfo) -> str:
        # Under `check-config` in an operator's shell an unreadable secret is a warning (runtime/secrets.py).
        if (error := secret_file_error(f"influx.{info.field_name}", v)) is not None:
            raise ValueError(error.partition(": ")[2])
        return v

    @model_validator(mode="after")
    def _complete(self) -> InfluxSettings:
        tokens = [k for k in ("token", "token_file", "token_env") if getattr(self, k)]
        passwords = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(tokens) > 1:
            raise _key_error(tokens[1], f"set only one of {', '.join(tokens)}", None)
        if len(passwords) > 1:
            raise _key_error(passwords[1], f"set only one of {', '.join(passwords)}", None)
        if self.api == "v2":
            if not self.bucket:
                raise _key_error("bucket", 'required when api = "v2"', self.bucket)
            if not tokens and not self.anonymous:
                raise _key_error("token", 'required when api = "v2" (token, token_file or token_env; '
                                 "or anonymous = true for a server without authentication)", None)
            if tokens and self.anonymous:
                raise _key_error("anonymous", "contradicts the token that is set", self.anonymous)
            v1_keys = [k for k in ("database", "retention_policy", "username") if getattr(self, k)]
            if v1_keys or passwords:
                key = (v1_keys or passwords)[0]
                raise _key_error(key, 'only applies to api = "v1"', getattr(self, key))
        else:
            if not self.database:
                raise _key_error("database", 'required when api = "v1"', self.database)
            if passwords and not self.username:
                raise _key_error("username", "required when a password is set", self.username)
            v2_keys = [k for k in ("org", "bucket", "anonymous") if getattr(self, k)]
            if v2_keys or tokens:
                key = (v2_keys or tokens)[0]
                raise _key_error(key, 'only applies to api = "v2"', getattr(self, key))
        return self

    def token_value(self) -> str:
        """The v2 token ("" when anonymous). Raises ConfigError naming the key if unreadable."""
        return _secret(self.token, self.token_file, self.token_env, "token")

    def password_value(self) -> str:
        """The v1 password ("" when none). Raises ConfigError naming the key if unreadable."""
        return _secret(self.password, self.password_file, self.password_env, "password")


class _RejectedWrite(Exception):
    """A 400/413/422 answer: something in the body is refused (internal to the sinks)."""


def _server_message(body: bytes | str | None) -> str:
    """The error text of an InfluxDB answer (`{"error": ...}` in 1.x, `{"message": ...}` in 2.x)."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        text = str(doc.get("error") or doc.get("message") or text)
    text = " ".join(text.split())
    return text[:MAX_SERVER_MESSAGE] + ("..." if len(text) > MAX_SERVER_MESSAGE else "")


def _status_error(target: str, status: int, body: bytes | str | None) -> Exception:
    message = f"{target}: HTTP {status}: {_server_message(body) or 'no message'}"
    if status in REJECTING_STATUSES:
        return _RejectedWrite(message)
    if status in (401, 403):
        return SinkError(f"{message} (check the credentials in [influx])")
    return SinkError(message)


class _ChunkedWriter:
    """Chunking, rejection isolation and counting shared by both HTTP sinks.

    `post(body)` runs in a worker thread: it returns on 2xx, raises `_RejectedWrite` when the
    points are refused and `SinkError` for everything else.
    """

    def __init__(self, target: str, post: Callable[[str], None], max_points_per_write: int) -> None:
        self.target = target
        self.post = post
        self.max_points_per_write = max_points_per_write
        self.stats = SinkStats()

    async def write_lines(self, lines: Sequence[str], total: int | None = None) -> None:
        """Store `lines`; PointsRejectedError (with the refused lines' indices) after storing the rest."""
        rejected: list[tuple[int, str]] = []
        try:
            await asyncio.to_thread(self._write_chunks, lines, rejected)
        except SinkError as exc:
            self.stats.write_errors += 1
            self.stats.last_error = str(exc)
            raise
        self.stats.points_written += len(lines) - len(rejected)
        if rejected:
            rejected.sort()
            self.stats.points_rejected += len(rejected)
            first = rejected[0][1]
            self.stats.last_error = first
            raise PointsRejectedError(
                f"{self.target}: {len(rejected)} of {total or len(lines)} points rejected, the rest stored; "
                f"first: {first}", [(lines[i], why) for i, why in rejected], [i for i, _ in rejected])

    async def write(self, points: Sequence[Point]) -> None:
        """Encode `points` (those no store accepts are rejected here) and store the rest."""
        lines: list[str] = []
        positions: list[int] = []
        refused: list[tuple[int, str]] = []
        for i, p in enumerate(points):
            try:
                lines.append(to_line_protocol(p))
                positions.append(i)
            except ValueError as exc:
                refused.append((i, str(exc)))
        try:
            await self.write_lines(lines, total=len(points))
        except PointsRejectedError as exc:  # counted by write_lines
            server_refused = [(positions[i], why) for i, (_, why) in zip(exc.indices, exc.rejected, strict=True)]
        else:
            server_refused = []
        if refused:
            self.stats.points_rejected += len(refused)
        refused += server_refused  # those never sent first, then those the server refused
        if refused:
            first = refused[0][1]
            self.stats.last_error = first
            raise PointsRejectedError(
                f"{self.target}: {len(refused)} of {len(points)} points rejected, the rest stored; "
                f"first: {first}", [(points[i], why) for i, why in refused], [i for i, _ in refused])

    def _write_chunks(self, lines: Sequence[str], rejected: list[tuple[int, str]]) -> None:
        size = self.max_points_per_write
        for start in range(0, len(lines), size):
            self._write_isolating(lines, range(start, min(start + size, len(lines))), rejected)

    def _write_isolating(self, lines: Sequence[str], chunk: range, rejected: list[tuple[int, str]]) -> None:
        """Write `chunk`; on rejection split it in halves until the refused lines are single."""
        if not chunk:
            return
        try:
            self.post("\n".join(lines[i] for i in chunk))
        except _RejectedWrite as exc:
            if len(chunk) == 1:
                rejected.append((chunk[0], str(exc)))
                return
            mid = len(chunk) // 2
            self._write_isolating(lines, chunk[:mid], rejected)
            self._write_isolating(lines, chunk[mid:], rejected)


class InfluxV2Sink:
    """`/api/v2/write` through influxdb-client's synchronous write API, run in a worker thread."""

    def __init__(self, url: str, *, bucket: str, org: str = "", token: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_points_per_write: int = DEFAULT_MAX_POINTS_PER_WRITE,
                 write_concurrency: int = DEFAULT_WRITE_CONCURRENCY) -> None:
        self.target = f"InfluxDB v2 API at {url} (bucket {bucket})"
        self.write_concurrency = write_concurrency
        self.records_per_write = max_points_per_write
        self._bucket = bucket
        self._org = org or "-"  # servers that ignore org (1.8, VictoriaMetrics) still want the key
        self._client = InfluxDBClient(url=url, token=token or None, org=self._org,
                                      timeout=int(timeout_s * 1000),
                                      connection_pool_maxsize=write_concurrency + SPARE_CONNECTIONS)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._writer = _ChunkedWriter(self.target, self._post, max_points_per_write)
        self.stats = self._writer.stats

    def encoder(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> LineProtocolEncoder:
        return LineProtocolEncoder(agent_id, site, asset_types)

    async def write_records(self, records: Sequence[str]) -> None:
        """Store lines made by `LineProtocolEncoder`; see the module docstring for the errors raised."""
        await self._writer.write_lines(records)

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points`; see the module docstring for the errors raised."""
        await self._writer.write(points)

    def _post(self, body: str) -> None:
        try:
            self._write_api.write(bucket=self._bucket, org=self._org, record=body,
                                  write_precision=WritePrecision.NS)
        except ApiException as exc:
            raise _status_error(self.target, int(exc.status or 0), exc.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(f"{self.target}: {type(exc).__name__}: {_connection_reason(exc)}") from None

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


class InfluxV1Sink:
    """The InfluxDB 1.x `/write` endpoint (urllib3 in a worker thread), with Basic authentication."""

    def __init__(self, url: str, *, database: str, retention_policy: str = "", username: str = "",
                 password: str = "", create_database: bool = True,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_points_per_write: int = DEFAULT_MAX_POINTS_PER_WRITE,
                 write_concurrency: int = DEFAULT_WRITE_CONCURRENCY) -> None:
        self.target = f"InfluxDB v1 at {url} (database {database})"
        self.write_concurrency = write_concurrency
        self.records_per_write = max_points_per_write
        self._url = url
        self._database = database
        self._create_database = create_database
        self._database_ready = not create_database
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        self._write_url = f"{url}/write?{urllib.parse.urlencode(params)}"
        self._headers: dict[str, str] = {}
        if username:
            self._headers.update(urllib3.util.make_headers(basic_auth=f"{username}:{password}"))
        self._timeout = urllib3.Timeout(total=timeout_s)
        # One connection per concurrent write: with the default of one, every write beside
        # another opened a connection and threw it away ("Connection pool is full" warnings).
        self._pool = urllib3.PoolManager(retries=False, timeout=self._timeout,
                                         maxsize=write_concurrency + SPARE_CONNECTIONS)
        self._writer = _ChunkedWriter(self.target, self._post, max_points_per_write)
        self.stats = self._writer.stats

    def encoder(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> LineProtocolEncoder:
        return LineProtocolEncoder(agent_id, site, asset_types)

    async def write_records(self, records: Sequence[str]) -> None:
        """Store lines made by `LineProtocolEncoder` (creating the database first if configured)."""
        await self._writer.write_lines(records)

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points` (creating the database first if configured); see the module docstring."""
        await self._writer.write(points)

    def _request(self, url: str, body: bytes, content_type: str) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request("POST", url, body=body,
                                      headers={**self._headers, "Content-Type": content_type})
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(f"{self.target}: {type(exc).__name__}: {_connection_reason(exc)}") from None

    def _ensure_database(self) -> None:
        name = self._database.replace("\\", "\\\\").replace('"', '\\"')
        query = urllib.parse.urlencode({"q": f'CREATE DATABASE "{name}"'}).encode()
        resp = self._request(f"{self._url}/query", query, "application/x-www-form-urlencoded")
        if resp.status >= 300:
            raise SinkError(f"{self.target}: CREATE DATABASE failed: HTTP {resp.status}: "
                            f"{_server_message(resp.data)}")
        try:
            results = json.loads(resp.data or b"{}").get("results", [])
        except (ValueError, AttributeError):
            raise SinkError(f"{self.target}: CREATE DATABASE: unexpected answer "
                            f"{_server_message(resp.data)!r}") from None
        errors = [r["error"] for r in results if isinstance(r, dict) and r.get("error")]
        if errors:
            raise SinkError(f"{self.target}: CREATE DATABASE failed: {errors[0]}")
        self._database_ready = True

    def _post(self, body: str) -> None:
        if not self._database_ready:
            self._ensure_database()
        resp = self._request(self._write_url, body.encode("utf-8"), "text/plain; charset=utf-8")
        if 200 <= resp.status < 300:
            return
        if resp.status == 404 and self._create_database:
            self._database_ready = False  # dropped behind our back: create it on the next attempt
        raise _status_error(self.target, resp.status, resp.data)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.clear)


def _connection_reason(exc: BaseException) -> str:
    """A short reason for a transport failure (urllib3 nests the OS error in `reason`)."""
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:MAX_SERVER_MESSAGE]


def build_sink(settings: InfluxSettings | None, sqlite_path: Path) -> PointSink:
    """The sink the collector writes points to: InfluxDB when `[influx]` is set, else SQLite.

    Reads token/password files and environment variables now, so a missing secret is a
    ConfigError at start-up naming the key, not a write error later.
    """
    if settings is None:
        return SqliteSummarySink(sqlite_path)
    if settings.api == "v2":
        return InfluxV2Sink(settings.url, bucket=settings.bucket, org=settings.org,
                            token=settings.token_value(), timeout_s=settings.timeout_s,
                            max_points_per_write=settings.max_points_per_write,
                            write_concurrency=settings.write_concurrency)
    return InfluxV1Sink(settings.url, database=settings.database,
                        retention_policy=settings.retention_policy, username=settings.username,
                        password=settings.password_value(), create_database=settings.create_database,
                        timeout_s=settings.timeout_s, max_points_per_write=settings.max_points_per_write,
                        write_concurrency=settings.write_concurrency)
