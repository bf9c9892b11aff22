"""Turn one summary interval of the agent's state into a wire Batch (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from agent.analytics.summarize import PointSummary
from agent.model import AssetSpec, PointSpec
from agent.twin import Change
from protos.twin.v1 import twin_pb2

__all__ = ["build_batch", "build_hello"]


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def summary_message(s: PointSummary, spec: PointSpec | None, interval_end_ns: int) -> twin_pb2.Summary:
    return twin_pb2.Summary(
        asset=s.asset, point=s.point, unit=spec.unit if spec else "",
        first_ns=s.first_ns, last_ns=s.last_ns, interval_end_ns=interval_end_ns,
        mean=_finite(s.mean), min=_finite(s.min), max=_finite(s.max), last=_finite(s.last),
        count=s.count, bad_count=s.bad_count, quality=int(s.quality), reason=s.reason,
        last_text=s.last_text, increase=s.increase, resets=s.resets,
    )


def build_batch(
    *,
    summaries: Sequence[PointSummary],
    point_specs: Mapping[tuple[str, str], PointSpec],
    interval_end_ns: int,
    changes: Iterable[Change],
    asset_states: Mapping[str, tuple[str, float]],
    vibration: Iterable[twin_pb2.VibrationIndicators],
    health: twin_pb2.AgentHealth,
) -> twin_pb2.Batch:
    """The batch has no seq yet: the queue assigns it when it stores the batch."""
    return twin_pb2.Batch(
        created_ns=interval_end_ns,
        summaries=[summary_message(s, point_specs.get((s.asset, s.point)), interval_end_ns)
                   for s in summaries],
        vibration=list(vibration),
        changes=[twin_pb2.StateChange(asset=c.asset, point=c.point, ts_ns=c.ts_ns, kind=c.kind,
                                      old_value=c.old_value, new_value=c.new_value) for c in changes],
        asset_states=[twin_pb2.AssetState(asset=a, state=st, health=h, ts_ns=interval_end_ns)
                      for a, (st, h) in asset_states.items()],
        health=health,
    )


def build_hello(agent_id: str, site: str, version: str, queue_epoch: str,
                assets: Sequence[AssetSpec]) -> twin_pb2.Hello:
    return twin_pb2.Hello(
        agent_id=agent_id, site=site, version=version, queue_epoch=queue_epoch,
        assets=[
            twin_pb2.AssetDescriptor(
                id=a.id, type=a.type, name=a.name, depends_on=list(a.depends_on),
                points=[twin_pb2.PointDescriptor(name=p.name, unit=p.unit, kind=p.kind,
                                                 expected_interval_s=p.expected_interval_s)
                        for p in a.points],
            )
            for a in assets
        ],
    )
