"""StoreAndForwardQueue: persistence, cumulative ack, bounded size with counted drops, epochs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.uplink.queue import StoreAndForwardQueue


def run(coro):
    return asyncio.run(coro)


def payload(size: int) -> object:
    return lambda seq: seq.to_bytes(8, "big") + b"x" * (size - 8)


def test_put_peek_ack_and_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        q = StoreAndForwardQueue(tmp_path / "q.sqlite", 10_000)
        await q.open()
        epoch = q.epoch
        seqs = [await q.put(payload(100), 0) for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [s for s, _ in await q.peek(0, 10)] == [1, 2, 3, 4, 5]
        assert [s for s, _ in await q.peek(3, 10)] == [4, 5]
        assert await q.ack(3) == 3
        assert q.stats().batches == 2 and q.stats().bytes == 200
        await q.close()

        q2 = StoreAndForwardQueue(tmp_path / "q.sqlite", 10_000)
        await q2.open()
        assert q2.epoch == epoch
        assert [s for s, _ in await q2.peek(0, 10)] == [4, 5]
        assert await q2.put(payload(100), 0) == 6, "seq continues after a restart"
        assert await q2.ack(100) == 3
        assert q2.stats().batches == 0
        assert await q2.put(payload(100), 0) == 7, "seq is never reused, even when the queue was emptied"
        await q2.close()

    run(scenario())


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    async def scenario() -> None:
        q = StoreAndForwardQueue(tmp_path / "q.sqlite", 1000)
        await q.open()
        for _ in range(25):
            await q.put(payload(100), 0)
        st = q.stats()
        assert st.bytes <= 1000 and st.batches == 10
        assert st.dropped == 15
        assert [s for s, _ in await q.peek(0, 100)] == list(range(16, 26)), "the newest batches are kept"
        await q.close()
        q2 = StoreAndForwardQueue(tmp_path / "q.sqlite", 1000)
        await q2.open()
        assert q2.stats().dropped == 15, "the drop count survives a restart"
        await q2.close()

    run(scenario())


def test_bound_spares_the_in_flight_window_while_it_can(tmp_path: Path) -> None:
    """The oldest batches may be stored already (ack lost with the link): newer ones go first."""
    async def scenario() -> None:
        q = StoreAndForwardQueue(tmp_path / "q.sqlite", 1000, unacked_window=3)
        await q.open()
        for _ in range(25):
            await q.put(payload(100), 0)
        st = q.stats()
        assert st.bytes <= 1000 and st.batches == 10 and st.dropped == 15
        assert [s for s, _ in await q.peek(0, 100)] == [1, 2, 3, *range(19, 26)]
        await q.ack(3)  # the collector's watermark answers for the window
        assert [s for s, _ in await q.peek(0, 100)] == list(range(19, 26))
        await q.close()

        tiny = StoreAndForwardQueue(tmp_path / "tiny.sqlite", 250, unacked_window=3)
        await tiny.open()
        for _ in range(6):
            await tiny.put(payload(100), 0)
        assert [s for s, _ in await tiny.peek(0, 100)] == [5, 6], "the byte bound wins over the window"
        assert tiny.stats().dropped == 4
        await tiny.close()

    run(scenario())


def test_new_database_gets_new_epoch(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = StoreAndForwardQueue(tmp_path / "a.sqlite", 1000)
        b = StoreAndForwardQueue(tmp_path / "b.sqlite", 1000)
        await a.open()
        await b.open()
        assert a.epoch and b.epoch and a.epoch != b.epoch
        await a.close()
        await b.close()

    run(scenario())
