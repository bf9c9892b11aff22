"""The `[[sources]] type = "mqtt"` table: pydantic models plus the semantic checks that fail early.

Shape checks (types, ranges, unknown keys) come from the pydantic models; the checks that need
several keys at once (a JSON point needs value_path, a waveform option only makes sense for a
waveform point, a persistent session needs a client id, ...) are in `parse_source`, which raises
ConfigError naming the exact key, e.g. `sources[2].points[0].value_path`. Secrets are read here so
that `twin-agent check-config` reports a missing password file; they are never logged.

Topic templates (`[[sources.templates]]`) serve a fleet of identical devices with one table: a
topic with named wildcards (`site/sensors/+asset/+point`), an asset type, the list of device ids
(each becomes an asset of that type) and the points every device has. `template_points` expands
them into ordinary points, one per device and point, so everything downstream (routing, decoding,
subscriptions) treats them like points written out by hand; the template's own filter
(`site/sensors/+/+`) is what is subscribed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from agent.connectors.mqtt.codec import WaveformFormat, parse_json_path
from agent.model import PointSpec
from runtime.errors import ConfigError
from runtime.secrets import read_secret, secret_file_error
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "MqttPointSettings",
    "MqttSourceSettings",
    "MqttTemplateSettings",
    "TemplateTopic",
    "all_points",
    "effective_protocol",
    "filter_covers",
    "filters_overlap",
    "overlapping_filters",
    "parse_source",
    "parse_template_topic",
    "point_filter",
    "point_spec",
    "read_password",
    "sparkplug_filter",
    "subscriptions",
    "template_points",
    "validate_topic_filter",
    "waveform_format",
]

SECRET_FILE_KEYS = (".key_file", ".password_file")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ASSET_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
TEMPLATE_LEVELS = ("asset", "point")  # the names a template's `+name` wildcard may have
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
DEFAULT_SESSION_EXPIRY_S = 86_400
DEFAULT_REBIRTH_INTERVAL_S = 30.0
SPARKPLUG_PREFIX = "spBv1.0/"

Format = Literal["number", "json", "waveform", "sparkplug"]
FORMAT_KEYS: dict[str, frozenset[str]] = {
    "json": frozenset({"value_path", "timestamp_path"}),
    "waveform": frozenset({"dtype", "byte_order", "scale", "sample_rate_hz", "header"}),
    "sparkplug": frozenset({"metric"}),
}
HEADER_KEYS = frozenset({"dtype", "byte_order", "scale"})  # carried by the twin-v1 header instead


class _PointFields(StrictModel):
    """What a point has besides its asset and topic (shared by points and template points)."""

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["measurement", "setpoint", "state", "counter", "waveform"] = "measurement"
    unit: str = ""
    qos: Literal[0, 1, 2] = 1
    format: Format = "number"
    expected_interval_s: float = Field(default=10.0, gt=0)
    deadband: float = Field(default=0.0, ge=0)
    # json
    value_path: str = ""
    timestamp_path: str = ""
    # waveform
    dtype: Literal["float32", "int16"] = "float32"
    byte_order: Literal["little", "big"] = "little"
    scale: float = 1.0
    sample_rate_hz: float = Field(default=0.0, ge=0)
    header: Literal["none", "twin-v1"] = "none"
    # sparkplug
    metric: str = ""


class MqttPointSettings(_PointFields):
    asset: str = Field(pattern=ID_PATTERN)
    topic: str = Field(min_length=1, description="topic filter; may contain + and # wildcards")


class MqttTemplatePoint(_PointFields):
    """A point every device of a template has; with `+point` in the topic, `name` is that level."""


class MqttTemplateSettings(StrictModel):
    topic: str = Field(min_length=1, description="topic with named wildcards, e.g. site/sensors/+asset/+point")
    asset_type: str = Field(pattern=ASSET_TYPE_PATTERN)
    assets: list[str] = Field(min_length=1, description="device ids = asset ids; each becomes an asset")
    points: list[MqttTemplatePoint] = Field(min_length=1)


class MqttSourceSettings(StrictModel):
    name: str = Field(pattern=ID_PATTERN)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="1883, or 8883 with TLS")
    client_id: str = Field(default="", max_length=128)
    clean_session: bool = True
    session_expiry_s: int = Field(default=DEFAULT_SESSION_EXPIRY_S, ge=0, le=0xFFFFFFFF)
    protocol: Literal["auto", "3.1.1", "5"] = "auto"
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    log_interval_s: float = Field(default=60.0, gt=0, description="at most one malformed-payload line "
                                                                  "per topic per interval")
    sparkplug_rebirth: bool = Field(default=True, description="ask Sparkplug edge nodes whose births were "
                                                                "missed to publish them again (NCMD)")
    sparkplug_rebirth_interval_s: float = Field(default=DEFAULT_REBIRTH_INTERVAL_S, ge=1.0,
                                                description="at most one rebirth request per edge node per interval")
    points: list[MqttPointSettings] = []
    templates: list[MqttTemplateSettings] = []

    @property
    def broker_port(self) -> int:
        return self.port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)


class TemplateTopic:
    """`site/sensors/+asset/+point` parsed: the filter to subscribe and where the names are."""

    def __init__(self, topic: str) -> None:
        self.levels = topic.split("/")
        self.named = {lvl[1:]: i for i, lvl in enumerate(self.levels) if lvl.startswith("+") and len(lvl) > 1}
        self.filter = "/".join("+" if lvl.startswith("+") else lvl for lvl in self.levels)
        self.asset_level = self.named.get("asset", -1)
        self.point_level = self.named.get("point")

    def instance(self, asset: str, point: str) -> str:
        """The filter one device's point reads: the named levels filled in, other wildcards kept."""
        levels = list(self.levels)
        levels[self.asset_level] = asset
        if self.point_level is not None:
            levels[self.point_level] = point
        return "/".join("+" if lvl.startswith("+") else lvl for lvl in levels)


