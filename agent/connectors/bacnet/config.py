"""The `[[sources]] type = "bacnet"` table: the agent's BACnet/IP address, the devices and their points.

The agent is a BACnet device itself (`device_instance`) bound to one BACnet/IP address
(`local_address`, `ip[/prefix][:port]`; the prefix gives the broadcast address used for Who-Is
when a device has no `address`). Points name a device instance and an object
(`analog-input,1`, or the short `AI:1`); properties read are present-value, status-flags,
out-of-service and reliability, plus units and state texts once per connection. Every message
names the key to fix, and all problems are reported at once.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field

from runtime.errors import ConfigError
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "DEFAULTS",
    "OBJECT_TYPES",
    "BacnetDevice",
    "BacnetPoint",
    "BacnetSourceConfig",
    "parse_address",
    "parse_object",
    "parse_source",
]

MAX_INSTANCE = 4194302  # 2^22 - 2; 4194303 is the wildcard
DEFAULT_PORT = 47808  # 0xBAC0
OBJECT_TYPES = {  # the object types read as points, with their usual abbreviations
    "analog-input": "AI", "analog-output": "AO", "analog-value": "AV",
    "binary-input": "BI", "binary-output": "BO", "binary-value": "BV",
    "multi-state-input": "MSI", "multi-state-output": "MSO", "multi-state-value": "MSV",
}
ABBREVIATIONS = {abbr: name for name, abbr in OBJECT_TYPES.items()}
Mode = Literal["auto", "cov", "poll"]


class DEFAULTS:
    """Default values of the source options, in one place."""

    DEVICE_INSTANCE = 4194300
    POLL_INTERVAL_S = 10.0
    APDU_TIMEOUT_S = 3.0
    APDU_RETRIES = 2
    DISCOVERY_TIMEOUT_S = 3.0
    COV_LIFETIME_S = 300
    BACKOFF_MAX_S = 60.0


def parse_object(text: str) -> tuple[str, int]:
    """`analog-input,1`, `analog-input:1`, `AI:1` or `ai,1` -> ("analog-input", 1); ValueError otherwise."""
    m = re.fullmatch(r"\s*([A-Za-z-]+)\s*[,:]\s*([0-9]+)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not an object id like \"analog-input,1\" or \"AI:1\"")
    kind, instance = m.group(1), int(m.group(2))
    kind = ABBREVIATIONS.get(kind.upper(), kind.lower())
    if kind not in OBJECT_TYPES:
        raise ValueError(f"{m.group(1)!r} is not a readable object type ({', '.join(OBJECT_TYPES)} or "
                         f"{', '.join(ABBREVIATIONS)})")
    if instance > MAX_INSTANCE:
        raise ValueError(f"object instance {instance} is above {MAX_INSTANCE}")
    return kind, instance


def parse_address(text: str) -> tuple[ipaddress.IPv4Interface, int]:
    """`192.0.2.10[/24][:47808]` -> (interface with its prefix, port); ValueError otherwise."""
    m = re.fullmatch(r"([0-9.]+)(/[0-9]+)?(?::([0-9]+))?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a BACnet/IP address like 192.0.2.10/24 or 192.0.2.10:47808")
    interface = ipaddress.IPv4Interface(m.group(1) + (m.group(2) or "/32"))
    port = int(m.group(3) or DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return interface, port


class BacnetDevice(StrictModel):
    """One `[[sources.devices]]` entry: a BACnet device by instance, optionally at a known address."""

    instance: int = Field(ge=0, le=MAX_INSTANCE)
    address: str | None = None  # ip[:port]; without it the device is found by a broadcast Who-Is
    name: str = ""
    mode: Mode = "auto"  # auto: COV where the device supports it, polling otherwise
    max_objects_per_request: int | None = Field(default=None, ge=1, le=1000)

    @property
    def label(self) -> str:
        return self.name or f"device-{self.instance}"


class BacnetPoint(StrictModel):
    """One `[[sources.points]]` entry: an object's present value -> a point of an asset."""

    asset: str = Field(min_length=1)
    name: str = Field(min_length=1)
    device: int = Field(ge=0, le=MAX_INSTANCE)
    object: str
    unit: str = ""  # empty: the object's engineering units, read from the device
    kind: Literal["measurement", "setpoint", "state"] | None = None  # default: state for binary/multi-state
    mode: Mode | None = None  # default: the device's
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(default=0.0, ge=0)

    @property
    def object_id(self) -> tuple[str, int]:
        return parse_object(self.object)

    @property
    def point_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "measurement" if self.object_id[0].startswith("analog") else "state"


