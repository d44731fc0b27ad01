"""The Store's operations that are the same on both stores, written once over each dialect's
queries: the feed-status reads, the article queue and the re-sanitising pass. No I/O of its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..models import FeedStatus, PollRecord
from .articles import RETRY_DELAYS
from .protocol import Article, Due, FeedTest, Sanitized, SanitizeRow


class QueueQueries(Protocol):
    """A dialect's article-queue queries (store/articles.py, store/postgres_articles.py)."""

    def mark_entries(
        self, store: Any, rec: PollRecord, wanted: FeedTest, private: FeedTest
    ) -> int | None: ...
    def due(self, store: Any, now: datetime, limit: int) -> list[Due]: ...
    def take(self, store: Any, now: datetime, limit: int, hold: timedelta) -> list[Due]: ...
    def next_due(self, store: Any) -> datetime | None: ...
    def defer(self, store: Any, link: str, when: datetime) -> None: ...
    def record(
        self,
        store: Any,
        link: str,
        article: Article,
        now: datetime,
        retry_delays: Sequence[timedelta],
    ) -> int | None: ...
    def counts(self, store: Any, feeds: Sequence[str] | None) -> dict[str, dict[str, int]]: ...


class SanitizeQueries(Protocol):
    """A dialect's queries of the re-sanitising pass (store/sanitized.py, postgres_articles)."""

    def resume_after(self, store: Any, policy: str) -> int | None: ...
    def read_batch(self, store: Any, after: int, rows: int) -> list[SanitizeRow]: ...
    def write_batch(
        self, store: Any, policy: str, cleaned: Sequence[Sanitized], last: int, done: bool
    ) -> int: ...


class StoreCommon:
    """Mixed into each store, which names its dialect's query modules and reads its feed rows;
    the contracts are in protocol.Store. The store's error wrapping covers these methods too
    (wrapping.py)."""

    _queue: QueueQueries
    _sanitize: SanitizeQueries

    def _feed_rows(self, names: Sequence[str] | None) -> list[FeedStatus]:
        """The named feeds' rows (all when None), by name, with their entry counts."""
        raise NotImplementedError

    def feed_state(self, name: str) -> FeedStatus | None:
        """A feed's state and its number of stored entries, for status pages."""
        states = self._feed_rows([name])
        return states[0] if states else None

    def feed_states(self, names: Sequence[str] | None = None) -> list[FeedStatus]:
        return self._feed_rows(names)

    def queue_articles(self, rec: PollRecord, wanted: FeedTest, private: FeedTest) -> int | None:
        return self._queue.mark_entries(self, rec, wanted, private)

    def articles_due(self, now: datetime, limit: int = 200) -> list[Due]:
        return self._queue.due(self, now, limit)

    def take_articles(self, now: datetime, hold: timedelta, limit: int = 200) -> list[Due]:
        return self._queue.take(self, now, limit, hold)

    def next_article_due(self) -> datetime | None:
        return self._queue.next_due(self)

    def defer_articles(self, link: str, when: datetime) -> None:
        self._queue.defer(self, link, when)

    def record_article(
        self,
        link: str,
        article: Article,
        now: datetime,
        retry_delays: Sequence[timedelta] = RETRY_DELAYS,
    ) -> int | None:
        return self._queue.record(self, link, article, now, retry_delays)

    def article_counts(self, feeds: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        return self._queue.counts(self, feeds)

    def sanitize_resume(self, policy: str) -> int | None:
        return self._sanitize.resume_after(self, policy)

    def sanitize_batch(self, after: int, rows: int) -> list[SanitizeRow]:
        return self._sanitize.read_batch(self, after, rows)

    def write_sanitized(
        self, policy: str, cleaned: Sequence[Sanitized], last: int, done: bool
    ) -> int:
        return self._sanitize.write_batch(self, policy, cleaned, last, done)
