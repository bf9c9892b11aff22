"""StoreAndForwardQueue: persistence, cumulative ack, bounded size with counted drops, epochs."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from agent.uplink.queue import StoreAndForwardQueue

# Byte-exact accounting is easier to read on uncompressed payloads; compression has its own test.
Queue = functools.partial(StoreAndForwardQueue, compress=False)


def run(coro):
    return asyncio.run(coro)


def payload(size: int) -> object:
    return lambda seq: seq.to_bytes(8, "big") + b"x" * (size - 8)


def test_put_peek_ack_and_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        q = Queue(tmp_path / "q.sqlite", 10_000)
        await q.open()
        epoch = q.epoch
        seqs = [await q.put(payload(100), 0) for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [s for s, _ in await q.peek(0, 10)] == [1, 2, 3, 4, 5]
        assert [s for s, _ in await q.peek(3, 10)] == [4, 5]
        assert await q.ack(3) == 3
        assert q.stats().batches == 2 and q.stats().bytes == 200
        await q.close()

        q2 = Queue(tmp_path / "q.sqlite", 10_000)
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
        q = Queue(tmp_path / "q.sqlite", 1000)
        await q.open()
        for _ in range(25):
            await q.put(payload(100), 0)
        st = q.stats()
        assert st.bytes <= 1000 and st.batches == 10
        assert st.dropped == 15
        assert [s for s, _ in await q.peek(0, 100)] == list(range(16, 26)), "the newest batches are kept"
        await q.close()
        q2 = Queue(tmp_path / "q.sqlite", 1000)
        await q2.open()
        assert q2.stats().dropped == 15, "the drop count survives a restart"
        await q2.close()

    run(scenario())


def test_bound_spares_the_in_flight_window_while_it_can(tmp_path: Path) -> None:
    """The oldest batches may be stored already (ack lost with the link): newer ones go first."""
    async def scenario() -> None:
        q = Queue(tmp_path / "q.sqlite", 1000, unacked_window=3)
        await q.open()
        for _ in range(25):
            await q.put(payload(100), 0)
        st = q.stats()
        assert st.bytes <= 1000 and st.batches == 10 and st.dropped == 15
        assert [s for s, _ in await q.peek(0, 100)] == [1, 2, 3, *range(19, 26)]
        await q.ack(3)  # the collector's watermark answers for the window
        assert [s for s, _ in await q.peek(0, 100)] == list(range(19, 26))
        await q.close()

        tiny = Queue(tmp_path / "tiny.sqlite", 250, unacked_window=3)
        await tiny.open()
        for _ in range(6):
            await tiny.put(payload(100), 0)
        assert [s for s, _ in await tiny.peek(0, 100)] == [5, 6], "the byte bound wins over the window"
        assert tiny.stats().dropped == 4
        await tiny.close()

    run(scenario())


def test_new_database_gets_new_epoch(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Queue(tmp_path / "a.sqlite", 1000)
        b = Queue(tmp_path / "b.sqlite", 1000)
        await a.open()
        await b.open()
        assert a.epoch and b.epoch and a.epoch != b.epoch
        await a.close()
        await b.close()

    run(scenario())


def on_disk(path: Path) -> dict[str, object]:
    """What a separate connection reads from the queue file: the rows and the persisted counters."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM batches ORDER BY seq")]
        size = conn.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches").fetchone()[0]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    return {"seqs": seqs, "bytes": size, "next_seq": int(meta.get("next_seq", 1)),
            "dropped": int(meta.get("dropped", 0)), "summaries_total": int(meta.get("summaries_total", 0)),
            "summaries_dropped": int(meta.get("summaries_dropped", 0))}


