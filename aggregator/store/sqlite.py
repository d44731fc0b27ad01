"""SQLite through sqlite-utils: numbered migrations, one transaction per poll, queries. I/O.

A Store wraps one connection and must stay on the thread that opened it. The daemon keeps
exactly one writing Store on a dedicated thread (see `StoreThreads`) and reads from others; WAL
lets readers run while the writer commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from ..config.secret import redact, strip_userinfo
from ..errors import StoreError
from ..ingest.identity import Known, clean_text, uid_for, with_first_seen_date
from ..ingest.media import authors_from_json, authors_json, media_from_json, media_json
from ..models import Entry, FeedHints, FeedState, PollRecord, StoredEntry, Validators
from ..store.search import FTS_TABLE, fts_schema

T = TypeVar("T")
# How long a batched write waits for others to join its batch (seconds).
WRITE_LINGER = 0.005
# Entries of at least 1/SCAN_SHARE of all feeds are read by walking the date index.
SCAN_SHARE = 4

migrations = Migrations("aggregator")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE feeds (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            title TEXT,
            link TEXT,
            etag TEXT,
            last_modified TEXT,
            body_hash TEXT,
            last_poll TEXT,
            last_ok TEXT,
            last_status TEXT,
            http_status INTEGER,
            error_count INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_poll TEXT,
            warning TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE entries (
            feed TEXT NOT NULL REFERENCES feeds(name),
            key TEXT NOT NULL,
            key_kind TEXT NOT NULL,
            uid TEXT NOT NULL UNIQUE,
            guid TEXT,
            link TEXT,
            title TEXT NOT NULL,
            summary TEXT NOT NULL,
            content TEXT NOT NULL,
            author TEXT NOT NULL,
            categories TEXT NOT NULL,
            published TEXT NOT NULL,
            updated TEXT NOT NULL,
            date_known INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_changed TEXT NOT NULL,
            PRIMARY KEY (feed, key)
        )
        """
    )
    db.execute("CREATE INDEX entries_feed_published ON entries (feed, published DESC)")
    db.execute("CREATE INDEX entries_published ON entries (published DESC)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('generation', '0')")


@migrations()
def m002_polling(db: sqlite_utils.Database) -> None:
    # Everything the polling decision needs to resume exactly after a restart.
    for column in (
        "next_reason TEXT",
        "backoff_level INTEGER NOT NULL DEFAULT 0",
        "failing_since TEXT",
        "redirect_url TEXT",
        "redirect_count INTEGER NOT NULL DEFAULT 0",
        "gone INTEGER NOT NULL DEFAULT 0",
        "hints TEXT",
    ):
        db.execute(f"ALTER TABLE feeds ADD COLUMN {column}")


@migrations()
def m003_dedupe(db: sqlite_utils.Database) -> None:
    # Full-text index over title, summary and content, kept current by triggers, so every
    # writer (polls, pruning) updates it in the same transaction as the entries.
    for statement in fts_schema():
        db.execute(statement)
    # The feed's declared language (for language rules) and how its entries are keyed: "guid"
    # until the feed shows missing, blank or repeated guids, then "link" for good.
    db.execute("ALTER TABLE feeds ADD COLUMN language TEXT")
    db.execute("ALTER TABLE feeds ADD COLUMN key_mode TEXT NOT NULL DEFAULT 'guid'")
    # Hash of the entry with volatile parts (stamps, counters, tracking parameters) removed:
    # what decides whether an entry was really edited. NULL for rows stored before.
    db.execute("ALTER TABLE entries ADD COLUMN stable_hash TEXT")


def _hints_json(hints: FeedHints) -> str:
    return json.dumps(
        {
            "ttl_minutes": hints.ttl_minutes,
            "update_minutes": hints.update_minutes,
            "skip_hours": list(hints.skip_hours),
            "skip_days": list(hints.skip_days),
        }
    )


