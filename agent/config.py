"""The agent's TOML configuration: validated on load, errors name the key.

Shape (see configs/agent.example.toml for every option):

    [agent]     id, site, state_dir, summary_interval_s, log_level
    [uplink]    collector address, token, TLS, queue bounds
    [[assets]]  id, type, name, depends_on, optional [assets.vibration]
    [[sources]] one table per connection; `type` picks the connector (modbus, opcua, mqtt), whose own
                model validates the rest of the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.connectors import build_connector
from agent.connectors.base import Connector
from agent.model import AssetSpec, PointSpec, VibrationSpec
from runtime.errors import ConfigError
from runtime.metrics_server import MetricsSettings
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel, load_toml, parse_model

__all__ = ["AgentConfig", "AgentSettings", "AssetSettings", "UplinkSettings", "load_agent_config"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEFAULT_STATE_DIR = "/var/lib/twin-agent"


class AgentSettings(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    site: str = Field(default="default", pattern=ID_PATTERN)
    state_dir: str = DEFAULT_STATE_DIR
    summary_interval_s: float = Field(default=10.0, gt=0, le=3600)
    # The latest values are written to disk this often (and at shutdown); the change log goes to the
    # uplink with every batch anyway. Each flush rewrites every point read since the last one.
    twin_flush_interval_s: float = Field(default=60.0, gt=0, le=3600)
    # status.json is rewritten this often, and whenever `twin-agent status` asks (SIGUSR1): at 1000
    # points it is ~120 KB, so rewriting it every interval would wear the gateway's flash.
    status_interval_s: float = Field(default=600.0, ge=1, le=86400)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class UplinkSettings(StrictModel):
    collector: str | list[str] = Field(description="host:port of the collector's gRPC endpoint, or a list of "
                                                   "them to fail over across (agent/uplink/addresses.py)")
    token: str = ""
    token_file: str = ""
    token_env: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    max_queue_mb: float = Field(default=64.0, gt=0)
    # While the disk refuses writes (full), closed intervals wait in memory up to this much; the
    # oldest beyond it are dropped and counted.
    max_overflow_mb: float = Field(default=8.0, gt=0)
    max_in_flight: int = Field(default=16, ge=1, le=1024)
    # gRPC message compression of the uplink: ~3x fewer bytes for ~1 us of CPU per summary (README
    # Performance); "none" for a collector on the same LAN.
    compression: Literal["none", "gzip", "deflate"] = "gzip"
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    # Batches (or the Hello) unanswered this long: the stream is closed and opened again. The collector
    # withholds acks while its sink is down, so this also reconnects every ack_timeout_s then (harmless).
    ack_timeout_s: float = Field(default=30.0, ge=1, le=3600)
    # At SIGTERM, how long a connected uplink may take to deliver the last batches (they stay queued
    # otherwise); keep it well below the unit's TimeoutStopSec (30 s).
    shutdown_drain_s: float = Field(default=5.0, ge=0, le=20)

    @field_validator("collector")
    @classmethod
    def _host_port(cls, v: str | list[str]) -> str | list[str]:
        addresses = [v] if isinstance(v, str) else v
        if not addresses:
            raise ValueError("give at least one host:port")
        for a in addresses:
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", a):
                raise ValueError(f"must be host:port (or a list of them), got {a!r}")
        if len(set(addresses)) != len(addresses):
            raise ValueError("lists an address twice")
        return v

    @property
    def collectors(self) -> tuple[str, ...]:
        """Every collector address, in the order given."""
        return (self.collector,) if isinstance(self.collector, str) else tuple(self.collector)

    @model_validator(mode="after")
    def _one_token_source(self) -> UplinkSettings:
        given = [k for k in ("token", "token_file", "token_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of token, token_file, token_env (prefer token_file)")
        if (self.cert_file or self.key_file) and not (self.cert_file and self.key_file):
            raise ValueError("cert_file and key_file go together (client certificate for mTLS)")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("ca_file/cert_file given but tls = false")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


class VibrationSettings(StrictModel):
    sensors: list[str] = Field(min_length=1, description="waveform point names of this asset")
    speed_point: str = ""
    nominal_rpm: float = Field(default=0.0, ge=0)
    bearing: str = ""
    bpfo: float = Field(default=0.0, ge=0)
    bpfi: float = Field(default=0.0, ge=0)
    bsf: float = Field(default=0.0, ge=0)
    ftf: float = Field(default=0.0, ge=0)
    machine_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    average_blocks: int = Field(default=8, ge=1, le=64,
                                description="consecutive blocks whose envelope spectra are averaged (1: off)")

    @model_validator(mode="after")
    def _bearing_or_multipliers(self) -> VibrationSettings:
        from agent.analytics.bearings import bearing_defects

        # Resolve now so an unknown model or incomplete multipliers fail at start-up, naming the key.
        bearing_defects(self.bearing, bpfo=self.bpfo, bpfi=self.bpfi, bsf=self.bsf, ftf=self.ftf)
        return self


class AssetSettings(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    name: str = ""
    depends_on: list[str] = []
    vibration: VibrationSettings | None = None


class _AgentFile(StrictModel):
    agent: AgentSettings
    uplink: UplinkSettings
    metrics: MetricsSettings = MetricsSettings()
    assets: list[AssetSettings] = []  # sources may declare more (MQTT topic templates); at least one overall
    sources: list[dict[str, Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_assets(self) -> _AgentFile:
        ids = [a.id for a in self.assets]
        for i, a in enumerate(self.assets):
            if ids.index(a.id) != i:
                raise ValueError(f"assets[{i}].id: duplicate asset id {a.id!r}")
        return self


@dataclass(frozen=True)
class AgentConfig:
    """The validated configuration plus the connectors it describes."""

    path: Path | None
    agent: AgentSettings
    uplink: UplinkSettings
    assets: tuple[AssetSpec, ...]
    connectors: tuple[Connector, ...]
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Resolved when the file is loaded, so an unreadable token file fails check-config and a reload
    # is refused (the running agent keeps going) rather than failing half-way.
    token: str = field(default="", repr=False)

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir)

    def asset(self, asset_id: str) -> AssetSpec:
        return next(a for a in self.assets if a.id == asset_id)


def _vibration_spec(v: VibrationSettings) -> VibrationSpec:
    return VibrationSpec(
        sensor_points=tuple(v.sensors), speed_point=v.speed_point, nominal_rpm=v.nominal_rpm,
        bearing=v.bearing, bpfo=v.bpfo, bpfi=v.bpfi, bsf=v.bsf, ftf=v.ftf,
        machine_group=v.machine_group, foundation=v.foundation, average_blocks=v.average_blocks,
    )


def _source_assets(connectors: list[Connector], explicit: list[AssetSettings]) -> list[AssetSettings]:
    """Assets a source declares itself (an MQTT topic template: one per device id, of one type).

    An asset also listed in [[assets]] keeps that entry (its name, depends_on, vibration), and
    the types must agree."""
    by_id = {a.id: a for a in explicit}
    declared_by: dict[str, str] = {}
    out: list[AssetSettings] = []
    for i, connector in enumerate(connectors):
        declare = getattr(connector, "declared_assets", None)
        for spec in declare() if declare is not None else ():
            if spec.id in by_id:
                if by_id[spec.id].type != spec.type:
                    raise ConfigError(f"sources[{i}] ({connector.name}): asset {spec.id!r} has type {spec.type!r} "
                                      f"in the source but {by_id[spec.id].type!r} in [[assets]]")
                continue
            if spec.id in declared_by:
                raise ConfigError(f"sources[{i}] ({connector.name}): asset {spec.id!r} is also declared by source "
                                  f"{declared_by[spec.id]!r}")
            declared_by[spec.id] = connector.name
            out.append(AssetSettings(id=spec.id, type=spec.type, name=spec.name))
    return out


def build_agent_config(data: dict[str, Any], path: Path | None = None) -> AgentConfig:
    parsed = parse_model(_AgentFile, data)
    for i, a in enumerate(parsed.assets):
        for j, dep in enumerate(a.depends_on):
            if dep == a.id:
                raise ConfigError(f"assets[{i}].depends_on[{j}]: an asset cannot depend on itself")
    connectors: list[Connector] = []
    names: set[str] = set()
    for i, table in enumerate(parsed.sources):
        key = f"sources[{i}]"
        connector = build_connector(table, key)
        if connector.name in names:
            raise ConfigError(f"{key}.name: duplicate source name {connector.name!r}")
        names.add(connector.name)
        connectors.append(connector)
    parsed_assets = [*parsed.assets, *_source_assets(connectors, parsed.assets)]
    if not parsed_assets:
        raise ConfigError("assets: declare at least one asset ([[assets]], or a source's topic template)")
    asset_ids = {a.id for a in parsed_assets}
    points_by_asset: dict[str, list[PointSpec]] = {a: [] for a in asset_ids}
    seen: dict[tuple[str, str], str] = {}
    for i, connector in enumerate(connectors):
        for p in connector.points():
            if p.asset not in asset_ids:
                raise ConfigError(
                    f"sources[{i}] ({connector.name}): point {p.name!r} refers to asset {p.asset!r}, "
                    f"which is not declared in [[assets]] (declared: {sorted(asset_ids)})"
                )
            if (p.asset, p.name) in seen:
                raise ConfigError(
                    f"sources[{i}] ({connector.name}): point {p.asset}/{p.name} is also defined by "
                    f"source {seen[(p.asset, p.name)]!r}"
                )
            seen[(p.asset, p.name)] = connector.name
            points_by_asset[p.asset].append(p)
    assets: list[AssetSpec] = []
    for i, a in enumerate(parsed_assets):
        vib = None
        if a.vibration is not None:
            names_here = {p.name for p in points_by_asset[a.id]}
            for j, s in enumerate(a.vibration.sensors):
                if s not in names_here:
                    raise ConfigError(f"assets[{i}].vibration.sensors[{j}]: no point {s!r} on asset {a.id}")
            if a.vibration.speed_point and a.vibration.speed_point not in names_here:
                raise ConfigError(f"assets[{i}].vibration.speed_point: no point "
                                  f"{a.vibration.speed_point!r} on asset {a.id}")
            vib = _vibration_spec(a.vibration)
        assets.append(AssetSpec(id=a.id, type=a.type, name=a.name or a.id, depends_on=tuple(a.depends_on),
                                vibration=vib, points=tuple(points_by_asset[a.id])))
    # depends_on may name assets of other agents (the collector joins the fleet), so it is not checked here.
    return AgentConfig(path=path, agent=parsed.agent, uplink=parsed.uplink, assets=tuple(assets),
                       connectors=tuple(connectors), metrics=parsed.metrics,
                       token=read_secret("uplink.token", file=parsed.uplink.token_file, env=parsed.uplink.token_env,
                                         inline=parsed.uplink.token))


def load_agent_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        return build_agent_config(load_toml(p), p)
    except ConfigError as exc:
        raise ConfigError(f"{p}:\n{exc}") from None
