"""The database lock (one daemon per database) and the log formats and poll summary."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from aggregator.config.database import Database, parse_database
from aggregator.errors import LockError
from aggregator.logs import JsonFormatter, PollTally
from aggregator.models import PollOutcome
from aggregator.store.lock import DaemonLock, lock_path, running_daemon


def test_second_lock_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "agg.db"
    db = Database(path=file)
    with pytest.raises(LockError, match="no lock file"):
        running_daemon(db)
    first = DaemonLock(db)
    first.acquire()
    try:
        assert lock_path(file).read_text() == f"{os.getpid()}\n"
        assert running_daemon(db) == os.getpid()
        # flock belongs to the open file, so a second open in this process is refused too.
        with pytest.raises(LockError, match=rf"pid {os.getpid()}\) is already running"):
            DaemonLock(db).acquire()
    finally:
        first.release()
    with pytest.raises(LockError, match="is free"):
        running_daemon(db)
    again = DaemonLock(db)  # a stale file does not block a restart
    again.acquire()
    again.release()


def test_postgresql_takes_no_lock_and_reload_says_how_to_reach_the_nodes() -> None:
    # Several nodes share one PostgreSQL database on purpose: no file lock, no PID to find.
    db = parse_database("postgresql://agg:s3cret-pw@db.example:5432/agg")
    lock = DaemonLock(db)
    lock.acquire()
    DaemonLock(db).acquire()  # a second node on the same database is welcome
    lock.release()
    with pytest.raises(LockError, match="send SIGHUP to each node") as caught:
        running_daemon(db)
    assert "s3cret-pw" not in str(caught.value)
    assert "postgresql://db.example:5432/agg" in str(caught.value)


def test_json_formatter_one_object_per_line() -> None:
    record = logging.LogRecord("aggregator.poll", logging.WARNING, "x", 1, "a %s", ("b",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning" and doc["logger"] == "aggregator.poll"
    assert doc["message"] == "a b" and doc["time"].endswith("+00:00")
    assert "exception" not in doc
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "RuntimeError: boom" in json.loads(line)["exception"]


def test_poll_tally_line() -> None:
    tally = PollTally()
    for status, new, updated in (("ok", 3, 1), ("ok", 0, 2), ("error", 0, 0), ("unchanged", 0, 0)):
        tally.add(PollOutcome("f", status, new, updated))  # type: ignore[arg-type]
    assert tally.line(7) == (
        "summary polls=4 ok=2 not_modified=0 unchanged=1 error=1 new=3 updated=3 feeds=7"
    )
