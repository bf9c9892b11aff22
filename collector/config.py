"""The collector's TOML configuration, validated on load; errors name the key.

    [collector]   listen address, state_dir, TLS
    [influx]      optional: InfluxDB v2 API or v1 /write (absent = the embedded SQLite store)
    [[agents]]    id and token hash (or token file) per agent
    [[rules]]     work-order rules, one table each, `kind` selects the rule (collector/workorders/)
    [history]     what the rules keep of the past (retention, resolution)
    [state]       optional: a PostgreSQL state database shared by several collectors (collector/state/)
    [api]         optional: the HTTP JSON API (collector/api.py)
    [[webhooks]]  optional: ITSM webhooks that receive every work-order change (collector/itsm.py)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from collector.api import ApiSettings, read_api_token
from collector.influx import InfluxSettings
from collector.itsm import Webhook, WebhookSettings, load_webhooks
from collector.state import StateLocation
from collector.state.settings import StateSettings
from collector.workorders.evaluate import Rule, parse_rules
from collector.workorders.history import HistorySettings
from runtime.errors import ConfigError
from runtime.metrics_server import MetricsSettings
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel, load_toml, parse_model

__all__ = ["AgentCredential", "CollectorConfig", "CollectorSettings", "hash_token", "load_collector_config"]

DEFAULT_STATE_DIR = "/var/lib/twin-collector"


EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()


def hash_token(token: str) -> str:
    """Tokens are random secrets, so a plain SHA-256 is enough to keep them out of the config."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class CollectorSettings(StrictModel):
    listen: str = "127.0.0.1:50051"
    state_dir: str = DEFAULT_STATE_DIR
    site: str = "default"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""  # set to require client certificates (mTLS)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    sink_retry_max_s: float = Field(default=30.0, gt=0)
    # how often silence is judged (stale points, offline agents) and old history pruned
    check_interval_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", v):
            raise ValueError(f"must be host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _tls_pairs(self) -> CollectorSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.client_ca_file and not self.tls_cert_file:
            raise ValueError("client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        return self


class AgentCredential(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    token_sha256: str = ""
    token_file: str = ""  # a file holding the plain token (hashed on load)

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if v and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex characters (twin-collector hash-token prints it)")
        return v

    @model_validator(mode="after")
    def _one(self) -> AgentCredential:
        if bool(self.token_sha256) == bool(self.token_file):
            raise ValueError("give exactly one of token_sha256 or token_file")
        return self


class _CollectorFile(StrictModel):
    collector: CollectorSettings = CollectorSettings()
    influx: InfluxSettings | None = None
    agents: list[AgentCredential] = Field(min_length=1)
    rules: list[dict[str, Any]] = []  # validated per kind by parse_rules, so errors name rules[i].key
    history: HistorySettings = HistorySettings()
    state: StateSettings = StateSettings()
    api: ApiSettings | None = None
    webhooks: list[WebhookSettings] = []
    metrics: MetricsSettings = MetricsSettings()

    @model_validator(mode="after")
    def _unique(self) -> _CollectorFile:
        ids = [a.id for a in self.agents]
        for i, v in enumerate(ids):
            if ids.index(v) != i:
                raise ValueError(f"agents[{i}]: duplicate {v!r}")
        return self


@dataclass(frozen=True)
class CollectorConfig:
    path: Path | None
    collector: CollectorSettings
    influx: InfluxSettings | None
    token_hashes: dict[str, str]  # sha256 hex -> agent id
    rules: tuple[Rule, ...]
    history: HistorySettings = field(default_factory=HistorySettings)
    api: ApiSettings | None = None
    api_token: str = field(default="", repr=False)
    webhooks: tuple[Webhook, ...] = ()
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    state: StateSettings = field(default_factory=StateSettings)

    @property
    def state_dir(self) -> Path:
        return Path(self.collector.state_dir)

    @property
    def db_path(self) -> Path:
        """The embedded state file (used when `[state] url` is not set)."""
        return self.state_dir / "collector.sqlite"

    @property
    def state_database(self) -> StateLocation:
        """Where the fleet twin, work orders, outbox ... live: PostgreSQL or the embedded file.

        The database's password is read here, when a command opens the state, not when the file is
        loaded: the operator commands that open it (work-orders, assets) need it with PostgreSQL."""
        return self.state.location(self.db_path)


def build_collector_config(data: dict[str, Any], path: Path | None = None) -> CollectorConfig:
    parsed = parse_model(_CollectorFile, data)
    hashes: dict[str, str] = {}
    for i, a in enumerate(parsed.agents):
        digest = a.token_sha256 or hash_token(read_secret(f"agents[{i}].token", file=a.token_file))
        if digest == EMPTY_TOKEN_SHA256:
            raise ConfigError(f"agents[{i}].token_sha256: this is the hash of an empty token")
        if digest in hashes:
            raise ConfigError(f"agents[{i}]: same token as agent {hashes[digest]!r}; every agent needs its own")
        hashes[digest] = a.id
    rules = parse_rules(parsed.rules)
    api_token = read_api_token(parsed.api) if parsed.api else ""
    if parsed.state.url:
        from collector.state.postgres import require_asyncpg

        require_asyncpg("state.url")
    return CollectorConfig(path=path, collector=parsed.collector, influx=parsed.influx,
                           token_hashes=hashes, rules=rules, history=parsed.history, api=parsed.api,
                           api_token=api_token, webhooks=load_webhooks(parsed.webhooks), metrics=parsed.metrics,
                           state=parsed.state)


def load_collector_config(path: str | Path) -> CollectorConfig:
    p = Path(path)
    try:
        return build_collector_config(load_toml(p), p)
    except ConfigError as exc:
        raise ConfigError(f"{p}:\n{exc}") from None
