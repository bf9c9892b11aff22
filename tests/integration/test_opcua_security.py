"""OPC-UA security against the simulated power meter: Basic256Sha256 with generated certificates.

One secured simulator trusts one client certificate and requires a user name and password; four
connectors try it at once: SignAndEncrypt and Sign with the trusted certificate, a stranger's
certificate, and a wrong password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agent.connectors.opcua.connector import OpcUaConnector, build
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait
from simulator.power_meter import APPLICATION_URI, NODES, PowerMeterSimulator
from tests.certs import application_certificate

pytestmark = pytest.mark.integration

CLIENT_URI = "urn:facility-twin:agent:edge-1"


def connector(sim: PowerMeterSimulator, name: str, cert: Path, key: Path, password_file: Path,
              mode: str = "SignAndEncrypt", **extra: Any) -> OpcUaConnector:
    return build({
        "name": name, "endpoint": sim.endpoint, "publishing_interval_ms": 100,
        "security_policy": "Basic256Sha256", "security_mode": mode,
        "certificate_file": str(cert), "private_key_file": str(key),
        "username": "meter-reader", "password_file": str(password_file),
        "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
        "points": [{"asset": "msb-meter", "name": "voltage_l1", "unit": "V",
                    "node_id": NODES["voltage_l1"].node_id}],
        **extra,
    }, "sources[0]")


def test_basic256sha256_certificates_and_user_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = application_certificate(tmp_path / "server", "server", APPLICATION_URI, server=True)
    trusted = application_certificate(tmp_path / "agent", "agent", CLIENT_URI)
    stranger = application_certificate(tmp_path / "stranger", "stranger", CLIENT_URI)
    (tmp_path / "password").write_text("correct horse\n")
    (tmp_path / "wrong-password").write_text("battery staple\n")

    async def main() -> dict[str, tuple[list[Reading], OpcUaConnector]]:
        sim = PowerMeterSimulator(seed=6, update_interval_s=0.1, security=True,
                                  certificate_file=server.certificate, private_key_file=server.private_key,
                                  trusted_certificates=[trusted.certificate], users={"meter-reader": "correct horse"})
        await sim.start()
        pw, wrong = tmp_path / "password", tmp_path / "wrong-password"
        connectors = {
            "encrypt": connector(sim, "encrypt", trusted.certificate, trusted.private_key, pw,
                                 server_certificate_file=str(server.certificate)),
            "sign": connector(sim, "sign", trusted.certificate, trusted.private_key, pw, mode="Sign"),
            "stranger": connector(sim, "stranger", stranger.certificate, stranger.private_key, pw),
            "wrong-password": connector(sim, "wrong-password", trusted.certificate, trusted.private_key, wrong),
        }
        results: dict[str, tuple[list[Reading], OpcUaConnector]] = {n: ([], c) for n, c in connectors.items()}
        tasks = [asyncio.create_task(c.run(results[n][0].extend)) for n, c in connectors.items()]

        def done() -> bool:
            good = all(sum(r.quality is Quality.GOOD for r in results[n][0]) >= 5 for n in ("encrypt", "sign"))
            refused = all(results[n][1].stats.errors >= 3 for n in ("stranger", "wrong-password"))
            return good and refused

        deadline = time.monotonic() + 30.0
        try:
            while not done():
                assert time.monotonic() < deadline, {n: (len(r), c.stats) for n, (r, c) in results.items()}
                assert not any(t.done() for t in tasks), "run() must only return on cancellation"
                await asyncio.sleep(0.05)
        finally:
            await cancel_and_wait(tasks)  # as the daemon stops them
            await sim.stop()
        return results

    results = asyncio.run(main())

    for name in ("encrypt", "sign"):
        readings, conn = results[name]
        assert readings and all(r.quality is Quality.GOOD and 200.0 < r.value < 260.0  # type: ignore[operator]
                                for r in readings), name
        assert conn.stats.errors == 0, name

    for name, reason, hint in (("stranger", "BadCertificateUntrusted", str(stranger.certificate)),
                               ("wrong-password", "BadUserAccessDenied", "meter-reader")):
        readings, conn = results[name]
        # Marked BAD once with the server's reason; retried several times without repeating it.
        assert [(r.quality, r.value, r.reason) for r in readings] == [(Quality.BAD, None, reason)], name
        assert conn.stats.errors >= 3 and conn.stats.devices_online == {conn.config.endpoint: False}
        ours = [r for r in caplog.records
                if r.name == "twin.connector.opcua" and r.levelno >= logging.WARNING and name in r.getMessage()]
        assert len(ours) == 1, [r.getMessage() for r in ours]
        assert reason in ours[0].getMessage() and hint in ours[0].getMessage()

    # Refusals are expected events: no tracebacks from the connector or the asyncua client.
    client_side = [r for r in caplog.records if r.exc_info and r.name.startswith(("twin.", "asyncua.client"))]
    assert client_side == [], [(r.name, r.getMessage()) for r in client_side]
    # The password never appears in the logs.
    assert not any("correct horse" in r.getMessage() or "battery staple" in r.getMessage()
                   for r in caplog.records)