def test_a_refused_store_changes_nothing_and_waits_in_memory(tmp_path: Path) -> None:
    """SQLite's own 'database or disk is full' (max_page_count) stands in for a full disk here; the
    integration test fills a real filesystem."""
    async def scenario() -> None:
        q = Queue(tmp_path / "q.sqlite", 10**6, max_overflow_bytes=3 * 2000)
        await q.open()
        assert await q.put(payload(2000), 0, summaries=4, interval_end_ns=10) == 1
        assert await q.put(payload(2000), 0, summaries=4, interval_end_ns=20) == 2
        pages = (await (await q.db.execute("PRAGMA page_count")).fetchone())[0]
        await q.db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: "disk full"

        assert await q.put(payload(2000), 0, summaries=4, interval_end_ns=30) is None
        st = q.stats()
        assert st.storage_error == "disk full"
        assert (st.batches, st.next_seq, st.summaries_total, st.overflow_batches) == (2, 3, 8, 1)
        disk = on_disk(q.path)
        assert disk["seqs"] == [1, 2] and disk["next_seq"] == 3 and disk["summaries_total"] == 8
        assert st.bytes == disk["bytes"], "the counters say what is on disk"
        assert q.last_interval_end_ns == 20

        for end in (40, 50, 60, 70):  # the overflow holds 3 batches of 2000 bytes: 2 go
            assert await q.put(payload(2000), 0, summaries=4, interval_end_ns=end) is None
        st = q.stats()
        assert (st.overflow_batches, st.dropped, st.summaries_dropped) == (3, 2, 8)
        assert not await q.retry(), "still full"

        await q.db.execute("PRAGMA max_page_count = 1000000")  # space again
        assert await q.retry()
        st = q.stats()
        assert st.storage_error == "" and st.overflow_batches == 0
        assert [s for s, _ in await q.peek(0, 100)] == [1, 2, 3, 4, 5], "seq stays contiguous: no gaps, no reuse"
        seq_of_sixth = await q.put(payload(2000), 0, summaries=4, interval_end_ns=80)
        assert seq_of_sixth == 6
        disk = on_disk(q.path)
        assert disk == {"seqs": [1, 2, 3, 4, 5, 6], "bytes": 6 * 2000, "next_seq": 7, "dropped": 2,
                        "summaries_total": 24, "summaries_dropped": 8}
        st = q.stats()
        assert (st.batches, st.bytes, st.next_seq, st.dropped, st.summaries_total) == (6, 12000, 7, 2, 24)
        assert q.last_interval_end_ns == 80
        await q.close()

    run(scenario())


def test_one_commit_per_interval(tmp_path: Path) -> None:
    """An ack only moves the watermark; the rows go with the next stored batch (one fsynced commit)."""
    import sqlite3

    async def scenario() -> None:
        q = Queue(tmp_path / "q.sqlite", 10**6)
        await q.open()
        watcher = sqlite3.connect(q.path)
        version = lambda: watcher.execute("PRAGMA data_version").fetchone()[0]  # noqa: E731
        await q.put(payload(500), 0)
        await q.put(payload(500), 0)
        before = version()
        assert await q.ack(2) == 2
        assert version() == before, "an ack writes nothing"
        assert q.stats().batches == 0 and q.stats().bytes == 0
        assert on_disk(q.path)["seqs"] == [1, 2]
        assert await q.peek(0, 10) == [], "acked rows are never sent again"
        await q.put(payload(500), 0)
        assert version() == before + 1, "deleting the acked rows and storing the new one: one commit"
        assert on_disk(q.path)["seqs"] == [3]
        await q.ack(3)
        await q.close()
        assert on_disk(q.path)["seqs"] == [], "acked rows are deleted at close"
        watcher.close()
        q2 = Queue(tmp_path / "q.sqlite", 10**6)
        await q2.open()
        assert q2.stats().batches == 0 and q2.stats().next_seq == 4
        await q2.close()

    run(scenario())


def test_payloads_are_stored_compressed_and_read_back_as_given(tmp_path: Path) -> None:
    import sqlite3
    import zlib

    async def scenario() -> None:
        plain = Queue(tmp_path / "q.sqlite", 10**6)  # a queue written before compression existed
        await plain.open()
        await plain.put(lambda seq: b"old batch %d " % seq * 100, 0)
        await plain.close()
        q = StoreAndForwardQueue(tmp_path / "q.sqlite", 10**6)
        await q.open()
        batch = lambda seq: b"batch %d: " % seq + b"temperature 21.5 degC " * 200  # noqa: E731
        assert await q.put(batch, 0) == 2
        assert await q.peek(0, 10) == [(1, b"old batch 1 " * 100), (2, batch(2))]
        with sqlite3.connect(q.path) as conn:
            stored = dict(conn.execute("SELECT seq, payload FROM batches"))
        assert stored[1] == b"old batch 1 " * 100, "rows from before stay as they were"
        assert zlib.decompress(stored[2]) == batch(2) and len(stored[2]) < len(batch(2)) / 10
        st = q.stats()
        assert st.bytes == len(stored[1]) + len(stored[2]), "bytes on disk"
        assert st.payload_bytes_stored == len(batch(2)), "the payload as given"
        await q.close()

    run(scenario())
