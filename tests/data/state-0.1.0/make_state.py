"""Write the SQL dumps in this folder: state files as release 0.1.0 (commit 74fcc6a) leaves them.

Run with the 0.1.0 source first on the path, so that release's own code creates and fills the files:

    mkdir /tmp/v010 && git archive 74fcc6a | tar -x -C /tmp/v010
    PYTHONPATH=/tmp/v010 .venv/bin/python tests/data/state-0.1.0/make_state.py

The story: gateway gw-old had sent batches 1-3 (acked, stored, and they raised WO-000001, which
bob acknowledged; its changes wait in the ITSM outbox), then the link went down and batches 4-8
stayed in its queue. Then both were upgraded. tests/integration/test_upgrade.py loads these dumps,
starts the new daemons on them and checks that nothing is lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent
T0 = 1_767_225_600 * 10**9  # 2026-01-01 00:00 UTC: in the past wherever the test runs
S = 10**9
AGENT, SITE, EPOCH = "gw-old", "plant-old", "0123456789abcdef0123456789abcdef"
FILTER_RULE = {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0,
               "clear_at": 250.0, "min_duration_s": 0, "severity": "major", "title": "Air filter clogged on {asset}"}


def batch(seq: int):  # type: ignore[no-untyped-def]
    from protos.twin.v1 import twin_pb2

    end = T0 + seq * 10 * S
    summaries = [twin_pb2.Summary(asset="ahu-1", point=p, first_ns=end - 9 * S, last_ns=end, interval_end_ns=end,
                                  mean=v, min=v, max=v, last=v, count=10, bad_count=0, quality=twin_pb2.GOOD)
                 for p, v in (("filter_dp", 280.0 + 10 * seq), ("supply_air_temp", 14.0 + 0.1 * seq))]
    return twin_pb2.Batch(seq=seq, created_ns=end, summaries=summaries,
                          asset_states=[twin_pb2.AssetState(asset="ahu-1", state="online", health=100, ts_ns=end)])


async def make(work: Path) -> None:
    from agent.batch import build_hello
    from agent.model import AssetSpec, PointSpec, Quality, Reading
    from agent.twin import LocalTwin
    from agent.uplink.queue import StoreAndForwardQueue
    from collector.fleet import FleetTwin
    from collector.itsm import Outbox, WebhookSettings, load_webhooks
    from collector.points import batch_to_points
    from collector.summary_store import SqliteSummarySink
    from collector.workorders.evaluate import parse_rules

    points = (PointSpec("ahu-1", "filter_dp", "Pa"), PointSpec("ahu-1", "supply_air_temp", "degC"))
    assets = [AssetSpec("ahu-1", "ahu", "AHU 1", ("chiller-1",), points=points)]

    queue = StoreAndForwardQueue(work / "queue.sqlite", 16 * 1024 * 1024)
    await queue.open()
    await queue.db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (EPOCH,))
    await queue.db.commit()
    for seq in range(1, 9):
        await queue.put(lambda s: batch(s).SerializeToString(), T0 + s_ns(seq), summaries=2,
                        interval_end_ns=T0 + seq * 10 * S)
    await queue.ack(3)
    await queue.close()

    twin = LocalTwin(assets, work / "twin.sqlite")
    await twin.open()
    twin.apply([Reading("ahu-1", "filter_dp", 360.0, T0 + 80 * S), Reading("ahu-1", "supply_air_temp", 14.8,
                                                                            T0 + 80 * S, Quality.GOOD)])
    await twin.flush()
    await twin.close()

    webhooks = load_webhooks([WebhookSettings(name="itsm", url="http://127.0.0.1:9/hook")])
    fleet = FleetTwin(work / "collector.sqlite", parse_rules([FILTER_RULE]), listener=Outbox(webhooks))
    await fleet.open()
    hello = build_hello(AGENT, SITE, "0.1.0", EPOCH, assets)
    await fleet.register_hello(hello)
    sink = SqliteSummarySink(work / "summaries.sqlite")
    await sink.open()
    for seq in (1, 2, 3):
        await sink.write(batch_to_points(batch(seq), agent_id=AGENT, site=SITE, asset_types={"ahu-1": "ahu"}))
        await fleet.commit_batch(AGENT, EPOCH, batch(seq))
    await fleet.acknowledge(1, "bob", "filter ordered")
    await sink.close()
    await fleet.close()


def s_ns(seq: int) -> int:
    return seq * 10 * S


def main() -> int:
    import collector

    if not Path(collector.__file__).parent.parent.joinpath("agent/tomlconfig.py").exists():  # 0.1.0 had it there
        print(f"run with the 0.1.0 source first on PYTHONPATH (collector comes from {collector.__file__})",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        asyncio.run(make(work))
        for name in ("queue", "twin", "collector", "summaries"):
            with sqlite3.connect(work / f"{name}.sqlite") as conn:
                dump = "\n".join(conn.iterdump())
            (OUT / f"{name}.sql").write_text(f"-- {name}.sqlite as facility-twin 0.1.0 (74fcc6a) wrote it; "
                                             "made by make_state.py\n" + dump + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
