"""TOML loading and validation whose errors name the offending key.

Both daemons and every connector describe their configuration as pydantic models with
`extra="forbid"` (a typo is an error, not a silently ignored key). `parse_model` turns pydantic's
error locations into dotted keys such as `sources[0].points[3].type`, which is what a person
editing the file needs to see.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from runtime.errors import ConfigError

__all__ = ["StrictModel", "format_key", "load_toml", "parse_model"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are not coerced from strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_key(prefix: str, loc: tuple[int | str, ...]) -> str:
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part.startswith(("function-", "tagged-union", "literal[")):
            continue  # pydantic-internal location segments, meaningless to a user
        else:
            key += f".{part}" if key else str(part)
    return key or "(top level)"


def parse_model(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate `data` as `model`; raise ConfigError listing every bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see the example config)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            msg = msg.removeprefix("Value error, ")
            loc = tuple(err["loc"])
            # A model-level check names its own keys in the message; don't prefix "(top level)".
            lines.append(f"{format_key(prefix, loc)}: {msg}" if loc or prefix else msg)
        raise ConfigError("\n".join(lines)) from None


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
