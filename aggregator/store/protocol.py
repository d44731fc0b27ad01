"""The Store protocol: every operation the poller, outputs, server, CLI, article queue,
resanitizer and health checks ask of a store, and the values they pass. No I/O.

The SQLite store (sqlite.py) implements it; a PostgreSQL store can slot in beside it. Callers
are typed against `Store`, never against one implementation. Every method raises StoreError
(errors.py), with the database's error as its cause, for any failure of the database, reads
as much as writes; a write is one transaction, all or nothing, unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..models import Entry, FeedState, FeedStatus, Known, NodeRecord, PollRecord, StoredEntry

# The re-sanitising pass's rows: (rowid, summary, content, link, content hash) as read, and
# (rowid, summary, content, content hash) as written back.
SanitizeRow = tuple[int, str, str, str | None, str]
Sanitized = tuple[int, str, str, str]
# Asked of a feed by name: does it want full content, are its pages fetched with credentials?
FeedTest = Callable[[str], bool]
# A poll's new or updated entries, as save_poll and save_poll_if take them.
Entries = Sequence[Entry]


@dataclass(frozen=True, slots=True)
class Due:
    """One page to fetch and the pending entries that wait for it."""

    link: str  # the cache key (match_key of the entries' link)
    url: str  # what to fetch: the first entry's canonical link
    entries: tuple[tuple[str, str], ...]  # (feed, key)
    feed: str  # the feed of the first entry: its selectors are used, its name is logged
    title: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Article:
    """What fetching and extracting one page gave. `error` set: nothing to store; then
    `transient` says whether trying again later may help, `retry_at` when the host said."""

    url: str
    content: str = ""
    text_length: int = 0
    method: str = ""
    error: str | None = None
    transient: bool = False
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AheadWrite:
    """A leased poll's write of its state alone (a 304, an unchanged body, an error): its
    state as the claim read it, its record, and the lease; offered to a store that can make
    a batch's such writes together (WritesAhead) before the batch's calls run."""

    old: FeedState
    rec: PollRecord
    lease: str


@runtime_checkable
class WritesAhead(Protocol):
    """A store that makes a write batch's AheadWrites in one go (postgres_ahead.py): each
    call then finds its write done (save_poll_if returns at once), or makes it itself."""

    def write_ahead(self, items: Sequence[AheadWrite]) -> None: ...

    def forget_ahead(self) -> None: ...


class Store(Protocol):
    """One connection to the store; it stays on the thread that opened it (threads.py)."""

    @property
    def path(self) -> Path | str:
        """What messages and /status name the store by (never with a password)."""

    # --- the connection ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the store is unusable after."""

    def is_broken(self) -> bool:
        """Whether the connection is lost for good (the server closed it or went away): then
        it is closed and another opened (threads.StoreThreads). Cheap: it waits for nothing."""

    def atomic(self) -> AbstractContextManager[None]:
        """One transaction, or a savepoint inside an open one: commits or vanishes whole."""

    def check_writable(self) -> None:
        """Raise StoreError unless a write could start right now (health checks)."""

    def generation(self) -> int:
        """The store generation: it grows with every change outputs are built from."""

    def bump_generation(self) -> int:
        """Grow the generation, inside the transaction that changed entries; returns it."""

    def data_version(self) -> int:
        """A number that moves when another connection (process) commits: what the poller's
        in-memory feed states are checked against."""

    # --- feeds and polls ---------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """Give every configured (name, url) a row, keeping known feeds' state (a changed URL
        gets feedstate.moved); one transaction."""

    def poll_state(self, name: str) -> FeedState | None:
        """A feed's polling state as last written (None: unknown feed): a poll's one read."""

    def feed_state(self, name: str) -> FeedStatus | None:
        """A feed's state and its number of stored entries (None: unknown feed)."""

    def feed_states(self, names: Sequence[str] | None = None) -> list[FeedStatus]:
        """The states of the named feeds (all when None), by name, with entry counts."""

    def known_entries(self, feed: str) -> dict[str, Known]:
        """Key → what is stored of each entry of a feed, pruned ones (tombstones) included."""

    def recent_published(self, feed: str, limit: int = 20) -> list[datetime]:
        """Known publication dates of a feed's newest entries, newest first."""

    def feed_languages(self, names: Sequence[str]) -> dict[str, str | None]:
        """The language each named feed declared on its last successful poll."""

    def save_poll(self, state: FeedState, new: Entries = (), updated: Entries = ()) -> int:
        """Write a feed's state as given, whole (the store computes none of it), with a poll's
        new and updated entries, in one transaction; returns the generation after it."""

    def save_poll_if(
        self,
        expected: FeedState | None,
        state: FeedState,
        new: Entries = (),
        updated: Entries = (),
        lease: str | None = None,
    ) -> int | None:
        """`save_poll` only while the feed's row still holds `expected` (None: no row);
        else None and nothing written: another process wrote the row since it was read.
        With `lease` (a poller's node id; PostgreSQL only), the write ends that poller's
        lease of the feed, and raises LeaseLost when the lease is no longer its own."""

    def record_poll(self, rec: PollRecord) -> int:
        """`save_poll` of feedstate.next_state over the stored state, in one transaction
        (for callers that keep no state of their own); returns the generation after it."""

    # --- entries -----------------------------------------------------------------------------

    def iter_entries(
        self, feeds: Sequence[str], batch: int = 200, query: str | None = None
    ) -> Iterator[StoredEntry]:
        """The feeds' entries newest first, streamed; only those matching a search query
        (search.py syntax) when one is given."""

    def search(self, query: str, limit: int = 20) -> list[StoredEntry]:
        """Entries matching a search query, best match first, then newest."""

    def count_entries(self, feed: str | None = None) -> int:
        """How many entries are stored (of one feed, or of all)."""

    # --- retention ---------------------------------------------------------------------------

    def prune(self, now: datetime, retention_days: int, max_per_feed: int) -> int | None:
        """Delete entries past retention (leaving tombstones) in one transaction; returns
        how many, or None when another node is pruning this store right now (PostgreSQL:
        one prune at a time across every node; nothing is done then)."""

    def last_prune(self) -> datetime | None:
        """When prune last ran (None: never)."""

    def vacuum(self) -> None:
        """Give deleted rows' space back to the file system; slow, on demand only."""

    # --- the nodes sharing the store (store/nodes.py) ----------------------------------------

    def record_node(self, node: NodeRecord) -> None:
        """Insert or refresh a running node's row (and forget nodes long silent)."""

    def nodes(self, seen_since: datetime) -> list[NodeRecord]:
        """The nodes that refreshed their row at or after `seen_since`, oldest first."""

    def forget_node(self, node_id: str) -> None:
        """Delete a node's row: it stopped."""

    # --- the article queue (full content from article pages) --------------------------------

    def queue_articles(self, rec: PollRecord, wanted: FeedTest, private: FeedTest) -> int | None:
        """Queue a poll's new (and re-linked) entries if `wanted(feed)`, in the poll's
        transaction (pages of `private` feeds cached for them alone); returns the new
        generation when a cached page changed content."""

    def articles_due(self, now: datetime, limit: int = 200) -> list[Due]:
        """Pages whose pending entries' next try has come, oldest first."""

    def take_articles(self, now: datetime, hold: timedelta, limit: int = 200) -> list[Due]:
        """The due pages (as articles_due) for this process to fetch: where several pollers
        share the store (PostgreSQL), their pending entries' next try moves `hold` on in the
        same transaction, so no other poller takes them meanwhile (a fetch's record or
        defer sets it anew; a poller that died leaves them due again after `hold`). Whole
        pages: every pending entry of a page taken is taken. One poller alone (SQLite):
        articles_due."""

    def next_article_due(self) -> datetime | None:
        """When the next pending entry comes due (None: nothing pending)."""

    def defer_articles(self, link: str, when: datetime) -> None:
        """Move a page's pending entries to `when`, counting no attempt; one transaction."""

    def record_article(
        self, link: str, article: Article, now: datetime, retry_delays: Sequence[timedelta]
    ) -> int | None:
        """Store what a page gave and apply it to its pending entries, in one transaction;
        returns the new generation when some entry's content changed."""

    def article_counts(self, feeds: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Per feed: how many of its entries' articles are extracted, failed, pending."""

    # --- the re-sanitising pass (ingest/resanitize.py) ---------------------------------------

    def sanitize_resume(self, policy: str) -> int | None:
        """The rowid after which entries still need `policy` (None: all have it)."""

    def sanitize_batch(self, after: int, rows: int) -> list[SanitizeRow]:
        """The next `rows` entries after rowid `after`, in rowid order."""

    def write_sanitized(
        self, policy: str, cleaned: Sequence[Sanitized], last: int, done: bool
    ) -> int:
        """Write cleaned rows (those unchanged since read) and the pass's progress in one
        transaction; returns the generation."""
