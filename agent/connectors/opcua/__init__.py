"""OPC-UA connector (asyncua): subscriptions or polling, Basic256Sha256 security, supervised reconnects.

Options and troubleshooting are in README.md next to this file; sample.toml is a complete example.
This module only declares the connector, so asyncua is imported when an OPC-UA source is
configured (and a missing `[opcua]` extra is reported as such).
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="opcua",
    factory="agent.connectors.opcua.connector:build",
    extra="opcua",
    requires=("asyncua", "cryptography"),
)
