"""state_dir/status.json: the running agent's own view, for `twin-agent status`, the demo and tests.

At 1000 points the file is ~120 KB, so the daemon rewrites it only every `status_interval_s`, at
start and stop, when its storage state changes, and when asked: `twin-agent status` sends SIGUSR1
to the pid recorded in the file (after checking that the pid still is this agent) and waits for a
fresher file. A stopped agent leaves its last status behind, which the command shows as such.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["ASK_SIGNAL", "STATUS_FILE", "ask_for_status", "read_status", "write_status"]

STATUS_FILE = "status.json"
ASK_SIGNAL = signal.SIGUSR1


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Atomically replace the status file (readers never see half a file). Raises OSError."""
    path = state_dir / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(status, default=str))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a partial file from a full disk would only take more space
        raise


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_agent(pid: int, config_path: Path | None) -> bool:
    """True when `pid` runs `twin-agent run` (with this config file, when given): a pid left in an
    old status file may belong to another process by now, which SIGUSR1 would terminate."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"run" not in args or not any(a.endswith((b"twin-agent", b"agent")) for a in args):
        return False
    return config_path is None or any(a and os.fsencode(config_path.name) in a for a in args)


def ask_for_status(state_dir: Path, config_path: Path | None = None, timeout_s: float = 3.0,
                   pid: int | None = None) -> str:
    """Ask the running agent (`pid`, else the one the status file names) for a fresh status file
    and wait for it.

    Returns "" when a fresh file was written, else why not: "not running" (no status file or its
    pid is gone), "not permitted" (the agent runs as another user), "not supported" (an older agent),
    or "no answer" (timeout, or a disk too full for the file).
    """
    doc = read_status(state_dir)
    pid = pid or (int(doc.get("pid", 0)) if doc else 0)
    if not doc or not pid or not _is_agent(pid, config_path):
        return "not running"
    if "status_requests" not in doc:  # an agent from before this request existed: the signal would stop it
        return "not supported"
    answered = int(doc.get("status_requests", 0))  # counts, not clocks: the agent's clock may differ
    try:
        os.kill(pid, ASK_SIGNAL)
    except ProcessLookupError:
        return "not running"
    except PermissionError:
        return "not permitted"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = read_status(state_dir)
        if doc and (int(doc.get("status_requests", 0)) > answered or int(doc.get("pid", 0)) != pid):
            return ""
        time.sleep(0.02)
    return "no answer"
