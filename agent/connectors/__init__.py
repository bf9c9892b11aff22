"""Connector registry: `[[sources]] type = "..."` -> the connector package of that name.

Every folder here is one protocol. Its `__init__.py` declares `CONNECTOR = ConnectorInfo(...)`
(name, factory, optional probe, the pip extra it needs) as dotted names, so that reading it imports
no protocol library; the factory module is imported only when a source of that type is configured.
An edge box without BACnet points therefore never imports bacpypes3, and a box without the
`[bacnet]` extra gets an error naming the extra instead of a traceback. Adding a protocol means
adding a folder; nothing here or in any other connector changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from agent.connectors.base import Connector, ConnectorInfo
from runtime.errors import ConfigError

__all__ = ["ConnectorInfo", "build_connector", "connector_info", "connector_names", "import_declared"]

PACKAGE = __name__
NOT_CONNECTORS = frozenset({"base"})


def connector_names() -> list[str]:
    """The connector types available: the sub-packages of this package (found without importing them)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and m.name not in NOT_CONNECTORS)


def connector_info(name: str) -> ConnectorInfo:
    """The declaration of connector `name` (imports only its light `__init__.py`)."""
    package = importlib.import_module(f"{PACKAGE}.{name}")
    info = getattr(package, "CONNECTOR", None)
    if not isinstance(info, ConnectorInfo) or info.name != name:
        raise TypeError(f"{PACKAGE}.{name}: __init__.py must declare CONNECTOR = ConnectorInfo(name={name!r}, ...)")
    return info


def import_declared(info: ConnectorInfo, dotted: str, what: str) -> Any:
    """Import `module` or `module:attribute` of a declared connector; a missing extra is a ConfigError.

    The error names the extra and the command that installs it, e.g.
    `the bacnet connector needs the [bacnet] extra (module bacpypes3 is not installed): pip install
    'facility-twin[bacnet]'`.
    """
    module_name, _, attribute = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in info.requires:
            raise
        extra = f"[{info.extra}]" if info.extra else ""
        how = f"the {extra} extra" if extra else "its dependencies"
        raise ConfigError(f"{what}: the {info.name} connector needs {how} (module {missing} is not "
                          f"installed): pip install 'facility-twin{extra}'") from None
    return getattr(module, attribute) if attribute else module


def build_connector(table: dict[str, Any], key: str) -> Connector:
    """Build the connector of one `[[sources]]` table; ConfigError names the key."""
    kind = table.get("type")
    names = connector_names()
    if kind not in names:
        raise ConfigError(f"{key}.type: must be one of {names}, got {kind!r}")
    info = connector_info(kind)
    factory: Callable[[dict[str, Any], str], Connector] = import_declared(info, info.factory, f"{key}.type")
    return factory({k: v for k, v in table.items() if k != "type"}, key)
