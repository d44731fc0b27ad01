"""The store on PostgreSQL (psycopg 3): the same operations as the SQLite store, over one
connection from a `postgresql://` URL. I/O.

Every method raises StoreError for any database error, its cause chained and its text
redacted (postgres_connection.pg_store_errors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import LeaseLost, StoreError
from ..ingest.feedstate import moved, next_state
from ..ingest.feedstate import second as _second
from ..ingest.hosts import origin
from ..ingest.identity import Known, uid_for
from ..models import Entry, FeedState, FeedStatus, PollRecord, StoredEntry
from . import postgres_articles as queue
from .common import StoreCommon
from .nodes import NodeTable
from .postgres_ahead import COLUMNS, UPDATE_LEASED_IF, WriteAhead, leased_params, row_values
from .postgres_claims import PostgresClaims
from .postgres_connection import PostgresBase, Row, pg_store_errors
from .postgres_pages import PageHosts
from .postgres_search import QueryError, to_tsquery
from .protocol import Entries, Store
from .rows import (
    UPDATE_PRUNED,
    _entry_row,
    _feed_state_from_row,
    _feed_status_from_row,
    _stored_from_row,
    entry_update,
)

# Any fixed 64-bit number, the same in every process: the advisory lock of the prune, so that
# nodes sharing the database never prune at once (the second would find the same victims).
PRUNE_LOCK = 0x61676772_7072756E  # "aggr" "prun"

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


_WRITE_STATE = (
    f"INSERT INTO feeds (name, {', '.join(COLUMNS)}) VALUES (%s{', %s' * len(COLUMNS)}) "
    "ON CONFLICT (name) DO UPDATE SET {sets}"
)
_SETS = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS)
_RELEASING_SETS = _SETS + ", lease_owner = NULL, lease_until = NULL"


# New feeds in one sync after which the feeds table's statistics are taken at once.
ANALYZE_AFTER_NEW_FEEDS = 100


@pg_store_errors
class PostgresStore(StoreCommon, NodeTable, PostgresClaims, PageHosts, WriteAhead, PostgresBase):
    """The store's queries on PostgreSQL; one connection, on one thread (PostgresBase)."""

    # The article queue's and the re-sanitising pass's SQL, one module (StoreCommon calls it).
    _queue = queue
    _sanitize = queue

    # --- feeds -------------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """Make sure every configured (name, url) has a row; keeps all state of known feeds,
        except what concerned the old URL of a feed whose URL changed (feedstate.moved)."""
        with self._transaction():
            stored = {r["name"]: r["url"] for r in self._all("SELECT name, url FROM feeds")}
            new = [(name, url) for name, url in feeds if name not in stored]
            if new:
                self.conn.cursor().executemany(
                    "INSERT INTO feeds (name, url, origin) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(name, url, origin(url)) for name, url in new],
                )
            for name, url in feeds:
                if name in stored and stored[name] != url:
                    state = self._poll_state(name, lock=True)
                    if state is not None:
                        self._write_state(moved(state, url))
        if len(new) >= ANALYZE_AFTER_NEW_FEEDS:
            # Statistics at once for a table that just grew: until autovacuum comes by (a
            # minute or more) the claim's plan is the one for the table as it was, and with
            # thousands of new feeds due at once that plan cost the database ten times the
            # CPU of the polls themselves (bench/cluster.py's first rounds).
            self.conn.execute(b"ANALYZE feeds")

    def poll_state(self, name: str) -> FeedState | None:
        """A feed's polling state as last written (the read a poll makes before its request)."""
        return self._poll_state(name)

    def _poll_state(self, name: str, lock: bool = False) -> FeedState | None:
        # With `lock`, the row is locked until the commit: two writers of one feed take turns.
        row = self._one(f"SELECT * FROM feeds WHERE name = %s{' FOR UPDATE' * lock}", [name])
        return _feed_state_from_row(row) if row is not None else None  # type: ignore[arg-type]

    def _feed_rows(self, names: Sequence[str] | None) -> list[FeedStatus]:
        where, params = ("WHERE f.name = ANY(%s)", [list(names)]) if names is not None else ("", [])
        count = "(SELECT count(*) FROM entries e WHERE e.feed = f.name)"
        sql = f'SELECT f.*, {count} AS entry_count FROM feeds f {where} ORDER BY f.name COLLATE "C"'
        return [_feed_status_from_row(r) for r in self._all(sql, params)]  # type: ignore[arg-type]

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

    def recent_published(self, feed: str, limit: int = 20) -> list[datetime]:
        """Publication dates of a feed's newest entries (known dates only), newest first."""
        rows = self._all(
            "SELECT published FROM entries WHERE feed = %s AND date_known = 1 "
            "ORDER BY published DESC LIMIT %s",
            [feed, limit],
        )
        return [r["published"] for r in rows]

    def feed_languages(self, names: Sequence[str]) -> dict[str, str | None]:
        """The language each feed declared on its last successful poll."""
        rows = self._all("SELECT name, language FROM feeds WHERE name = ANY(%s)", [list(names)])
        return {r["name"]: r["language"] for r in rows}

    # --- one poll ----------------------------------------------------------------------------

    def save_poll(self, state: FeedState, new: Entries = (), updated: Entries = ()) -> int:
        """Write one poll, all or nothing: the feed's state as given, whole, and its new and
        updated entries (as sqlite.Store.save_poll). Returns the generation after the write."""
        with self._transaction():
            self._write_state(state)
            return self._write_entries(state, new, updated)

    def save_poll_if(
        self,
        expected: FeedState | None,
        state: FeedState,
        new: Entries = (),
        updated: Entries = (),
        lease: str | None = None,
    ) -> int | None:
        """`save_poll`, only if the feed's row (locked until the commit) still holds
        `expected` (None: there is no row); else None, and nothing is written.

        With `lease` (a poller's node id, see postgres_claims.py), the write also ends that
        poller's lease of the feed, and is refused with LeaseLost when the lease is no longer
        its own: it expired and another poller claimed (and maybe polled) the feed since."""
        if lease is not None and not new and not updated:
            ahead = self.done_ahead(expected, state, lease)
            if ahead is not None:  # made with the batch's other writes (postgres_ahead)
                return ahead
        with self._transaction():
            if lease is not None and expected is not None:
                done = self._one(UPDATE_LEASED_IF, leased_params(expected, state, lease))
                if done is not None:
                    if not new and not updated:
                        return int(done["generation"])
                    return self._write_entries(state, new, updated)
            row = self._one("SELECT * FROM feeds WHERE name = %s FOR UPDATE", [state.name])
            if lease is not None and (row is None or row["lease_owner"] != lease):
                raise LeaseLost(state.name, lease)
            current = _feed_state_from_row(row) if row is not None else None  # type: ignore[arg-type]
            if current != expected:
                return None
            # The lease ends here; the host it may have been the last one on is given up by
            # the poller's next claim (postgres_claims.claim_due), not by every write.
            self._write_state(state, release=lease is not None)
            return self._write_entries(state, new, updated)

    def record_poll(self, rec: PollRecord) -> int:
        """Apply a poll's record to the stored state (feedstate.next_state) and save it, for
        callers that keep no state of their own (as sqlite.Store.record_poll)."""
        with self._transaction():
            # The row is locked until the commit: two writers of one feed take turns, and the
            # state written is the pure step from the state just read.
            state = self._poll_state(rec.feed, lock=True)
            if state is None:
                # No row to lock yet: make one (or meet the one another writer just made),
                # or two first polls would both start from nothing and one be lost.
                self.conn.execute(
                    "INSERT INTO feeds (name, url) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [rec.feed, rec.url],
                )
                state = self._poll_state(rec.feed, lock=True)
            new_state = next_state(state, rec)
            self._write_state(new_state)
            return self._write_entries(new_state, rec.new, rec.updated)

    def _write_entries(
        self, state: FeedState, new: Sequence[Entry], updated: Sequence[Entry]
    ) -> int:
        if not new and not updated:
            return self._generation()
        assert state.last_poll is not None  # the poll's `now`
        now = state.last_poll
        cur = self.conn.cursor()
        if new:
            rows = [_entry_row(e) for e in new]
            columns = [*rows[0], "first_seen", "last_changed"]
            cur.executemany(
                f"INSERT INTO entries ({', '.join(columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})".encode(),
                [[*row.values(), now, now] for row in rows],
            )
        for entry in updated:
            self._update_entry(entry, now)
        return self.bump_generation()

    def _write_state(self, state: FeedState, release: bool = False) -> None:
        # The origin politeness counts per goes with the state: the redirect target's once a
        # permanent redirect moved the feed. `release` ends the writing poller's lease.
        sets = _RELEASING_SETS if release else _SETS
        self.conn.execute(
            _WRITE_STATE.format(sets=sets).encode(),
            [state.name, *row_values(state)],
        )

    def _update_entry(self, entry: Any, now: datetime) -> None:
        old = self._one(
            "SELECT first_seen FROM entries WHERE feed = %s AND key = %s", [entry.feed, entry.key]
        )
        first_seen = old["first_seen"] if old else now
        sql, params = entry_update(entry, first_seen, now)
        if self.conn.execute(sql.encode(), params).rowcount == 0:
            # A pruned entry edited upstream: remember its new hash, store nothing.
            self.conn.execute(UPDATE_PRUNED, [entry.content_hash, entry.feed, entry.key])

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
            rows = self._all(f"{_SELECT_STORED}{where}{after} {_NEWEST_FIRST} LIMIT %(n)s", params)
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

    def count_entries(self, feed: str | None = None) -> int:
        if feed is None:
            row = self._one("SELECT count(*) AS n FROM entries")
        else:
            row = self._one("SELECT count(*) AS n FROM entries WHERE feed = %s", [feed])
        assert row is not None
        return int(row["n"])

    # --- retention ---------------------------------------------------------------------------

    def prune(self, now: datetime, retention_days: int, max_per_feed: int) -> int | None:
        """Delete entries first stored more than `retention_days` ago and, per feed, all but
        the `max_per_feed` newest (0 disables either rule), each leaving a tombstone in
        `pruned`. Returns how many entries were deleted, or None when another session holds
        the prune lock (another node is pruning: this one does nothing)."""
        stamp = _second(now)
        with self._transaction():
            # One node prunes at a time: the others skip (the lock is released by the commit).
            got = self._one("SELECT pg_try_advisory_xact_lock(%s) AS got", [PRUNE_LOCK])
            if got is None or not got["got"]:
                return None
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

    def last_prune(self) -> datetime | None:
        row = self._one("SELECT value FROM meta WHERE key = 'last_prune'")
        return datetime.fromisoformat(row["value"]) if row else None

    def vacuum(self) -> None:
        """Give deleted rows' space back and refresh the planner's statistics. VACUUM runs
        outside a transaction (the connection is in autocommit)."""
        for table in ("entries", "pruned", "feeds", "entry_articles", "articles"):
            self.conn.execute(f"VACUUM (ANALYZE) {table}".encode())


if TYPE_CHECKING:
    # mypy holds PostgresStore to every operation of the Store protocol.
    _conforms: type[Store] = PostgresStore
