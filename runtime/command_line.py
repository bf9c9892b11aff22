"""What both command-line tools share: `--config` anywhere, times for people, clean exits.

`--config` may come before or after the subcommand (`twin-collector --config c.toml work-orders
list` and `twin-collector work-orders list --config c.toml`) and defaults to the path the Debian
package and the systemd units use. Times are printed in UTC and say so. Output piped into `head`
ends quietly instead of with a BrokenPipeError traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.errors import ConfigError
from runtime.extras import MissingExtraError, missing_extra_message
from runtime.secrets import UnreadableSecret

__all__ = ["add_config_option", "age_text", "config_path", "report_check", "require_readable_config", "run_command",
           "utc_text"]


def add_config_option(parser: argparse.ArgumentParser, default: Path | None) -> None:
    """`--config/-c` on `parser`. On the top-level parser pass the default; on subcommands pass
    None, so an option given there overrides the top-level one and an absent one leaves it alone."""
    parser.add_argument("--config", "-c", type=Path, metavar="FILE",
                        default=argparse.SUPPRESS if default is None else default,
                        help=f"configuration file (default {default})" if default else "configuration file")


def config_path(args: argparse.Namespace, default: Path) -> Path:
    return Path(getattr(args, "config", None) or default)


def require_readable_config(path: Path, group: str) -> None:
    """Fail with what to do when the configuration file itself cannot be opened."""
    try:
        with path.open("rb"):
            return
    except FileNotFoundError:
        if path.parent.is_dir() or not path.parent.exists():
            raise ConfigError(f"{path}: no such file (give the configuration with --config FILE)") from None
        raise ConfigError(f"{path}: cannot be opened ({path.parent} is readable by group {group}: "
                          "is this user in it?)") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied (the configuration is readable by group {group}: "
                          "is this user in it?)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def report_check(summary: str, unreadable: Sequence[UnreadableSecret], strict: bool) -> int:
    """Print the check's result; unreadable secrets are warnings, or errors (exit 2) when strict."""
    label = "error" if strict else "warning"
    for u in unreadable:
        print(f"{label}: {u}", file=sys.stderr)
    if unreadable and strict:
        print(f"{len(unreadable)} secret(s) cannot be read here", file=sys.stderr)
        return 2
    print(summary + (f" ({len(unreadable)} secret(s) not readable here, see the warnings; "
                     "--strict-secrets makes that an error)" if unreadable else ""))
    return 0


def utc_text(ns: int) -> str:
    """`2025-01-31 10:15:00 UTC`, or '-' for 0/None."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9)) if ns else "-"


def age_text(ns: int, now_ns: int | None = None) -> str:
    """How long ago `ns` was, for people: '12s ago', '4 min ago', '3.1 h ago', '2.0 d ago'."""
    if not ns:
        return "never"
    s = max(0.0, ((now_ns or time.time_ns()) - ns) / 1e9)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172_800:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} d ago"


def run_command(func: Callable[[], int], tool: str) -> int:
    """Run a command: configuration errors print without a traceback (exit 2), so does a missing
    optional part (naming the extra to install), Ctrl-C exits 130, and a reader that went away
    (`| head`) ends the command quietly."""
    try:
        return int(func() or 0)
    except MissingExtraError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, tool)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, like a shell pipeline member killed by it
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    # Python flushes stdout again at exit, which would fail once more and print "Exception ignored";
    # pointing the descriptor at /dev/null makes that last flush harmless.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
