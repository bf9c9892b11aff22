"""SNMP profiles: the OIDs of a standard MIB as data, so a device says `profile = "ups-mib"`.

A profile is a TOML file in profiles/ with the same `[[points]]` and `[[tables]]` entries a device
takes (without assets: the device's `asset` and `index_map` supply them). Shipping them as data
lets a site add a vendor MIB's profile without code.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PROFILE_DIR", "load_profile", "profile_names"]

PROFILE_DIR = Path(__file__).parent / "profiles"


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@cache
def load_profile(name: str) -> dict[str, Any]:
    """The parsed profile `name` (validated by the device config that uses it)."""
    return tomllib.loads((PROFILE_DIR / f"{name}.toml").read_text(encoding="utf-8"))
