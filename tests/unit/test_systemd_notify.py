"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.systemd_notify import Notifier

RECV_TIMEOUT_S = 10.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def no_datagram(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(RECV_TIMEOUT_S)
    return False


def test_every_notification_arrives_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.enabled and n.watchdog_interval_s == 15.0
    assert n.ready()
    assert received(sock) == ["READY=1"]
    assert n.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert n.status("queue: 3 batches\nlink up")
    assert received(sock) == ["STATUS=queue: 3 batches link up"], "a status is one line"
    assert n.reloading()
    reload_msg = received(sock)
    assert reload_msg[0] == "RELOADING=1"
    assert reload_msg[1].startswith("MONOTONIC_USEC=") and int(reload_msg[1].split("=")[1]) > 0
    assert n.stopping()
    assert received(sock) == ["STOPPING=1"]
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"twin-notify-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert received(sock) == ["READY=1"]
        n.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert not any((n.ready(), n.watchdog(), n.stopping(), n.reloading(), n.status("x")))
    asyncio.run(asyncio.wait_for(n.run_watchdog(), RECV_TIMEOUT_S))  # returns at once


def test_watchdog_only_when_configured_for_this_process(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert Notifier({"NOTIFY_SOCKET": path}).watchdog_interval_s is None
    assert not Notifier({"NOTIFY_SOCKET": path}).watchdog()
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "junk"}).watchdog_interval_s is None
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None, "the watchdog of another process is not ours"
    mine = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 0.5
    assert no_datagram(sock)


def test_run_watchdog_pings_from_the_event_loop_while_healthy(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    health = {"ok": True}

    async def scenario() -> None:
        task = asyncio.create_task(n.run_watchdog(lambda: health["ok"]))
        first = await asyncio.to_thread(received, sock)
        second = await asyncio.to_thread(received, sock)
        assert first == second == ["WATCHDOG=1"]
        health["ok"] = False
        await asyncio.sleep(0.1)  # lets a ping already in flight land before draining
        while not no_datagram(sock):
            pass
        await asyncio.sleep(0.2)  # ten intervals: an unhealthy daemon sends nothing
        assert no_datagram(sock)
        health["ok"] = True
        assert await asyncio.to_thread(received, sock) == ["WATCHDOG=1"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()  # no watchdog configured
    assert not n.status("still here")
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1, "logged once"


def test_a_child_process_notifies_from_its_environment(listener: tuple[socket.socket, str]) -> None:
    """What systemd does: the variables are in the environment of the started process."""
    sock, path = listener
    code = "from runtime.systemd_notify import Notifier; n = Notifier(); n.ready(); n.watchdog(); n.stopping()"
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="5000000")
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert [received(sock) for _ in range(3)] == [["READY=1"], ["WATCHDOG=1"], ["STOPPING=1"]]
