"""The `[[sources]] type = "snmp"` table: agents, credentials, scalar OIDs, table columns, profiles.

A device is one SNMP agent (a UPS card, a PDU, a CRAC controller). It is read with GET for its
scalar points and with a GETBULK walk for each table; a table's rows become assets through
`index_map` (row index -> asset, or -> {asset, name, unit} for a table whose rows are different
quantities, such as ENTITY-SENSOR-MIB). A device may name a `profile` (profiles/*.toml: UPS-MIB,
ENTITY-SENSOR-MIB) instead of listing OIDs. Secrets (community, v3 keys) come from files or
environment variables. Every message names the key to fix, and all problems are reported at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from agent.connectors.snmp.profile import load_profile, profile_names
from runtime.errors import ConfigError
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "DEFAULTS",
    "Credentials",
    "IndexTarget",
    "SnmpColumn",
    "SnmpDevice",
    "SnmpPoint",
    "SnmpSourceConfig",
    "SnmpTable",
    "parse_oid",
    "parse_source",
]

Function = Literal["value", "rate", "increase"]
TextualConvention = Literal["auto", "DisplayString", "OctetHex", "PhysAddress", "DateAndTime", "TruthValue"]
AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["DES", "AES", "AES192", "AES256"]
OID = re.compile(r"^\.?[0-2](\.(0|[1-9][0-9]*))+$")
ENTITY_SENSOR_ENTRY = "1.3.6.1.2.1.99.1.1.1"


class DEFAULTS:
    """Default values of the source options, in one place."""

    PORT = 161
    INTERVAL_S = 30.0
    TIMEOUT_S = 2.0
    RETRIES = 1
    MAX_REPETITIONS = 25
    MAX_OIDS_PER_REQUEST = 32
    BACKOFF_MAX_S = 300.0


def parse_oid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip(".").split("."))


class SnmpColumn(StrictModel):
    """How one OID (a scalar, or a table column) becomes a point."""

    name: str = Field(min_length=1)
    oid: str
    unit: str = ""
    kind: Literal["measurement", "setpoint", "state"] = "measurement"
    function: Function | None = None  # default: rate for counters, value otherwise
    tc: TextualConvention = "auto"
    enum: dict[str, str] = {}  # value (integer, or OID for an OBJECT IDENTIFIER) -> name: a text reading
    true_values: list[int] = []  # integers meaning true: a boolean reading (e.g. upsOutputSource battery(5))
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(default=0.0, ge=0)


class SnmpPoint(SnmpColumn):
    """A scalar OID (with its instance, e.g. `...33.1.2.4.0`) -> a point of `asset` (default: the device's)."""

    asset: str | None = None


class IndexTarget(StrictModel):
    asset: str = Field(min_length=1)
    name: str | None = None  # the point name, for a table with a single column or an entity-sensor table
    unit: str | None = None


class SnmpTable(StrictModel):
    """A table walked with GETBULK: every column of every mapped row is a point of that row's asset."""

    name: str = ""
    kind: Literal["columns", "entity-sensor"] = "columns"
    oid: str | None = None  # the table entry (e.g. ...99.1.1.1); entity-sensor has it built in
    columns: list[SnmpColumn] = []
    index_map: dict[str, str | IndexTarget] = {}  # row index ("1", "1001", "1.3") -> asset or target


class SnmpDevice(StrictModel):
    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(default=DEFAULTS.PORT, ge=1, le=65535)
    version: Literal["2c", "3"] = "2c"
    community: str = ""
    community_file: str = ""
    community_env: str = ""
    user: str = ""
    auth_protocol: AuthProtocol = "SHA"
    auth_key_file: str = ""
    auth_key_env: str = ""
    priv_protocol: PrivProtocol = "AES"
    priv_key_file: str = ""
    priv_key_env: str = ""
    context: str = ""
    asset: str | None = None
    profile: str | None = None
    index_map: dict[str, str | IndexTarget] = {}  # for the tables of the profile
    interval_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    max_repetitions: int = Field(default=DEFAULTS.MAX_REPETITIONS, ge=1, le=200)
    max_oids_per_request: int = Field(default=DEFAULTS.MAX_OIDS_PER_REQUEST, ge=1, le=200)
    points: list[SnmpPoint] = []
    tables: list[SnmpTable] = []


class SnmpSourceConfig(StrictModel):
    name: str = Field(min_length=1)
    interval_s: float = Field(default=DEFAULTS.INTERVAL_S, gt=0)
    timeout_s: float = Field(default=DEFAULTS.TIMEOUT_S, gt=0)
    retries: int = Field(default=DEFAULTS.RETRIES, ge=0, le=10)
    backoff_max_s: float = Field(default=DEFAULTS.BACKOFF_MAX_S, gt=0)
    local_address: str | None = None  # source address of requests (e.g. the management interface)
    devices: list[SnmpDevice] = Field(min_length=1)

    def interval_for(self, d: SnmpDevice) -> float:
        return d.interval_s or self.interval_s

    def timeout_for(self, d: SnmpDevice) -> float:
        return d.timeout_s or self.timeout_s

    def retries_for(self, d: SnmpDevice) -> int:
        return self.retries if d.retries is None else d.retries


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a device authenticates with, secrets already read (never logged: repr hides them)."""

    version: Literal["2c", "3"]
    community: str = ""
    user: str = ""
    auth_protocol: str = "SHA"
    auth_key: str = ""
    priv_protocol: str = "AES"
    priv_key: str = ""
    context: str = ""

    def __repr__(self) -> str:
        return f"Credentials(version={self.version!r}, user={self.user!r})"


def _credentials(d: SnmpDevice, dkey: str, errors: list[str]) -> Credentials | None:
    try:
        if d.version == "2c":
            if d.user or d.auth_key_file or d.auth_key_env or d.priv_key_file or d.priv_key_env:
                errors.append(f'{dkey}.user: v3 options need version = "3"')
            community = read_secret(f"{dkey}.community", file=d.community_file, env=d.community_env,
                                    inline=d.community)
            if not community:
                errors.append(f"{dkey}.community: version 2c needs a community (community_file, community_env "
                              "or community)")
            return Credentials("2c", community=community)
        if d.community or d.community_file or d.community_env:
            errors.append(f'{dkey}.community: only for version = "2c"; v3 authenticates with user and keys')
        if not d.user:
            errors.append(f'{dkey}.user: version = "3" needs a user')
        auth = read_secret(f"{dkey}.auth_key", file=d.auth_key_file, env=d.auth_key_env)
        if not auth:
            errors.append(f"{dkey}.auth_key_file: version 3 needs an authentication key (auth_key_file or "
                          "auth_key_env); noAuthNoPriv is not supported")
        elif len(auth) < 8:
            errors.append(f"{dkey}.auth_key_file: SNMPv3 keys have at least 8 characters")
        priv = read_secret(f"{dkey}.priv_key", file=d.priv_key_file, env=d.priv_key_env)
        if not priv:
            errors.append(f"{dkey}.priv_key_file: version 3 runs authPriv and needs a privacy key (priv_key_file "
                          "or priv_key_env); unencrypted authNoPriv is not supported")
        elif len(priv) < 8:
            errors.append(f"{dkey}.priv_key_file: SNMPv3 keys have at least 8 characters")
        return Credentials("3", user=d.user, auth_protocol=d.auth_protocol, auth_key=auth,
                           priv_protocol=d.priv_protocol, priv_key=priv, context=d.context)
    except ConfigError as exc:
        errors.append(str(exc))
        return None


def _check_column(c: SnmpColumn, ckey: str, errors: list[str]) -> None:
    if not OID.match(c.oid):
        errors.append(f"{ckey}.oid: {c.oid!r} is not a numeric OID (e.g. 1.3.6.1.2.1.33.1.2.4.0)")
    if c.enum and c.true_values:
        errors.append(f"{ckey}.true_values: give enum (a text reading) or true_values (a boolean), not both")
    if c.tc != "auto" and (c.enum or c.true_values):
        errors.append(f"{ckey}.tc: {c.tc} decodes the value itself; remove enum/true_values")
    text = bool(c.enum) or c.tc in ("DisplayString", "OctetHex", "PhysAddress", "DateAndTime")
    if (text or c.true_values or c.tc == "TruthValue") and (c.scale != 1.0 or c.offset != 0.0):
        errors.append(f"{ckey}.{'scale' if c.scale != 1.0 else 'offset'}: only for numeric values")
    if c.function in ("rate", "increase") and (text or c.true_values or c.tc == "TruthValue"):
        errors.append(f'{ckey}.function: "{c.function}" needs a counter, not a text or boolean value')


def _check_table(t: SnmpTable, index_map: dict[str, str | IndexTarget], tkey: str, map_key: str,
                 errors: list[str]) -> None:
    if t.kind == "columns":
        if not t.columns:
            errors.append(f"{tkey}.columns: a table needs at least one column")
        if t.oid is not None:
            errors.append(f"{tkey}.oid: only for kind = \"entity-sensor\" (columns carry their own OIDs)")
        for j, c in enumerate(t.columns):
            _check_column(c, f"{tkey}.columns[{j}]", errors)
    else:
        if t.columns:
            errors.append(f'{tkey}.columns: kind = "entity-sensor" reads the entPhySensorTable columns itself')
        if t.oid is not None and not OID.match(t.oid):
            errors.append(f"{tkey}.oid: {t.oid!r} is not a numeric OID")
    if not index_map:
        errors.append(f"{map_key}: required: row index -> asset for every row to read")
    for index, target in index_map.items():
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", index):
            errors.append(f"{map_key}.{index}: a row index is numeric (e.g. \"1\" or \"1.3\")")
        named = isinstance(target, IndexTarget) and target.name is not None
        if t.kind == "entity-sensor" and not named:
            errors.append(f'{map_key}.{index}: an entity-sensor row is one sensor: give {{ asset = "...", '
                          'name = "..." }')
        if named and len(t.columns) > 1:
            errors.append(f"{map_key}.{index}.name: only for a table with one column (this one has "
                          f"{len(t.columns)})")


@dataclass(frozen=True, slots=True)
class ResolvedDevice:
    """A device with its profile expanded and its secrets read."""

    device: SnmpDevice
    credentials: Credentials
    points: tuple[SnmpPoint, ...]
    tables: tuple[tuple[SnmpTable, dict[str, str | IndexTarget]], ...]


def _resolve(d: SnmpDevice, dkey: str, errors: list[str]) -> ResolvedDevice | None:
    points = list(d.points)
    tables: list[tuple[SnmpTable, dict[str, str | IndexTarget], str, str]] = [
        (t, t.index_map, f"{dkey}.tables[{j}]", f"{dkey}.tables[{j}].index_map") for j, t in enumerate(d.tables)]
    if d.profile is not None:
        if d.profile not in profile_names():
            errors.append(f"{dkey}.profile: no profile {d.profile!r} (shipped: {profile_names()})")
        else:
            profile = load_profile(d.profile)
            points = [SnmpPoint(**p) for p in profile.get("points", [])] + points
            for t in profile.get("tables", []):
                tables.append((SnmpTable(**t), d.index_map, f"{dkey}.profile", f"{dkey}.index_map"))
    elif d.index_map:
        errors.append(f"{dkey}.index_map: only with a profile that has tables; a table of your own has its own "
                      "index_map")
    if not points and not tables:
        errors.append(f"{dkey}.points: the device reads nothing: add points, tables or a profile")
    for j, p in enumerate(d.points):
        _check_column(p, f"{dkey}.points[{j}]", errors)
    if d.asset is None and any(p.asset is None for p in points):
        errors.append(f"{dkey}.asset: required when a point has no asset of its own (profile points never do)")
    for t, index_map, tkey, map_key in tables:
        _check_table(t, index_map, tkey, map_key, errors)
    credentials = _credentials(d, dkey, errors)
    if credentials is None:
        return None
    return ResolvedDevice(d, credentials, tuple(points), tuple((t, m) for t, m, _, _ in tables))


def parse_source(table: dict[str, Any], key: str) -> tuple[SnmpSourceConfig, list[ResolvedDevice]]:
    """Validate one snmp `[[sources]]` table (without its `type`); ConfigError names every bad key."""
    cfg = parse_model(SnmpSourceConfig, table, key)
    errors: list[str] = []
    devices: list[ResolvedDevice] = []
    names: dict[str, int] = {}
    for i, d in enumerate(cfg.devices):
        dkey = f"{key}.devices[{i}]"
        if d.name in names:
            errors.append(f"{dkey}.name: device {d.name!r} is already devices[{names[d.name]}]")
        names.setdefault(d.name, i)
        timeout, retries, interval = cfg.timeout_for(d), cfg.retries_for(d), cfg.interval_for(d)
        if timeout * (retries + 1) >= interval:
            errors.append(f"{dkey}.interval_s: the poll interval ({interval:g} s) must exceed timeout_s x (retries + "
                          f"1) = {timeout * (retries + 1):g} s, or a silent device would stall its own polls")
        resolved = _resolve(d, dkey, errors)
        if resolved is not None:
            devices.append(resolved)
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return cfg, devices
