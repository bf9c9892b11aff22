"""twin-agent: reads facility sensors, keeps a local twin, streams summaries to the collector."""

__version__ = "0.1.0"
