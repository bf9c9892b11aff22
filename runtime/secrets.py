"""Secrets (tokens, passwords, webhook keys) from a file or an environment variable; never logged.

Every daemon option that holds a secret comes as `<name>_file` / `<name>_env` (and, for demos and
tests, an inline `<name>`). Errors name the key, like every config error.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import ConfigError

__all__ = ["read_secret"]


def read_secret(key: str, *, file: str = "", env: str = "", inline: str = "") -> str:
    """The secret `key` from `file`, else `env`, else `inline` ("" when none is given).

    An unreadable file or an unset/empty variable is a ConfigError naming `<key>_file` or `<key>_env`:
    an empty secret is always a mistake, and finding it at start-up beats an auth failure later.
    """
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{key}_file: {file} is empty")
        return value
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{key}_env: environment variable {env} is not set or empty")
        return value
    return inline
