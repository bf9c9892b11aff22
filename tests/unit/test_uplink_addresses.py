"""Client-side failover over several collector addresses: a fleet starts spread over them, a failed
stream moves an agent to the next one, a working one is kept; one address stays one address."""

from __future__ import annotations

import random
from collections import Counter

from agent.config import build_agent_config
from agent.uplink.addresses import CollectorAddresses


def test_failure_moves_to_the_next_address_and_wraps() -> None:
    a = CollectorAddresses(["c1:1", "c2:1", "c3:1"], random.Random(0))
    first = a.current
    seen = [first] + [a.failed() for _ in range(3)]
    assert seen[-1] == first and sorted(set(seen)) == ["c1:1", "c2:1", "c3:1"]
    assert a.failovers == 3


def test_one_address_stays() -> None:
    a = CollectorAddresses(["c1:1"])
    assert a.failed() == "c1:1" and a.failovers == 0


def test_a_fleet_starts_spread_over_the_collectors() -> None:
    rng = random.Random(42)
    starts = Counter(CollectorAddresses(["c1:1", "c2:1", "c3:1"], rng).current for _ in range(3000))
    assert set(starts) == {"c1:1", "c2:1", "c3:1"}
    assert min(starts.values()) > 800, starts  # 1000 each expected; 800 is > 7 standard deviations below


def test_config_takes_one_address_or_a_list() -> None:
    base = {"agent": {"id": "gw-1"}, "sources": [{"type": "modbus", "name": "m", "host": "127.0.0.1",
                                                  "points": [{"asset": "a", "name": "p", "address": 0}]}],
            "assets": [{"id": "a", "type": "ahu"}]}
    one = build_agent_config(base | {"uplink": {"collector": "c1:50051", "token": "t" * 20}})
    assert one.uplink.collectors == ("c1:50051",)
    many = build_agent_config(base | {"uplink": {"collector": ["c1:50051", "[::1]:50051"], "token": "t" * 20}})
    assert many.uplink.collectors == ("c1:50051", "[::1]:50051")
