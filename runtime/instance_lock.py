"""One daemon per state directory, and a sure way for a command to tell whether it runs.

The daemon holds an exclusive `flock` on `<state_dir>/<name>.pid` for as long as it lives. The
kernel drops the lock when the process ends, however it ends (SIGKILL, OOM killer, power cut), so
"the lock can be taken" means "nobody runs": unlike a status file's age (which depends on how often
it is written) or a pid (which a crash leaves behind and another process may reuse). The file also
records the pid, the start time and, at a clean stop, the stop time, for `status` to print.

A second daemon on the same state directory would share its queue and twin: it is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

__all__ = ["InstanceLock", "InstanceState", "probe_instance"]


@dataclass(frozen=True)
class InstanceState:
    """What the lock file says. `running` is None when this user cannot tell (no access)."""

    running: bool | None
    pid: int = 0
    started_ns: int = 0
    stopped_ns: int = 0  # 0: still running, never ran, or did not stop cleanly
    reason: str = ""


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        doc = json.loads(data or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class InstanceLock:
    """Held by the running daemon: `acquire()` at start, `release()` at a clean stop."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None
        self._started_ns = 0

    def acquire(self) -> None:
        """Take the lock or raise ConfigError saying who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read(fd).get("pid", "?")
            os.close(fd)
            raise ConfigError(f"another {self.what} (pid {pid}) is running on {self.path.parent}; "
                              "two would share its queue and state") from None
        self._fd = fd
        self._started_ns = time.time_ns()
        self._write({"pid": os.getpid(), "started_ns": self._started_ns})

    def release(self) -> None:
        """Record the clean stop and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self._write({"pid": os.getpid(), "started_ns": self._started_ns, "stopped_ns": time.time_ns()})
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def _write(self, doc: dict[str, int]) -> None:
        assert self._fd is not None
        data = json.dumps(doc).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def probe_instance(path: Path) -> InstanceState:
    """Whether a daemon holds the lock at `path` (read access to the file is enough)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return InstanceState(False, reason=f"{path} does not exist: the daemon has not run with this state_dir")
    except OSError as exc:
        return InstanceState(None, reason=f"cannot open {path}: {exc.strerror}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            running = False
        except BlockingIOError:
            running = True
        doc = _read(fd)
    finally:
        os.close(fd)
    return InstanceState(running, pid=int(doc.get("pid", 0)), started_ns=int(doc.get("started_ns", 0)),
                         stopped_ns=0 if running else int(doc.get("stopped_ns", 0)))
