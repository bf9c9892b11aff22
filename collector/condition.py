"""An asset's condition in plain words: good / watch / act, and why.

Connectivity is not condition. `link` (online / degraded / offline) says whether the twin can see the
asset; `condition` says what the twin sees of the equipment: its open corrective and preventive work
orders and its vibration indicators. Data-quality and collector work orders are about seeing, so they
never make a condition worse. Pure: plain data in, a `Condition` out.

- act: an open corrective work order of severity major or critical (or a critical forecast), a
  vibration health below 40 ("act now") or ISO zone D;
- watch: any other open corrective or preventive work order, a health below 70 ("plan maintenance")
  or ISO zone C;
- good: none of these.

Where the ISO zone and the bearing health disagree, the reasons say why: a bearing defect shows in
the envelope spectrum long before the broadband velocity (which the ISO zone judges) rises, and high
broadband velocity without a bearing signature points to unbalance, misalignment or looseness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CONDITIONS", "HEALTH_ACT", "HEALTH_WATCH", "Condition", "asset_condition"]

CONDITIONS = ("good", "watch", "act")
HEALTH_ACT = 40.0  # vibration health below this: act now (README: below 40)
HEALTH_WATCH = 70.0  # below this: plan maintenance (README: 40-70)
ZONE_LEVEL = {"D": "act", "C": "watch"}
ENVELOPE_FIRST = "a bearing defect shows in the envelope long before the broadband velocity rises"
BROADBAND_ONLY = ("high broadband velocity without a bearing-defect signature points to unbalance, "
                  "misalignment or looseness (see the 1x/2x/3x amplitudes)")


@dataclass(frozen=True, slots=True)
class Condition:
    level: str  # good | watch | act
    reasons: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "; ".join(self.reasons)


def _worse(a: str, b: str) -> str:
    return max(a, b, key=CONDITIONS.index)


def asset_condition(work_orders: Sequence[Mapping[str, Any]],
                    vibration: Mapping[str, Mapping[str, Any]]) -> Condition:
    """`work_orders`: the asset's open work orders (ref, category, severity, title); `vibration`: the
    latest indicators per sensor (health, iso_zone, fault, confidence)."""
    level, reasons = "good", []
    for wo in work_orders:
        category, severity = wo.get("category"), wo.get("severity", "minor")
        if category == "corrective":
            wo_level = "act" if severity in ("major", "critical") else "watch"
        elif category == "preventive":
            wo_level = "act" if severity == "critical" else "watch"
        else:
            continue  # data_quality, collector: about seeing the asset, not about the equipment
        level = _worse(level, wo_level)
        reasons.append(f"{wo.get('ref')} {severity}: {wo.get('title')}")
    for sensor, v in sorted(vibration.items()):
        health = v.get("health")
        zone = str(v.get("iso_zone") or "")
        fault = str(v.get("fault") or "")
        if isinstance(health, int | float) and health < HEALTH_WATCH:
            level = _worse(level, "act" if health < HEALTH_ACT else "watch")
            what = fault.replace("_", " ") if fault and fault != "normal" else "indicators"
            conf = v.get("confidence")
            reasons.append(f"{sensor}: vibration health {health:.0f} ({what}"
                           + (f", confidence {conf:.0%}" if isinstance(conf, int | float) and conf else "") + ")")
            if zone in ("A", "B"):
                reasons.append(f"{sensor}: ISO zone {zone} yet health {health:.0f}: {ENVELOPE_FIRST}")
        if zone in ZONE_LEVEL:
            level = _worse(level, ZONE_LEVEL[zone])
            reasons.append(f"{sensor}: ISO 10816 zone {zone}")
            if isinstance(health, int | float) and health >= HEALTH_WATCH:
                reasons.append(f"{sensor}: zone {zone} yet health {health:.0f}: {BROADBAND_ONLY}")
    return Condition(level, tuple(reasons))
