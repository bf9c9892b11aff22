"""Which optional part of facility-twin a module belongs to, so a missing one is named.

The package is split by role (pyproject.toml `[project.optional-dependencies]`): an edge box with
Modbus only installs `facility-twin[modbus]` and has no asyncua, paho, aiohttp or influxdb-client.
A configuration that asks for what is not installed gets an error naming the extra to install, not a
ModuleNotFoundError traceback: for a `[[sources]]` type the connector registry says so (each
connector declares its extra, agent/connectors/base.py `ConnectorInfo`); for the rest (the
collector, agent tools such as `diagnose --plot` or `opcua-cert`) this table does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from runtime.errors import ConfigError

__all__ = ["EXTRA_OF_MODULE", "MissingExtraError", "import_feature", "missing_extra_message"]

# top-level import name -> (extra, distribution)
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "pymodbus": ("modbus", "pymodbus"),
    "serial": ("modbus", "pyserial"),
    "asyncua": ("opcua", "asyncua"),
    "cryptography": ("opcua", "cryptography"),
    "paho": ("mqtt", "paho-mqtt"),
    "bacpypes3": ("bacnet", "bacpypes3"),
    "pysnmp": ("snmp", "pysnmp"),
    "aiohttp": ("collector", "aiohttp"),
    "influxdb_client": ("collector", "influxdb-client"),
    "urllib3": ("collector", "urllib3"),
    "asyncpg": ("postgres", "asyncpg"),
    "matplotlib": ("plot", "matplotlib"),
}


class MissingExtraError(ConfigError):
    """What the configuration or command asks for needs an extra that is not installed."""


def missing_extra_message(exc: ModuleNotFoundError, what: str) -> str | None:
    """`what needs the 'opcua' extra ...` for a module of ours that is missing, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    extra, dist = EXTRA_OF_MODULE[top]
    return (f"{what} needs the '{extra}' extra, which is not installed here ({dist} is missing): "
            f"pip install 'facility-twin[{extra}]' (the Debian package has every extra)")


def import_feature(module: str, what: str) -> ModuleType:
    """Import `module`; a missing optional dependency becomes a MissingExtraError about `what`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, what)
        if message is None:
            raise
        raise MissingExtraError(message) from None
