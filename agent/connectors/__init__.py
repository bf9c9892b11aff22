"""Connector registry: `[[sources]] type = "..."` -> factory.

Factories are imported lazily so that an edge box without, say, OPC-UA points never imports
asyncua. Adding a protocol means adding a folder and one line here; no other connector changes.
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.connectors.base import Connector
from runtime.errors import ConfigError

__all__ = ["FACTORIES", "build_connector"]

FACTORIES: dict[str, str] = {
    "modbus": "agent.connectors.modbus.connector:build",
    "opcua": "agent.connectors.opcua.connector:build",
    "mqtt": "agent.connectors.mqtt.connector:build",
}


def build_connector(table: dict[str, Any], key: str) -> Connector:
    kind = table.get("type")
    if kind not in FACTORIES:
        raise ConfigError(f"{key}.type: must be one of {sorted(FACTORIES)}, got {kind!r}")
    module_name, func_name = FACTORIES[kind].split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    return factory({k: v for k, v in table.items() if k != "type"}, key)
