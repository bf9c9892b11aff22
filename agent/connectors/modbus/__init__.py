"""Modbus TCP and RTU connector: coalesced polling, per-unit backoff, byte/word order decoding.

See README.md in this folder for the options and for troubleshooting register decoding, and
sample.toml for a complete `[[sources]]` example. This module only declares the connector, so
pymodbus is imported when a Modbus source is configured (and a missing `[modbus]` extra is
reported as such).
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="modbus",
    factory="agent.connectors.modbus.connector:build",
    probe="agent.connectors.modbus.probe",
    probe_help="read raw registers and print every decoding",
    extra="modbus",
    requires=("pymodbus", "serial"),
)
