"""Which collector the uplink talks to, when there are several (client-side failover).

`[uplink] collector` is one `host:port` or a list of them. With a list, each agent starts at a
random entry (so a fleet spreads over the collectors) and moves to the next one whenever a stream
fails or cannot be opened; it stays with a collector that works. The reconnect backoff is the
same as with one collector, so a fleet leaving a dead collector does not arrive at the next one in
lockstep. A single name with several DNS records (A/AAAA) needs no list: gRPC resolves every
record, tries them in turn until one connects (`pick_first`), and shuffles them per channel
(`CHANNEL_OPTIONS`), which spreads a fleet the same way.

The alternative is a TCP load balancer in front of the collectors (HAProxy, Envoy; README: High
availability): the agents then know one address and the balancer does the failing over.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

__all__ = ["CHANNEL_OPTIONS", "CollectorAddresses"]

# For a name with several records: try them in a random order, each channel on its own.
CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]})),
]


class CollectorAddresses:
    """The collector addresses of one uplink and the one in use."""

    def __init__(self, addresses: Sequence[str], rng: random.Random | None = None) -> None:
        if not addresses:
            raise ValueError("at least one collector address")
        self.addresses = tuple(addresses)
        self._index = (rng or random.Random()).randrange(len(self.addresses))
        self.failovers = 0

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    def failed(self) -> str:
        """The stream to `current` failed: the next address (the same one when there is only one)."""
        if len(self.addresses) > 1:
            self._index = (self._index + 1) % len(self.addresses)
            self.failovers += 1
        return self.current