def _hints_from(text: str | None) -> FeedHints:
    if not text:
        return FeedHints()
    d = json.loads(text)
    return FeedHints(
        ttl_minutes=d.get("ttl_minutes"),
        update_minutes=d.get("update_minutes"),
        skip_hours=tuple(d.get("skip_hours") or ()),
        skip_days=tuple(d.get("skip_days") or ()),
    )


def _ts(when: datetime | None) -> str | None:
    """Timestamps are stored as fixed-width UTC ISO 8601 text, so they sort as strings."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def state_after_defer(state: FeedState, when: datetime, reason: str) -> FeedState:
    """The feed state `Store.defer_poll(name, when, reason)` leaves behind."""
    return replace(state, next_poll=_second(when), next_reason=reason)


def state_after_poll(state: FeedState | None, rec: PollRecord) -> FeedState:
    """The feed state `Store.record_poll(rec)` leaves behind, computed without reading the row
    back (as `feed_state(count_entries=False)` reads it: entry_count 0), so that the poller can
    keep each feed's state in memory. Pure; must change with record_poll. Built directly, not
    with dataclasses.replace: it runs once per poll, and replace was a tenth of a 304's cost."""
    now = _second(rec.now)
    base = state if state is not None else FeedState(rec.feed, rec.url)
    failed = rec.status in ("error", "gone")
    ok = rec.status == "ok"
    return FeedState(
        name=base.name,
        url=rec.url,
        title=rec.title if rec.title is not None else base.title,
        link=rec.link if rec.link is not None else base.link,
        validators=rec.validators if rec.validators is not None else base.validators,
        body_hash=rec.body_hash if rec.body_hash is not None else base.body_hash,
        last_poll=now,
        last_ok=base.last_ok if failed else now,
        last_status=rec.status,
        http_status=rec.http_status if rec.http_status is not None else base.http_status,
        error_count=base.error_count + 1 if failed else 0,
        last_error=rec.error if failed else None,
        next_poll=_second(rec.next_poll) if rec.next_poll is not None else None,
        warning=rec.warning if ok else base.warning,
        entry_count=0,
        language=rec.language if ok else base.language,
        key_mode=rec.key_mode if rec.key_mode is not None else base.key_mode,
        next_reason=rec.next_reason,
        backoff_level=rec.backoff_level,
        failing_since=(base.failing_since or now) if failed else None,
        redirect_url=rec.redirect_url,
        redirect_count=rec.redirect_count,
        gone=rec.gone,
        hints=rec.hints if rec.hints is not None else base.hints,
    )


def _second(when: datetime) -> datetime:
    """`when` as a stored timestamp reads back: UTC, whole seconds (what _dt(_ts(when)) gives)."""
    return when.astimezone(UTC).replace(microsecond=0)


def _entry_row(entry: Entry) -> dict[str, Any]:
    return {
        "feed": entry.feed,
        "key": entry.key,
        "key_kind": entry.key_kind,
        "uid": entry.uid,
        "guid": entry.guid,
        "link": entry.link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "author": entry.author,
        "categories": json.dumps(list(entry.categories), ensure_ascii=False),
        "published": _ts(entry.published),
        "updated": _ts(entry.updated),
        "date_known": int(entry.date_known),
        "content_hash": entry.content_hash,
        "stable_hash": entry.stable_hash or None,
        "media": media_json(entry.media),
        "authors": authors_json(entry.authors),
    }


