"""MQTT connector: topic filters -> per-point decoders (number, JSON, waveform, Sparkplug B) -> readings.

See README.md in this folder for the options and sample.toml for a complete example.
"""

from __future__ import annotations

from agent.connectors.mqtt.connector import MqttConnector, build

__all__ = ["MqttConnector", "build"]
