"""Prometheus connector: scrapes exposition-format targets and maps selected series to asset points.

See README.md in this folder for the options and sample.toml for a complete `[[sources]]` example.
This module declares the connector and imports nothing else, so an agent without Prometheus
sources never loads aiohttp for it.
"""

from agent.connectors.base import ConnectorInfo

__all__ = ["CONNECTOR"]

CONNECTOR = ConnectorInfo(
    name="prometheus",
    factory="agent.connectors.prometheus.connector:build",
    probe="agent.connectors.prometheus.probe",
    probe_help="scrape a target once and list its metric families, types and series",
    extra="prometheus",
    requires=("aiohttp", "prometheus_client"),
)
