"""The hand-over from paho's network thread to the event loop: ordered, batched, bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import paho.mqtt.client as mqtt

from agent.connectors.mqtt.connector import _Inbox


def message(i: int, size: int = 10) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(topic=b"t")
    m.payload = i.to_bytes(2, "big") * (size // 2)
    return m


def test_full_inbox_holds_the_network_thread_back_and_loses_nothing() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        drained: list[int] = []
        wakeups = [0]

        def drain() -> None:
            wakeups[0] += 1
            batch, more = inbox.take(7)
            drained.extend(ts for _, ts in batch)
            if more:
                loop.call_soon(drain)

        inbox = _Inbox(loop, drain, max_bytes=100)
        producer = threading.Thread(target=lambda: [inbox.put(message(i), i) for i in range(200)])
        producer.start()
        time.sleep(0.3)  # noqa: ASYNC251 - keep the event loop busy on purpose: nothing is drained
        assert producer.is_alive(), "the network thread must wait while the inbox is full"
        assert not drained
        deadline = time.monotonic() + 20
        while len(drained) < 200:
            assert time.monotonic() < deadline, f"only {len(drained)} of 200 drained"
            await asyncio.sleep(0.01)
        producer.join(5)
        assert drained == list(range(200))
        assert wakeups[0] < 200  # batched, not one wake-up per message

    asyncio.run(main())


def test_closing_releases_a_waiting_network_thread() -> None:
    async def main() -> None:
        inbox = _Inbox(asyncio.get_running_loop(), lambda: None, max_bytes=10)
        inbox.put(message(0, 10), 0)
        producer = threading.Thread(target=inbox.put, args=(message(1), 1))
        producer.start()
        time.sleep(0.1)  # noqa: ASYNC251 - the put must be waiting before close()
        assert producer.is_alive()
        inbox.close()
        producer.join(5)
        assert not producer.is_alive()

    asyncio.run(main())
