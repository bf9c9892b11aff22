"""Modbus TCP and RTU connector: coalesced polling, per-unit backoff, byte/word order decoding.

See README.md in this folder for the options and for troubleshooting register decoding, and
sample.toml for a complete `[[sources]]` example.
"""

from agent.connectors.modbus.config import ModbusSourceConfig, parse_source
from agent.connectors.modbus.connector import ModbusConnector, build

__all__ = ["ModbusConnector", "ModbusSourceConfig", "build", "parse_source"]
