"""Logs journald can filter: sd-daemon priority prefixes, one record per message, third-party floods limited."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.logs import JournalFormatter, RateLimitedLog, ThirdPartyRateLimit, under_journald

RECORD = re.compile(r"^<([0-7])>(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def _record(name: str, level: int, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("broken\nacross lines")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(("level", "prefix"), [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"),
                                               (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
                                               (logging.CRITICAL, "<2>")])
def test_each_level_carries_its_syslog_priority(level: int, prefix: str) -> None:
    text = JournalFormatter("%(levelname)s %(name)s: %(message)s").format(_record("twin.agent", level, "x %d", 1))
    assert text == f"{prefix}{logging.getLevelName(level)} twin.agent: x 1"


def test_a_traceback_stays_in_its_record() -> None:
    text = JournalFormatter("%(levelname)s %(name)s: %(message)s").format(
        _record("twin.agent", logging.ERROR, "poll failed\nsecond line", exc=True))
    assert "\n" not in text
    assert text.startswith("<3>ERROR twin.agent: poll failed | second line | Traceback (most recent call last):")
    assert text.endswith("ValueError: broken | across lines")


def test_journal_stream_counts_only_for_the_stream_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    with journal.open("w") as j, other.open("w") as o:
        st = os.fstat(j.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(j)
        assert not under_journald(o), "stderr redirected elsewhere: plain lines"
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not under_journald(j)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not under_journald(j)


def test_third_party_records_are_rate_limited_by_shape_ours_are_not() -> None:
    now = [0.0]
    limit = ThirdPartyRateLimit(60.0, clock=lambda: now[0])
    passed = [limit.filter(_record("pymodbus.logging", logging.WARNING, f"Failed to connect, attempt {i}"))
              for i in range(50)]
    assert passed == [True] + [False] * 49
    assert limit.filter(_record("pymodbus.logging", logging.WARNING, "Repeating...."))
    assert all(limit.filter(_record("twin.agent.modbus", logging.WARNING, "unit offline")) for _ in range(5))
    now[0] = 61.0
    later = _record("pymodbus.logging", logging.WARNING, "Failed to connect, attempt %d", 99)
    assert limit.filter(later)
    assert later.getMessage() == "Failed to connect, attempt 99 (49 similar suppressed in the last 60s)"


def test_rate_limited_log_shares_the_mechanism(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("twin.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "twin.test"):
        assert log.warning("k", "bad payload") and not log.warning("k", "bad payload")
        now[0] = 11.0
        assert log.warning("k", "bad payload")
    assert [r.getMessage() for r in caplog.records] == [
        "bad payload", "bad payload (1 similar suppressed in the last 10s)"]


def test_a_daemon_process_under_journald_writes_one_prefixed_line_per_record(tmp_path: Path) -> None:
    """A real process: stderr is 'the journal stream' (a file whose device:inode JOURNAL_STREAM names)."""
    script = textwrap.dedent("""
        import logging, threading, warnings
        from runtime.logs import setup_logging
        setup_logging("info")
        log = logging.getLogger("twin.agent")
        log.info("starting")
        log.warning("uplink down")
        try:
            {}["missing"]
        except KeyError:
            log.exception("poll failed")
        for i in range(200):
            logging.getLogger("pymodbus.logging").warning("Failed to connect attempt %d", i)
            logging.getLogger("asyncua.client.ua_client").error("connection lost\\nwhile reading")
        warnings.warn("something deprecated")
        t = threading.Thread(target=lambda: 1 / 0, name="poller")
        t.start(); t.join()
        raise RuntimeError("the end\\nof the process")
    """)
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.run([sys.executable, "-c", script], stderr=f, env=env, timeout=60, check=False,
                              cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1
    lines = err.read_text().splitlines()
    assert lines and all(RECORD.match(line) for line in lines), "\n".join(lines)
    by_priority = [(RECORD.match(line).group(1), line) for line in lines]  # type: ignore[union-attr]
    assert ("6", "<6>INFO twin.agent: starting") in by_priority
    assert ("4", "<4>WARNING twin.agent: uplink down") in by_priority
    poll = next(line for p, line in by_priority if "poll failed" in line)
    assert poll.startswith("<3>ERROR") and "KeyError: 'missing'" in poll
    assert sum("pymodbus" in line for line in lines) == 1, "200 retries, one record"
    assert sum("asyncua" in line for line in lines) == 1
    assert any(p == "4" and "something deprecated" in line for p, line in by_priority)
    thread = next(line for p, line in by_priority if "thread poller" in line)
    assert thread.startswith("<2>CRITICAL") and "ZeroDivisionError" in thread
    assert lines[-1].startswith("<2>CRITICAL twin: uncaught exception") and "RuntimeError: the end | of the process" \
        in lines[-1]
