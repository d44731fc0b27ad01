"""The article tables: per-entry extraction state and the article cache by canonical link. I/O.

The SQLite queries behind the Store's article-queue methods (protocol.py), as functions over
one connection. Two tables, made by migration m008 (see schema.py):

- `entry_articles` (feed, key): what became of one entry's article: `pending` (with its
  attempts and next try), `extracted` (its content came from the page: `method`, `source`)
  or `failed` (`error` says why; the feed's own text is kept);
- `articles` (link): one row per page fetched, keyed by `dedupe.match_key` of the link, so the
  same story in three section feeds is fetched and extracted once (a feed that sends
  credentials has keys of its own: see `mark_entries`). Transient failures are not cached
  here: they are retried per entry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..ingest.extract import normalised_text
from ..models import Entry, PollRecord
from ..outputs.dedupe import match_key
from .connection import SqliteBase
from .protocol import Article, Due
from .rows import _dt, _ts

# Delays before the 2nd, 3rd, ... attempt of a page that failed for a reason that may pass
# (a timeout, a 5xx, a 429); after the last one the entry is left alone, marked failed.
RETRY_DELAYS = (timedelta(minutes=10), timedelta(hours=1), timedelta(hours=6))


def _cached(store: SqliteBase, link: str) -> dict[str, Any] | None:
    row = store.db.execute("SELECT * FROM articles WHERE link = ?", [link]).fetchone()
    return dict(row) if row is not None else None


def _apply(store: SqliteBase, feed: str, key: str, article: dict[str, Any], now: datetime) -> bool:
    """Give one entry the cached page's outcome; True when its content changed."""
    return apply_page(
        article,
        lambda: store.db.execute(
            "SELECT summary, content FROM entries WHERE feed = ? AND key = ?", [feed, key]
        ).fetchone(),
        functools.partial(_finish, store, feed, key, now=now),
        lambda content: store.db.execute(_TAKE_CONTENT_QMARK, [content, feed, key]),
    )


# The feed's own text stays, as the summary; the page's becomes the content.
TAKE_CONTENT = (
    "UPDATE entries SET summary = CASE WHEN summary = '' THEN content ELSE summary END, "
    "content = %s WHERE feed = %s AND key = %s"
)
_TAKE_CONTENT_QMARK = TAKE_CONTENT.replace("%s", "?")  # SQLite's placeholders


def apply_page(
    article: Mapping[str, Any],
    entry_text: Callable[[], Any],
    finish: Callable[..., None],
    take_content: Callable[[str], object],
) -> bool:
    """The steps of giving an entry its cached page's outcome, the same on both stores (each
    passes its own queries): a failed page fails the entry; one with no more text than the
    feed's own (`entry_text()`: its summary and content row, None when gone) keeps the feed's
    text, and says so; else the page's text becomes the content. True when content changed."""
    if article["status"] != "ok":
        finish("failed", error=article["error"])
        return False
    row = entry_text()
    if row is None:
        return False
    error = not_longer(article["text_length"], row["summary"], row["content"])
    if error is not None:
        finish("failed", error=error)
        return False
    take_content(article["content"])
    finish("extracted", method=article["method"], source=article["url"])
    return True


def not_longer(text_length: int, summary: str, content: str) -> str | None:
    """Why a page of `text_length` characters of text does not replace an entry's own text
    (it has no more of it), or None when it does. Pure; both stores use it."""
    own = max(len(normalised_text(summary)), len(normalised_text(content)))
    if text_length > own:
        return None
    return (
        f"the page gave {text_length} characters of text, no more than the "
        f"feed's own {own}: kept the feed's text"
    )


# An entry's outcome, written once its page was fetched or failed (both stores' query).
FINISH = (
    "UPDATE entry_articles SET status = %s, error = %s, method = %s, source = %s, "
    "done_at = %s, next_try = NULL WHERE feed = %s AND key = %s"
)
_FINISH_QMARK = FINISH.replace("%s", "?")


def finish_values(
    feed: str,
    key: str,
    status: str,
    done_at: object,
    *,
    error: str | None = None,
    method: str | None = None,
    source: str | None = None,
) -> list[object]:
    """FINISH's parameters, in order; `done_at` in the dialect's stored form of a time."""
    return [status, error, method, source, done_at, feed, key]