def parse_template_topic(topic: str) -> tuple[TemplateTopic | None, list[str]]:
    """The parsed template topic, or None and why not (problems without the key prefix)."""
    t = TemplateTopic(topic)
    problems = []
    unknown = sorted(set(t.named) - set(TEMPLATE_LEVELS))
    if unknown:
        problems.append(f"unknown named wildcard +{unknown[0]}: only +asset and +point name a level")
    for name in TEMPLATE_LEVELS:
        if sum(lvl == f"+{name}" for lvl in t.levels) > 1:
            problems.append(f"+{name} appears twice")
    if "asset" not in t.named:
        problems.append("needs a +asset level naming the device (e.g. site/sensors/+asset/+point)")
    problem = validate_topic_filter(t.filter)
    if problem:
        problems.append(problem)
    if topic.startswith(SPARKPLUG_PREFIX):
        problems.append("Sparkplug topics name their devices already: use points with format = \"sparkplug\"")
    return (None if problems else t), problems


def template_points(s: MqttSourceSettings) -> list[MqttPointSettings]:
    """Every template's points, one per device and template point, as ordinary points."""
    out = []
    for t in s.templates:
        parsed, _ = parse_template_topic(t.topic)
        if parsed is None:
            continue  # reported by parse_source
        for asset in t.assets:
            for p in t.points:
                out.append(MqttPointSettings(asset=asset, topic=parsed.instance(asset, p.name),
                                             **p.model_dump(exclude_unset=True)))
    return out


def all_points(s: MqttSourceSettings) -> list[MqttPointSettings]:
    """The points written out and those the templates make."""
    return [*s.points, *template_points(s)]


def effective_protocol(s: MqttSourceSettings) -> tuple[str, str]:
    """(protocol, why) for `protocol = "auto"`: MQTT 3.1.1 unless a feature only MQTT 5 has is needed.

    MQTT 5 costs about twice the CPU per message in paho (bench/mqtt_bench.py); what it gives this
    agent is subscription identifiers (overlapping filters without duplicate readings) and a
    session expiry for persistent sessions. "auto" takes 5 exactly when one of them is asked for."""
    if s.protocol != "auto":
        return s.protocol, "configured"
    if "session_expiry_s" in s.model_fields_set:
        return "5", "session_expiry_s is set"
    if overlapping_filters(s):
        return "5", "topic filters overlap (subscription identifiers keep readings single)"
    return "3.1.1", "default"


