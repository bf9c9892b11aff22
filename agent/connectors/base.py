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

__all__ = ["Connector", "ConnectorFactory", "ConnectorStats", "Emit"]

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


class ConnectorFactory(Protocol):
    """Builds a connector from its `[[sources]]` table; raises ConfigError naming the key."""

    def __call__(self, table: dict[str, Any], key: str) -> Connector: ...
