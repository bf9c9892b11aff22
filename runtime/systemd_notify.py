"""sd_notify(3) over $NOTIFY_SOCKET with the stdlib: READY, WATCHDOG, STOPPING, RELOADING, STATUS.

Both daemons run as `Type=notify` units with `WatchdogSec=`. systemd then knows a daemon is up
only once it said READY=1 (so `systemctl start` and units ordered after it wait for the real
start, config checked and stores open), and restarts it when the WATCHDOG=1 pings stop. The
pings are sent by a task on the daemon's own event loop (`run_watchdog`), so a hung loop, not
only a dead process, gets the daemon restarted.

Without $NOTIFY_SOCKET (run by hand, in tests, in a container) every call is a no-op that
returns False. A failed send is logged once and never raised: losing a notification must not
take the daemon down (a missed watchdog ping is what systemd is there to notice).

The protocol: one datagram of newline-separated VAR=VALUE assignments to the AF_UNIX socket
named by $NOTIFY_SOCKET (a leading "@" means the abstract namespace). WATCHDOG_USEC is the
watchdog timeout; WATCHDOG_PID, when set, names the process it is meant for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier"]

log = logging.getLogger("twin.systemd")

PINGS_PER_TIMEOUT = 2  # sd_watchdog_enabled(3): ping at half the timeout


class Notifier:
    """Notifications to the service manager; every method returns whether a datagram was sent."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address if address.startswith(("/", "\0")) else ""
        self.watchdog_timeout_s = _watchdog_timeout_s(env)
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return bool(self.address)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WatchdogSec=, or None when the watchdog is off."""
        if not self.enabled or self.watchdog_timeout_s is None:
            return None
        return self.watchdog_timeout_s / PINGS_PER_TIMEOUT

    def notify(self, *assignments: str) -> bool:
        """Send VAR=VALUE assignments in one datagram."""
        if not self.enabled:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self.address.replace("\0", "@"), exc)
                self._warned = True
            return False
        return True

    def ready(self) -> bool:
        """Startup (or a reload) is complete: stores open, servers listening."""
        return self.notify("READY=1")

    def reloading(self) -> bool:
        """A reload (SIGHUP) began; follow with `ready()` when done. MONOTONIC_USEC is required
        by systemd >= 253 for Type=notify-reload and harmless for Type=notify."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        """Shutdown began: systemd stops expecting watchdog pings and shows "deactivating"."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status` (newlines would end the assignment)."""
        return self.notify("STATUS=" + " ".join(text.split()))

    def watchdog(self) -> bool:
        """Keep-alive ping; only sent when the unit has WatchdogSec= set."""
        if self.watchdog_interval_s is None:
            return False
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self, healthy: Callable[[], bool] | None = None) -> None:
        """Ping every `watchdog_interval_s` from the calling event loop until cancelled.

        Returns at once when the watchdog is off. `healthy`, if given, is asked before each
        ping; while it answers False no ping is sent, so systemd restarts a daemon that runs
        but no longer does its work.
        """
        interval = self.watchdog_interval_s
        if interval is None:
            return
        was_healthy = True
        while True:
            is_healthy = healthy is None or healthy()
            if is_healthy:
                self.watchdog()
            if is_healthy != was_healthy:  # log transitions, not every skipped ping
                if is_healthy:
                    log.info("daemon healthy again: pinging the systemd watchdog")
                else:
                    log.warning("not pinging the systemd watchdog: the daemon reports itself unhealthy")
                was_healthy = is_healthy
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_timeout_s(env: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, if set, positive and meant for this process (WATCHDOG_PID)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1e6
