"""Retention and backup: prune and tombstones on both stores; vacuum and the backup API of
real SQLite files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.errors import StoreError
from aggregator.ingest.identity import identify
from aggregator.models import Entry, ParsedEntry, PollRecord
from aggregator.store.backup import backup_database
from aggregator.store.sqlite import SqliteStore as Store

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def parsed(n: int, title: str | None = None) -> ParsedEntry:
    return ParsedEntry(
        guid=f"guid-{n}",
        guid_is_permalink=False,
        link=f"https://example.com/{n}",
        title=title or f"Entry {n}",
        summary=f"Summary {n}",
        content=f"<p>Content {n}</p>",
        author="Ann",
        categories=(),
        published=T0 - timedelta(days=n),
        updated=None,
    )


def poll(feed: str, now: datetime, new: list[Entry], updated: list[Entry]) -> PollRecord:
    return PollRecord(
        feed,
        f"https://{feed}.example/feed.xml",
        now,
        "ok",
        now + timedelta(hours=1),
        new=tuple(new),
        updated=tuple(updated),
    )


def diff(store: Store, feed: str, items: list[ParsedEntry], now: datetime) -> tuple[int, int]:
    """What poll.py decides for these entries: (new, updated), by the store's known hashes."""
    known = {key: k.content_hash for key, k in store.known_entries(feed).items()}
    entries = identify(feed, items, now)
    new = [e for e in entries if e.key not in known]
    updated = [e for e in entries if e.key in known and known[e.key] != e.content_hash]
    store.record_poll(poll(feed, now, new, updated))
    return len(new), len(updated)


def titles(store: Store, feed: str) -> list[str]:
    return [s.entry.title for s in store.iter_entries([feed])]


def test_prune_by_count_keeps_the_newest_and_never_brings_them_back(store: Store) -> None:
    assert diff(store, "a", [parsed(1), parsed(2), parsed(3)], T0) == (3, 0)
    generation = store.generation()
    assert store.prune(T0, retention_days=0, max_per_feed=1) == 2
    assert titles(store, "a") == ["Entry 1"]
    assert store.generation() > generation  # outputs re-render
    assert store.last_prune() == T0
    # The feed still carries the pruned entries: they are neither new nor updated.
    later = T0 + timedelta(hours=1)
    assert diff(store, "a", [parsed(0), parsed(1), parsed(2), parsed(3)], later) == (1, 0)
    assert titles(store, "a") == ["Entry 0", "Entry 1"]
    # A pruned entry edited upstream stays pruned, and is counted once, not at every poll.
    edited = [parsed(0), parsed(1), parsed(2, "Entry 2, edited"), parsed(3)]
    assert diff(store, "a", edited, later + timedelta(hours=1)) == (0, 1)
    assert diff(store, "a", edited, later + timedelta(hours=2)) == (0, 0)
    assert titles(store, "a") == ["Entry 0", "Entry 1"]


def test_prune_by_age_uses_first_seen_and_is_per_database(store: Store) -> None:
    diff(store, "a", [parsed(1)], T0 - timedelta(days=10))
    diff(store, "b", [parsed(2)], T0 - timedelta(days=2))
    assert store.prune(T0, retention_days=5, max_per_feed=0) == 1
    assert titles(store, "a") == [] and titles(store, "b") == ["Entry 2"]
    # Zero disables both rules.
    assert store.prune(T0 + timedelta(days=100), retention_days=0, max_per_feed=0) == 0
    assert titles(store, "b") == ["Entry 2"]
    assert store.last_prune() == T0 + timedelta(days=100)


@pytest.mark.sqlite_only("measures the database file")
def test_vacuum_shrinks_the_file(store: Store, tmp_path: Path) -> None:
    big = [parsed(n, "x" * 2000 + str(n)) for n in range(300)]
    diff(store, "a", big, T0)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (tmp_path / "x.db").stat().st_size
    store.prune(T0, retention_days=0, max_per_feed=1)
    store.vacuum()
    assert (tmp_path / "x.db").stat().st_size < before / 2


@pytest.mark.sqlite_only("SQLite's online backup API (PostgreSQL has pg_dump)")
def test_backup_is_a_checked_single_file_copy(store: Store, tmp_path: Path) -> None:
    diff(store, "a", [parsed(1), parsed(2)], T0)
    dest = tmp_path / "copy.db"
    backup_database(tmp_path / "x.db", dest)
    assert not (tmp_path / "copy.db.partial").exists()
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (2,)
    conn.close()
    with pytest.raises(StoreError, match="no database"):
        backup_database(tmp_path / "missing.db", tmp_path / "x.db")
    with pytest.raises(StoreError, match="failed"):
        backup_database(tmp_path / "x.db", tmp_path / "no-such-dir" / "x.db")
