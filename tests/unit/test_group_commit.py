"""Group commit and the receive budget: the mechanics ingest's throughput and memory bound rest on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from collector.budget import ByteBudget
from collector.group_commit import GroupCommitter


class Ledger:
    """Stages that record what each call was given; a gate holds the commit stage while set."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.commits: list[list[str]] = []
        self.hold_commit = asyncio.Event()
        self.hold_commit.set()
        self.fail_write: set[str] = set()
        self.written = asyncio.Event()

    async def write(self, items: Sequence[str]) -> None:
        await asyncio.sleep(0)
        if self.fail_write & set(items):
            raise RuntimeError(f"sink refused {sorted(self.fail_write & set(items))}")
        self.writes.append(list(items))
        self.written.set()

    async def commit(self, items: Sequence[str]) -> None:
        await self.hold_commit.wait()
        self.commits.append(list(items))


def test_items_arriving_during_a_commit_share_the_next_one() -> None:
    async def scenario() -> Ledger:
        ledger = Ledger()
        committer: GroupCommitter[str] = GroupCommitter(ledger.write, ledger.commit)
        ledger.hold_commit.clear()
        first = asyncio.create_task(committer.submit("a0", 1))
        await ledger.written.wait()
        # "a0" is written and its commit is running (held); twenty streams become ready meanwhile
        rest = [asyncio.create_task(committer.submit(f"b{i}", 1)) for i in range(20)]
        for _ in range(50):
            await asyncio.sleep(0)
        ledger.hold_commit.set()
        await asyncio.gather(first, *rest)
        await committer.close()
        return ledger

    ledger = asyncio.run(scenario())
    assert ledger.commits[0] == ["a0"]
    assert sorted(x for c in ledger.commits[1:] for x in c) == sorted(f"b{i}" for i in range(20))
    assert len(ledger.commits) == 2, "all twenty went in one commit, one database call"


def test_a_lone_item_goes_through_at_once() -> None:
    async def scenario() -> Ledger:
        ledger = Ledger()
        committer: GroupCommitter[str] = GroupCommitter(ledger.write, ledger.commit)
        async with asyncio.timeout(5):
            await committer.submit("only", 3)
        await committer.close()
        return ledger

    ledger = asyncio.run(scenario())
    assert ledger.writes == [["only"]] and ledger.commits == [["only"]]


def test_writes_are_split_by_records_and_run_concurrently() -> None:
    async def scenario() -> tuple[list[list[str]], int]:
        running = 0
        peak = 0
        writes: list[list[str]] = []

        async def write(items: Sequence[str]) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            writes.append(list(items))
            running -= 1

        async def commit(items: Sequence[str]) -> None:
            pass

        committer: GroupCommitter[str] = GroupCommitter(write, commit, writers=3, max_records=10)
        await asyncio.gather(*(committer.submit(f"i{i}", 4) for i in range(12)))
        await committer.close()
        return writes, peak

    writes, peak = asyncio.run(scenario())
    assert all(len(w) <= 2 for w in writes), "at most 10 records (two items of 4) per write"
    assert sorted(x for w in writes for x in w) == sorted(f"i{i}" for i in range(12))
    assert peak == 3


def test_a_failed_stage_fails_exactly_its_items_and_the_committer_goes_on() -> None:
    async def scenario() -> tuple[list[object], Ledger]:
        ledger = Ledger()
        ledger.fail_write = {"bad"}
        committer: GroupCommitter[str] = GroupCommitter(ledger.write, ledger.commit, max_records=1)
        outcomes = await asyncio.gather(*(committer.submit(x, 1) for x in ("ok1", "bad", "ok2")),
                                        return_exceptions=True)
        after = await asyncio.gather(committer.submit("later", 1), return_exceptions=True)
        await committer.close()
        return [*outcomes, *after], ledger

    outcomes, ledger = asyncio.run(scenario())
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], RuntimeError) and "bad" in str(outcomes[1])
    assert sorted(x for c in ledger.commits for x in c) == ["later", "ok1", "ok2"]


def test_a_cancelled_submitter_leaves_its_item_to_be_committed() -> None:
    async def scenario() -> Ledger:
        ledger = Ledger()
        ledger.hold_commit.clear()
        committer: GroupCommitter[str] = GroupCommitter(ledger.write, ledger.commit)
        task = asyncio.create_task(committer.submit("orphan", 1))
        await ledger.written.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ledger.hold_commit.set()
        await committer.submit("next", 1)
        await committer.close()
        return ledger

    ledger = asyncio.run(scenario())
    assert [x for c in ledger.commits for x in c] == ["orphan", "next"]


def test_budget_makes_readers_wait_in_turn_and_never_exceeds_its_capacity() -> None:
    async def scenario() -> tuple[list[str], int]:
        budget = ByteBudget(100)
        order: list[str] = []

        async def reader(name: str, size: int) -> None:
            granted = await budget.acquire(size)
            order.append(name)
            await asyncio.sleep(0.01)
            budget.release(granted)

        await budget.acquire(90)
        tasks = [asyncio.create_task(reader(n, s)) for n, s in (("big", 60), ("small", 5), ("huge", 10_000))]
        await asyncio.sleep(0.01)
        assert order == [], "the first in line (60 bytes) does not fit; the small one does not jump the queue"
        budget.release(90)
        await asyncio.gather(*tasks)
        return order, budget.peak

    order, peak = asyncio.run(scenario())
    assert order == ["big", "small", "huge"]
    assert peak <= 100, "a request beyond the capacity is granted the whole capacity, alone"


def test_budget_cancelled_waiter_gives_way() -> None:
    async def scenario() -> tuple[int, int]:
        budget = ByteBudget(10)
        await budget.acquire(10)
        waiter = asyncio.create_task(budget.acquire(8))
        behind = asyncio.create_task(budget.acquire(2))
        await asyncio.sleep(0)
        waiter.cancel()
        budget.release(5)
        granted = await asyncio.wait_for(behind, 1)
        return granted, budget.used

    assert asyncio.run(scenario()) == (2, 7)
