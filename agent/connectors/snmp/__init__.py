"""SNMP connector (v2c, v3 authPriv): GET of scalars, GETBULK walks of tables, UPS-MIB and ENTITY-SENSOR-MIB profiles.

See README.md in this folder for the options and sample.toml for a complete `[[sources]]` example.
This module declares the connector and imports nothing else, so pysnmp is loaded only when an SNMP
source is configured (and a missing `[snmp]` extra is reported as such).
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="snmp",
    factory="agent.connectors.snmp.connector:build",
    probe="agent.connectors.snmp.probe",
    probe_help="GET or walk OIDs (or a profile) on an agent and print each value decoded",
    extra="snmp",
    requires=("pysnmp", "pyasn1"),
)
