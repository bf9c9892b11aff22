"""MQTT connector throughput: messages/s decoded into readings, vs a bare paho-mqtt subscriber.

For each payload format the same N QoS 1 messages are published while both subscribers are away
(each has a persistent session on a local Mosquitto, so the broker queues the messages for both);
then each subscriber connects in turn and drains its queue. The bare subscriber only counts in
`on_message` (the raw limit of paho + broker on this machine); the connector decodes every payload,
builds readings and hands them to a counting emit on the event loop. Best of --repeats rounds;
wall-clock rates suffer from whatever else runs on the machine, so CPU time per message is printed
as well. Prints ratios; asserts nothing.

    python bench/mqtt_bench.py [--messages 20000] [--waveforms 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.codec import WaveformFormat, encode_waveform
from agent.connectors.mqtt.connector import build
from agent.model import Reading

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import mosquitto_server

HOST = "127.0.0.1"
TIMEOUT_S = 300.0
BROKER_CONF = "max_queued_messages 0\nmax_inflight_messages 0\n"  # queue everything for the absent sessions


def payloads(fmt: str, n: int) -> tuple[dict[str, Any], list[bytes]]:
    """The connector's point for `fmt` and n payloads of that format."""
    rng = np.random.default_rng(0)
    point: dict[str, Any] = {"asset": "bench", "name": fmt, "topic": f"bench/{fmt}", "qos": 1}
    if fmt == "number":
        return point, [f"{20 + rng.normal():.3f}".encode() for _ in range(n)]
    if fmt == "json":
        point.update(format="json", value_path="data.temp", timestamp_path="ts")
        t0 = int(time.time() * 1000)
        return point, [json.dumps({"ts": t0 + i, "data": {"temp": round(20 + rng.normal(), 3), "rh": 45.0}}).encode()
                       for i in range(n)]
    if fmt == "waveform":
        point.update(kind="waveform", format="waveform", header="twin-v1", sample_rate_hz=12800.0)
        block = encode_waveform(rng.normal(0, 0.1, 8192), WaveformFormat(12800.0, header="twin-v1"), time.time_ns())
        return point, [block] * n
    point.update(format="sparkplug", topic="spBv1.0/bench/DDATA/node/dev", metric="Speed")
    Payload = sparkplug_b_pb2.Payload
    return point, [Payload(timestamp=int(time.time() * 1000), seq=i % 256, metrics=[
        Payload.Metric(name="Speed", datatype=10, double_value=1480.0 + i % 7),
        Payload.Metric(name="Temp", datatype=9, float_value=40.0)]).SerializeToString() for i in range(n)]


def paho_client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)


def bare_session(port: int, client_id: str, topic: str, expect: int) -> tuple[float, float]:
    """Connect, subscribe, count `expect` messages: (wall s, CPU s) from connect to the last one.
    With expect = 0 it only leaves a persistent session with the subscription behind."""
    done = threading.Event()
    count = [0]

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= expect:
            done.set()

    def on_subscribe(*args: object) -> None:
        if not expect:
            done.set()

    client = paho_client(client_id)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    wall, cpu = time.perf_counter(), time.process_time()
    client.connect(HOST, port)
    client.loop_start()
    if not done.wait(TIMEOUT_S):
        raise TimeoutError(f"bare subscriber got {count[0]}/{expect}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return wall, cpu


async def connector_session(port: int, client_id: str, point: dict[str, Any], expect: int) -> tuple[float, float]:
    connector = build({"name": "bench", "host": HOST, "port": port, "client_id": client_id, "protocol": "3.1.1",
                       "clean_session": False, "points": [point]}, "sources[0]")
    count = [0]
    finished = asyncio.Event()

    def emit(batch: Sequence[Reading]) -> None:
        count[0] += len(batch)
        if count[0] >= expect:
            finished.set()

    wall, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(connector.run(emit))
    await asyncio.wait_for(finished.wait(), TIMEOUT_S)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if connector.stats.decode_errors:
        raise RuntimeError(f"{connector.stats.decode_errors} decode errors")
    return wall, cpu


def publish_all(port: int, topic: str, messages: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.connect(HOST, port)
    client.loop_start()
    infos = [client.publish(topic, m, qos=1) for m in messages]
    for info in infos:
        info.wait_for_publish(TIMEOUT_S)
    client.disconnect()
    client.loop_stop()


def run_format(port: int, fmt: str, n: int, repeats: int) -> dict[str, float]:
    """Best of `repeats` rounds (other load on the machine only ever slows a round down)."""
    point, messages = payloads(fmt, n)
    topic = point["topic"]
    bare_id, connector_id = f"bench-bare-{fmt}", f"bench-connector-{fmt}"
    bare_session(port, bare_id, topic, 0)  # both persistent sessions exist, then both go away
    bare_session(port, connector_id, topic, 0)
    best = {"bare_rate": 0.0, "connector_rate": 0.0, "bare_cpu": float("inf"), "connector_cpu": float("inf")}
    for _ in range(repeats):
        publish_all(port, topic, messages)
        bare_wall, bare_cpu = bare_session(port, bare_id, topic, n)
        conn_wall, conn_cpu = asyncio.run(connector_session(port, connector_id, point, n))
        best["bare_rate"] = max(best["bare_rate"], n / bare_wall)
        best["connector_rate"] = max(best["connector_rate"], n / conn_wall)
        best["bare_cpu"] = min(best["bare_cpu"], bare_cpu / n * 1e6)
        best["connector_cpu"] = min(best["connector_cpu"], conn_cpu / n * 1e6)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=20000, help="messages per scalar format")
    p.add_argument("--waveforms", type=int, default=1000, help="8192-sample waveform blocks")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        broker = mosquitto_server(Path(d), extra_conf=BROKER_CONF)
        try:
            print(f"{'format':<10} {'messages':>8} {'bare msg/s':>11} {'connector msg/s':>16} {'ratio':>6}"
                  f" {'bare CPU us/msg':>16} {'connector CPU us/msg':>21} {'CPU ratio':>9}")
            for fmt, n in (("number", args.messages), ("json", args.messages), ("sparkplug", args.messages),
                           ("waveform", args.waveforms)):
                b = run_format(broker.port, fmt, n, args.repeats)
                print(f"{fmt:<10} {n:>8} {b['bare_rate']:>11,.0f} {b['connector_rate']:>16,.0f}"
                      f" {b['connector_rate'] / b['bare_rate']:>6.2f} {b['bare_cpu']:>16.1f}"
                      f" {b['connector_cpu']:>21.1f} {b['connector_cpu'] / b['bare_cpu']:>9.2f}")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
