"""The `[[sources]] type = "opcua"` table: validated models whose errors name the key.

Field-level problems are reported by pydantic through `parse_model`; checks that involve several
keys (one of node_id/browse_path, security policy vs mode, files that must exist) run afterwards in
`load_source`, which raises ConfigError naming the exact key, e.g. `sources[1].points[4].node_id`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from pydantic import Field, field_validator

from runtime.errors import ConfigError
from runtime.secrets import read_secret, secret_file_error
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_PUBLISHING_INTERVAL_MS",
    "OpcUaPointConfig",
    "OpcUaSourceConfig",
    "expected_interval_s",
    "load_source",
    "parse_browse_path",
    "read_password",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEFAULT_PUBLISHING_INTERVAL_MS = 500.0
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 4.0
DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 30.0
_BROWSE_SEGMENT = re.compile(r"^(\d+):(.+)$")


def parse_browse_path(path: str) -> list[ua.QualifiedName]:
    """`0:Objects/2:Meter/2:VoltageL1` -> qualified names, starting below the Root folder.

    Every segment carries its namespace index, because a browse name without one is ambiguous
    across namespaces and is the commonest reason a path that "looks right" does not resolve.
    """
    segments = [s for s in path.strip().strip("/").split("/")]
    if not segments or segments == [""]:
        raise ValueError("browse path is empty")
    names = []
    for seg in segments:
        m = _BROWSE_SEGMENT.match(seg)
        if m is None:
            raise ValueError(
                f"segment {seg!r} must be <namespace index>:<browse name>, e.g. 2:Meter "
                "(full example: 0:Objects/2:Meter/2:VoltageL1)"
            )
        names.append(ua.QualifiedName(m.group(2), int(m.group(1))))
    return names


class OpcUaPointConfig(StrictModel):
    asset: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    unit: str = ""
    kind: Literal["measurement", "setpoint", "state", "counter", "waveform"] = "measurement"
    node_id: str = ""
    browse_path: str = ""
    sampling_interval_ms: float | None = Field(default=None, ge=0)
    deadband: float = Field(default=0.0, ge=0)
    scale: float = 1.0
    offset: float = 0.0
    sample_rate_hz: float = Field(default=0.0, ge=0)
    expected_interval_s: float | None = Field(default=None, gt=0)

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        if v:
            try:
                nid = ua.NodeId.from_string(v)
            except (ua.UaStringParsingError, ValueError) as exc:
                raise ValueError(
                    f"not a valid OPC-UA node id {v!r} (expected e.g. ns=2;s=Meter.VoltageL1, "
                    f"ns=3;i=1001 or nsu=urn:vendor:plc;s=Tag): {exc.__cause__ or exc}"
                ) from None
            if getattr(nid, "ServerIndex", 0):
                raise ValueError("node ids on other servers (srv=...) are not supported; use that server's endpoint")
        return v

    @field_validator("browse_path")
    @classmethod
    def _browse_path(cls, v: str) -> str:
        if v:
            parse_browse_path(v)
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0 (every value would read as the offset)")
        return v


class OpcUaSourceConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    endpoint: str
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: float = Field(default=DEFAULT_PUBLISHING_INTERVAL_MS, gt=0)
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, gt=0)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=300)
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate_file: str = ""
    private_key_file: str = ""
    server_certificate_file: str = ""
    application_uri: str = ""
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    backoff_initial_s: float = Field(default=DEFAULT_BACKOFF_INITIAL_S, gt=0)
    backoff_max_s: float = Field(default=DEFAULT_BACKOFF_MAX_S, gt=0, le=3600)
    points: list[OpcUaPointConfig] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not re.fullmatch(r"opc\.tcp://[^/@\s]+:\d{1,5}(/\S*)?", v):
            if "@" in v:
                raise ValueError("put credentials in username/password_file, not in the endpoint URL")
            raise ValueError(f"must look like opc.tcp://host:port/path, got {v!r}")
        return v


def _check_file(path: str, key: str) -> None:
    if key.endswith((".private_key_file", ".password_file")):  # may be readable only inside the unit
        if (error := secret_file_error(key, path)) is not None:
            raise ConfigError(error)
        return
    if not Path(path).is_file():
        raise ConfigError(f"{key}: file not found: {path}")


def _check_source(cfg: OpcUaSourceConfig, key: str) -> None:
    if (cfg.security_policy == "None") != (cfg.security_mode == "None"):
        which = "security_mode" if cfg.security_policy != "None" else "security_policy"
        raise ConfigError(
            f"{key}.{which}: security_policy = {cfg.security_policy!r} and security_mode = "
            f"{cfg.security_mode!r} do not fit: use both \"None\", or Basic256Sha256 with Sign or SignAndEncrypt"
        )
    if cfg.security_policy != "None":
        for field in ("certificate_file", "private_key_file"):
            if not getattr(cfg, field):
                raise ConfigError(f"{key}.{field}: required when security_policy = {cfg.security_policy!r}")
    elif cfg.certificate_file or cfg.private_key_file or cfg.server_certificate_file:
        raise ConfigError(f"{key}.security_policy: certificate files are given but security_policy = \"None\"")
    for field in ("certificate_file", "private_key_file", "server_certificate_file", "password_file"):
        if getattr(cfg, field):
            _check_file(getattr(cfg, field), f"{key}.{field}")
    if cfg.password_file and cfg.password_env:
        raise ConfigError(f"{key}.password_env: give password_file or password_env, not both")
    if (cfg.password_file or cfg.password_env) and not cfg.username:
        raise ConfigError(f"{key}.username: required when a password is given")
    if cfg.username and not (cfg.password_file or cfg.password_env):
        raise ConfigError(f"{key}.password_file: required when username is given (or use password_env)")
    if cfg.mode == "poll" and cfg.timeout_s >= cfg.poll_interval_s:
        raise ConfigError(
            f"{key}.timeout_s: must be below poll_interval_s ({cfg.poll_interval_s}) in poll mode, "
            "otherwise one slow read delays every following poll"
        )
    if cfg.backoff_max_s < cfg.backoff_initial_s:
        raise ConfigError(f"{key}.backoff_max_s: must be >= backoff_initial_s ({cfg.backoff_initial_s})")
    seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(cfg.points):
        pkey = f"{key}.points[{i}]"
        if bool(p.node_id) == bool(p.browse_path):
            raise ConfigError(f"{pkey}.node_id: give exactly one of node_id or browse_path")
        if p.kind == "waveform":
            if p.sample_rate_hz <= 0:
                raise ConfigError(f"{pkey}.sample_rate_hz: required (> 0) for a waveform point")
            if p.deadband:
                raise ConfigError(f"{pkey}.deadband: a deadband does not apply to waveform (array) values")
        elif p.sample_rate_hz:
            raise ConfigError(f"{pkey}.sample_rate_hz: only waveform points have a sample rate")
        if cfg.mode == "poll" and p.sampling_interval_ms is not None:
            raise ConfigError(f"{pkey}.sampling_interval_ms: only used in subscribe mode (poll mode reads "
                              "every poll_interval_s)")
        if cfg.mode == "poll" and p.deadband:
            raise ConfigError(f"{pkey}.deadband: the server applies the deadband, which needs mode = \"subscribe\"")
        if (p.asset, p.name) in seen:
            raise ConfigError(f"{pkey}.name: point {p.asset}/{p.name} is already defined by "
                              f"{key}.points[{seen[(p.asset, p.name)]}]")
        seen[(p.asset, p.name)] = i


def load_source(table: dict[str, Any], key: str) -> OpcUaSourceConfig:
    """Validate one `[[sources]]` table (without its `type` key); ConfigError names the bad key."""
    cfg = parse_model(OpcUaSourceConfig, table, key)
    _check_source(cfg, key)
    return cfg


def read_password(cfg: OpcUaSourceConfig, key: str) -> str:
    """The password from its file or environment variable; the value itself is never logged."""
    return read_secret(f"{key}.password", file=cfg.password_file, env=cfg.password_env)


def expected_interval_s(cfg: OpcUaSourceConfig, point: OpcUaPointConfig) -> float:
    """How often a value should arrive, for staleness: the slower of sampling and publishing.

    A deadband lets a steady value stay silent for longer; such points should set
    `expected_interval_s` explicitly (see README).
    """
    if point.expected_interval_s is not None:
        return point.expected_interval_s
    if cfg.mode == "poll":
        return cfg.poll_interval_s
    sampling_ms = point.sampling_interval_ms if point.sampling_interval_ms is not None else 0.0
    return max(sampling_ms, cfg.publishing_interval_ms) / 1000.0