def _finish(
    store: SqliteBase, feed: str, key: str, status: str, *, now: datetime, **outcome: str | None
) -> None:
    store.db.execute(_FINISH_QMARK, finish_values(feed, key, status, _ts(now), **outcome))


def mark_entries(
    store: SqliteBase,
    rec: PollRecord,
    wanted: Callable[[str], bool],
    private: Callable[[str], bool] = lambda feed: False,
) -> int | None:
    """Called in a poll's write, after its entries: queue the new entries of feeds that want
    full content (`wanted(feed)`), and those whose link changed. A page already in the cache
    is applied at once, without a fetch. Returns the new generation when content changed.

    The pages of a feed fetched with credentials (`private(feed)`: a paywall's cookie, say)
    are cached under that feed alone: what its subscription unlocks never reaches another
    feed's entries, and a public feed's page is never the one fetched with its cookie."""
    if not wanted(rec.feed) or not (rec.new or rec.updated):
        return None
    scope = rec.feed if private(rec.feed) else None
    with store._atomic():  # the same unit of work as the poll's own write, when batched
        changed = mark_each(rec, lambda entry, new: _mark(store, entry, rec.now, scope, new=new))
        return store.bump_generation() if changed else None


def mark_each(rec: PollRecord, mark: Callable[[Entry, bool], bool]) -> bool:
    """`mark(entry, new)` for each of a poll's new entries, then its updated ones (both
    stores'); True when some entry's content changed."""
    changed = False
    for entry in rec.new:
        changed |= mark(entry, True)
    for entry in rec.updated:
        changed |= mark(entry, False)
    return changed


def _mark(store: SqliteBase, entry: Entry, now: datetime, scope: str | None, *, new: bool) -> bool:
    if not entry.link:
        return False
    # A unit separator never occurs in a link's match key, so a scoped key meets no other.
    link = match_key(entry.link) if scope is None else f"{scope}\x1f{match_key(entry.link)}"
    old = store.db.execute(
        "SELECT link, status FROM entry_articles WHERE feed = ? AND key = ?",
        [entry.feed, entry.key],
    ).fetchone()
    if old is None and not new:
        return False  # stored before its feed wanted full content: left as it is
    if old is not None and old["link"] == link:
        if old["status"] != "extracted":
            return False  # still pending, or failed for good: nothing to redo
        # Edited upstream, same page: the update wrote the feed's text back; put the page's
        # back from the cache instead of fetching the page again.
        article = _cached(store, link)
        return article is not None and _apply(store, entry.feed, entry.key, article, now)
    store.db.execute(
        "INSERT OR REPLACE INTO entry_articles (feed, key, link, status, attempts, next_try) "
        "VALUES (?, ?, ?, 'pending', 0, ?)",
        [entry.feed, entry.key, link, _ts(now)],
    )
    article = _cached(store, link)
    return article is not None and _apply(store, entry.feed, entry.key, article, now)


def due(store: SqliteBase, now: datetime, limit: int = 200) -> list[Due]:
    """Pages with pending entries whose next try has come, oldest entries first."""
    rows = store.db.execute(
        "SELECT a.link, a.feed, a.key, a.attempts, e.link AS url, e.title "
        "FROM entry_articles a JOIN entries e ON e.feed = a.feed AND e.key = a.key "
        "WHERE a.status = 'pending' AND a.next_try <= ? "
        "ORDER BY a.next_try, e.first_seen LIMIT ?",
        [_ts(now), limit],
    ).fetchall()
    return group_due(rows)


def take(store: SqliteBase, now: datetime, limit: int, hold: timedelta) -> list[Due]:
    """SQLite has one poller (its file lock): what is due is its own, held by nothing."""
    return due(store, now, limit)


def group_due(rows: Sequence[Any]) -> list[Due]:
    """Due pages from pending rows (link, feed, key, attempts, url, title), oldest first:
    one page per link, with every entry waiting for it. Pure; both stores use it."""
    groups: dict[str, list[Any]] = {}
    for r in rows:
        if r["url"]:
            groups.setdefault(r["link"], []).append(r)
    return [
        Due(
            link,
            rs[0]["url"],
            tuple((r["feed"], r["key"]) for r in rs),
            rs[0]["feed"],
            rs[0]["title"],
            max(r["attempts"] for r in rs),
        )
        for link, rs in groups.items()
    ]


