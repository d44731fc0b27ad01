"""The PostgreSQL queries of the article queue and of the re-sanitising pass: what
store/articles.py and store/sanitized.py do on SQLite, over the same tables. I/O.

Beyond SQLite's: the rows a unit of work decides from are locked (FOR UPDATE) for its
transaction, since on PostgreSQL another process may be writing them at the same moment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from ..ingest.feedstate import second as _second
from ..models import Entry, PollRecord
from ..outputs.dedupe import match_key
from .articles import (
    FINISH,
    TAKE_CONTENT,
    apply_page,
    article_row,
    finish_values,
    group_due,
    mark_each,
    retry_time,
    tally,
)
from .postgres_connection import PostgresBase, Row
from .protocol import Article, Due, Sanitized, SanitizeRow
from .sanitized import PROGRESS_QUERY, SAVE_PROGRESS, progress_rows, resume_point


def _finish(
    store: PostgresBase, feed: str, key: str, status: str, *, now: datetime, **outcome: str | None
) -> None:
    store.conn.execute(FINISH, finish_values(feed, key, status, _second(now), **outcome))


def _apply(store: PostgresBase, feed: str, key: str, article: Row, now: datetime) -> bool:
    """Give one entry the cached page's outcome (articles.apply_page); True when its content
    changed. The entry's row is locked until the commit."""
    return apply_page(
        article,
        lambda: store._one(
            "SELECT summary, content FROM entries WHERE feed = %s AND key = %s FOR UPDATE",
            [feed, key],
        ),
        functools.partial(_finish, store, feed, key, now=now),
        lambda content: store.conn.execute(TAKE_CONTENT, [content, feed, key]),
    )


def _cached(store: PostgresBase, link: str) -> Row | None:
    return store._one("SELECT * FROM articles WHERE link = %s", [link])


def mark_entries(
    store: PostgresBase,
    rec: PollRecord,
    wanted: Callable[[str], bool],
    private: Callable[[str], bool],
) -> int | None:
    """Queue a poll's new and re-linked entries of feeds that want full content, applying a
    page already cached (articles.mark_entries says why `private` feeds have keys of their
    own). Returns the new generation when content changed."""
    if not wanted(rec.feed) or not (rec.new or rec.updated):
        return None
    scope = rec.feed if private(rec.feed) else None
    with store.atomic():
        changed = mark_each(rec, lambda entry, new: _mark(store, entry, rec.now, scope, new=new))
        return store.bump_generation() if changed else None


def _mark(
    store: PostgresBase, entry: Entry, now: datetime, scope: str | None, *, new: bool
) -> bool:
    if not entry.link:
        return False
    link = match_key(entry.link) if scope is None else f"{scope}\x1f{match_key(entry.link)}"
    old = store._one(
        "SELECT link, status FROM entry_articles WHERE feed = %s AND key = %s FOR UPDATE",
        [entry.feed, entry.key],
    )
    if old is None and not new:
        return False  # stored before its feed wanted full content: left as it is
    if old is not None and old["link"] == link:
        if old["status"] != "extracted":
            return False
        article = _cached(store, link)
        return article is not None and _apply(store, entry.feed, entry.key, article, now)
    store.conn.execute(
        "INSERT INTO entry_articles (feed, key, link, status, attempts, next_try) "
        "VALUES (%s, %s, %s, 'pending', 0, %s) ON CONFLICT (feed, key) DO UPDATE SET "
        "link = excluded.link, status = 'pending', attempts = 0, next_try = excluded.next_try, "
        "error = NULL, method = NULL, source = NULL, done_at = NULL",
        [entry.feed, entry.key, link, _second(now)],
    )
    article = _cached(store, link)
    return article is not None and _apply(store, entry.feed, entry.key, article, now)


def due(store: PostgresBase, now: datetime, limit: int) -> list[Due]:
    """Pages with pending entries whose next try has come, oldest entries first."""
    rows = store._all(
        "SELECT a.link, a.feed, a.key, a.attempts, e.link AS url, e.title "
        "FROM entry_articles a JOIN entries e ON e.feed = a.feed AND e.key = a.key "
        "WHERE a.status = 'pending' AND a.next_try <= %s "
        "ORDER BY a.next_try, e.first_seen LIMIT %s",
        [now, limit],
    )
    return group_due(rows)


