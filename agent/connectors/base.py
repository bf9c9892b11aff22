"""The one small interface every protocol connector implements.

A connector owns its connections and its poll/subscription loops. It pushes readings into the
twin through `emit` and never knows about gRPC, SQLite or analytics. `run` returns only when
cancelled: every cycle is guarded so that one failing device or bad payload never ends it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.model import PointSpec, Reading

__all__ = ["Connector", "ConnectorFactory", "ConnectorInfo", "ConnectorStats", "Emit", "SpecListener"]

Emit = Callable[[Sequence[Reading]], None]
"""Called by a connector with new readings; synchronous and cheap (it updates the in-memory twin)."""


@dataclass(slots=True)
class ConnectorStats:
    """Counters a connector keeps about itself (exported as metrics and agent health)."""

    polls: int = 0
    errors: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    last_error: str = ""
    devices_online: dict[str, bool] = field(default_factory=dict)
    # Devices that sent data but are not configured (device id -> messages): counted and reported,
    # never dropped silently. Bounded by the connector that fills it.
    unknown_devices: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    name: str
    stats: ConnectorStats

    def points(self) -> Sequence[PointSpec]:
        """The points this connector produces (declared in its config)."""
        ...

    async def run(self, emit: Emit) -> None:
        """Read forever, calling `emit` with readings; return only on cancellation."""
        ...


SpecListener = Callable[[PointSpec], None]
"""Optional: a connector that learns a point's metadata from the device (BACnet engineering units for
a point configured without a unit) has a `spec_listener: SpecListener | None` attribute; the daemon
sets it and the connector calls it with the updated PointSpec."""


class ConnectorFactory(Protocol):
    """Builds a connector from its `[[sources]]` table; raises ConfigError naming the key."""

    def __call__(self, table: dict[str, Any], key: str) -> Connector: ...


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """What a connector package declares in its `__init__.py` as `CONNECTOR`, for the registry and CLI.

    Everything is a dotted name, not an object, so reading the declaration imports no protocol
    library: the registry imports `factory` (and the CLI `probe`) only when a source or a probe of
    that type is used. `extra` and `requires` let a missing library become an error that says
    which `pip install` fixes it.
    """

    name: str  # the `[[sources]] type`, equal to the folder name
    factory: str  # "module:function" building the connector from its `[[sources]]` table
    probe: str = ""  # module with add_arguments(parser) and run(args) for `twin-agent probe <name>`
    probe_help: str = ""  # one line for `twin-agent probe --help`
    extra: str = ""  # the pip extra that installs the libraries below
    requires: tuple[str, ...] = ()  # top-level modules the connector imports from that extra
