"""twin-collector: receives agent summaries, stores them, keeps the fleet twin, raises work orders."""

from runtime import __version__

__all__ = ["__version__"]
