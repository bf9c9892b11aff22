"""The MQTT connector against a real Mosquitto: simulator data, wildcards, malformed payloads,
Sparkplug B, TLS with client certificates and passwords."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.codec import WaveformFormat, encode_waveform
from agent.connectors.mqtt.connector import MqttConnector, build
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait
from simulator.mqtt_sensors import VibrationSensorSimulator
from tests.certs import application_certificate
from tests.servers import ServerProcess, free_port, mosquitto_server

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "agent/connectors/mqtt/sample.toml"
WAIT_S = 20.0


class Received:
    """What the connector emitted."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, batch: Sequence[Reading]) -> None:
        self.readings.extend(batch)

    def of(self, point: str, quality: Quality | None = None) -> list[Reading]:
        return [r for r in self.readings if r.point == point and (quality is None or r.quality is quality)]

    def values(self, point: str) -> list[Any]:
        return [r.value for r in self.of(point, Quality.GOOD)]


async def wait_until(predicate: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(connector: MqttConnector, wait_ready: bool = True) -> AsyncIterator[Received]:
    received = Received()
    task = asyncio.create_task(connector.run(received))
    try:
        if wait_ready:
            await wait_until(lambda: connector.ready, "connected and subscribed")
        yield received
    finally:
        await cancel_and_wait([task])  # as the daemon stops it


class Publisher:
    """A plain paho client publishing as a device would; every publish waits for the broker's ack."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + WAIT_S
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "publisher could not connect"
            time.sleep(0.01)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def publisher(port: int) -> Iterator[Publisher]:
    p = Publisher(port)
    try:
        yield p
    finally:
        p.close()


def source(port: int, points: list[dict[str, Any]], **options: Any) -> MqttConnector:
    table = {"name": "test-broker", "host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1,
             "reconnect_max_s": 0.5, **options, "points": points}
    return build(table, "sources[0]")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = mosquitto_server(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield server
    finally:
        server.stop()


def amplitude_at(block: np.ndarray, fs: float, f_hz: float) -> float:
    window = np.hanning(len(block))
    spec = np.abs(np.fft.rfft(block * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(len(block), 1 / fs)
    return float(spec[np.abs(freqs - f_hz) < 3.0].max())


def test_simulated_pump_through_the_sample_config(broker: ServerProcess) -> None:
    """The sample config's pump-1 points read the simulator: waveform blocks, speed, JSON status;
    a fault injected by command shows up in the next waveforms."""
    table = tomllib.loads(SAMPLE.read_text())["sources"][0]
    for key in ("type", "username", "password_env"):
        table.pop(key)
    table.update(port=broker.port, client_id="sample-config-test")

    async def main() -> None:
        connector = build(table, "sources[0]")
        sim = VibrationSensorSimulator("127.0.0.1", broker.port, period_s=0.1, seed=3)
        async with running(connector) as got:
            await sim.start()
            try:
                await wait_until(lambda: len(got.of("de_accel")) >= 4 and got.of("bearing_temp"), "four blocks")
                healthy = got.values("de_accel")[-1]
                with publisher(broker.port) as pub:
                    pub.publish("plant/pump-1/cmd", json.dumps({"inject": "unbalance", "severity": 0.3}))
                    n = len(got.of("de_accel"))
                    await wait_until(lambda: len(got.of("de_accel")) >= n + 3, "blocks after the command")
            finally:
                await sim.stop()
        assert all(r.quality is Quality.GOOD for r in got.readings)
        blocks = got.of("de_accel")
        assert {r.asset for r in blocks} == {"pump-1"}
        for r in blocks:
            assert isinstance(r.value, np.ndarray) and r.value.dtype == np.float64 and r.value.shape == (8192,)
        assert [r.ts_ns for r in blocks] == sorted(r.ts_ns for r in blocks)
        assert abs(blocks[-1].ts_ns - time.time_ns()) < 60e9  # the header's timestamp, not zero
        speeds = got.values("speed")
        assert speeds and all(1460 < s < 1500 for s in speeds)
        temp = got.of("bearing_temp")[0]
        assert 35 < temp.value < 50 and temp.ts_ns % 1_000_000 == 0  # from the JSON's epoch-ms "ts"
        shaft_hz = speeds[-1] / 60
        assert amplitude_at(healthy, 12800.0, shaft_hz) < 0.1
        assert amplitude_at(blocks[-1].value, 12800.0, shaft_hz) > 0.25  # type: ignore[arg-type]
        assert connector.stats.decode_errors == 0 and connector.stats.polls >= 3 * 4

    asyncio.run(main())


def test_wildcard_filters_route_each_message_once_per_matching_point(broker: ServerProcess) -> None:
    async def main() -> None:
        connector = source(broker.port, [
            {"asset": "hall", "name": "plus", "topic": "w/+/temp"},
            {"asset": "hall", "name": "exact", "topic": "w/hall-1/temp"},
            {"asset": "hall", "name": "hash", "topic": "w/hall-2/#", "qos": 0},
        ])
        async with running(connector) as got:
            with publisher(broker.port) as pub:
                for topic, value in [("w/hall-1/temp", 1), ("w/hall-2/temp", 2), ("w/hall-2/x/y", 3),
                                     ("w/hall-3/a/temp", 4), ("w/hall-2", 6), ("w/hall-1/temp", 5)]:
                    pub.publish(topic, str(value))
            await wait_until(lambda: 5.0 in got.values("exact"), "the last message")
        assert got.values("exact") == [1.0, 5.0]
        assert got.values("plus") == [1.0, 2.0, 5.0]
        assert got.values("hash") == [2.0, 3.0, 6.0]  # '#' also matches the parent level

    asyncio.run(main())


def test_malformed_payloads_are_counted_logged_once_and_do_not_stop_the_connector(
        broker: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    wave_fmt = WaveformFormat(12800.0, header="twin-v1")
    good_wave = encode_waveform(np.linspace(-1, 1, 64), wave_fmt, ts_ns=time.time_ns())
    garbage = {
        "m/num": [b"twelve", b"", b"\xff\xfe", b"nan"],
        "m/json": [b"{", b'{"v": "x"}', b'{"w": 1}', b"[]"],
        "m/wave": [b"TWV1", good_wave[:-1], b"\x00" * 37, encode_waveform(np.ones(4), WaveformFormat(8000.0,
                                                                                                 header="twin-v1"))],
        "spBv1.0/m/DDATA/n/d": [b"\xff\xff\xff", b"\x12\x05"],
    }
    good = {"m/num": b"21.5", "m/json": b'{"v": 7}', "m/wave": good_wave,
            "spBv1.0/m/DDATA/n/d": sparkplug_b_pb2.Payload(metrics=[
                sparkplug_b_pb2.Payload.Metric(name="x", datatype=10, double_value=3.5)]).SerializeToString()}

    async def main() -> None:
        connector = source(broker.port, [
            {"asset": "m", "name": "num", "topic": "m/num"},
            {"asset": "m", "name": "json", "topic": "m/json", "format": "json", "value_path": "v"},
            {"asset": "m", "name": "wave", "kind": "waveform", "topic": "m/wave", "format": "waveform",
             "header": "twin-v1", "sample_rate_hz": 12800.0},
            {"asset": "m", "name": "sp", "topic": "spBv1.0/m/DDATA/n/d", "format": "sparkplug", "metric": "x"},
        ])
        with caplog.at_level(logging.WARNING, logger="twin.agent.mqtt"):
            async with running(connector) as got:
                with publisher(broker.port) as pub:
                    for topic, payloads in garbage.items():
                        for p in payloads:
                            pub.publish(topic, p)
                    for topic, p in good.items():
                        pub.publish(topic, p)
                await wait_until(lambda: all(got.values(n) for n in ("num", "json", "wave", "sp")), "good ones")
        n_garbage = sum(len(p) for p in garbage.values())
        assert connector.stats.decode_errors == n_garbage
        bad = [r for r in got.readings if r.quality is Quality.BAD]
        assert len(bad) == n_garbage
        assert all(r.value is None and r.reason.startswith("decode error: ") for r in bad)
        assert any("8000 Hz but the point is configured with sample_rate_hz = 12800" in r.reason for r in bad)
        assert got.values("num") == [21.5] and got.values("json") == [7.0] and got.values("sp") == [3.5]
        malformed_lines = [r.getMessage() for r in caplog.records if "malformed payload" in r.getMessage()]
        assert len(malformed_lines) == len(garbage)  # one line per topic per log interval
        assert connector.stats.errors == 0

    asyncio.run(main())


def test_sparkplug_births_aliases_and_deaths_over_the_broker(broker: ServerProcess) -> None:
    def sp(*metrics: dict[str, Any]) -> bytes:
        return sparkplug_b_pb2.Payload(timestamp=int(time.time() * 1000), seq=0, metrics=[
            sparkplug_b_pb2.Payload.Metric(**m) for m in metrics]).SerializeToString()

    async def main() -> None:
        connector = source(broker.port, [
            {"asset": "chiller-1", "name": "speed", "topic": "spBv1.0/plant/DDATA/gw1/chiller-1",
             "format": "sparkplug", "metric": "Compressor/Speed"},
            {"asset": "chiller-1", "name": "running", "kind": "state", "topic": "spBv1.0/plant/DDATA/gw1/chiller-1",
             "format": "sparkplug", "metric": "Compressor/Running"},
        ])
        async with running(connector) as got:
            with publisher(broker.port) as pub:
                pub.publish("spBv1.0/plant/NBIRTH/gw1", sp({"name": "bdSeq", "datatype": 8, "long_value": 1}))
                pub.publish("spBv1.0/plant/DBIRTH/gw1/chiller-1", sp(
                    {"name": "Compressor/Speed", "alias": 21, "datatype": 10, "double_value": 3000.0},
                    {"name": "Compressor/Running", "alias": 22, "datatype": 11, "boolean_value": True}))
                pub.publish("spBv1.0/plant/DDATA/gw1/chiller-1", sp({"alias": 21, "double_value": 3050.0}))
                pub.publish("spBv1.0/plant/DDATA/gw1/chiller-1", sp({"alias": 22, "boolean_value": False}))
                await wait_until(lambda: len(got.values("running")) == 2, "alias-only data")
                pub.publish("spBv1.0/plant/NDEATH/gw1", sp({"name": "bdSeq", "datatype": 8, "long_value": 1}))
                await wait_until(lambda: got.of("speed", Quality.BAD), "node death")
        assert got.values("speed") == [3000.0, 3050.0]
        assert got.values("running") == [True, False]
        assert [r.reason for r in got.of("speed", Quality.BAD)] == ["Sparkplug NDEATH"]
        assert [r.reason for r in got.of("running", Quality.BAD)] == ["Sparkplug NDEATH"]
        assert connector.stats.decode_errors == 0

    asyncio.run(main())


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, dict[str, Path]]]:
    """Mosquitto with a second listener that wants TLS, a client certificate and a password."""
    d = tmp_path_factory.mktemp("mosquitto-tls")
    server_pair = application_certificate(d, "broker", "urn:facility-twin:test:broker", server=True)
    client_pair = application_certificate(d, "gw01", "urn:facility-twin:test:gw01")
    trusted_clients = d / "clients-ca.pem"
    trusted_clients.write_bytes(client_pair.certificate.read_bytes())
    passwords = d / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "gw01", "correct horse"], check=True,
                   capture_output=True)
    (d / "password").write_text("correct horse\n")
    (d / "wrong-password").write_text("battery staple\n")
    tls_port = free_port()
    server = mosquitto_server(d, extra_conf=(
        f"password_file {passwords}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {trusted_clients}\ncertfile {server_pair.certificate}\nkeyfile {server_pair.private_key}\n"
        "require_certificate true\n"))
    files = {"ca": server_pair.certificate, "cert": client_pair.certificate, "key": client_pair.private_key,
             "password": d / "password", "wrong": d / "wrong-password"}
    try:
        yield server, tls_port, files
    finally:
        server.stop()


def test_tls_with_client_certificate_and_password(tls_broker: tuple[ServerProcess, int, dict[str, Path]]) -> None:
    server, tls_port, files = tls_broker

    def tls_source(password_file: Path) -> MqttConnector:
        return source(tls_port, [{"asset": "a", "name": "t", "topic": "secure/t"}], tls=True,
                      ca_file=str(files["ca"]), cert_file=str(files["cert"]), key_file=str(files["key"]),
                      username="gw01", password_file=str(password_file))

    async def main() -> None:
        async with running(tls_source(files["password"])) as got:
            with publisher(server.port) as pub:  # the plain listener of the same broker
                pub.publish("secure/t", "42")
            await wait_until(lambda: got.values("t") == [42.0], "a message over TLS")

        refused = tls_source(files["wrong"])
        async with running(refused, wait_ready=False):
            await wait_until(lambda: refused.stats.errors >= 2, "two refused attempts")
            assert not refused.ready
            assert "refused" in refused.stats.last_error and "battery" not in refused.stats.last_error

    asyncio.run(main())


def test_simulator_command_line(broker: ServerProcess) -> None:
    """`python -m simulator.mqtt_sensors --port P` with a scheduled fault, stopped by SIGTERM."""

    async def main() -> None:
        connector = source(broker.port, [
            {"asset": "pump-7", "name": "de_accel", "kind": "waveform", "topic": "site/pump-7/vib/de",
             "format": "waveform", "sample_rate_hz": 6400.0},  # --header none: the config describes it
            {"asset": "pump-7", "name": "speed", "topic": "site/pump-7/speed"},
        ])
        async with running(connector) as got:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "simulator.mqtt_sensors", "--port", str(broker.port), "--prefix",
                "site/pump-7", "--period", "0.1", "--fs", "6400", "--block-size", "4096", "--rpm", "2960",
                "--header", "none", "--fault", "bearing_outer:0.5@0",
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                await wait_until(lambda: len(got.of("de_accel")) >= 3 and got.of("speed"), "simulator data")
            finally:
                proc.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 0, stderr.decode()
        assert b"fault bearing_outer injected" in stderr
        assert all(r.value.shape == (4096,) for r in got.of("de_accel", Quality.GOOD))  # type: ignore[union-attr]
        assert all(2900 < v < 3020 for v in got.values("speed"))
        assert connector.stats.decode_errors == 0

    asyncio.run(main())
