"""The store's article-queue and re-sanitising operations, called directly, on both stores
(conftest's parametrised `store`): the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from test_sqlite import T0, entries, ok, parsed

from aggregator.store.postgres import PostgresStore
from aggregator.store.protocol import Article

LONG = "<p>" + "The whole story, told at length. " * 40 + "</p>"


def _wanted(feed: str) -> bool:
    return feed != "plain"


def _never(feed: str) -> bool:
    return False


def _poll(store: Any, feed: str, *numbers: int, private: bool = False) -> list[Any]:
    new = entries(feed, *(parsed(n) for n in numbers))
    rec = ok(feed, new=new)
    store.record_poll(rec)
    store.queue_articles(rec, _wanted, (lambda f: private) if private else _never)
    return list(new)


def test_new_entries_are_queued_and_a_page_fills_them(store: Any) -> None:
    [one, two] = _poll(store, "a", 1, 2)
    _poll(store, "plain", 3)  # does not want full content
    assert store.article_counts() == {"a": {"extracted": 0, "failed": 0, "pending": 2}}
    assert store.next_article_due() == T0
    due = {d.url: d for d in store.articles_due(T0)}
    assert set(due) == {one.link, two.link}
    assert due[one.link].entries == (("a", one.key),) and due[one.link].attempts == 0
    assert store.articles_due(T0 - timedelta(seconds=1)) == []

    generation = store.generation()
    page = Article(url=one.link, content=LONG, text_length=1200, method="trafilatura")
    assert store.record_article(due[one.link].link, page, T0) == generation + 1
    [stored] = [s for s in store.iter_entries(["a"]) if s.entry.key == one.key]
    assert stored.entry.content == LONG
    assert stored.entry.summary == one.summary  # the feed's own text stays, as the summary
    assert store.article_counts(["a"]) == {"a": {"extracted": 1, "failed": 0, "pending": 1}}


def test_a_short_page_keeps_the_feed_text_and_says_why(store: Any) -> None:
    [one] = _poll(store, "a", 1)
    [due] = store.articles_due(T0)
    assert (
        store.record_article(due.link, Article(url=one.link, content="x", text_length=1), T0)
        is None
    )
    [stored] = store.iter_entries(["a"])
    assert stored.entry.content == one.content
    assert store.article_counts() == {"a": {"extracted": 0, "failed": 1, "pending": 0}}
    assert store.next_article_due() is None


def test_transient_failures_are_retried_later_then_given_up(store: Any) -> None:
    _poll(store, "a", 1)
    [due] = store.articles_due(T0)
    delays = (timedelta(minutes=10), timedelta(hours=1))
    failure = Article(url=due.url, error="HTTP 503", transient=True)
    now = T0
    for attempt, delay in enumerate(delays, 1):
        assert store.record_article(due.link, failure, now, delays) is None
        assert store.articles_due(now) == []
        now = now + delay
        assert store.next_article_due() == now
        [again] = store.articles_due(now)
        assert again.attempts == attempt
    store.record_article(due.link, failure, now, delays)
    assert store.article_counts() == {"a": {"extracted": 0, "failed": 1, "pending": 0}}


def test_a_deferred_page_waits_and_the_cache_serves_the_same_story_once(store: Any) -> None:
    [one] = _poll(store, "a", 1)
    [due] = store.articles_due(T0)
    store.defer_articles(due.link, T0 + timedelta(hours=2))
    assert store.articles_due(T0 + timedelta(hours=1)) == []
    assert store.next_article_due() == T0 + timedelta(hours=2)
    store.record_article(due.link, Article(url=one.link, content=LONG, text_length=1200), T0)
    # Another feed carries the same story: the cached page is applied at once, no fetch.
    [same] = entries("b", replace(parsed(1), guid="other-guid"))
    rec = ok("b", new=(same,))
    store.record_poll(rec)
    generation = store.generation()
    assert store.queue_articles(rec, _wanted, _never) == generation + 1
    assert store.articles_due(T0 + timedelta(days=1)) == []
    assert next(store.iter_entries(["b"])).entry.content == LONG


def test_a_private_feed_has_pages_of_its_own(store: Any) -> None:
    [one] = _poll(store, "a", 1)
    [due] = store.articles_due(T0)
    store.record_article(due.link, Article(url=one.link, content=LONG, text_length=1200), T0)
    _poll(store, "paid", 1, private=True)
    # Not served from the public page's cache: queued under a key of its own.
    [own] = store.articles_due(T0)
    assert own.entries[0][0] == "paid" and own.link != due.link


def test_the_sanitising_pass_reads_batches_and_keeps_its_progress(store: Any) -> None:
    _poll(store, "plain", 1, 2, 3)
    assert store.sanitize_resume("p1") == 0
    first = store.sanitize_batch(0, 2)
    assert [r[4] for r in first] == [e.content_hash for e in entries("plain", parsed(1), parsed(2))]
    cleaned = [(rowid, "s", "c", h) for rowid, _, _, _, h in first]
    generation = store.generation()
    assert store.write_sanitized("p1", cleaned, first[-1][0], done=False) == generation + 1
    assert store.sanitize_resume("p1") == first[-1][0]
    rest = store.sanitize_batch(first[-1][0], 2)
    assert len(rest) == 1
    # A row changed since it was read (its hash moved on) is left as its writer left it.
    stale = [(rest[0][0], "s", "c", "not-its-hash")]
    store.write_sanitized("p1", stale, rest[0][0], done=True)
    assert store.sanitize_resume("p1") is None
    assert store.sanitize_resume("p2") == 0
    contents = {s.entry.key: s.entry.content for s in store.iter_entries(["plain"])}
    assert sorted(contents.values()) == sorted(["c", "c", parsed(3).content])


def test_pages_taken_by_one_poller_are_left_to_it_until_their_hold_runs_out(
    store: Any, request: Any
) -> None:
    [one, two] = _poll(store, "a", 1, 2)
    hold = timedelta(minutes=2)
    if isinstance(store, PostgresStore):
        # Two pollers taking at once: the rows the first holds are skipped, not waited for.
        rival = PostgresStore(request.getfixturevalue("pg_url"))
        try:
            with rival.conn.transaction(force_rollback=True):
                assert len(rival.take_articles(T0, hold)) == 2
                store.conn.execute(b"SET statement_timeout = '5s'")  # a wait fails the test
                assert store.take_articles(T0, hold) == []
        finally:
            rival.close()
    taken = store.take_articles(T0, hold)
    assert {d.url for d in taken} == {one.link, two.link}
    if not isinstance(store, PostgresStore):
        # SQLite has one poller (its file lock): what is due stays due until it is fetched.
        assert store.articles_due(T0) == taken
        return
    assert store.articles_due(T0) == []  # held: due again at T0 + hold
    # Another poller (another connection) takes none of them while the hold lasts ...
    other = PostgresStore(request.getfixturevalue("pg_url"))
    try:
        assert other.take_articles(T0 + timedelta(minutes=1), hold) == []
        # ... and all of them, whole pages, once it ran out (the first poller died, say).
        again = other.take_articles(T0 + hold, hold)
        assert {d.url for d in again} == {one.link, two.link}
        # A page fetched is done for everyone; a deferred one is due at its new time.
        page = Article(url=one.link, content=LONG, text_length=1200, method="trafilatura")
        store.record_article(again[0].link, page, T0 + hold)
        store.defer_articles(again[1].link, T0 + 3 * hold)
        assert other.take_articles(T0 + 2 * hold + timedelta(minutes=1), hold) == []
        assert [d.link for d in other.take_articles(T0 + 3 * hold, hold)] == [again[1].link]
    finally:
        other.close()
