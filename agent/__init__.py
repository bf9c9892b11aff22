"""twin-agent: reads facility sensors, keeps a local twin, streams summaries to the collector."""

from runtime import __version__

__all__ = ["__version__"]
