"""Secrets (tokens, passwords, webhook keys) from a file or an environment variable; never logged.

Every daemon option that holds a secret comes as `<name>_file` / `<name>_env` (and, for demos and
tests, an inline `<name>`). Errors name the key, like every config error.

In production the secrets reach only the daemon: tokens through systemd's `LoadCredential=` (a
private copy under /run/credentials/<unit>/ that exists only while the unit runs), passwords in the
unit's environment. An operator's shell has neither, so how a secret is resolved depends on who
asks (`secret_policy`):

    REQUIRE  the daemon (and `check-config --strict-secrets`): an unreadable secret is a ConfigError
    CHECK    `check-config` in an operator's shell: each unreadable secret is noted (key and why),
             everything else is checked as usual
    SKIP     commands that need no secret (status, work-orders, assets...): none is read at all

Under CHECK and SKIP an unresolved secret reads as a placeholder that is never a valid credential.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ConfigError

__all__ = ["SecretPolicy", "UnreadableSecret", "read_secret", "secret_file_error", "secret_policy"]

CREDENTIALS_ROOT = "/run/credentials/"


class SecretPolicy(enum.Enum):
    REQUIRE = "require"
    CHECK = "check"
    SKIP = "skip"


@dataclass(frozen=True)
class UnreadableSecret:
    """A secret `check-config` could not read in this process, and why (never its value)."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


_POLICY: ContextVar[tuple[SecretPolicy, list[UnreadableSecret]]] = ContextVar(
    "secret_policy", default=(SecretPolicy.REQUIRE, []))


@contextlib.contextmanager
def secret_policy(policy: SecretPolicy) -> Iterator[list[UnreadableSecret]]:
    """Resolve secrets under `policy` inside the block; yields the list CHECK fills."""
    noted: list[UnreadableSecret] = []
    token = _POLICY.set((policy, noted))
    try:
        yield noted
    finally:
        _POLICY.reset(token)


def _placeholder(key: str) -> str:
    return f"<{key}: not read here>"


def _file_hint(path: str, exc: OSError) -> str:
    if path.startswith(CREDENTIALS_ROOT):
        unit = path[len(CREDENTIALS_ROOT):].split("/", 1)[0]
        return (f"systemd hands {CREDENTIALS_ROOT}{unit}/ only to the running {unit} (LoadCredential=); "
                "run the check inside the unit (ExecStartPre) or with access to the source file")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not readable by this user; the daemon's user may read it"
    return ""


def _tolerated(key: str, reason: str) -> bool:
    """True (and noted under CHECK) when the policy lets an unreadable secret pass."""
    policy, noted = _POLICY.get()
    if policy is SecretPolicy.REQUIRE:
        return False
    if policy is SecretPolicy.CHECK:
        noted.append(UnreadableSecret(key, reason))
    return True


def secret_file_error(key: str, path: str) -> str | None:
    """For config checks of secret files read later (keys, password files): why `path` cannot be
    used, or None when it is readable or the policy lets an unreadable secret pass."""
    if not path or os.access(path, os.R_OK):
        return None
    if _POLICY.get()[0] is SecretPolicy.SKIP:
        return None
    try:
        os.stat(path)
        code = errno.EACCES  # it exists, but os.access said this user cannot read it
    except OSError as exc:
        code = exc.errno or errno.ENOENT
    hint = _file_hint(path, OSError(code, os.strerror(code)))
    reason = f"cannot read {path}: {os.strerror(code)}" + (f" ({hint})" if hint else "")
    return None if _tolerated(key, reason) else f"{key}: {reason}"


def read_secret(key: str, *, file: str = "", env: str = "", inline: str = "") -> str:
    """The secret `key` from `file`, else `env`, else `inline` ("" when none is given).

    An unreadable file or an unset/empty variable is a ConfigError naming `<key>_file` or `<key>_env`
    (under REQUIRE): an empty secret is always a mistake, and finding it at start-up beats an auth
    failure later. A file that can be read but is empty, or a variable that is set but empty, is an
    error under every policy but SKIP: that is a broken secret, not one kept from this shell.
    """
    policy = _POLICY.get()[0]
    if policy is SecretPolicy.SKIP and (file or env):
        return _placeholder(key)
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            hint = _file_hint(file, exc)
            reason = f"cannot read {file}: {exc.strerror}" + (f" ({hint})" if hint else "")
            if _tolerated(f"{key}_file", reason):
                return _placeholder(key)
            raise ConfigError(f"{key}_file: {reason}") from None
        if not value:
            raise ConfigError(f"{key}_file: {file} is empty")
        return value
    if env:
        if env not in os.environ:
            reason = f"environment variable {env} is not set"
            if _tolerated(f"{key}_env", reason + " in this shell (the unit's Environment= sets it)"):
                return _placeholder(key)
            raise ConfigError(f"{key}_env: {reason} or empty")
        value = os.environ[env].strip()
        if not value:
            raise ConfigError(f"{key}_env: environment variable {env} is not set or empty")
        return value
    return inline
