"""OPC-UA connector (asyncua): subscriptions or polling, Basic256Sha256 security, supervised reconnects.

Options and troubleshooting are in README.md next to this file; sample.toml is a complete example.
"""

from agent.connectors.opcua.connector import OpcUaConnector, build

__all__ = ["OpcUaConnector", "build"]
