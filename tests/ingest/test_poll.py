"""Loopback tests of poll_source(): the real feed server, a real Fetcher, SQLite in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from feedserver import DATA_DIR, FeedServer

from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.ingest.decide import PollPolicy
from aggregator.ingest.fetch import Fetcher
from aggregator.ingest.poll import Feed, PollContext, poll_source
from aggregator.models import FeedStatus, PollOutcome, StoredEntry
from aggregator.runtime import make_parse_pool
from aggregator.store.protocol import AheadWrite
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

T = TypeVar("T")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
EDITED_GUID = "guid:byte-street-post-1187"


def run_polls(
    db: Path,
    fn: Callable[[PollContext], Awaitable[T]],
    *,
    parse_pool: Executor | None = None,
    timeout: float = 10.0,
    max_body_size: int = 1024 * 1024,
) -> T:
    """Run `fn(ctx)` in a fresh event loop with a real Fetcher and StoreThreads on `db`."""

    async def main() -> T:
        store = StoreThreads(db)
        try:
            async with Fetcher(
                user_agent=DEFAULT_USER_AGENT,
                timeout=timeout,
                max_body_size=max_body_size,
                max_concurrency=8,
            ) as fetcher:
                return await fn(PollContext(fetcher, store, parse_pool))
        finally:
            store.close()

    return asyncio.run(main())


def poll(ctx: PollContext, name: str, url: str, now: datetime) -> Awaitable[PollOutcome]:
    return poll_source(ctx, Feed(name, url, PollPolicy(HOUR, jitter=False)), now)


def read(db: Path, fn: Callable[[Store], T]) -> T:
    store = Store(db)
    try:
        return fn(store)
    finally:
        store.close()


def state_of(db: Path, name: str) -> FeedStatus:
    state = read(db, lambda s: s.feed_state(name))
    assert state is not None
    return state


def entries_of(db: Path, name: str) -> list[StoredEntry]:
    return read(db, lambda s: list(s.iter_entries([name])))


def test_second_poll_is_not_modified_and_stores_nothing(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")

    first = run_polls(db, lambda ctx: poll(ctx, "blog", url, T0))

    assert (first.status, first.new, first.updated, first.error) == ("ok", 4, 0, None)
    state = state_of(db, "blog")
    assert state.entry_count == 4
    assert state.title == "Byte Street Engineering Blog"
    assert state.link == "https://blog.example.com/"
    assert (state.last_status, state.http_status, state.error_count) == ("ok", 200, 0)
    assert state.last_poll == state.last_ok == T0
    assert state.next_poll == T0 + HOUR
    generation = read(db, lambda s: s.generation())
    rows = entries_of(db, "blog")

    second = run_polls(db, lambda ctx: poll(ctx, "blog", url, T0 + HOUR))

    assert (second.status, second.new, second.updated) == ("not_modified", 0, 0)
    after = state_of(db, "blog")
    assert (after.last_status, after.http_status) == ("not_modified", 304)
    assert after.last_poll == T0 + HOUR
    assert after.validators == state.validators
    assert after.body_hash == state.body_hash
    assert entries_of(db, "blog") == rows
    assert read(db, lambda s: s.count_entries()) == 4
    assert read(db, lambda s: s.generation()) == generation
    plain, conditional = feed_server.requests("/feed.xml")
    assert "If-None-Match" not in plain.headers
    assert conditional.headers["If-None-Match"] == state.validators.etag
    assert conditional.headers["If-Modified-Since"] == state.validators.last_modified
    assert conditional.status == 304


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the parse jobs it was given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def test_identical_bytes_without_validators_are_unchanged(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml", etag=False, last_modified=False)
    url = feed_server.url("/feed.xml")
    pool = CountingExecutor()
    try:
        first = run_polls(db, lambda ctx: poll(ctx, "blog", url, T0), parse_pool=pool)
        assert (first.status, pool.jobs) == ("ok", 1)
        generation = read(db, lambda s: s.generation())

        second = run_polls(db, lambda ctx: poll(ctx, "blog", url, T0 + HOUR), parse_pool=pool)
    finally:
        pool.shutdown()

    assert (second.status, second.new, second.updated) == ("unchanged", 0, 0)
    assert pool.jobs == 1  # the body hash matched: nothing was parsed
    state = state_of(db, "blog")
    assert (state.last_status, state.http_status, state.last_ok) == ("unchanged", 200, T0 + HOUR)
    assert state.validators.etag is None and state.validators.last_modified is None
    assert state.entry_count == 4
    assert read(db, lambda s: s.generation()) == generation
    [_, again] = feed_server.requests("/feed.xml")
    assert "If-None-Match" not in again.headers
    assert "If-Modified-Since" not in again.headers


def test_edited_feed_updates_entry_in_place(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")
    run_polls(db, lambda ctx: poll(ctx, "blog", url, T0))
    [before] = [s for s in entries_of(db, "blog") if s.entry.key == EDITED_GUID]
    generation = read(db, lambda s: s.generation())

    edited = (DATA_DIR / "rss20-edited.xml").read_bytes()
    feed_server.serve_bytes("/feed.xml", edited, "application/rss+xml")
    later = T0 + timedelta(days=1)
    outcome = run_polls(db, lambda ctx: poll(ctx, "blog", url, later))

    assert (outcome.status, outcome.new, outcome.updated) == ("ok", 0, 1)
    rows = entries_of(db, "blog")
    assert len(rows) == 4
    [after] = [s for s in rows if s.entry.key == EDITED_GUID]
    assert after.entry.uid == before.entry.uid
    assert after.entry.title == "Post-mortem: the 14-minute DNS outage (updated)"
    assert "negative TTL lowered" in after.entry.content
    assert after.entry.content_hash != before.entry.content_hash
    assert after.first_seen == before.first_seen == T0
    assert after.last_changed == later
    assert before.last_changed == T0
    # Entries that did not change keep their last_changed.
    assert {s.last_changed for s in rows if s.entry.key != EDITED_GUID} == {T0}
    assert read(db, lambda s: s.generation()) == generation + 1
    # The undated note keeps the date it was first seen, not the time of the later poll.
    [note] = [s for s in rows if s.entry.key == "guid:byte-street-note-42"]
    assert not note.entry.date_known
    assert note.entry.published == T0


def test_failures_are_recorded_on_their_feed_only(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    limit = 128 * 1024
    feed_server.serve_file("/good.xml", "rss20.xml")
    feed_server.serve_status("/broken.xml", 500)
    feed_server.serve_slow("/slow.xml", 30.0)
    feed_server.serve_huge("/huge.xml", 32 * 1024 * 1024)
    feed_server.serve_file("/parked.xml", "not-a-feed.html")
    bad = {"broken": "HTTP 500", "slow": "timed out", "huge": "over the", "parked": "not a feed"}
    # The status a fetch error carries (a parse error has none to carry).
    http_statuses = {"broken": 500, "slow": None, "huge": 200}

    async def all_at_once(ctx: PollContext, now: datetime) -> list[PollOutcome]:
        names = ["good", *bad]
        return await asyncio.gather(
            *(poll(ctx, n, feed_server.url(f"/{n}.xml"), now) for n in names)
        )

    for round_, now in enumerate([T0, T0 + HOUR], start=1):
        outcomes = run_polls(
            db, lambda ctx, now=now: all_at_once(ctx, now), timeout=1.0, max_body_size=limit
        )
        by_name = {o.feed: o for o in outcomes}
        assert by_name["good"].status == ("ok" if round_ == 1 else "not_modified")
        for name, message in bad.items():
            assert by_name[name].status == "error", name
            assert by_name[name].error is not None and message in by_name[name].error
            state = state_of(db, name)
            assert state.last_status == "error"
            assert state.error_count == round_, name
            assert state.last_error is not None and message in state.last_error, name
            if name in http_statuses:
                assert state.http_status == http_statuses[name], name
            assert state.last_poll == now
            assert state.last_ok is None
            assert state.entry_count == 0

    good = state_of(db, "good")
    assert (good.error_count, good.last_error, good.entry_count) == (0, None, 4)

    # A success clears the error count and message.
    feed_server.serve_file("/broken.xml", "atom10.xml")
    later = T0 + 2 * HOUR
    outcome = run_polls(db, lambda ctx: poll(ctx, "broken", feed_server.url("/broken.xml"), later))
    assert (outcome.status, outcome.new) == ("ok", 3)
    state = state_of(db, "broken")
    assert (state.last_status, state.error_count, state.last_error) == ("ok", 0, None)
    assert (state.http_status, state.last_ok) == (200, later)


def test_generation_grows_only_when_entries_change(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")
    seen: list[int] = []

    async def twice(ctx: PollContext, now: datetime) -> None:
        ctx = PollContext(ctx.fetcher, ctx.store, ctx.parse_pool, seen.append)
        await poll(ctx, "blog", url, now)

    run_polls(db, lambda ctx: twice(ctx, T0))  # new entries
    run_polls(db, lambda ctx: twice(ctx, T0 + HOUR))  # 304
    rebuilt = (DATA_DIR / "rss20.xml").read_bytes().replace(b"Wed, 11 Oct", b"Thu, 12 Oct")
    feed_server.serve_bytes("/feed.xml", rebuilt, "application/rss+xml")
    run_polls(db, lambda ctx: twice(ctx, T0 + 2 * HOUR))  # new bytes, no entry changed
    feed_server.serve_status("/feed.xml", 503)
    run_polls(db, lambda ctx: twice(ctx, T0 + 3 * HOUR))  # error
    feed_server.serve_file("/feed.xml", "rss20-edited.xml")
    run_polls(db, lambda ctx: twice(ctx, T0 + 4 * HOUR))  # one entry updated

    assert seen == [1, 1, 1, 1, 2]
    assert read(db, lambda s: s.generation()) == 2


def test_json_feed_entries_are_stored(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.json", "jsonfeed11.json")

    outcome = run_polls(db, lambda ctx: poll(ctx, "json", feed_server.url("/feed.json"), T0))

    assert (outcome.status, outcome.new) == ("ok", 3)
    rows = entries_of(db, "json")
    assert len(rows) == 3
    assert all(s.entry.key_kind == "guid" for s in rows)
    assert all("utm_" not in (s.entry.link or "") for s in rows)
    assert state_of(db, "json").title


def test_parsing_in_a_worker_process(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml")
    feed_server.serve_file("/parked.xml", "not-a-feed.html")

    async def both(ctx: PollContext) -> list[PollOutcome]:
        return await asyncio.gather(
            poll(ctx, "blog", feed_server.url("/feed.xml"), T0),
            poll(ctx, "parked", feed_server.url("/parked.xml"), T0),
        )

    pool = make_parse_pool(1)
    try:
        good, parked = run_polls(db, both, parse_pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    assert (good.status, good.new) == ("ok", 4)
    # The ParseError raised in the worker crossed the process boundary intact.
    assert parked.status == "error"
    assert parked.error is not None and parked.error.startswith("not a feed")
    state = state_of(db, "parked")
    assert (state.error_count, state.last_error) == (1, parked.error)


def test_moved_feed_does_not_send_old_validators(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed_server.serve_file("/old.xml", "rss20.xml")
    feed_server.serve_file("/new.xml", "rss20.xml")
    run_polls(db, lambda ctx: poll(ctx, "blog", feed_server.url("/old.xml"), T0))
    read(db, lambda s: s.sync_feeds([("blog", feed_server.url("/new.xml"))]))

    outcome = run_polls(db, lambda ctx: poll(ctx, "blog", feed_server.url("/new.xml"), T0 + HOUR))

    # Same bytes at a new URL: fetched in full and parsed, and nothing in it is new.
    assert (outcome.status, outcome.new, outcome.updated) == ("ok", 0, 0)
    [request] = feed_server.requests("/new.xml")
    assert "If-None-Match" not in request.headers
    assert "If-Modified-Since" not in request.headers
    assert state_of(db, "blog").url == feed_server.url("/new.xml")


def test_feed_state_is_kept_in_memory_until_another_process_writes(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """Polls take a feed's state from memory (no read before the request); a commit by another
    connection, such as `aggregator fetch` run beside the daemon, makes them read it again."""
    import sqlite3

    db = tmp_path / "x.db"
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")

    async def scenario(ctx: PollContext) -> list[str]:
        statuses = [(await poll(ctx, "blog", url, T0)).status]
        assert len(ctx.states) == 1
        statuses.append((await poll(ctx, "blog", url, T0 + HOUR)).status)
        # Another process forgets the validators and body hash.
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE feeds SET etag = NULL, last_modified = NULL, body_hash = NULL "
                "WHERE name = 'blog'"
            )
        conn.close()
        for hours in (2, 3):
            statuses.append((await poll(ctx, "blog", url, T0 + hours * HOUR)).status)
        return statuses

    statuses = run_polls(db, scenario)
    requests = feed_server.requests("/feed.xml")
    assert statuses[:2] == ["ok", "not_modified"]
    assert "If-None-Match" in requests[1].headers  # the validators came from memory
    # The first write after the outside commit noticed it; the next poll read the row again,
    # as the outside process left it: no validators to send.
    assert "If-None-Match" not in requests[3].headers
    assert statuses[3] == "ok"


def test_a_poll_with_nothing_to_store_gives_back_its_slot_before_writing(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """The work slot bounds bodies and parsed entries in memory until they are committed; a
    304 holds neither, so its write (which lingers for company) must not hold up a fetch."""
    from dataclasses import replace

    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")
    held_while_writing: list[bool] = []

    async def scenario(ctx: PollContext) -> list[str]:
        ctx = replace(ctx, work=asyncio.Semaphore(1))
        real = ctx.store.write_batched

        async def observed(fn: Callable[[Store], T], ahead: AheadWrite | None = None) -> T:
            held_while_writing.append(ctx.work.locked())
            return await real(fn, ahead)

        ctx.store.write_batched = observed  # type: ignore[method-assign]
        first = await poll(ctx, "blog", url, T0)
        second = await poll(ctx, "blog", url, T0 + HOUR)
        return [first.status, second.status]

    assert run_polls(tmp_path / "x.db", scenario) == ["ok", "not_modified"]
    assert held_while_writing == [True, False]
