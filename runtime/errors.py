"""The one exception tree of facility-twin.

    TwinError                 anything this project raises on purpose
    ├── ConfigError           a config file is missing, malformed or semantically wrong; names the key
    ├── SourceError           a device or broker could not be read
    │   ├── ConnectError      no connection (refused, timeout, TLS failure)
    │   └── DecodeError       a payload or register block could not be decoded
    └── SinkError             a store (InfluxDB, SQLite, collector) did not accept data

Callers catch the narrowest class they can handle; anything else is a bug and is logged with its
traceback by the supervising loop.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConnectError", "DecodeError", "SinkError", "SourceError", "TwinError"]


class TwinError(Exception):
    """Base of every error raised on purpose by facility-twin."""


class ConfigError(TwinError):
    """Invalid configuration. The message names the offending key, e.g. `sources[0].points[2].type`."""


class SourceError(TwinError):
    """A device, server or broker could not be read."""


class ConnectError(SourceError):
    """No connection to the source (refused, timed out, TLS or auth failure)."""


class DecodeError(SourceError):
    """A payload or register block could not be decoded into readings."""


class SinkError(TwinError):
    """A store did not accept data; the data stays queued and is retried."""
