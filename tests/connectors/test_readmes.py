"""Every connector README has the same sections, and its Options name every key of the config model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.connectors.bacnet.config import BacnetDevice, BacnetPoint, BacnetSourceConfig
from agent.connectors.prometheus.config import PrometheusPoint, PrometheusSourceConfig, PrometheusTarget
from agent.connectors.snmp.config import IndexTarget, SnmpColumn, SnmpDevice, SnmpPoint, SnmpSourceConfig, SnmpTable

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Options", "How it reads", "Connection supervision", "Troubleshooting", "Metrics", "Example output")
MODELS: dict[str, tuple[type[BaseModel], ...]] = {
    "bacnet": (BacnetSourceConfig, BacnetDevice, BacnetPoint),
    "snmp": (SnmpSourceConfig, SnmpDevice, SnmpPoint, SnmpColumn, SnmpTable, IndexTarget),
    "prometheus": (PrometheusSourceConfig, PrometheusTarget, PrometheusPoint),
}


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_readme_has_the_sections_and_documents_every_option(name: str) -> None:
    text = (ROOT / "agent" / "connectors" / name / "README.md").read_text()
    found = sections(text)
    assert [s for s in SECTIONS if s not in found] == []
    options = found["Options"]
    missing = sorted({f for model in MODELS[name] for f in model.model_fields if f"`{f}`" not in options})
    assert missing == [], f"{name}/README.md Options do not document {missing}"
    for section in SECTIONS:
        assert found[section].strip(), f"{name}/README.md: section {section} is empty"
