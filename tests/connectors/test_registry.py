"""The connector registry: every folder is a type, declared in its own __init__.py, imported only when configured,
and a missing extra is an error that names it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.cli import main as cli
from agent.connectors import connector_info, connector_names

ROOT = Path(__file__).resolve().parents[2]
BACNET = ("{'type': 'bacnet', 'name': 'b', 'local_address': '127.0.0.1:47900', "
          "'devices': [{'instance': 1, 'address': '127.0.0.1:47901'}], "
          "'points': [{'asset': 'a', 'name': 'n', 'device': 1, 'object': 'AI:1'}]}")
SNMP = ("{'type': 'snmp', 'name': 's', 'devices': [{'name': 'u', 'host': '127.0.0.1', 'community': 'c', "
        "'asset': 'a', 'profile': 'ups-mib'}]}")
PROMETHEUS = ("{'type': 'prometheus', 'name': 'p', 'targets': [{'name': 't', 'url': 'http://127.0.0.1:1/m'}], "
              "'points': [{'asset': 'a', 'name': 'n', 'metric': 'm'}]}")
MODBUS = "{'type': 'modbus', 'name': 'm', 'host': '127.0.0.1', 'points': [{'asset': 'a', 'name': 'n', 'address': 0}]}"


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def test_every_connector_folder_is_a_type_with_its_declaration() -> None:
    assert connector_names() == ["bacnet", "modbus", "mqtt", "opcua", "prometheus", "snmp"]
    for name in connector_names():
        info = connector_info(name)
        assert info.name == name and ":" in info.factory
    assert (connector_info("bacnet").extra, connector_info("snmp").extra) == ("bacnet", "snmp")


def test_connectors_are_imported_only_when_configured() -> None:
    result = python(f"""
        import sys
        from agent.connectors import build_connector
        build_connector({MODBUS}, "sources[0]")
        heavy = ["bacpypes3", "pysnmp", "agent.connectors.bacnet.connector", "agent.connectors.snmp.connector",
                 "agent.connectors.prometheus.connector", "asyncua", "paho"]
        print(sorted(m for m in heavy if m in sys.modules))
        build_connector({BACNET}, "sources[0]")
        build_connector({SNMP}, "sources[0]")
        build_connector({PROMETHEUS}, "sources[0]")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"
    assert after == ("['agent.connectors.bacnet.connector', 'agent.connectors.prometheus.connector', "
                     "'agent.connectors.snmp.connector', 'bacpypes3', 'pysnmp']")


@pytest.mark.parametrize(("module", "table", "extra"), [
    ("bacpypes3", BACNET, "bacnet"), ("pysnmp", SNMP, "snmp"), ("prometheus_client", PROMETHEUS, "prometheus")])
def test_a_missing_extra_is_a_config_error_naming_it(module: str, table: str, extra: str) -> None:
    result = python(f"""
        import sys
        sys.modules["{module}"] = None  # as if the extra were not installed
        from agent.connectors import build_connector
        from runtime.errors import ConfigError
        try:
            build_connector({table}, "sources[0]")
        except ConfigError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"sources[0].type: the {extra} connector needs the [{extra}] extra (module "
                                     f"{module} is not installed): pip install 'facility-twin[{extra}]'")


def test_probe_lists_every_declared_probe_and_a_missing_extra_is_explained(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["probe", "--help"])
    out = capsys.readouterr().out
    for name in ("bacnet", "modbus", "prometheus", "snmp"):
        assert f"    {name} " in out
    result = python("""
        import sys
        sys.modules["pysnmp"] = None
        from agent.cli import main
        sys.exit(main(["probe", "snmp", "--host", "127.0.0.1", "--get", "1.3.6.1.2.1.1.3.0"]))
    """)
    assert result.returncode == 2
    assert "the snmp connector needs the [snmp] extra" in result.stderr
