"""A full disk on the gateway: nothing lost uncounted, counters equal the disk, the summarizer keeps going.

The agent's state directory lives on a small tmpfs that the test mounts (root only) and fills with a
file until the kernel refuses more (ENOSPC). While it is full, intervals keep closing into the
queue's in-memory overflow, whose oldest batches are dropped and counted once it is over its bound;
`twin-agent status` and /metrics say "disk full". Once the file is removed, the overflow is stored
and everything is delivered. Accounting at the end, against the real collector's store: every
stored summary arrived exactly once, every closed interval was either stored or counted as dropped,
and the drop count reached the collector in agent_health.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    stored_points,
    wait_acked,
    wait_drained,
)
from tests.servers import free_port, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root (CI runs as root)"),
]

FS_BYTES = 8 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """The agent's state directory (tmp_path/a/state), on its own small filesystem."""
    mount = tmp_path / "a" / "state"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses (ENOSPC); return it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def on_disk(queue_path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True, timeout=10) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        max_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
    return {"stored": max(int(meta.get("next_seq", 1)) - 1, max_seq),
            "summaries_total": int(meta.get("summaries_total", 0))}


def test_full_disk_loses_nothing_uncounted(tmp_path: Path, small_fs: Path) -> None:
    agent_dir = tmp_path / "a"
    metrics_port = free_port()
    cli = [sys.executable, "-m", "agent", "status", "--config", str(agent_dir / "agent.toml")]
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        # ~400-byte batches: an overflow of 2 KiB holds about five of them.
        toml = pattern_agent_toml(small_fs, collector.port, device.port, uplink_extra="max_overflow_mb = 0.002")
        agent = procs.add(agent_process(agent_dir, toml + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'))
        wait_acked(agent_dir, 3)
        filler = fill(small_fs)
        wait_for(lambda: metrics(metrics_port)["twin_agent_disk_full"] == 1.0, 30, "the agent to notice the full disk")
        wait_for(lambda: metrics(metrics_port)["twin_agent_queue_dropped_batches_total"] >= 2, 60,
                 "overflow batches dropped and counted")
        m = metrics(metrics_port)
        disk = on_disk(small_fs / "queue.sqlite")
        assert m["twin_agent_queue_batches_stored_total"] == disk["stored"], "counters equal what is on disk"
        assert m["twin_agent_queue_summaries_stored_total"] == disk["summaries_total"]
        assert m["twin_agent_queue_overflow_batches"] >= 1
        shown = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "DISK FULL" in shown.stdout

        filler.unlink()
        wait_for(lambda: metrics(metrics_port)["twin_agent_queue_overflow_batches"] == 0, 30, "the overflow stored")
        wait_for(lambda: status(agent_dir).get("storage") == "ok", 30, "storage ok again")
        wait_acked(agent_dir, int(status(agent_dir)["uplink"]["acked"]) + 3)
        wait_drained(agent_dir)
        agent.stop()
    assert "crashed" not in agent.log_path.read_text(), "no task crash-looped"
    q = status(agent_dir)["queue"]
    stored = q["next_seq"] - 1
    dropped = q["dropped"]
    assert q["batches"] == 0 and q["overflow_batches"] == 0
    assert dropped >= 2 and q["summaries_dropped"] >= dropped
    assert status(agent_dir)["intervals"]["closed"] == stored + dropped, \
        "every closed interval was stored or counted as dropped"
    telemetry = stored_points(tmp_path / "c", "telemetry")
    assert len(telemetry) == q["summaries_total"], "every stored summary arrived, once"
    health = stored_points(tmp_path / "c", "agent_health")
    assert len(health) == stored, "one agent_health point per stored batch"
    assert max(f["dropped"] for _, _, f in health) == dropped, "the drops were reported upstream"