def take(store: PostgresBase, now: datetime, limit: int, hold: timedelta) -> list[Due]:
    """The due pages (the `limit` longest due), taken whole for `hold`: every pending entry
    of each has its next try moved to now + hold, locked rows skipped, so that two pollers
    taking at once never take one page (store.take_articles)."""
    # One statement: atomic by itself (the connection autocommits), or part of the caller's
    # transaction.
    rows = store._all(
        "WITH links AS ("
        "  SELECT link FROM entry_articles WHERE status = 'pending' AND next_try <= %(now)s"
        "  GROUP BY link ORDER BY min(next_try), link LIMIT %(limit)s"
        "), taken AS ("
        "  SELECT a.feed, a.key FROM entry_articles a JOIN links USING (link)"
        "  WHERE a.status = 'pending' AND a.next_try <= %(now)s"
        "  FOR UPDATE OF a SKIP LOCKED"
        ") UPDATE entry_articles a SET next_try = %(until)s "
        "FROM taken t JOIN entries e ON e.feed = t.feed AND e.key = t.key "
        "WHERE a.feed = t.feed AND a.key = t.key "
        "RETURNING a.link, a.feed, a.key, a.attempts, e.link AS url, e.title, e.first_seen",
        {"now": now, "limit": limit, "until": _second(now + hold)},
    )
    # Oldest entries first within and across pages, as `due` gives them.
    return group_due(sorted(rows, key=lambda r: (r["first_seen"], r["feed"], r["key"])))


def next_due(store: PostgresBase) -> datetime | None:
    row = store._one("SELECT min(next_try) AS at FROM entry_articles WHERE status = 'pending'")
    return row["at"] if row is not None else None


def defer(store: PostgresBase, link: str, when: datetime) -> None:
    store.conn.execute(
        "UPDATE entry_articles SET next_try = %s WHERE link = %s AND status = 'pending'",
        [_second(when), link],
    )


def record(
    store: PostgresBase,
    link: str,
    article: Article,
    now: datetime,
    retry_delays: Sequence[timedelta],
) -> int | None:
    """Store what a page gave and apply it to every entry pending on it (see
    articles.record). Returns the new generation when some entry's content changed."""
    with store.atomic():
        pending = store._all(
            "SELECT feed, key, attempts FROM entry_articles "
            "WHERE link = %s AND status = 'pending' FOR UPDATE",
            [link],
        )
        if article.error is not None and article.transient:
            for p in pending:
                when = retry_time(p["attempts"], article, now, retry_delays)
                if isinstance(when, str):
                    _finish(store, p["feed"], p["key"], "failed", error=when, now=now)
                    continue
                store.conn.execute(
                    "UPDATE entry_articles SET attempts = %s, next_try = %s, error = %s "
                    "WHERE feed = %s AND key = %s",
                    [p["attempts"] + 1, _second(when), article.error, p["feed"], p["key"]],
                )
            return None
        row: Row = article_row(link, article, _second(now))
        columns = ", ".join(row)
        store.conn.execute(
            f"INSERT INTO articles ({columns}) VALUES ({', '.join(f'%({c})s' for c in row)}) "
            f"ON CONFLICT (link) DO UPDATE SET ({columns}) = ROW("
            f"{', '.join(f'excluded.{c}' for c in row)})".encode(),
            row,
        )
        changed = False
        for p in pending:
            changed |= _apply(store, p["feed"], p["key"], row, now)
        return store.bump_generation() if changed else None


def counts(store: PostgresBase, feeds: Sequence[str] | None) -> dict[str, dict[str, int]]:
    """Per feed: how many of its entries' articles were extracted, failed, are pending."""
    rows = store._all(
        "SELECT feed, status, count(*) AS n FROM entry_articles GROUP BY feed, status"
    )
    return tally(rows, feeds)


# --- the re-sanitising pass (progress in meta, as store/sanitized.py keeps it) ---------------


def resume_after(store: PostgresBase, policy: str) -> int | None:
    """The entry id after which rows still need `policy`; None when every row has it."""
    return resume_point({r["key"]: r["value"] for r in store._all(PROGRESS_QUERY)}, policy)


def read_batch(store: PostgresBase, after: int, rows: int) -> list[SanitizeRow]:
    return [
        (r["id"], r["summary"], r["content"], r["link"], r["content_hash"])
        for r in store._all(
            "SELECT id, summary, content, link, content_hash FROM entries WHERE id > %s "
            "ORDER BY id LIMIT %s",
            [after, rows],
        )
    ]


def write_batch(
    store: PostgresBase, policy: str, cleaned: Sequence[Sanitized], last: int, done: bool
) -> int:
    """Write one batch (only rows unchanged since read) and the progress in one transaction;
    returns the store generation."""
    with store.atomic():
        store._many(
            "UPDATE entries SET summary = %s, content = %s WHERE id = %s AND content_hash = %s",
            [(s, c, rowid, h) for rowid, s, c, h in cleaned],
        )
        store._many(SAVE_PROGRESS, progress_rows(policy, last, done))
        if cleaned:
            store.bump_generation()
        return store.generation()
