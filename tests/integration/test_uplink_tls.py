"""The agent-collector link over TLS with client certificates (mTLS), and what is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.certs import tls_files
from tests.integration.daemons import (
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    wait_acked,
)
from tests.servers import wait_for

pytestmark = pytest.mark.integration


def with_tls(agent_toml: str, extra: str) -> str:
    return agent_toml.replace("backoff_max_s = 1.0\n", f"backoff_max_s = 1.0\ntls = true\n{extra}", 1)


def test_mtls_link_and_refusals(tmp_path: Path) -> None:
    tls = tls_files(tmp_path / "tls")
    device = pattern_device(tmp_path)
    collector = collector_process(tmp_path / "c", rules="", collector_extra=(
        f'tls_cert_file = "{tls.server_cert}"\ntls_key_file = "{tls.server_key}"\nclient_ca_file = "{tls.ca}"\n'))
    procs = [device, collector]
    try:
        good = tmp_path / "good"
        procs.append(agent_process(good, with_tls(
            pattern_agent_toml(good / "state", collector.port, device.port),
            f'ca_file = "{tls.ca}"\ncert_file = "{tls.client_cert}"\nkey_file = "{tls.client_key}"\n')))
        wait_acked(good, 2)

        no_client_cert = tmp_path / "nocert"
        procs.append(agent_process(no_client_cert, with_tls(
            pattern_agent_toml(no_client_cert / "state", collector.port, device.port), f'ca_file = "{tls.ca}"\n')))
        wrong_ca = tmp_path / "wrongca"
        other = tls_files(tmp_path / "other")
        procs.append(agent_process(wrong_ca, with_tls(
            pattern_agent_toml(wrong_ca / "state", collector.port, device.port),
            f'ca_file = "{other.ca}"\ncert_file = "{tls.client_cert}"\nkey_file = "{tls.client_key}"\n')))
        for d in (no_client_cert, wrong_ca):
            wait_for(lambda d=d: status(d).get("uplink", {}).get("last_error", "") != "", 30, "a refused link")
        time.sleep(2)
        for d in (no_client_cert, wrong_ca):
            st = status(d)
            assert st["uplink"]["acked"] == 0 and not st["uplink"]["connected"], st["uplink"]
            assert st["queue"]["batches"] >= 1, "refused, the agent keeps its data queued"
    finally:
        for p in reversed(procs):
            p.stop()
