"""The store on PostgreSQL (psycopg 3): the same operations as the SQLite store, over one
connection from a `postgresql://` URL. I/O.

Like the SQLite Store, a PostgresStore wraps one connection and stays on the thread that uses
it. The password may be in the URL or come from libpq itself (PGPASSWORD, a pass file, a
service file): the URL is handed to libpq as it is, and shown only without its userinfo.
Every database error comes out as StoreError, its cause chained and its text redacted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg.rows import dict_row

from ..config.secret import redact, remember, split_userinfo, strip_userinfo
from ..errors import StoreError
from ..ingest.identity import Known, uid_for, with_first_seen_date
from ..models import FeedState, PollRecord, StoredEntry
from .postgres_schema import migrate
from .postgres_search import QueryError, to_tsquery
from .rows import _entry_row, _feed_state_from_row, _hints_json, _second, _stored_from_row
from .sqlite import state_after_poll

P = ParamSpec("P")
T = TypeVar("T")
Row = dict[str, Any]

_SELECT_STORED = (
    "SELECT e.*, f.title AS feed_title, f.url AS feed_url, f.link AS feed_link "
    "FROM entries e JOIN feeds f ON f.name = e.feed "
)
# Newest first, as on SQLite; uid compared byte by byte whatever the database's collation.
_NEWEST_FIRST = 'ORDER BY e.published DESC, e.first_seen DESC, e.uid COLLATE "C"'
# The rows after a page's last one, in that order (keyset paging: no OFFSET to rescan).
_AFTER = (
    " AND (e.published < %(p)s OR (e.published = %(p)s AND (e.first_seen < %(f)s OR "
    '(e.first_seen = %(f)s AND e.uid COLLATE "C" > %(u)s))))'
)
# Written whole from a FeedState (entry_count is not a column).
_STATE_COLUMNS = (
    "url",
    "title",
    "link",
    "etag",
    "last_modified",
    "body_hash",
    "last_poll",
    "last_ok",
    "last_status",
    "http_status",
    "error_count",
    "last_error",
    "next_poll",
    "warning",
    "language",
    "key_mode",
    "next_reason",
    "backoff_level",
    "failing_since",
    "redirect_url",
    "redirect_count",
    "gone",
    "hints",
)


def display_url(url: str) -> str:
    """The URL as it may be shown: without user and password."""
    return strip_userinfo(url)


def _failing(action: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Turn a database error escaping the method into StoreError("{action} failed: …")."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except psycopg.Error as e:
                raise StoreError(f"{action} failed: {redact(str(e).strip())}") from e

        return method

    return wrap


def _state_values(state: FeedState) -> list[Any]:
    # The stored form of each _STATE_COLUMNS field; times in whole seconds, as SQLite keeps them.
    def t(when: datetime | None) -> datetime | None:
        return _second(when) if when is not None else None

    return [
        state.url,
        state.title,
        state.link,
        state.validators.etag,
        state.validators.last_modified,
        state.body_hash,
        t(state.last_poll),
        t(state.last_ok),
        state.last_status,
        state.http_status,
        state.error_count,
        state.last_error,
        t(state.next_poll),
        state.warning,
        state.language,
        state.key_mode,
        state.next_reason,
        state.backoff_level,
        t(state.failing_since),
        state.redirect_url,
        state.redirect_count,
        state.gone,
        _hints_json(state.hints),
    ]


def _entry_values(row: Row) -> Row:
    """An entries row of rows._entry_row for PostgreSQL: flags as booleans."""
    row["date_known"] = bool(row["date_known"])
    return row


class PostgresStore:
    """One connection to a PostgreSQL database, migrated on open. Not thread-safe by design."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = display_url(url)  # what messages and /status name it by
        password = split_userinfo(url)[2]
        if password:
            remember(password)  # blanked in every later log line and redacted message
        try:
            self.conn: psycopg.Connection[Row] = psycopg.connect(
                url, autocommit=True, row_factory=dict_row
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot open database {self.path}: {redact(str(e).strip())}") from e
        try:
            # Times come back as UTC datetimes whatever the server's or the role's zone.
            self.conn.execute("SET TIME ZONE 'UTC'")
            migrate(self.conn)
        except psycopg.Error as e:
            self.conn.close()
            raise StoreError(
                f"cannot migrate database {self.path}: {redact(str(e).strip())}"
            ) from e

    def close(self) -> None:
        self.conn.close()

    def _all(self, sql: str, params: Sequence[Any] | Row = ()) -> list[Row]:
        return self.conn.execute(sql.encode(), params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | Row = ()) -> Row | None:
        return self.conn.execute(sql.encode(), params).fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                yield
        except psycopg.Error as e:
            raise StoreError(f"write failed: {redact(str(e).strip())}") from e

    def atomic(self) -> AbstractContextManager[None]:
        """One transaction (a savepoint inside an open one), for modules with SQL of their
        own: it commits or vanishes whole."""
        return self._transaction()

    _atomic = atomic

    # --- feeds -------------------------------------------------------------------------------

    @_failing("syncing feeds")
    def sync_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """Make sure every configured (name, url) has a row; keeps all state of known feeds.
        A changed URL drops what concerned the old one (as sqlite.Store.sync_feeds says)."""
        same = "feeds.url = excluded.url"
        with self._transaction():
            self.conn.cursor().executemany(
                "INSERT INTO feeds (name, url) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET url = excluded.url, "
                f"etag = CASE WHEN {same} THEN feeds.etag END, "
                f"last_modified = CASE WHEN {same} THEN feeds.last_modified END, "
                f"body_hash = CASE WHEN {same} THEN feeds.body_hash END, "
                f"redirect_url = CASE WHEN {same} THEN feeds.redirect_url END, "
                f"redirect_count = CASE WHEN {same} THEN feeds.redirect_count ELSE 0 END, "
                f"gone = CASE WHEN {same} THEN feeds.gone ELSE false END, "
                f"hints = CASE WHEN {same} THEN feeds.hints END, "
                f"backoff_level = CASE WHEN {same} THEN feeds.backoff_level ELSE 0 END",
                list(feeds),
            )

    @_failing("reading a feed's state")
    def feed_state(self, name: str, count_entries: bool = True) -> FeedState | None:
        """A feed's stored state (entry_count 0 unless counted, as on SQLite)."""
        rows = self._feed_rows("WHERE f.name = %s", [name], count_entries)
        return rows[0] if rows else None

    @_failing("reading feed states")
    def feed_states(self, names: Sequence[str] | None = None) -> list[FeedState]:
        if names is None:
            return self._feed_rows("", [])
        return self._feed_rows("WHERE f.name = ANY(%s)", [list(names)])

    def _feed_rows(
        self, where: str, params: list[Any], count_entries: bool = True, lock: bool = False
    ) -> list[FeedState]:
        count = "(SELECT count(*) FROM entries e WHERE e.feed = f.name)" if count_entries else "0"
        sql = f'SELECT f.*, {count} AS entry_count FROM feeds f {where} ORDER BY f.name COLLATE "C"'
        if lock:
            sql += " FOR UPDATE OF f"
        return [_feed_state_from_row(r) for r in self._all(sql, params)]  # type: ignore[arg-type]

    @_failing("reading known hashes")
    def known_hashes(self, feed: str) -> dict[str, str]:
        """Key → content hash of every stored or pruned entry of a feed."""
        rows = self._all(
            "SELECT key, content_hash FROM pruned WHERE feed = %s "
            "UNION ALL SELECT key, content_hash FROM entries WHERE feed = %s",
            [feed, feed],
        )
        return {r["key"]: r["content_hash"] for r in rows}

    @_failing("reading known entries")
    def known_entries(self, feed: str) -> dict[str, Known]:
        """Key → what is stored of every entry of a feed; pruned ones from their tombstones."""
        known = {
            r["key"]: Known(uid_for(feed, r["key"]), r["content_hash"], None, None)
            for r in self._all("SELECT key, content_hash FROM pruned WHERE feed = %s", [feed])
        }
        known.update(
            (r["key"], Known(r["uid"], r["content_hash"], r["stable_hash"], r["link"]))
            for r in self._all(
                "SELECT key, uid, content_hash, stable_hash, link FROM entries WHERE feed = %s",
                [feed],
            )
        )
        return known

    @_failing("reading publication dates")
    def recent_published(self, feed: str, limit: int = 20) -> list[datetime]:
        """Publication dates of a feed's newest entries (known dates only), newest first."""
        rows = self._all(
            "SELECT published FROM entries WHERE feed = %s AND date_known "
            "ORDER BY published DESC LIMIT %s",
            [feed, limit],
        )
        return [r["published"] for r in rows]

    @_failing("deferring a poll")
    def defer_poll(self, feed: str, when: datetime, reason: str) -> None:
        """Move a feed's next poll without polling it (its host asked us to wait)."""
        self.conn.execute(
            "UPDATE feeds SET next_poll = %s, next_reason = %s WHERE name = %s",
            [_second(when), reason, feed],
        )

    @_failing("reading feed languages")
    def feed_languages(self, names: Sequence[str]) -> dict[str, str | None]:
        """The language each feed declared on its last successful poll."""
        rows = self._all("SELECT name, language FROM feeds WHERE name = ANY(%s)", [list(names)])
        return {r["name"]: r["language"] for r in rows}

    # --- one poll ----------------------------------------------------------------------------

    @_failing("recording a poll")
    def record_poll(self, rec: PollRecord) -> int:
        """Write one poll: its new and updated entries and the feed's state, all or nothing.
        Returns the store generation after the write (it grows when entries changed)."""
        with self._transaction():
            # The row is locked until the commit: two writers of one feed take turns, and the
            # state written is the pure step from the state just read.
            states = self._feed_rows("WHERE f.name = %s", [rec.feed], False, lock=True)
            if not states:
                # No row to lock yet: make one (or meet the one another writer just made),
                # or two first polls would both start from nothing and one be lost.
                self.conn.execute(
                    "INSERT INTO feeds (name, url) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [rec.feed, rec.url],
                )
                states = self._feed_rows("WHERE f.name = %s", [rec.feed], False, lock=True)
            state = state_after_poll(states[0], rec)
            self._write_state(state)
            now = _second(rec.now)
            cur = self.conn.cursor()
            if rec.new:
                rows = [_entry_values(_entry_row(e)) for e in rec.new]
                columns = [*rows[0], "first_seen", "last_changed"]
                cur.executemany(
                    f"INSERT INTO entries ({', '.join(columns)}) "
                    f"VALUES ({', '.join(['%s'] * len(columns))})".encode(),
                    [[*row.values(), now, now] for row in rows],
                )
            for entry in rec.updated:
                self._update_entry(entry, now)
            if rec.new or rec.updated:
                return self.bump_generation()
            return self._generation()

    def _write_state(self, state: FeedState) -> None:
        sets = ", ".join(f"{c} = excluded.{c}" for c in _STATE_COLUMNS)
        self.conn.execute(
            f"INSERT INTO feeds (name, {', '.join(_STATE_COLUMNS)}) "
            f"VALUES (%s{', %s' * len(_STATE_COLUMNS)}) "
            f"ON CONFLICT (name) DO UPDATE SET {sets}".encode(),
            [state.name, *_state_values(state)],
        )

    def _update_entry(self, entry: Any, now: datetime) -> None:
        old = self._one(
            "SELECT first_seen FROM entries WHERE feed = %s AND key = %s", [entry.feed, entry.key]
        )
        first_seen = old["first_seen"] if old else now
        row = _entry_values(_entry_row(with_first_seen_date(entry, first_seen)))
        row["last_changed"] = now
        # first_seen and uid are left out: an update never changes an entry's identity.
        row.pop("uid")
        keys = ("feed", "key")
        sets = ", ".join(f"{k} = %s" for k in row if k not in keys)
        cur = self.conn.execute(
            f"UPDATE entries SET {sets} WHERE feed = %s AND key = %s".encode(),
            [v for k, v in row.items() if k not in keys] + [entry.feed, entry.key],
        )
        if cur.rowcount == 0:
            # A pruned entry edited upstream: remember its new hash, store nothing.
            self.conn.execute(
                "UPDATE pruned SET content_hash = %s WHERE feed = %s AND key = %s",
                [entry.content_hash, entry.feed, entry.key],
            )

    @_failing("reading the generation")
    def generation(self) -> int:
        return self._generation()

    @_failing("moving the generation on")
    def bump_generation(self) -> int:
        """Say that what outputs are built from has changed; call it inside the transaction
        that made the change. The row lock orders concurrent writers' generations."""
        row = self._one(
            "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'generation' "
            "RETURNING value"
        )
        assert row is not None
        return int(row["value"])

    def _generation(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key = 'generation'")
        assert row is not None
        return int(row["value"])

    # --- reading entries ---------------------------------------------------------------------

    def iter_entries(
        self, feeds: Sequence[str], batch: int = 200, query: str | None = None
    ) -> Iterator[StoredEntry]:
        """Entries of the given feeds, newest first (by published, then first seen), only
        those matching the FTS5 `query` when one is given (see postgres_search).

        Read a page of `batch` rows at a time, each page after the last row of the one
        before, so a reader that stops early reads only what it takes. Each page is its own
        snapshot: an entry committed meanwhile may appear in a later page."""
        if not feeds:
            return
        params: Row = {"feeds": list(feeds), "n": batch}
        where = "WHERE e.feed = ANY(%(feeds)s)"
        if query is not None:
            params["q"] = self._tsquery(query)
            where += " AND e.search @@ to_tsquery('aggregator', %(q)s)"
        after = ""
        while True:
            try:
                rows = self._all(
                    f"{_SELECT_STORED}{where}{after} {_NEWEST_FIRST} LIMIT %(n)s", params
                )
            except psycopg.Error as e:
                raise StoreError(f"reading entries failed: {redact(str(e).strip())}") from e
            for r in rows:
                yield _stored_from_row(r)  # type: ignore[arg-type]
            if len(rows) < batch:
                return
            last = rows[-1]
            params.update(p=last["published"], f=last["first_seen"], u=last["uid"])
            after = _AFTER

    @staticmethod
    def _tsquery(query: str) -> str:
        try:
            return to_tsquery(query)
        except QueryError as e:
            raise StoreError(f"search failed: {e}") from e

    @_failing("search")
    def search(self, query: str, limit: int = 20) -> list[StoredEntry]:
        """Entries matching an FTS5 query, best match first (ts_rank: title, then summary,
        then content weigh most), then newest."""
        rows = self._all(
            f"{_SELECT_STORED}, to_tsquery('aggregator', %(q)s) q WHERE e.search @@ q "
            'ORDER BY ts_rank(e.search, q) DESC, e.published DESC, e.uid COLLATE "C" '
            "LIMIT %(n)s",
            {"q": self._tsquery(query), "n": limit},
        )
        return [_stored_from_row(r) for r in rows]  # type: ignore[arg-type]

    @_failing("counting entries")
    def count_entries(self, feed: str | None = None) -> int:
        if feed is None:
            row = self._one("SELECT count(*) AS n FROM entries")
        else:
            row = self._one("SELECT count(*) AS n FROM entries WHERE feed = %s", [feed])
        assert row is not None
        return int(row["n"])

    # --- retention ---------------------------------------------------------------------------

    @_failing("pruning")
    def prune(self, now: datetime, retention_days: int, max_per_feed: int) -> int:
        """Delete entries first stored more than `retention_days` ago and, per feed, all but
        the `max_per_feed` newest (0 disables either rule), each leaving a tombstone in
        `pruned`. Returns how many entries were deleted."""
        stamp = _second(now)
        with self._transaction():
            victims = self._all(
                "SELECT feed, key, content_hash FROM ("
                "SELECT feed, key, content_hash, first_seen, ROW_NUMBER() OVER ("
                'PARTITION BY feed ORDER BY published DESC, first_seen DESC, uid COLLATE "C"'
                ") AS rank FROM entries) ranked "
                "WHERE (%(days)s > 0 AND first_seen < %(cutoff)s) "
                "OR (%(max)s > 0 AND rank > %(max)s)",
                {
                    "days": retention_days,
                    "cutoff": now - timedelta(days=retention_days),
                    "max": max_per_feed,
                },
            )
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_prune', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [stamp.isoformat()],
            )
            if not victims:
                return 0
            cur = self.conn.cursor()
            cur.executemany(
                "INSERT INTO pruned (feed, key, content_hash, pruned_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (feed, key) DO UPDATE SET content_hash = excluded.content_hash, "
                "pruned_at = excluded.pruned_at",
                [(v["feed"], v["key"], v["content_hash"], stamp) for v in victims],
            )
            cur.executemany(
                "DELETE FROM entries WHERE feed = %s AND key = %s",
                [(v["feed"], v["key"]) for v in victims],
            )
            self.bump_generation()
        return len(victims)

    @_failing("reading the last prune")
    def last_prune(self) -> datetime | None:
        row = self._one("SELECT value FROM meta WHERE key = 'last_prune'")
        return datetime.fromisoformat(row["value"]) if row else None

    @_failing("vacuum")
    def vacuum(self) -> None:
        """Give deleted rows' space back and refresh the planner's statistics. VACUUM runs
        outside a transaction (the connection is in autocommit)."""
        for table in ("entries", "pruned", "feeds", "entry_articles", "articles"):
            self.conn.execute(f"VACUUM (ANALYZE) {table}".encode())

    def check_writable(self) -> None:
        """Raise StoreError unless a write can be made right now (waiting at most 5 s for a
        lock another session holds, as SQLite waits for its write lock)."""
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return  # inside a transaction already: it writes
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute("SET LOCAL lock_timeout = '5s'")
                self.conn.execute("UPDATE meta SET value = value WHERE key = 'generation'")
        except psycopg.Error as e:
            raise StoreError(f"database is not writable: {redact(str(e).strip())}") from e
