"""A Sparkplug B 3.0 edge node with one device, as field edge nodes behave, over real MQTT.

It publishes its births once per session, not retained (NBIRTH with bdSeq and the
`Node Control/Rebirth` metric, then DBIRTH of its device, every metric with a name, an alias and a
datatype), then only alias-only DDATA (no name, no datatype) every `period_s`. Its MQTT will is
the NDEATH with the same bdSeq. When it receives the `Node Control/Rebirth` NCMD it publishes
both births again (same bdSeq, seq from 0), as the specification asks (3.0, section 6.4.2);
`--ignore-rebirth` makes it an edge node that does not support the command.

Device metrics (aliases): Speed (1, Float, rpm), Temperature (2, Double, degC), Running (3,
Boolean). Their values follow the DDATA count n: Speed = 1450 + n % 10, Temperature = 40 + n % 5,
Running = true, so a test can check every value it receives.

    python -m simulator.sparkplug_edge --port 1883 --group plant --node gw01 --device pump1
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.sparkplug import BOOLEAN, DOUBLE, FLOAT, REBIRTH_METRIC, UINT64

__all__ = ["EdgeNode", "main"]

log = logging.getLogger("twin.sim.sparkplug")

DEVICE_METRICS = (("Speed", 1, FLOAT), ("Temperature", 2, DOUBLE), ("Running", 3, BOOLEAN))
NODE_REBIRTH_ALIAS = 100


def device_values(n: int) -> dict[str, float | bool]:
    return {"Speed": 1450.0 + n % 10, "Temperature": 40.0 + n % 5, "Running": True}


def _set_value(metric: Any, datatype: int, value: float | bool) -> None:
    if datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    else:
        metric.long_value = int(value)


class EdgeNode:
    """One edge node session per process; thread-safe publishing (paho's network thread + a timer)."""

    def __init__(self, host: str, port: int, group: str, node: str, device: str, period_s: float,
                 honour_rebirth: bool = True, bd_seq: int = 0) -> None:
        self.group, self.node, self.device = group, node, device
        self.period_s = period_s
        self.honour_rebirth = honour_rebirth
        self.bd_seq = bd_seq
        self.births = 0
        self.rebirth_commands = 0
        self._seq = 0
        self._n = 0
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{group}-{node}",
                                   protocol=mqtt.MQTTv311)
        self._client.will_set(self._topic("NDEATH"), self._node_death(), qos=1, retain=False)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def _topic(self, kind: str, device: str = "") -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _payload(self) -> Any:
        payload = sparkplug_b_pb2.Payload()
        payload.timestamp = time.time_ns() // 1_000_000
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        return payload

    def _node_death(self) -> bytes:
        payload = sparkplug_b_pb2.Payload()
        payload.timestamp = time.time_ns() // 1_000_000
        m = payload.metrics.add()
        m.name, m.datatype, m.long_value = "bdSeq", UINT64, self.bd_seq
        return payload.SerializeToString()

    def publish_births(self, why: str) -> None:
        with self._lock:
            self._seq = 0
            nbirth = self._payload()
            m = nbirth.metrics.add()
            m.name, m.datatype, m.long_value = "bdSeq", UINT64, self.bd_seq
            m = nbirth.metrics.add()
            m.name, m.alias, m.datatype, m.boolean_value = REBIRTH_METRIC, NODE_REBIRTH_ALIAS, BOOLEAN, False
            dbirth = self._payload()
            for (name, alias, datatype), value in zip(DEVICE_METRICS, device_values(self._n).values(), strict=True):
                m = dbirth.metrics.add()
                m.name, m.alias, m.datatype = name, alias, datatype
                _set_value(m, datatype, value)
            self._client.publish(self._topic("NBIRTH"), nbirth.SerializeToString(), qos=0, retain=False)
            self._client.publish(self._topic("DBIRTH", self.device), dbirth.SerializeToString(), qos=0, retain=False)
            self.births += 1
        print(f"births published ({why})", flush=True)

    def publish_data(self) -> None:
        with self._lock:
            self._n += 1
            ddata = self._payload()
            for (_, alias, datatype), value in zip(DEVICE_METRICS, device_values(self._n).values(), strict=True):
                m = ddata.metrics.add()
                m.alias = alias  # alias only: no name, no datatype (Sparkplug 3.0 allows it after the births)
                _set_value(m, datatype, value)
            self._client.publish(self._topic("DDATA", self.device), ddata.SerializeToString(), qos=0, retain=False)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe(self._topic("NCMD"), qos=1)
        self.publish_births("connected")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = sparkplug_b_pb2.Payload()
        payload.ParseFromString(msg.payload)
        for m in payload.metrics:
            if (m.name == REBIRTH_METRIC or m.alias == NODE_REBIRTH_ALIAS) and m.boolean_value:
                self.rebirth_commands += 1
                print(f"rebirth command received ({self.rebirth_commands})", flush=True)
                if self.honour_rebirth:
                    self.publish_births("rebirth command")

    def run(self, stop: threading.Event) -> None:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        try:
            while not stop.wait(self.period_s):
                if self._client.is_connected():
                    self.publish_data()
        finally:
            self._client.publish(self._topic("NDEATH"), self._node_death(), qos=0).wait_for_publish(2.0)
            self._client.disconnect()
            self._client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = argparse.ArgumentParser(prog="python -m simulator.sparkplug_edge", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--group", default="plant")
    parser.add_argument("--node", default="gw01")
    parser.add_argument("--device", default="pump1")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between DDATA messages")
    parser.add_argument("--ignore-rebirth", action="store_true", help="do not answer Node Control/Rebirth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    EdgeNode(args.host, args.port, args.group, args.node, args.device, args.period,
             honour_rebirth=not args.ignore_rebirth).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