def next_due(store: SqliteBase) -> datetime | None:
    """When the next pending entry comes due (None: nothing pending)."""
    row = store.db.execute(
        "SELECT min(next_try) FROM entry_articles WHERE status = 'pending'"
    ).fetchone()
    return _dt(row[0]) if row is not None else None


def defer(store: SqliteBase, link: str, when: datetime) -> None:
    """Move a page's pending entries to `when`, without counting an attempt (its host asked
    us to wait, or its robots.txt could not be read yet)."""
    with store._atomic():
        store.db.execute(
            "UPDATE entry_articles SET next_try = ? WHERE link = ? AND status = 'pending'",
            [_ts(when), link],
        )


def retry_time(
    attempts: int, article: Article, now: datetime, retry_delays: Sequence[timedelta]
) -> datetime | str:
    """After a transient failure of a page an entry had tried `attempts` times before: when to
    try again, or, with the retries spent, the error the entry fails with. Both stores'."""
    tried = attempts + 1
    if tried > len(retry_delays):
        return f"gave up after {tried} attempts: {article.error}"
    when = now + retry_delays[tried - 1]
    return max(when, article.retry_at) if article.retry_at is not None else when


def article_row(link: str, article: Article, fetched_at: object) -> dict[str, Any]:
    """The articles row of what a page gave; `fetched_at` in the dialect's form of a time."""
    return {
        "link": link,
        "status": "failed" if article.error is not None else "ok",
        "url": article.url,
        "content": article.content,
        "text_length": article.text_length,
        "method": article.method or None,
        "error": article.error,
        "fetched_at": fetched_at,
    }


def record(
    store: SqliteBase,
    link: str,
    article: Article,
    now: datetime,
    retry_delays: Sequence[timedelta] = RETRY_DELAYS,
) -> int | None:
    """Store what a page gave and apply it to every entry pending on it. Returns the new
    generation when some entry's content changed."""
    with store._atomic():
        return _record(store, link, article, now, retry_delays)


def _record(
    store: SqliteBase, link: str, article: Article, now: datetime, retry_delays: Sequence[timedelta]
) -> int | None:
    pending = [
        (r["feed"], r["key"], r["attempts"])
        for r in store.db.execute(
            "SELECT feed, key, attempts FROM entry_articles WHERE link = ? AND status = 'pending'",
            [link],
        ).fetchall()
    ]
    if article.error is not None and article.transient:
        for feed, key, attempts in pending:
            when = retry_time(attempts, article, now, retry_delays)
            if isinstance(when, str):
                _finish(store, feed, key, "failed", error=when, now=now)
            else:
                store.db.execute(
                    "UPDATE entry_articles SET attempts = ?, next_try = ?, error = ? "
                    "WHERE feed = ? AND key = ?",
                    [attempts + 1, _ts(when), article.error, feed, key],
                )
        return None
    row = article_row(link, article, _ts(now))
    store.db.execute(
        "INSERT OR REPLACE INTO articles (link, status, url, content, text_length, method, "
        "error, fetched_at) VALUES (:link, :status, :url, :content, :text_length, :method, "
        ":error, :fetched_at)",
        row,
    )
    changed = False
    for feed, key, _ in pending:
        changed |= _apply(store, feed, key, row, now)
    return store.bump_generation() if changed else None


def counts(store: SqliteBase, feeds: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Per feed: how many of its entries' articles were extracted, failed, are pending."""
    return tally(store.db.execute(COUNTS).fetchall(), feeds)


# Each feed's entries by article status (both stores' query).
COUNTS = "SELECT feed, status, count(*) AS n FROM entry_articles GROUP BY feed, status"


def tally(rows: Iterable[Any], feeds: Sequence[str] | None) -> dict[str, dict[str, int]]:
    """(feed, status, n) rows as per-feed counts of each status, of `feeds` (None: all)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if feeds is None or r["feed"] in feeds:
            counted = out.setdefault(r["feed"], {"extracted": 0, "failed": 0, "pending": 0})
            counted[r["status"]] = r["n"]
    return out


def entry_state(store: SqliteBase, feed: str, key: str) -> dict[str, Any] | None:
    """One entry's extraction state (status, attempts, error, method, source), for tests
    and tools."""
    row = store.db.execute(
        "SELECT * FROM entry_articles WHERE feed = ? AND key = ?", [feed, key]
    ).fetchone()
    return dict(row) if row is not None else None
