"""BACnet/IP connector (BACpypes3): Who-Is discovery, ReadPropertyMultiple polling, COV subscriptions.

See README.md in this folder for the options and sample.toml for a complete `[[sources]]` example.
This module declares the connector and imports nothing else, so BACpypes3 is loaded only when a
BACnet source is configured (and a missing `[bacnet]` extra is reported as such).
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="bacnet",
    factory="agent.connectors.bacnet.connector:build",
    probe="agent.connectors.bacnet.probe",
    probe_help="discover BACnet devices (Who-Is) and list their objects with values and units",
    extra="bacnet",
    requires=("bacpypes3",),
)
