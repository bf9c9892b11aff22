"""The extras by role: the table that names a missing extra agrees with pyproject.toml, and the
base install carries nothing a role does not need."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.extras import EXTRA_OF_MODULE, MissingExtraError, import_feature, missing_extra_message

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_every_module_in_the_table_belongs_to_the_extra_it_names() -> None:
    for module, (extra, dist) in EXTRA_OF_MODULE.items():
        assert dist in _names(EXTRAS[extra]), f"{module}: {dist} is not in [{extra}]"


def test_roles_nest_and_the_base_is_small() -> None:
    base = _names(PYPROJECT["project"]["dependencies"])
    assert not base & {"pymodbus", "asyncua", "cryptography", "paho-mqtt", "aiohttp", "influxdb-client"}
    assert {"facility-twin"} == _names(EXTRAS["agent"]) and "modbus,opcua,mqtt" in EXTRAS["agent"][0]
    assert "agent" in EXTRAS["all"][0] and "collector" in EXTRAS["all"][0]
    assert not _names(EXTRAS["modbus"]) & {"asyncua", "paho-mqtt", "aiohttp", "influxdb-client"}


def test_a_missing_extra_is_named() -> None:
    exc = ModuleNotFoundError("No module named 'asyncua'", name="asyncua")
    message = missing_extra_message(exc, "sources[1].type = 'opcua'")
    assert message is not None and message.startswith("sources[1].type = 'opcua' needs the 'opcua' extra")
    assert "pip install 'facility-twin[opcua]'" in message
    assert missing_extra_message(ModuleNotFoundError("x", name="not_ours"), "x") is None
    with pytest.raises(ModuleNotFoundError):
        import_feature("no_such_module_anywhere", "x")  # not an optional part: a real bug, re-raised
    assert issubclass(MissingExtraError, ConfigError)
