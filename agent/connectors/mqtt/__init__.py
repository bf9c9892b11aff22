"""MQTT connector: topic filters -> per-point decoders (number, JSON, waveform, Sparkplug B) -> readings.

See README.md in this folder for the options and sample.toml for a complete example. This module
only declares the connector, so paho-mqtt is imported when an MQTT source is configured (and a
missing `[mqtt]` extra is reported as such).
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="mqtt",
    factory="agent.connectors.mqtt.connector:build",
    extra="mqtt",
    requires=("paho",),
)