_INSERT_ENTRY = (
    "INSERT INTO entries (feed, key, key_kind, uid, guid, link, title, summary, content, author, "
    "categories, published, updated, date_known, content_hash, stable_hash, media, authors, "
    "first_seen, last_changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _entry_from_row(row: sqlite3.Row | dict[str, Any]) -> Entry:
    # Text is cleaned on the way in; cleaning again on the way out means that a row written by
    # an older version with a character XML forbids cannot break a whole output.
    published = _dt(row["published"])
    updated = _dt(row["updated"])
    assert published is not None and updated is not None
    return Entry(
        feed=row["feed"],
        key=row["key"],
        key_kind=row["key_kind"],
        uid=row["uid"],
        guid=row["guid"],
        link=row["link"],
        title=clean_text(row["title"]),
        summary=clean_text(row["summary"]),
        content=clean_text(row["content"]),
        author=clean_text(row["author"]),
        categories=tuple(clean_text(c) for c in json.loads(row["categories"])),
        published=published,
        updated=updated,
        date_known=bool(row["date_known"]),
        content_hash=row["content_hash"],
        stable_hash=row["stable_hash"] or "",
        media=media_from_json(row["media"]),
        authors=authors_from_json(row["authors"]),
    )


class Store:
    """One connection to the database file, migrated on open. Not thread-safe by design."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread is off only so that close() can run anywhere; StoreThreads
            # still keeps every connection on the one thread that uses it.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
            # WAL with synchronous=NORMAL never corrupts the file and never loses a commit to
            # a killed process; only a power cut may lose the last transactions.
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    # --- feeds -------------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """Make sure every configured (name, url) has a row; keeps all state of known feeds.

        A changed URL is a different resource: its validators and body hash are dropped, or the
        first poll of the new URL would send the old ETag and compare against the old body; so
        are a redirect, "gone", the feed's hints and its backoff, which concerned the old URL.
        """
        with self._atomic():
            for name, url in feeds:
                self.db.execute(
                    "INSERT INTO feeds (name, url) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET url = excluded.url, "
                    "etag = CASE WHEN url = excluded.url THEN etag END, "
                    "last_modified = CASE WHEN url = excluded.url THEN last_modified END, "
                    "body_hash = CASE WHEN url = excluded.url THEN body_hash END, "
                    "redirect_url = CASE WHEN url = excluded.url THEN redirect_url END, "
                    "redirect_count = CASE WHEN url = excluded.url THEN redirect_count ELSE 0 END, "
                    "gone = CASE WHEN url = excluded.url THEN gone ELSE 0 END, "
                    "hints = CASE WHEN url = excluded.url THEN hints END, "
                    "backoff_level = CASE WHEN url = excluded.url THEN backoff_level ELSE 0 END",
                    [name, url],
                )

    def feed_state(self, name: str, count_entries: bool = True) -> FeedState | None:
        """A feed's stored state. A poll passes count_entries=False: counting a feed's entries
        is the dearest part of the query, and polling does not need it (entry_count is 0)."""
        rows = self._feed_rows("WHERE f.name = ?", [name], count_entries)
        return rows[0] if rows else None

    def feed_states(self, names: Sequence[str] | None = None) -> list[FeedState]:
        if names is None:
            return self._feed_rows("", [])
        marks = ",".join("?" for _ in names)
        return self._feed_rows(f"WHERE f.name IN ({marks})", list(names))

    def _feed_rows(
        self, where: str, params: list[Any], count_entries: bool = True
    ) -> list[FeedState]:
        count = "(SELECT count(*) FROM entries e WHERE e.feed = f.name)" if count_entries else "0"
        sql = f"SELECT f.*, {count} AS entry_count FROM feeds f {where} ORDER BY f.name"
        return [
            FeedState(
                name=r["name"],
                url=r["url"],
                title=r["title"],
                link=r["link"],
                validators=Validators(r["etag"], r["last_modified"]),
                body_hash=r["body_hash"],
                last_poll=_dt(r["last_poll"]),
                last_ok=_dt(r["last_ok"]),
                last_status=r["last_status"],
                http_status=r["http_status"],
                error_count=r["error_count"],
                last_error=r["last_error"],
                next_poll=_dt(r["next_poll"]),
                warning=r["warning"],
                entry_count=r["entry_count"],
                language=r["language"],
                key_mode=r["key_mode"],
                next_reason=r["next_reason"],
                backoff_level=r["backoff_level"],
                failing_since=_dt(r["failing_since"]),
                redirect_url=r["redirect_url"],
                redirect_count=r["redirect_count"],
                gone=bool(r["gone"]),
                hints=_hints_from(r["hints"]),
            )
            for r in self.db.execute(sql, params).fetchall()
        ]

    def known_hashes(self, feed: str) -> dict[str, str]:
        """Key → content hash of every stored entry of a feed: decides new / updated / unchanged.

        Pruned entries are included (from their tombstones), so an entry pruned while the feed
        still carries it is never taken for a new one.
        """
        rows = self.db.execute(
            "SELECT key, content_hash FROM pruned WHERE feed = ? "
            "UNION ALL SELECT key, content_hash FROM entries WHERE feed = ?",
            [feed, feed],
        )
        return {key: h for key, h in rows.fetchall()}

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

    def defer_poll(self, feed: str, when: datetime, reason: str) -> None:
        """Move a feed's next poll without polling it (its host asked us to wait)."""
        with self._atomic():
            self.db.execute(
                "UPDATE feeds SET next_poll = ?, next_reason = ? WHERE name = ?",
                [_ts(when), reason, feed],
            )

    # --- one poll ----------------------------------------------------------------------------

    def record_poll(self, rec: PollRecord) -> int:
        """Write one poll: its new and updated entries and the feed's state, all or nothing.

        Returns the store generation after the write (it grows whenever entries changed, which is
        what tells outputs to re-render).
        """
        now = _ts(rec.now)
        state: dict[str, Any] = {
            "url": rec.url,
            "last_poll": now,
            "last_status": rec.status,
            "next_poll": _ts(rec.next_poll),
            "next_reason": rec.next_reason,
            "backoff_level": rec.backoff_level,
            "redirect_url": rec.redirect_url,
            "redirect_count": rec.redirect_count,
            "gone": int(rec.gone),
        }
        if rec.http_status is not None:
            state["http_status"] = rec.http_status
        if rec.status in ("error", "gone"):
            state["last_error"] = rec.error
        else:
            state.update(last_ok=now, error_count=0, last_error=None, failing_since=None)
        if rec.hints is not None:
            state["hints"] = _hints_json(rec.hints)
        if rec.validators is not None:
            state.update(etag=rec.validators.etag, last_modified=rec.validators.last_modified)
        if rec.body_hash is not None:
            state["body_hash"] = rec.body_hash
        if rec.title is not None:
            state["title"] = rec.title
        if rec.link is not None:
            state["link"] = rec.link
        if rec.status == "ok":
            state["warning"] = rec.warning
            state["language"] = rec.language
        if rec.key_mode is not None:
            state["key_mode"] = rec.key_mode
        with self._atomic():
            sets = ", ".join(f"{k} = ?" for k in state)
            extra = ""
            if rec.status in ("error", "gone"):
                # failing_since is the first error of the current run; it survives later errors.
                extra = ", failing_since = coalesce(failing_since, ?)"
                extra += ", error_count = error_count + 1"
            params = [now] if extra else []
            cur = self.db.execute(
                f"UPDATE feeds SET {sets}{extra} WHERE name = ?",
                [*state.values(), *params, rec.feed],
            )
            if cur.rowcount == 0:
                self.db.execute("INSERT INTO feeds (name, url) VALUES (?, ?)", [rec.feed, rec.url])
                self.db.execute(
                    f"UPDATE feeds SET {sets}{extra} WHERE name = ?",
                    [*state.values(), *params, rec.feed],
                )
            if rec.new:
                rows = [[*_entry_row(entry).values(), now, now] for entry in rec.new]
                self.db.conn.executemany(_INSERT_ENTRY, rows)
            for entry in rec.updated:
                old = self.db.execute(
                    "SELECT first_seen FROM entries WHERE feed = ? AND key = ?",
                    [entry.feed, entry.key],
                ).fetchone()
                first_seen = _dt(old["first_seen"]) if old else rec.now
                assert first_seen is not None
                row = _entry_row(with_first_seen_date(entry, first_seen))
                row["last_changed"] = now
                # first_seen and uid are left out: an update never changes an entry's identity.
                row.pop("uid")
                keys = ("feed", "key")
                sets = ", ".join(f"{k} = ?" for k in row if k not in keys)
                cur = self.db.execute(
                    f"UPDATE entries SET {sets} WHERE feed = ? AND key = ?",
                    [v for k, v in row.items() if k not in keys] + [entry.feed, entry.key],
                )
                if cur.rowcount == 0:
                    # A pruned entry edited upstream: remember its new hash, store nothing.
                    self.db.execute(
                        "UPDATE pruned SET content_hash = ? WHERE feed = ? AND key = ?",
                        [entry.content_hash, entry.feed, entry.key],
                    )
            if rec.new or rec.updated:
                self.bump_generation()
            return self._generation()

    def generation(self) -> int:
        return self._generation()

    def bump_generation(self) -> int:
        """Say that what outputs are built from has changed: renders and caches key on the
        generation. Call it inside the transaction that made the change."""
        self.db.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )
        return self._generation()

    def _generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

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
            raise StoreError(f"search failed: {e}") from e
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
        try:
            cur = self.db.execute(sql, [query, limit])
            return list(self._stored(cur, 200))
        except sqlite3.OperationalError as e:
            raise StoreError(f"search failed: {e}") from e

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
                first_seen = _dt(r["first_seen"])
                last_changed = _dt(r["last_changed"])
                assert first_seen is not None and last_changed is not None
                yield StoredEntry(
                    entry=_entry_from_row(r),
                    first_seen=first_seen,
                    last_changed=last_changed,
                    feed_title=r["feed_title"] or r["feed"],
                    feed_url=r["feed_url"],
                    feed_link=r["feed_link"],
                )

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
        `known_hashes` reads, so a feed that still carries it does not bring it back as new.
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
        try:
            # FTS5 keeps deleted rows as delete markers until its segments are merged.
            self.db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')")
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            raise StoreError(f"vacuum failed: {e}") from e

    def check_writable(self) -> None:
        """Raise StoreError unless a write transaction can be taken right now."""
        if self.db.conn.in_transaction:
            return  # inside a batch of writes: this connection holds the write lock already
        # Wait a little for another process's write (a CLI run, a backup), not the full 30 s.
        self.db.execute("PRAGMA busy_timeout = 5000")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise StoreError(f"database is not writable: {e}") from e
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")

    def _atomic(self) -> Any:
        return _Atomic(self)

    def atomic(self) -> Any:
        """One transaction (a savepoint inside a batch), for modules with SQL of their own."""
        return _Atomic(self)


