"""OPC-UA client certificates: a refusal by a server with strict trust (node-opcua, a third-party
stack, refuses at OpenSecureChannel), and `twin-agent opcua-cert` certificates accepted by
node-opcua and by asyncua's server with Basic256Sha256."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import logging
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.cli import main as agent_cli
from agent.connectors.opcua.connector import OpcUaConnector, build
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait
from simulator.power_meter import APPLICATION_URI, NODES, PowerMeterSimulator
from tests.certs import application_certificate
from tests.servers import node_opcua_server

pytestmark = pytest.mark.integration

CLIENT_URI = "urn:facility-twin:agent:edge-1"
SERVER_URI = "urn:facility-twin:test:node-opcua"


def connector(name: str, endpoint: str, cert: Path, key: str | Path, node_id: str, **extra: Any) -> OpcUaConnector:
    return build({
        "name": name, "endpoint": endpoint, "publishing_interval_ms": 100,
        "security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
        "certificate_file": str(cert), "private_key_file": str(key),
        "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
        "points": [{"asset": "meter", "name": "voltage", "unit": "V", "node_id": node_id}], **extra,
    }, "sources[0]")


def make_certificate(directory: Path, *extra: str) -> tuple[Path, Path, str]:
    cert, key = directory / "client-cert.pem", directory / "client-key.pem"
    out = agent_cli(["opcua-cert", "--cert", str(cert), "--key", str(key), *extra])
    assert out == 0
    return cert, key, f"urn:facility-twin:agent:{socket.gethostname()}"


async def run_until(connectors: dict[str, OpcUaConnector], done: Any, within_s: float = 45.0
                    ) -> dict[str, list[Reading]]:
    got: dict[str, list[Reading]] = {n: [] for n in connectors}
    tasks = [asyncio.create_task(c.run(got[n].extend)) for n, c in connectors.items()]
    deadline = time.monotonic() + within_s
    try:
        while not done(got):
            assert time.monotonic() < deadline, {n: (len(r), c.stats) for n, (r, c) in
                                                 zip(got, zip(got.values(), connectors.values(), strict=True),
                                                     strict=True)}
            assert not any(t.done() for t in tasks), "run() must only return on cancellation"
            await asyncio.sleep(0.05)
    finally:
        await cancel_and_wait(tasks)
    return got


def test_a_certificate_refused_at_open_secure_channel_names_the_file_to_trust(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """node-opcua answers an untrusted certificate's OpenSecureChannel with a ServiceFault. asyncua
    read it as `AssertionError: ` after a NotEnoughData traceback on every retry; now the points
    carry the server's status and one warning says which file to trust."""
    caplog.set_level(logging.INFO)
    server = application_certificate(tmp_path / "server", "server", SERVER_URI, server=True)
    trusted_cert, trusted_key, _ = make_certificate(tmp_path / "agent")
    stranger = application_certificate(tmp_path / "stranger", "stranger", CLIENT_URI)
    with node_opcua_server(tmp_path / "node", server.certificate, server.private_key, SERVER_URI,
                           trusted=[trusted_cert]) as peer:
        endpoint = f"opc.tcp://127.0.0.1:{peer.port}"
        connectors = {
            "trusted": connector("trusted", endpoint, trusted_cert, trusted_key, "ns=1;s=Voltage"),
            "stranger": connector("stranger", endpoint, stranger.certificate, stranger.private_key, "ns=1;s=Voltage"),
        }

        def done(got: dict[str, list[Reading]]) -> bool:
            return (sum(r.quality is Quality.GOOD for r in got["trusted"]) >= 5
                    and connectors["stranger"].stats.errors >= 3)

        got = asyncio.run(run_until(connectors, done))

    assert all(r.quality is Quality.GOOD and 229.0 < r.value < 232.0 for r in got["trusted"])  # type: ignore[operator]
    assert connectors["trusted"].stats.errors == 0
    # Marked BAD once with the server's reason (node-opcua does not tell an untrusted certificate
    # from other security failures: OPC 10000-4 lets it answer BadSecurityChecksFailed), however many
    # times the refusal repeats. On a loaded machine a first attempt may time out before the server
    # answers: that is a different reason, reported before it.
    marks = [(r.quality, r.value, r.reason) for r in got["stranger"]]
    refused = (Quality.BAD, None, "BadSecurityChecksFailed")
    assert marks[-1] == refused and all(a != b for a, b in itertools.pairwise(marks)), marks
    assert all(m[0] is Quality.BAD and m[1] is None for m in marks), marks
    stats = connectors["stranger"].stats
    assert stats.devices_online == {endpoint: False}
    assert stats.last_error.startswith("the server refused the client certificate (BadSecurityChecksFailed); "
                                       f"trust {stranger.certificate} on the server")
    ours = [r.getMessage() for r in caplog.records if r.name == "twin.connector.opcua" and r.levelno >= logging.WARNING]
    assert ours[-1] == f"stranger ({endpoint}): {stats.last_error}; retrying with backoff"
    assert sum("refused the client certificate" in m for m in ours) == marks.count(refused), ours
    assert len(ours) == len(marks), (ours, marks)  # one warning per change of reason, never per retry
    # No tracebacks, no parse errors: the refusal is an expected event, reported once.
    assert [r for r in caplog.records if r.exc_info] == []
    assert not any(word in r.getMessage() for r in caplog.records
                   for word in ("AssertionError", "NotEnoughData", "Exception raised while parsing"))


def test_opcua_cert_makes_an_application_certificate_that_asyncua_accepts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert_path, key_path, uri = make_certificate(tmp_path / "agent", "--ip", "127.0.0.1", "--days", "30")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    cert.verify_directly_issued_by(cert)  # self-signed, signature valid
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_encipherment and usage.data_encipherment
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc < now - dt.timedelta(minutes=30)  # a server clock a little behind accepts it
    assert dt.timedelta(days=29) < cert.not_valid_after_utc - now < dt.timedelta(days=31)
    data = b"signed by the agent"
    cert.public_key().verify(key.sign(data, padding.PKCS1v15(), cert.signature_hash_algorithm), data,  # type: ignore[union-attr, call-arg, arg-type]
                             padding.PKCS1v15(), cert.signature_hash_algorithm)

    caplog.set_level(logging.INFO)
    server = application_certificate(tmp_path / "server", "server", APPLICATION_URI, server=True)
    (tmp_path / "password").write_text("correct horse\n")

    async def main() -> dict[str, list[Reading]]:
        sim = PowerMeterSimulator(seed=3, update_interval_s=0.1, security=True, certificate_file=server.certificate,
                                  private_key_file=server.private_key, trusted_certificates=[cert_path],
                                  users={"meter-reader": "correct horse"})
        await sim.start()
        try:
            conn = connector("made", sim.endpoint, cert_path, key_path, NODES["voltage_l1"].node_id,
                             username="meter-reader", password_file=str(tmp_path / "password"))
            return await run_until({"made": conn}, lambda got: sum(r.quality is Quality.GOOD for r in got["made"]) >= 5)
        finally:
            await sim.stop()

    got = asyncio.run(main())
    assert got["made"] and all(r.quality is Quality.GOOD for r in got["made"])
    # The certificate carries this host's name: asyncua has nothing to warn about.
    assert not [r.getMessage() for r in caplog.records if "certificate does not contain" in r.getMessage()]