class BacnetSourceConfig(StrictModel):
    name: str = Field(min_length=1)
    local_address: str
    device_instance: int = Field(default=DEFAULTS.DEVICE_INSTANCE, ge=0, le=MAX_INSTANCE)
    poll_interval_s: float = Field(default=DEFAULTS.POLL_INTERVAL_S, gt=0)
    apdu_timeout_s: float = Field(default=DEFAULTS.APDU_TIMEOUT_S, gt=0)
    apdu_retries: int = Field(default=DEFAULTS.APDU_RETRIES, ge=0, le=10)
    discovery_timeout_s: float = Field(default=DEFAULTS.DISCOVERY_TIMEOUT_S, gt=0)
    cov_lifetime_s: int = Field(default=DEFAULTS.COV_LIFETIME_S, ge=2, le=86400)
    cov_confirmed: bool = False
    backoff_max_s: float = Field(default=DEFAULTS.BACKOFF_MAX_S, gt=0)
    devices: list[BacnetDevice] = Field(min_length=1)
    points: list[BacnetPoint] = Field(min_length=1)

    def device(self, instance: int) -> BacnetDevice:
        return next(d for d in self.devices if d.instance == instance)

    def mode_of(self, point: BacnetPoint) -> Mode:
        return point.mode or self.device(point.device).mode

    @property
    def request_timeout_s(self) -> float:
        """How long one confirmed request may take in the worst case (every retry timing out)."""
        return self.apdu_timeout_s * (self.apdu_retries + 1)


def _check_addresses(cfg: BacnetSourceConfig, key: str, errors: list[str]) -> None:
    try:
        interface, _ = parse_address(cfg.local_address)
        if interface.ip.is_unspecified:
            errors.append(f"{key}.local_address: bind a specific interface address, not 0.0.0.0 (BACnet/IP "
                          "needs the interface's broadcast address)")
    except ValueError as exc:
        errors.append(f"{key}.local_address: {exc}")
        interface = None
    seen: dict[int, int] = {}
    for i, d in enumerate(cfg.devices):
        dkey = f"{key}.devices[{i}]"
        if d.instance in seen:
            errors.append(f"{dkey}.instance: device {d.instance} is already devices[{seen[d.instance]}]")
        seen.setdefault(d.instance, i)
        if d.instance == cfg.device_instance:
            errors.append(f"{dkey}.instance: {d.instance} is the agent's own device_instance")
        if d.address is not None:
            try:
                parse_address(d.address)
            except ValueError as exc:
                errors.append(f"{dkey}.address: {exc}")
        elif interface is not None and interface.network.prefixlen == 32:
            errors.append(f"{dkey}.address: required while local_address has no prefix (no broadcast address "
                          "to send Who-Is to); give the device's address or local_address = ip/prefix")
        if not any(p.device == d.instance for p in cfg.points):
            errors.append(f"{dkey}.instance: no point reads device {d.instance}")


def parse_source(table: dict[str, Any], key: str) -> BacnetSourceConfig:
    """Validate one bacnet `[[sources]]` table (without its `type`); ConfigError names every bad key."""
    cfg = parse_model(BacnetSourceConfig, table, key)
    errors: list[str] = []
    _check_addresses(cfg, key, errors)
    instances = {d.instance for d in cfg.devices}
    seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(cfg.points):
        pkey = f"{key}.points[{i}]"
        try:
            kind, _ = p.object_id
        except ValueError as exc:
            errors.append(f"{pkey}.object: {exc}")
            kind = ""
        if p.device not in instances:
            errors.append(f"{pkey}.device: device {p.device} is not in {key}.devices (instances: "
                          f"{sorted(instances)})")
        if kind and not kind.startswith("analog") and (p.scale != 1.0 or p.offset != 0.0):
            errors.append(f"{pkey}.{'scale' if p.scale != 1.0 else 'offset'}: only for analog objects, not {kind}")
        if (p.asset, p.name) in seen:
            errors.append(f"{pkey}.name: duplicate point {p.asset}/{p.name} (also points[{seen[(p.asset, p.name)]}])")
        seen.setdefault((p.asset, p.name), i)
    if cfg.request_timeout_s >= cfg.poll_interval_s:
        errors.append(f"{key}.poll_interval_s: the poll interval ({cfg.poll_interval_s:g} s) must exceed "
                      f"apdu_timeout_s x (apdu_retries + 1) = {cfg.request_timeout_s:g} s, or a silent device would "
                      "stall its own polls")
    if cfg.cov_lifetime_s < 2 * cfg.request_timeout_s:
        errors.append(f"{key}.cov_lifetime_s: a subscription of {cfg.cov_lifetime_s} s cannot be renewed in time "
                      f"when a request may take {cfg.request_timeout_s:g} s")
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return cfg