class _Atomic:
    """BEGIN IMMEDIATE … COMMIT, turning sqlite3 errors into StoreError (and rolling back).

    Inside a transaction already open (a batch of writes, see `StoreThreads.write_batched`) it
    is a savepoint instead: the unit of work still commits or vanishes whole, without undoing
    the others of its batch.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.savepoint: str | None = None

    def __enter__(self) -> None:
        conn = self.store.db.conn
        try:
            if conn.in_transaction:
                self.savepoint = "unit"
                conn.execute("SAVEPOINT unit")
            else:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot start a transaction: {e}") from e

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        conn = self.store.db.conn
        if self.savepoint is not None:
            if exc_type is not None and conn.in_transaction:
                conn.execute("ROLLBACK TO unit")
            if conn.in_transaction:
                conn.execute("RELEASE unit")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"write failed: {exc}") from exc
            return
        if exc_type is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"write failed: {exc}") from exc
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"commit failed: {e}") from e


class _Batcher:
    """Runs the calls queued during one turn of the event loop on a store thread together: one
    thread hop and one wake-up of the loop per batch instead of one per call.

    With `transaction`, a batch of several calls runs in one transaction, each call in a
    savepoint of its own (see `_Atomic`); results are handed back only after the commit, so a
    caller never sees as committed what a failed commit lost.
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        store: Callable[[], Store],
        transaction: bool,
        linger: float = 0.0,
        max_batch: int = 64,
    ):
        self._executor = executor
        self._store = store
        self._transaction = transaction
        self._linger = linger
        self._max_batch = max_batch
        self._pending: list[tuple[Callable[[Store], Any], asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        # Commits by other connections (another process), seen by the writer between batches.
        self.external_changes = 0
        self._data_version: int | None = None

    async def call(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future))
        if len(self._pending) >= self._max_batch:
            if self._timer is not None:
                self._timer.cancel()
            self._flush(loop)
        elif self._timer is None:
            # Lingering a few milliseconds gathers the small writes of many polls into one
            # batch: each hop to the store thread costs the event loop a GIL hand-over.
            if self._linger > 0:
                self._timer = loop.call_later(self._linger, self._flush, loop)
            else:
                self._timer = loop.call_soon(self._flush, loop)
        return await future

    def flush_now(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the calls waiting for company at once (the store is about to close)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._pending:
            self._flush(loop)
        self._timer = None

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending, self._timer = self._pending, [], None
        try:
            done = self._executor.submit(self._run, [fn for fn, _ in batch])
        except RuntimeError:  # the executor is shut down: the store was closed
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreError("the store is closed"))
            return
        # A partial, not a closure over `done`: the future keeps its callbacks, and a callback
        # that refers back to the future is a cycle that kept every batch (each poll's entries
        # with their full text) alive until the cyclic collector ran: 240 MB of the poller's
        # RSS in the cold bench round.
        done.add_done_callback(functools.partial(self._hand_back, loop, batch))

    def _hand_back(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Callable[[Store], Any], asyncio.Future[Any]]],
        done: concurrent.futures.Future[list[tuple[bool, Any]]],
    ) -> None:
        loop.call_soon_threadsafe(self._deliver, batch, done)

    def _run(self, fns: list[Callable[[Store], Any]]) -> list[tuple[bool, Any]]:
        store = self._store()
        conn = store.db.conn
        together = self._transaction and len(fns) > 1
        if self._transaction:
            # data_version moves only when another connection commits: then what the poller
            # keeps in memory of the feeds (see poll.StateCache) may be stale.
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if self._data_version is not None and version != self._data_version:
                self.external_changes += 1
            self._data_version = version
        if together:
            conn.execute("BEGIN IMMEDIATE")
        results: list[tuple[bool, Any]] = []
        for fn in fns:
            try:
                results.append((True, fn(store)))
            except Exception as e:  # handed to that caller alone
                results.append((False, e))
        if together:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failed = StoreError(f"commit failed: {e}")
                return [(False, failed) for _ in fns]
        return results

    @staticmethod
    def _deliver(
        batch: list[tuple[Callable[[Store], Any], asyncio.Future[Any]]],
        done: concurrent.futures.Future[list[tuple[bool, Any]]],
    ) -> None:
        error = done.exception()
        outcomes = [(False, error)] * len(batch) if error is not None else done.result()
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class StoreThreads:
    """The daemon's access to the database: one writer thread, a small pool of reader threads.

    Every call runs `fn(store)` on the right thread with that thread's own connection, so no
    connection ever crosses threads and the event loop never waits on SQLite.
    """

    def __init__(self, path: str | Path, readers: int = 2) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._stores: list[Store] = []
        self._lock = threading.Lock()
        # Open (and migrate) once up front so a bad path fails at start, not at the first poll.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-reader")
        self._writer.submit(self._store).result()
        self._write_batches = _Batcher(
            self._writer, self._store, transaction=True, linger=WRITE_LINGER
        )
        self._read_batches = _Batcher(self._readers, self._store, transaction=False)

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.path)
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    async def write(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(self._store()))

    async def read(self, fn: Callable[[Store], T], threads: Executor | None = None) -> T:
        """Run `fn` on a reader thread, or on one of `threads` (the renders' own, so a slow
        render never holds up the daemon's other reads); each thread has its connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(threads or self._readers, lambda: fn(self._store()))

    @property
    def external_changes(self) -> int:
        """How many times the writer saw another connection's commit (a CLI run, say)."""
        return self._write_batches.external_changes

    async def write_batched(self, fn: Callable[[Store], T]) -> T:
        """Like `write`, for the many small writes of polls: those queued together commit in
        one transaction, each still all or nothing (its own savepoint)."""
        return await self._write_batches.call(fn)

    async def read_batched(self, fn: Callable[[Store], T]) -> T:
        """Like `read`, with the reads queued together run in one hop to a reader thread."""
        return await self._read_batches.call(fn)

    async def aclose(self) -> None:
        """Send the batched calls still lingering, then close as `close` does (in a thread):
        a write queued before this call is committed, one queued after fails with StoreError."""
        loop = asyncio.get_running_loop()
        self._write_batches.flush_now(loop)
        self._read_batches.flush_now(loop)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Wait for queued writes to commit, then close every connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()


