"""What both daemons share, and nothing else.

Config loading (`tomlconfig`), the exception tree (`errors`), secrets, SQLite, logging, service
lifecycle (signals, reload, sd_notify), cancellation, backoff, supervision, process memory and the
Prometheus endpoint. This package imports neither `agent`, `collector` nor `protos`: the edge and
the centre depend on it, never the other way round (tests/unit/test_layering.py checks it).
"""

__version__ = "0.2.0"  # the facility-twin release (pyproject.toml reads it from here)
