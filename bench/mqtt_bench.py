"""MQTT connector throughput: messages/s decoded into readings, vs a bare paho-mqtt subscriber,
with MQTT 3.1.1 and MQTT 5.

For each protocol and payload format the same N QoS 1 messages are published while both
subscribers are away (each has a persistent session on a local Mosquitto, so the broker queues the
messages for both); then each subscriber connects in turn and drains its queue. The bare subscriber
(same protocol) only counts in `on_message` (the raw limit of paho + broker on this machine); the
connector decodes every payload, builds readings and hands them to a counting emit on the event
loop. Best of --repeats rounds; wall-clock rates suffer from whatever else runs on the machine, so
CPU time per message is printed as well, and at the end the connector's CPU per message with
MQTT 5 against 3.1.1, each as a ratio to the bare subscriber of its own protocol. Asserts nothing.

    python bench/mqtt_bench.py [--messages 20000] [--waveforms 1000] [--repeats 3] [--protocols 3.1.1,5]
    python bench/mqtt_bench.py --overlap   # MQTT 5 with two overlapping filters: subscription identifiers
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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


SESSION_EXPIRY_S = 3600


def sparkplug_births() -> list[tuple[str, bytes]]:
    """NBIRTH and DBIRTH before the data, as an edge node sends them (no reading: no Speed metric)."""
    Payload = sparkplug_b_pb2.Payload
    now = int(time.time() * 1000)
    return [("spBv1.0/bench/NBIRTH/node", Payload(timestamp=now, seq=0, metrics=[
                Payload.Metric(name="bdSeq", datatype=8, long_value=0)]).SerializeToString()),
            ("spBv1.0/bench/DBIRTH/node/dev", Payload(timestamp=now, seq=1, metrics=[
                Payload.Metric(name="Temp", datatype=9, float_value=40.0)]).SerializeToString())]


def paho_client(client_id: str, protocol: str) -> mqtt.Client:
    if protocol == "5":
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)


def paho_connect(client: mqtt.Client, port: int, protocol: str) -> None:
    if protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect(HOST, port, clean_start=False, properties=props)
    else:
        client.connect(HOST, port)


def bare_session(port: int, client_id: str, topic: str, expect: int, protocol: str) -> tuple[float, float]:
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

    client = paho_client(client_id, protocol)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    wall, cpu = time.perf_counter(), time.process_time()
    paho_connect(client, port, protocol)
    client.loop_start()
    if not done.wait(TIMEOUT_S):
        raise TimeoutError(f"bare subscriber got {count[0]}/{expect}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return wall, cpu


async def connector_session(port: int, client_id: str, points: list[dict[str, Any]], expect: int,
                            protocol: str) -> tuple[float, float]:
    connector = build({"name": "bench", "host": HOST, "port": port, "client_id": client_id, "protocol": protocol,
                       "clean_session": False, "points": points}, "sources[0]")
    count = [0]
    finished = asyncio.Event()

    def emit(batch: Sequence[Reading]) -> None:
        count[0] += len(batch)
        if count[0] >= expect:
            finished.set()

    wall, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(connector.run(emit))
    if expect:
        await asyncio.wait_for(finished.wait(), TIMEOUT_S)
    else:  # only leave the persistent session with its subscriptions behind
        deadline = time.monotonic() + TIMEOUT_S
        while not connector.ready and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a flag, once)
            await asyncio.sleep(0.01)
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


def overlapping(point: dict[str, Any]) -> list[dict[str, Any]]:
    """The point plus a second one whose filter overlaps it without covering it (bench/+ vs bench/number/#
    would cover; bench/+ and +/number overlap): MQTT 5 then needs subscription identifiers."""
    other = dict(point, name=f"{point['name']}-overlap", topic="+/" + point["topic"].split("/", 1)[1])
    return [point, other]


def run_format(port: int, fmt: str, n: int, repeats: int, protocol: str, overlap: bool = False) -> dict[str, float]:
    """Best of `repeats` rounds (other load on the machine only ever slows a round down)."""
    point, messages = payloads(fmt, n)
    topic = point["topic"]
    points = overlapping(point) if overlap else [point]
    tag = f"{fmt}-{protocol}{'-overlap' if overlap else ''}"
    bare_id, connector_id = f"bench-bare-{tag}", f"bench-connector-{tag}"
    bare_session(port, bare_id, topic, 0, protocol)  # both persistent sessions exist, then both go away
    asyncio.run(connector_session(port, connector_id, points, 0, protocol))
    readings = n * len(points)
    best = {"bare_rate": 0.0, "connector_rate": 0.0, "bare_cpu": float("inf"), "connector_cpu": float("inf")}
    for _ in range(repeats):
        for birth_topic, birth in sparkplug_births() if fmt == "sparkplug" else ():
            publish_all(port, birth_topic, [birth])
        publish_all(port, topic, messages)
        bare_wall, bare_cpu = bare_session(port, bare_id, topic, n, protocol)
        conn_wall, conn_cpu = asyncio.run(connector_session(port, connector_id, points, readings, protocol))
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
    p.add_argument("--protocols", default="3.1.1,5", help="comma-separated: 3.1.1, 5")
    p.add_argument("--formats", default="number,json,sparkplug,waveform")
    p.add_argument("--overlap", action="store_true", help="also MQTT 5 with two overlapping filters")
    args = p.parse_args()
    protocols = args.protocols.split(",")
    formats = args.formats.split(",")
    cpu_ratio: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], tuple[float, float]] = {}  # (protocol, format) -> (bare, connector) us/msg
    with tempfile.TemporaryDirectory() as d:
        broker = mosquitto_server(Path(d), extra_conf=BROKER_CONF)
        try:
            print(f"{'protocol':<9} {'format':<10} {'messages':>8} {'bare msg/s':>11} {'connector msg/s':>16}"
                  f" {'ratio':>6} {'bare CPU us/msg':>16} {'connector CPU us/msg':>21} {'CPU ratio':>9}")
            runs = [(proto, fmt, False) for proto in protocols for fmt in formats]
            if args.overlap:  # Sparkplug topics cannot take the overlapping wildcard filter
                runs += [("5", fmt, True) for fmt in formats if fmt != "sparkplug"]
            for proto, fmt, overlap in runs:
                n = args.waveforms if fmt == "waveform" else args.messages
                b = run_format(broker.port, fmt, n, args.repeats, proto, overlap)
                ratio = b["connector_cpu"] / b["bare_cpu"]
                cpu_ratio[(proto + ("+overlap" if overlap else ""), fmt)] = ratio
                cpu[(proto + ("+overlap" if overlap else ""), fmt)] = (b["bare_cpu"], b["connector_cpu"])
                label = proto + (" ovl" if overlap else "")
                print(f"{label:<9} {fmt:<10} {n:>8} {b['bare_rate']:>11,.0f} {b['connector_rate']:>16,.0f}"
                      f" {b['connector_rate'] / b['bare_rate']:>6.2f} {b['bare_cpu']:>16.1f}"
                      f" {b['connector_cpu']:>21.1f} {ratio:>9.2f}", flush=True)
        finally:
            broker.stop()
    if "3.1.1" in protocols and "5" in protocols:
        print("\nCPU per message, MQTT 5 / MQTT 3.1.1: connector, bare paho subscriber, and the connector's "
              "overhead over bare paho (5 vs 3.1.1):")
        for fmt in formats:
            (bare5, conn5), (bare3, conn3) = cpu[("5", fmt)], cpu[("3.1.1", fmt)]
            print(f"  {fmt:<10} connector {conn5 / conn3:.2f}  bare {bare5 / bare3:.2f}"
                  f"  overhead {cpu_ratio[('5', fmt)] / cpu_ratio[('3.1.1', fmt)]:.2f}")


if __name__ == "__main__":
    main()