# Registered last, after every earlier migration, wherever those are defined above.
@migrations()
def m004_retention(db: sqlite_utils.Database) -> None:
    """Tombstones of pruned entries: enough to recognise them if their feed still carries them."""
    db.execute(
        """
        CREATE TABLE pruned (
            feed TEXT NOT NULL,
            key TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            pruned_at TEXT NOT NULL,
            PRIMARY KEY (feed, key)
        )
        """
    )


@migrations()
def m005_fts_merging(db: sqlite_utils.Database) -> None:
    """Merge the full-text index's segments in larger steps: with FTS5's defaults (automerge 4,
    crisismerge 16) indexing was 326 us an entry, with 16 and 64 it is 270 us, and queries over
    40,000 entries take the same time (measured on the bench farm's entries)."""
    db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('automerge', 16)")
    db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('crisismerge', 64)")


@migrations()
def m006_sanitize_once(db: sqlite_utils.Database) -> None:
    """Renders no longer sanitise stored content, so the rows stored so far are sanitised once
    more under the current policy, in the background (see resanitize.py): an empty policy
    matches none."""
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sanitize_policy', '')")


@migrations()
def m007_media(db: sqlite_utils.Database) -> None:
    """An entry's files, picture and iTunes tags, and its authors one by one: JSON (see
    media.py), NULL for the many entries without them."""
    db.execute("ALTER TABLE entries ADD COLUMN media TEXT")
    db.execute("ALTER TABLE entries ADD COLUMN authors TEXT")