def validate_topic_filter(topic: str) -> str | None:
    """Why `topic` is not a valid MQTT topic filter, or None when it is."""
    if "\0" in topic:
        return "topic must not contain NUL characters"
    if len(topic.encode("utf-8")) > 65535:
        return "topic is longer than 65535 bytes"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one (e.g. plant/#)"
        if "+" in level and level != "+":
            return "'+' must be a whole level (e.g. plant/+/temp)"
    return None


def _check_point(p: MqttPointSettings, key: str) -> list[str]:
    errors: list[str] = []
    problem = validate_topic_filter(p.topic)
    if problem:
        errors.append(f"{key}.topic: {problem}")
    errors += _check_format(p, key)
    if p.format == "sparkplug" and not p.topic.startswith(SPARKPLUG_PREFIX) and p.topic != "#":
        errors.append(f"{key}.topic: a Sparkplug B topic starts with {SPARKPLUG_PREFIX} "
                      "(e.g. spBv1.0/plant/+/gw01/pump1)")
    return errors


def _check_format(p: _PointFields, key: str) -> list[str]:
    errors: list[str] = []
    for fmt, keys in FORMAT_KEYS.items():
        if fmt != p.format:
            errors += [f"{key}.{k}: only for format = \"{fmt}\" (this point has format = \"{p.format}\")"
                       for k in sorted(keys & p.model_fields_set)]
    if (p.kind == "waveform") != (p.format == "waveform"):
        errors.append(f"{key}.format: kind = \"waveform\" and format = \"waveform\" go together "
                      f"(got kind = \"{p.kind}\", format = \"{p.format}\")")
    if p.format == "json":
        if not p.value_path:
            errors.append(f"{key}.value_path: required with format = \"json\" (e.g. value_path = \"data.temp\")")
        for k in ("value_path", "timestamp_path"):
            if getattr(p, k):
                try:
                    parse_json_path(getattr(p, k))
                except ValueError as exc:
                    errors.append(f"{key}.{k}: {exc}")
    elif p.format == "waveform":
        if p.sample_rate_hz <= 0:
            errors.append(f"{key}.sample_rate_hz: required for a waveform point (e.g. 12800)")
        if p.header == "twin-v1":
            errors += [f"{key}.{k}: given by the twin-v1 header; remove it here"
                       for k in sorted(HEADER_KEYS & p.model_fields_set)]
        if not (math.isfinite(p.scale) and p.scale != 0):
            errors.append(f"{key}.scale: must be a finite non-zero number")
    elif p.format == "sparkplug" and not p.metric:
        errors.append(f"{key}.metric: required with format = \"sparkplug\" (e.g. metric = \"Pump1/Speed\")")
    return errors


def _check_template(t: MqttTemplateSettings, key: str) -> list[str]:
    parsed, problems = parse_template_topic(t.topic)
    errors = [f"{key}.topic: {p}" for p in problems]
    seen_assets: dict[str, int] = {}
    for i, asset in enumerate(t.assets):
        if not re.fullmatch(ID_PATTERN, asset):
            errors.append(f"{key}.assets[{i}]: {asset!r} is not a valid asset id (letters, digits, _ . : -; "
                          "at most 64)")
        elif "+" in asset or "#" in asset or "/" in asset:
            errors.append(f"{key}.assets[{i}]: {asset!r} cannot be a topic level")
        if asset in seen_assets:
            errors.append(f"{key}.assets[{i}]: {asset} is already assets[{seen_assets[asset]}]")
        seen_assets.setdefault(asset, i)
    names: dict[str, int] = {}
    for i, p in enumerate(t.points):
        pkey = f"{key}.points[{i}]"
        errors += _check_format(p, pkey)
        if p.format == "sparkplug":
            errors.append(f"{pkey}.format: Sparkplug points name their device in the Sparkplug topic; "
                          "write them as [[sources.points]]")
        if parsed is not None and parsed.point_level is not None and ("/" in p.name or p.name in ("+", "#")):
            errors.append(f"{pkey}.name: with +point in the topic the name is a topic level: no / + #")
        if p.name in names:
            errors.append(f"{pkey}.name: {p.name} is already points[{names[p.name]}]")
        names.setdefault(p.name, i)
    if parsed is not None and parsed.point_level is None:
        raw = [i for i, p in enumerate(t.points) if p.format != "json"]
        if len(t.points) > 1 and raw:
            errors.append(f"{key}.points[{raw[0]}].format: without +point in the topic every point of a device "
                          "reads the same message: give each a JSON value_path (format = \"json\"), or name the "
                          "point level in the topic (+point)")
    return errors


def _check_file(path: str, key: str) -> list[str]:
    if key.endswith(SECRET_FILE_KEYS):  # may be readable only inside the unit (runtime/secrets.py)
        error = secret_file_error(key, path)
        return [error] if error else []
    if path and not Path(path).is_file():
        return [f"{key}: file {path} does not exist"]
    return []


def parse_source(table: dict[str, Any], key: str) -> MqttSourceSettings:
    """Validate a `[[sources]]` table (without `type`); ConfigError lists every bad key."""
    s = parse_model(MqttSourceSettings, table, key)
    errors: list[str] = []
    if not s.points and not s.templates:
        errors.append(f"{key}.points: give at least one [[sources.points]] or [[sources.templates]]")
    if not s.clean_session and not s.client_id:
        errors.append(f"{key}.client_id: required with clean_session = false (the broker keeps the "
                      "session under this id)")
    if "session_expiry_s" in s.model_fields_set:
        if s.protocol == "3.1.1":
            errors.append(f"{key}.session_expiry_s: only for protocol = \"5\" (MQTT 3.1.1 brokers keep "
                          "persistent sessions by their own settings)")
        elif s.clean_session:
            errors.append(f"{key}.session_expiry_s: only with clean_session = false")
    if not s.tls:
        errors += [f"{key}.{k}: given but tls = false" for k in ("ca_file", "cert_file", "key_file")
                   if getattr(s, k)]
    if bool(s.cert_file) != bool(s.key_file):
        errors.append(f"{key}.{'key_file' if s.cert_file else 'cert_file'}: cert_file and key_file go "
                      "together (client certificate)")
    for k in ("ca_file", "cert_file", "key_file", "password_file"):
        errors += _check_file(getattr(s, k), f"{key}.{k}")
    if s.password_file and s.password_env:
        errors.append(f"{key}.password_env: give password_file or password_env, not both")
    if (s.password_file or s.password_env) and not s.username:
        errors.append(f"{key}.username: required when a password is given")
    if s.reconnect_max_s < s.reconnect_min_s:
        errors.append(f"{key}.reconnect_max_s: must be >= reconnect_min_s")
    seen: dict[tuple[str, str], str] = {}
    for i, p in enumerate(s.points):
        errors += _check_point(p, f"{key}.points[{i}]")
        if (p.asset, p.name) in seen:
            errors.append(f"{key}.points[{i}].name: {p.asset}/{p.name} is already {seen[(p.asset, p.name)]}")
        seen.setdefault((p.asset, p.name), f"points[{i}]")
    for j, t in enumerate(s.templates):
        tkey = f"{key}.templates[{j}]"
        errors += _check_template(t, tkey)
        for a, asset in enumerate(t.assets):
            for p in t.points:
                if (asset, p.name) in seen:
                    errors.append(f"{tkey}.assets[{a}]: point {asset}/{p.name} is already {seen[(asset, p.name)]}")
                seen.setdefault((asset, p.name), f"templates[{j}]")
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    if s.protocol == "3.1.1":
        errors += _overlap_errors(s, key)
    if errors:
        raise ConfigError("\n".join(errors))
    return s


def overlapping_filters(s: MqttSourceSettings) -> list[tuple[str, str]]:
    """Pairs of subscribed filters that overlap without one covering the other."""
    filters = list(subscriptions(s))
    return [(a, b) for i, a in enumerate(filters) for b in filters[i + 1:] if filters_overlap(a, b)]


def _overlap_errors(s: MqttSourceSettings, key: str) -> list[str]:
    """MQTT 3.1.1 brokers may deliver a message once per matching subscription and say nothing about
    which one it came from; two overlapping filters (neither covering the other, which would be
    merged into one subscription) would double some readings. MQTT 5 tells them apart with
    subscription identifiers."""
    errors: list[str] = []
    for a, b in overlapping_filters(s):
        where = next((f"points[{j}]" for f in (b, a) for j, p in enumerate(s.points)
                      if filter_covers(f, point_filter(p))), None) or next(
            (f"templates[{j}]" for f in (b, a) for j, t in enumerate(s.templates)
             if filter_covers(f, TemplateTopic(t.topic).filter)), "points[0]")
        errors.append(f"{key}.{where}.topic: {b} overlaps {a}; with protocol = \"3.1.1\" the "
                      "broker may deliver such messages twice. Use protocol = \"5\" (or \"auto\") or filters "
                      "that do not overlap")
    return errors


def read_password(s: MqttSourceSettings, key: str) -> str | None:
    """The broker password from its file or environment variable (None when there is none)."""
    return read_secret(f"{key}.password", file=s.password_file, env=s.password_env) or None


def point_spec(p: MqttPointSettings) -> PointSpec:
    return PointSpec(asset=p.asset, name=p.name, unit=p.unit, kind=p.kind,
                     expected_interval_s=p.expected_interval_s, deadband=p.deadband,
                     sample_rate_hz=p.sample_rate_hz if p.format == "waveform" else 0.0)


def waveform_format(p: MqttPointSettings) -> WaveformFormat:
    return WaveformFormat(sample_rate_hz=p.sample_rate_hz, dtype=p.dtype, byte_order=p.byte_order,
                          scale=p.scale, header=p.header)


def sparkplug_filter(topic: str) -> str:
    """The filter a Sparkplug point's messages arrive on: any message type for its node/device.

    `spBv1.0/plant/DDATA/gw01/pump1` -> `spBv1.0/plant/+/gw01/pump1`, so that the births that
    declare aliases and the deaths that mark points BAD reach the point as well as its data."""
    levels = topic.split("/")
    if len(levels) >= 4 and "#" not in levels[:3]:
        levels[2] = "+"
    return "/".join(levels)


def filter_covers(a: str, b: str) -> bool:
    """True when every topic matching filter `b` also matches filter `a`."""
    la, lb = a.split("/"), b.split("/")
    for i, level in enumerate(la):
        if level == "#":
            return True
        if i >= len(lb) or lb[i] == "#" or (level != "+" and (lb[i] == "+" or lb[i] != level)):
            return False
    return len(la) == len(lb)


def filters_overlap(a: str, b: str) -> bool:
    """True when some topic matches both filters."""
    la, lb = a.split("/"), b.split("/")
    for x, y in zip(la, lb, strict=False):
        if x == "#" or y == "#":
            return True
        if x != y and "+" not in (x, y):
            return False
    rest = la[len(lb):] or lb[len(la):]
    return not rest or rest == ["#"]


def point_filter(p: MqttPointSettings) -> str:
    """The filter whose messages a point reads."""
    return sparkplug_filter(p.topic) if p.format == "sparkplug" else p.topic


def subscriptions(s: MqttSourceSettings) -> dict[str, int]:
    """Topic filter -> QoS to subscribe with.

    A filter covered by another (plant/pump-1/speed under plant/#) is not subscribed on its own:
    brokers may deliver a message once per matching subscription, and points are found by
    matching the topic, not by subscription. The covering filter gets the highest QoS of the two.
    A device-level Sparkplug point also needs its node's NBIRTH/NDEATH: the node's birth defines
    aliases its devices' data may use, and its death ends every device session of the node."""
    wanted: dict[str, int] = {}
    for t in s.templates:  # one subscription serves the whole fleet (its instances are covered by it)
        wanted[TemplateTopic(t.topic).filter] = max((p.qos for p in t.points), default=1)
    for p in all_points(s):
        filters = [point_filter(p)]
        if p.format == "sparkplug":
            levels = filters[0].split("/")
            if len(levels) == 5 and "#" not in levels:
                filters.append("/".join(levels[:4]))
        for f in filters:
            wanted[f] = max(wanted.get(f, 0), p.qos)
    subs: dict[str, int] = {}
    for f, qos in wanted.items():
        if not any(c != f and filter_covers(c, f) for c in wanted):
            subs[f] = qos
    for f, qos in wanted.items():
        if f not in subs:
            top = next(c for c in subs if filter_covers(c, f))
            subs[top] = max(subs[top], qos)
    return subs
