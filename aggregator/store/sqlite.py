"""SQLite through sqlite-utils: the Store's queries, one transaction per poll. I/O.

A Store wraps one connection and must stay on the thread that opened it. The daemon keeps
exactly one writing Store on a dedicated thread (see `threads.StoreThreads`) and reads from
others; WAL lets readers run while the writer commits. The schema is in schema.py, the mapping
of rows to models in rows.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..config.secret import redact
from ..errors import StoreError
from ..ingest.feedstate import moved, next_state
from ..ingest.identity import uid_for
from ..models import Entry, FeedState, FeedStatus, Known, PollRecord, StoredEntry
from . import articles, sanitized
from .common import StoreCommon
from .connection import SqliteBase, store_errors
from .nodes import NodeTable
from .protocol import Entries
from .rows import (
    _INSERT_ENTRY,
    _INSERT_FEED,
    _INSERT_FEED_IF,
    _UPDATE_FEED,
    _UPDATE_FEED_IF,
    UPDATE_PRUNED,
    _dt,
    _entry_row,
    _feed_state_from_row,
    _feed_status_from_row,
    _feed_values,
    _stored_from_row,
    _ts,
    entry_update,
)
from .search import FTS_TABLE

# Entries of at least 1/SCAN_SHARE of all feeds are read by walking the date index.
SCAN_SHARE = 4


@store_errors
class SqliteStore(StoreCommon, NodeTable, SqliteBase):
    """The Store (protocol.py) on one SQLite connection, migrated on open: each method's
    contract is written there. Not thread-safe by design: see threads.StoreThreads."""

    # The article queue's and the re-sanitising pass's SQL (StoreCommon calls them).
    _queue = articles
    _sanitize = sanitized

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        # The state this connection last wrote for a feed with save_poll_if, and the
        # connection's data_version then: while that version holds, no other connection has
        # committed, so the row is still that state and the next guarded write need not check
        # it column by column (the check was dearer than the write).
        self._written: dict[str, tuple[FeedState, int]] = {}

    # --- feeds -------------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """Make sure every configured (name, url) has a row; keeps all state of known feeds,
        except what concerned the old URL of a feed whose URL changed (feedstate.moved)."""
        with self._atomic():
            stored = {r[0]: r[1] for r in self.db.execute("SELECT name, url FROM feeds")}
            for name, url in feeds:
                old_url = stored.get(name)
                if old_url is None:
                    self._write_feed(FeedState(name, url))
                elif old_url != url:
                    self._written.pop(name, None)
                    state = self.poll_state(name)
                    assert state is not None  # read in this transaction
                    self._write_feed(moved(state, url))
                stored[name] = url

    def poll_state(self, name: str) -> FeedState | None:
        """A feed's polling state as last written: the one read a poll makes before its request
        (none at all while the poller's StateCache holds it)."""
        row = self.db.execute("SELECT * FROM feeds WHERE name = ?", [name]).fetchone()
        return _feed_state_from_row(row) if row is not None else None

    def _feed_rows(self, names: Sequence[str] | None) -> list[FeedStatus]:
        where, params = "", list(names or ())
        if names is not None:
            where = f"WHERE f.name IN ({','.join('?' for _ in names)})"
        count = "(SELECT count(*) FROM entries e WHERE e.feed = f.name)"
        sql = f"SELECT f.*, {count} AS entry_count FROM feeds f {where} ORDER BY f.name"
        return [_feed_status_from_row(r) for r in self.db.execute(sql, params).fetchall()]

    def known_entries(self, feed: str) -> dict[str, Known]:
        """Key → what is stored of every entry of a feed (hashes, link, uid).

        Pruned entries are included (from their tombstones, with only their content hash), so
        an entry pruned while the feed still carries it is never taken for a new one.
        """
        known = {
            key: Known(uid_for(feed, key), content_hash, None, None)
            for key, content_hash in self.db.execute(
                "SELECT key, content_hash FROM pruned WHERE feed = ?", [feed]
            ).fetchall()
        }
        rows = self.db.execute(
            "SELECT key, uid, content_hash, stable_hash, link FROM entries WHERE feed = ?", [feed]
        )
        known.update(
            (r["key"], Known(r["uid"], r["content_hash"], r["stable_hash"], r["link"]))
            for r in rows
        )
        return known

    def recent_published(self, feed: str, limit: int = 20) -> list[datetime]:
        """Publication dates of a feed's newest entries (known dates only), newest first."""
        rows = self.db.execute(
            "SELECT published FROM entries WHERE feed = ? AND date_known = 1 "
            "ORDER BY published DESC LIMIT ?",
            [feed, limit],
        )
        return [d for (text,) in rows.fetchall() if (d := _dt(text)) is not None]

    # --- one poll ----------------------------------------------------------------------------

    def save_poll(self, state: FeedState, new: Entries = (), updated: Entries = ()) -> int:
        """Write one poll, all or nothing: the feed's state as given, whole (feedstate.py
        decided it; nothing here computes any of it), and its new and updated entries. A poll
        put off without a request writes only its state.

        Returns the store generation after the write (it grows whenever entries changed, which is
        what tells outputs to re-render).
        """
        self._written.pop(state.name, None)
        generation = self._save(state, new, updated, None, guarded=False)
        assert generation is not None
        return generation

    def save_poll_if(
        self,
        expected: FeedState | None,
        state: FeedState,
        new: Entries = (),
        updated: Entries = (),
        lease: str | None = None,
    ) -> int | None:
        """`save_poll`, only if the feed's row still holds `expected` (None: there is no row),
        the state the poll started from; else None, and nothing is written. Another process
        (`aggregator fetch` beside the daemon) may have written the row since the poll read it
        or cached it: the poller then applies its step to the row as it is now and tries again,
        so a whole-state write never undoes another's. The check is part of the UPDATE itself,
        unless the row is known to hold `expected` (see `_written`). `lease` is not used:
        one daemon polls a SQLite store, and no feed is leased."""
        with self._atomic():
            version = self.data_version()
            known = self._written.pop(state.name, None)
            unchanged = known is not None and known[0] is expected and known[1] == version
            generation = self._save(state, new, updated, expected, guarded=not unchanged)
        if generation is not None:
            self._written[state.name] = (state, version)
        return generation

    def _save(
        self,
        state: FeedState,
        new: Sequence[Entry],
        updated: Sequence[Entry],
        expected: FeedState | None,
        guarded: bool,
    ) -> int | None:
        with self._atomic():
            if not self._write_feed(state, expected, guarded):
                return None
            if not new and not updated:
                return self._generation()
            assert state.last_poll is not None  # the poll's `now`
            self._write_entries(state.last_poll, new, updated)
            return self.bump_generation()

    def record_poll(self, rec: PollRecord) -> int:
        """Apply a poll's record to the stored state (feedstate.next_state) and save it, for
        callers that keep no state of their own (tools, tests); the poller keeps each feed's
        state and calls save_poll_if."""
        with self._atomic():
            state = next_state(self.poll_state(rec.feed), rec)
            return self.save_poll(state, rec.new, rec.updated)

    def _write_feed(
        self, state: FeedState, expected: FeedState | None = None, guarded: bool = False
    ) -> bool:
        """Write a feed's row whole; False when `guarded` and the row no longer holds
        `expected` (nothing written then)."""
        values = _feed_values(state)
        if guarded and expected is None:
            return bool(self.db.execute(_INSERT_FEED_IF, [state.name, *values]).rowcount)
        if guarded:
            assert expected is not None
            guard = [*values, state.name, *_feed_values(expected)]
            return bool(self.db.execute(_UPDATE_FEED_IF, guard).rowcount)
        if self.db.execute(_UPDATE_FEED, [*values, state.name]).rowcount == 0:
            self.db.execute(_INSERT_FEED, [state.name, *values])
        return True

    def _write_entries(
        self, when: datetime, new: Sequence[Entry], updated: Sequence[Entry]
    ) -> None:
        now = _ts(when)
        if new:
            rows = [[*_entry_row(entry).values(), now, now] for entry in new]
            self.db.conn.executemany(_INSERT_ENTRY, rows)
        for entry in updated:
            old = self.db.execute(
                "SELECT first_seen FROM entries WHERE feed = ? AND key = ?",
                [entry.feed, entry.key],
            ).fetchone()
            first_seen = _dt(old["first_seen"]) if old else when
            assert first_seen is not None
            sql, params = entry_update(entry, first_seen, now)
            if self.db.execute(sql.replace("%s", "?"), params).rowcount == 0:
                # A pruned entry edited upstream: remember its new hash, store nothing.
                pruned = [entry.content_hash, entry.feed, entry.key]
                self.db.execute(UPDATE_PRUNED.replace("%s", "?"), pruned)

    # --- reading entries ---------------------------------------------------------------------

    def iter_entries(
        self, feeds: Sequence[str], batch: int = 200, query: str | None = None
    ) -> Iterator[StoredEntry]:
        """Entries of the given feeds, newest first (by published, then by first seen); only
        those matching the FTS5 `query` when one is given."""
        if not feeds:
            return
        marks = ",".join("?" for _ in feeds)
        params: list[Any] = list(feeds)
        where = ""
        if query is not None:
            where = f" AND e.rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?)"
            params.append(query)
        # Looked up by feed, every entry of the feeds is sorted before the first row comes
        # out; walked newest first on the date index, rows stream and a reader that stops
        # early reads only what it takes. The walk skips other feeds' entries, so it is used
        # when the feeds are a good share of all (an output over everything, typically):
        # the first 8,000 of 100,000 entries of 2,000 feeds in 0.3 s instead of 2.3 s.
        walk = query is None and len(feeds) * SCAN_SHARE >= self._feed_count()
        feed = "+e.feed" if walk else "e.feed"  # a unary + keeps SQLite off the feed index
        sql = (
            "SELECT e.*, f.title AS feed_title, f.url AS feed_url, f.link AS feed_link "
            f"FROM entries e JOIN feeds f ON f.name = e.feed WHERE {feed} IN ({marks}){where} "
            "ORDER BY e.published DESC, e.first_seen DESC, e.uid"
        )
        try:
            cur = self.db.execute(sql, params)
        except sqlite3.OperationalError as e:
            raise StoreError(f"search failed on {self.path}: {redact(str(e))}") from e
        yield from self._stored(cur, batch)

    def _feed_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM feeds").fetchone()[0])

    def search(self, query: str, limit: int = 20) -> list[StoredEntry]:
        """Entries matching an FTS5 query, best match first (bm25), then newest."""
        sql = (
            "SELECT e.*, f.title AS feed_title, f.url AS feed_url, f.link AS feed_link "
            f"FROM {FTS_TABLE} JOIN entries e ON e.rowid = {FTS_TABLE}.rowid "
            f"JOIN feeds f ON f.name = e.feed WHERE {FTS_TABLE} MATCH ? "
            f"ORDER BY bm25({FTS_TABLE}), e.published DESC, e.uid LIMIT ?"
        )
        return list(self._stored(self.db.execute(sql, [query, limit]), 200))

    def feed_languages(self, names: Sequence[str]) -> dict[str, str | None]:
        """The language each feed declared on its last successful poll."""
        marks = ",".join("?" for _ in names)
        rows = self.db.execute(
            f"SELECT name, language FROM feeds WHERE name IN ({marks})", list(names)
        )
        return {name: lang for name, lang in rows.fetchall()}

    def _stored(self, cur: sqlite3.Cursor, batch: int) -> Iterator[StoredEntry]:
        while rows := cur.fetchmany(batch):
            for r in rows:
                yield _stored_from_row(r)

    def count_entries(self, feed: str | None = None) -> int:
        if feed is None:
            return int(self.db.execute("SELECT count(*) FROM entries").fetchone()[0])
        row = self.db.execute("SELECT count(*) FROM entries WHERE feed = ?", [feed]).fetchone()
        return int(row[0])

    # --- retention ---------------------------------------------------------------------------

    def prune(self, now: datetime, retention_days: int, max_per_feed: int) -> int:
        """Delete entries first stored more than `retention_days` ago and, per feed, all but the
        `max_per_feed` newest (0 disables either rule). Returns how many entries were deleted.

        Each deleted entry leaves a tombstone (feed, key, content hash) in `pruned`, which
        `known_entries` reads, so a feed that still carries it does not bring it back as new.
        """
        cutoff = _ts(now - timedelta(days=retention_days))
        with self._atomic():
            victims = self.db.execute(
                """
                SELECT feed, key, content_hash FROM (
                    SELECT feed, key, content_hash, first_seen, ROW_NUMBER() OVER (
                        PARTITION BY feed ORDER BY published DESC, first_seen DESC, uid
                    ) AS rank
                    FROM entries
                )
                WHERE (? > 0 AND first_seen < ?) OR (? > 0 AND rank > ?)
                """,
                [retention_days, cutoff, max_per_feed, max_per_feed],
            ).fetchall()
            stamp = _ts(now)
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_prune', ?)", [stamp]
            )
            if not victims:
                return 0
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO pruned (feed, key, content_hash, pruned_at) "
                "VALUES (?, ?, ?, ?)",
                [(f, k, h, stamp) for f, k, h in victims],
            )
            self.db.conn.executemany(
                "DELETE FROM entries WHERE feed = ? AND key = ?", [(f, k) for f, k, _ in victims]
            )
            self.bump_generation()
        return len(victims)

    def last_prune(self) -> datetime | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'last_prune'").fetchone()
        return _dt(row[0]) if row else None

    def vacuum(self) -> None:
        """Give the space of deleted rows back to the file system. Slow; only on demand."""
        # FTS5 keeps deleted rows as delete markers until its segments are merged.
        self.db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')")
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