@migrations()
def m010_no_userinfo(db: sqlite_utils.Database) -> None:
    """Feed URLs lose their user:password@ (the config now turns it into credentials that are
    never stored): blank it in the URLs and errors stored by older versions."""
    rows = db.execute(
        "SELECT name, url, redirect_url, last_error FROM feeds "
        "WHERE url LIKE '%@%' OR redirect_url LIKE '%@%' OR last_error LIKE '%@%'"
    ).fetchall()
    for name, url, redirect_url, last_error in rows:
        db.execute(
            "UPDATE feeds SET url = ?, redirect_url = ?, last_error = ? WHERE name = ?",
            (
                strip_userinfo(url),
                strip_userinfo(redirect_url) if redirect_url else redirect_url,
                redact(last_error) if last_error else last_error,
                name,
            ),
        )


@migrations()
def m008_articles(db: sqlite_utils.Database) -> None:
    """Full content from article pages: per-entry extraction state and the page cache."""
    from ..store.articles import create_tables  # it builds on this module

    create_tables(db)


@migrations()
def m011_text_only_hashes(db: sqlite_utils.Database) -> None:
    """Stable hashes cover an entry's files since m007; mark those computed without them
    (identity.TEXT_ONLY), so a podcast's stored episodes get their files on the next poll
    without all coming back as edited (or, with update_policy "republish", redated to now)."""
    db.execute(
        "UPDATE entries SET stable_hash = 't:' || stable_hash "
        "WHERE media IS NULL AND stable_hash IS NOT NULL"
    )
