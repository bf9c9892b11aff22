"""The agent's /metrics, scraped over real HTTP from a real daemon that polls a real Modbus device
and delivers to a real collector: every number is the daemon's own counter, read at scrape time."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agent.config import load_agent_config
from agent.daemon import AgentDaemon
from agent.metrics import agent_registry
from runtime.errors import ConfigError
from runtime.metrics_server import MetricsSettings, parse_listen, start_metrics_server
from runtime.tomlconfig import parse_model
from tests.integration.daemons import collector_process, pattern_agent_toml, pattern_device
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    device = pattern_device(tmp_path)
    collector = collector_process(tmp_path / "c")
    yield device, collector
    collector.stop()
    device.stop()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll the live daemon from its own event loop (it keeps running between polls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {TIMEOUT_S:.0f}s waiting for {what}")


def test_scraped_metrics_are_the_daemons_counters(tmp_path: Path,
                                                   servers: tuple[ServerProcess, ServerProcess]) -> None:
    device, collector = servers
    cfg = tmp_path / "agent.toml"
    cfg.write_text(pattern_agent_toml(tmp_path / "a" / "state", collector.port, device.port))
    daemon = AgentDaemon(load_agent_config(cfg))
    server = start_metrics_server(agent_registry(daemon), "127.0.0.1:0")

    async def scenario() -> tuple[Samples, Samples, dict]:
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.uplink.counters.acked >= 2, "two batches acked")
        live = await asyncio.to_thread(scrape, server.url)
        device.stop()  # the device goes away: the connector marks it offline and counts errors
        await until(lambda: not any(daemon.config.connectors[0].stats.devices_online.values()), "device offline")
        daemon.request_stop()
        await task
        final = await asyncio.to_thread(scrape, server.url)
        return live, final, daemon.status()

    try:
        live, final, status = asyncio.run(scenario())
    finally:
        server.close()

    assert value(live, "twin_agent_info", agent="gw-a", site="plant-a", version=status_version()) == 1
    assert value(live, "twin_agent_uplink_connected") == 1
    assert value(live, "twin_agent_uplink_acked_batches_total") >= 2
    assert value(live, "twin_agent_connector_polls_total", connector="ahu-1-controller") > 0
    assert value(live, "twin_agent_device_online", connector="ahu-1-controller", device=device_label(status)) == 1
    assert value(live, "twin_agent_connector_devices_online", connector="ahu-1-controller") == 1
    assert value(live, "twin_agent_points", quality="good") == 2
    assert value(live, "twin_agent_assets", state="online") == 1
    assert value(live, "twin_agent_readings_total") > 0
    assert value(live, "twin_agent_resident_memory_bytes") > 10e6
    assert value(live, "process_resident_memory_bytes") > 10e6, "standard process metrics are included"
    assert value(live, "twin_agent_queue_max_bytes") == 16 * 1024 * 1024

    # Stopped: the objects are still there and the scrape equals the daemon's own status exactly.
    c = status["connectors"]["ahu-1-controller"]
    q, u = status["queue"], status["uplink"]
    expected = {
        ("twin_agent_connector_polls_total", "ahu-1-controller"): c["polls"],
        ("twin_agent_connector_errors_total", "ahu-1-controller"): c["errors"],
        ("twin_agent_connector_decode_errors_total", "ahu-1-controller"): c["decode_errors"],
        ("twin_agent_connector_devices_online", "ahu-1-controller"): sum(c["devices_online"].values()),
    }
    for (name, connector), want in expected.items():
        assert value(final, name, connector=connector) == want, name
    assert c["errors"] > 0, "polling a device that is gone counts errors"
    assert value(final, "twin_agent_device_online", connector="ahu-1-controller", device=device_label(status)) == 0
    assert value(final, "twin_agent_queue_batches") == q["batches"]
    assert value(final, "twin_agent_queue_bytes") == q["bytes"]
    assert value(final, "twin_agent_queue_dropped_batches_total") == q["dropped"]
    assert value(final, "twin_agent_queue_batches_stored_total") == q["next_seq"] - 1
    assert value(final, "twin_agent_queue_summaries_stored_total") == q["summaries_total"]
    assert value(final, "twin_agent_uplink_sent_batches_total") == u["sent"]
    assert value(final, "twin_agent_uplink_acked_batches_total") == u["acked"]
    assert value(final, "twin_agent_uplink_reconnects_total") == u["reconnects"]
    assert value(final, "twin_agent_readings_total") == status["readings"]
    stale = sum(p["stale"] for a in status["assets"].values() for p in a["points"].values())
    assert value(final, "twin_agent_points_stale") == stale
    assert value(final, "twin_agent_vibration_blocks_analysed_total") == 0
    assert value(final, "twin_agent_vibration_blocks_dropped_total") == 0


def status_version() -> str:
    from agent import __version__

    return __version__


def device_label(status: dict) -> str:
    [label] = status["connectors"]["ahu-1-controller"]["devices_online"]
    return str(label)


def test_listen_address_errors_name_the_key() -> None:
    assert parse_listen("127.0.0.1:9851") == ("127.0.0.1", 9851)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9851", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:9851"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    with pytest.raises(ConfigError, match=r"^metrics\.listen: "):
        parse_model(MetricsSettings, {"listen": "localhost"}, "metrics")
    assert parse_model(MetricsSettings, {}, "metrics").listen == ""
    with pytest.raises(ConfigError, match=r"^agent\.metrics: must be host:port"):
        start_metrics_server(CollectorRegistry(), "nowhere", key="agent.metrics")


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^metrics\.listen: cannot listen on 127\.0\.0\.1:{port}: "):
            start_metrics_server(CollectorRegistry(), f"127.0.0.1:{port}")


def test_ipv6_loopback_endpoint_serves_and_closes() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = start_metrics_server(CollectorRegistry(), "[::1]:0")
    except ConfigError as exc:
        pytest.skip(f"IPv6 loopback not available: {exc}")
    try:
        assert server.url.startswith("http://[::1]:")
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200
    finally:
        server.close()
    with pytest.raises(OSError), socket.create_connection(("::1", server.port), timeout=2):
        pass
