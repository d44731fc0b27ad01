"""Polite, resilient polling against the loopback fault server, with an injected clock.

Each test drives poll_source with a real Fetcher and SQLite and a `now` it chooses, and checks
the decided times and reasons, the stored state, and on the server side what was requested.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import free_port
from faultserver import FaultServer

from aggregator.config.load import parse_config
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.ingest.decide import PollPolicy, jitter
from aggregator.ingest.fetch import Fetcher
from aggregator.ingest.hosts import HostGates, HostLimit, origin
from aggregator.ingest.poll import Feed, PollContext, poll_source
from aggregator.models import FeedState, FeedStatus, NextKind, PollOutcome
from aggregator.runtime import make_gates
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

T = TypeVar("T")
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
SECOND = timedelta(seconds=1)
POLICY = PollPolicy(
    interval=30 * M, min_interval=M, max_interval=24 * H, max_backoff=24 * H, jitter=False
)
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Feed</title>
<link>http://example.org/</link><description>d</description>
<item><title>One</title><guid>one</guid><pubDate>Mon, 02 Mar 2026 08:00:00 GMT</pubDate></item>
<item><title>Two</title><guid>two</guid><pubDate>Mon, 02 Mar 2026 09:00:00 GMT</pubDate></item>
</channel></rss>"""
HTML = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body></body></html>"


@pytest.fixture
def servers() -> Iterator[list[FaultServer]]:
    started = [FaultServer(), FaultServer()]
    try:
        yield started
    finally:
        for s in started:
            s.close()


class CountingPool(ThreadPoolExecutor):
    """Runs parsing in a thread and counts how often it was asked to."""

    def __init__(self) -> None:
        super().__init__(1)
        self.parses = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.parses += 1
        return super().submit(fn, *args, **kwargs)


def run(
    db: Path,
    script: Callable[[PollContext], Awaitable[T]],
    *,
    hosts: HostGates | None = None,
    parse_pool: ThreadPoolExecutor | None = None,
) -> T:
    async def main() -> T:
        store = StoreThreads(db)
        try:
            async with Fetcher(
                user_agent=DEFAULT_USER_AGENT, timeout=5, max_body_size=1 << 20, max_concurrency=16
            ) as fetcher:
                ctx = PollContext(fetcher, store, parse_pool, hosts=hosts or HostGates())
                return await script(ctx)
        finally:
            store.close()

    return asyncio.run(main())


def poll(ctx: PollContext, name: str, url: str, now: datetime) -> Awaitable[PollOutcome]:
    return poll_source(ctx, Feed(name, url, POLICY), now)


def state_of(db: Path, name: str) -> FeedStatus:
    store = Store(db)
    try:
        state = store.feed_state(name)
        assert state is not None
        return state
    finally:
        store.close()


def entry_count(db: Path, name: str) -> int:
    store = Store(db)
    try:
        return store.count_entries(name)
    finally:
        store.close()


@pytest.mark.parametrize("status", [404, 500, 502])
def test_a_failing_feed_backs_off_up_to_the_cap_and_is_never_abandoned(
    servers: list[FaultServer], tmp_path: Path, status: int
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_status("/f.xml", status)
    url = server.url("/f.xml")

    async def script(ctx: PollContext) -> list[tuple[timedelta, str]]:
        schedule, now = [], T0
        for _ in range(9):
            outcome = await poll(ctx, "f", url, now)
            assert outcome.status == "error" and outcome.next_poll is not None
            schedule.append((outcome.next_poll - now, outcome.reason))
            now = outcome.next_poll
        return schedule

    schedule = run(db, script)
    assert [w / H for w, _ in schedule] == [0.5, 1, 2, 4, 8, 16, 24, 24, 24]
    assert schedule[2][1] == "backoff after 3 errors: 2h"
    assert schedule[-1][1] == "backoff after 9 errors: 1d (max_backoff)"
    state = state_of(db, "f")
    assert (state.status, state.error_count, state.backoff_level) == ("error", 9, 9)
    assert state.failing_since == T0
    assert state.last_error is not None and state.last_error.startswith(f"HTTP {status}")
    assert len(server.hits_of("/f.xml")) == 9

    # The feed comes back: everything is forgiven at once.
    server.serve_bytes("/f.xml", FEED, "application/rss+xml")
    later = T0 + 10 * 24 * H
    outcome = run(db, lambda ctx: poll(ctx, "f", url, later))
    assert (outcome.status, outcome.next_poll, outcome.reason) == (
        "ok",
        later + 30 * M,
        "interval 30m",
    )
    state = state_of(db, "f")
    assert (state.error_count, state.backoff_level, state.failing_since) == (0, 0, None)


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        ("120", 2 * M),
        (format_datetime(T0 + 15 * M, usegmt=True), 15 * M),
    ],
    ids=["seconds", "http-date"],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_holds_back_every_feed_of_the_host(
    servers: list[FaultServer], tmp_path: Path, status: int, retry_after: str, wait: timedelta
) -> None:
    server, other = servers
    server.serve_status("/limited.xml", status, {"Retry-After": retry_after})
    server.serve_bytes("/sibling.xml", FEED, "application/rss+xml")
    other.serve_bytes("/elsewhere.xml", FEED, "application/rss+xml")

    async def script(ctx: PollContext) -> list[PollOutcome]:
        limited = await poll(ctx, "limited", server.url("/limited.xml"), T0)
        sibling = await poll(ctx, "sibling", server.url("/sibling.xml"), T0 + 10 * SECOND)
        elsewhere = await poll(ctx, "elsewhere", other.url("/elsewhere.xml"), T0 + M)
        assert sibling.next_poll is not None
        again = await poll(ctx, "sibling", server.url("/sibling.xml"), sibling.next_poll)
        return [limited, sibling, elsewhere, again]

    limited, sibling, elsewhere, again = run(tmp_path / "db.sqlite", script)
    assert limited.status == "error" and limited.next_poll is not None
    assert limited.reason == f"Retry-After {int(wait / M)}m"
    assert limited.next_poll >= T0 + wait
    # The sibling was not requested while the host asked us to wait, and was told when to come.
    assert sibling.status == "deferred" and sibling.next_poll is not None
    assert T0 + wait <= sibling.next_poll <= T0 + wait + jitter(wait)
    assert sibling.reason == f"Retry-After of {origin(server.base_url)}"
    assert [h.path for h in server.hits] == ["/limited.xml", "/sibling.xml"]
    assert elsewhere.status == "ok"  # another host is not held back
    assert again.status == "ok"
    state = state_of(tmp_path / "db.sqlite", "limited")
    assert state.last_error is not None and state.last_error.startswith(f"HTTP {status}")


def test_a_permanent_redirect_chain_moves_the_feed_and_is_reported_once_confirmed(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_redirect("/old.xml", "/mid.xml", 301)
    server.serve_redirect("/mid.xml", "/new.xml", 308)
    server.serve_bytes("/new.xml", FEED, "application/rss+xml")
    url = server.url("/old.xml")

    async def script(ctx: PollContext) -> list[FeedState]:
        states, now = [], T0
        for _ in range(3):
            outcome = await poll(ctx, "f", url, now)
            assert outcome.status in ("ok", "not_modified") and outcome.next_poll is not None
            states.append(await ctx.store.read(lambda s: s.feed_state("f")))  # type: ignore[arg-type]
            now = outcome.next_poll
        return states

    first, second, third = run(db, script)
    assert first.redirect_url == server.url("/new.xml") and first.redirect_count == 1
    assert first.status == "redirected" and first.config_hint is None
    assert first.url == url  # the configured URL is the user's to change
    assert (second.redirect_count, third.redirect_count) == (2, 3)
    assert third.config_hint is not None and server.url("/new.xml") in third.config_hint
    # The old URL and the hop were requested once; the new URL directly from then on.
    assert len(server.hits_of("/old.xml")) == len(server.hits_of("/mid.xml")) == 1
    assert len(server.hits_of("/new.xml")) == 3
    assert entry_count(db, "f") == 2


def test_a_temporary_hop_stops_the_permanent_move_where_it_is(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server = servers[0]
    server.serve_redirect("/old.xml", "/mid.xml", 301)
    server.serve_redirect("/mid.xml", "/final.xml", 302)
    server.serve_bytes("/final.xml", FEED, "application/rss+xml")
    run(tmp_path / "db.sqlite", lambda ctx: poll(ctx, "f", server.url("/old.xml"), T0))
    assert state_of(tmp_path / "db.sqlite", "f").redirect_url == server.url("/mid.xml")


@pytest.mark.parametrize("status", [302, 307])
def test_a_temporary_redirect_never_changes_the_url(
    servers: list[FaultServer], tmp_path: Path, status: int
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_redirect("/feed.xml", "/today.xml", status)
    server.serve_bytes("/today.xml", FEED, "application/rss+xml")

    async def script(ctx: PollContext) -> None:
        for i in range(3):
            await poll(ctx, "f", server.url("/feed.xml"), T0 + i * H)

    run(db, script)
    state = state_of(db, "f")
    assert state.redirect_url is None and state.status in ("ok", "not_modified")
    assert len(server.hits_of("/feed.xml")) == 3
    assert state.url == server.url("/feed.xml")


def test_a_gone_feed_keeps_its_entries_and_receives_no_request_at_all(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_bytes("/f.xml", FEED, "application/rss+xml")
    url = server.url("/f.xml")
    run(db, lambda ctx: poll(ctx, "f", url, T0))
    server.serve_status("/f.xml", 410)

    async def script(ctx: PollContext) -> list[PollOutcome]:
        return [await poll(ctx, "f", url, T0 + i * H) for i in range(1, 5)]

    gone, *after = run(db, script)
    assert (gone.status, gone.next_poll) == ("gone", None)
    assert gone.reason == "gone (HTTP 410): not polled again"
    assert all(o.status == "gone" for o in after)
    assert len(server.hits_of("/f.xml")) == 2  # the first 200 and the 410, nothing since
    state = state_of(db, "f")
    assert (state.status, state.gone, state.next_poll) == ("gone", True, None)
    assert entry_count(db, "f") == 2

    # A new URL in the config is a new resource: it is polled again.
    server.serve_bytes("/moved.xml", FEED, "application/rss+xml")
    new_url = server.url("/moved.xml")

    async def resync(ctx: PollContext) -> PollOutcome:
        await ctx.store.write(lambda s: s.sync_feeds([("f", new_url)]))
        return await poll(ctx, "f", new_url, T0 + 10 * H)

    assert run(db, resync).status == "ok"
    state = state_of(db, "f")
    assert (state.gone, state.backoff_level, state.url) == (False, 0, new_url)


def test_an_html_page_is_an_error_and_never_an_empty_feed(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_bytes("/f.xml", FEED, "application/rss+xml")
    url = server.url("/f.xml")
    run(db, lambda ctx: poll(ctx, "f", url, T0))
    server.serve_bytes("/f.xml", HTML, "text/html; charset=utf-8")
    outcome = run(db, lambda ctx: poll(ctx, "f", url, T0 + H))
    assert outcome.status == "error" and outcome.error is not None
    assert "HTML page" in outcome.error
    assert outcome.reason == "backoff after 1 error: 30m"
    assert entry_count(db, "f") == 2
    assert state_of(db, "f").status == "error"


def test_an_identical_body_without_validators_is_not_parsed_again(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_bytes("/f.xml", FEED, "application/rss+xml", etag=False, last_modified=False)
    pool = CountingPool()

    async def script(ctx: PollContext) -> list[PollOutcome]:
        return [await poll(ctx, "f", server.url("/f.xml"), T0 + i * H) for i in range(3)]

    try:
        outcomes = run(db, script, parse_pool=pool)
    finally:
        pool.shutdown()
    assert [o.status for o in outcomes] == ["ok", "unchanged", "unchanged"]
    assert pool.parses == 1
    assert all("If-None-Match" not in h.headers for h in server.hits)


def test_a_slow_body_is_read_in_full(servers: list[FaultServer], tmp_path: Path) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_drip("/slow.xml", FEED, chunks=5, pause=0.05)
    outcome = run(db, lambda ctx: poll(ctx, "f", server.url("/slow.xml"), T0))
    assert (outcome.status, outcome.new) == ("ok", 2)


@pytest.mark.parametrize("limit", [1, 3])
def test_host_concurrency_holds_on_the_server_side(
    servers: list[FaultServer], tmp_path: Path, limit: int
) -> None:
    server = servers[0]
    for i in range(8):
        server.serve_bytes(f"/f{i}.xml", FEED, "application/rss+xml")
        server.serve_slow(f"/f{i}.xml", 0.1)
    gates = HostGates({origin(server.base_url): HostLimit(limit, timedelta(0))})

    async def script(ctx: PollContext) -> list[PollOutcome]:
        return await asyncio.gather(
            *(poll(ctx, f"f{i}", server.url(f"/f{i}.xml"), T0) for i in range(8))
        )

    outcomes = run(tmp_path / "db.sqlite", script, hosts=gates)
    assert all(o.status == "ok" for o in outcomes)
    assert server.max_in_flight == limit


def test_host_delay_defers_the_second_feed_of_a_host(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server = servers[0]
    for name in ("a", "b"):
        server.serve_bytes(f"/{name}.xml", FEED, "application/rss+xml")
    gates = HostGates({origin(server.base_url): HostLimit(1, timedelta(seconds=30))})

    async def script(ctx: PollContext) -> list[PollOutcome]:
        a = await poll(ctx, "a", server.url("/a.xml"), T0)
        b = await poll(ctx, "b", server.url("/b.xml"), T0 + timedelta(seconds=5))
        assert b.next_poll is not None
        b_again = await poll(ctx, "b", server.url("/b.xml"), b.next_poll)
        return [a, b, b_again]

    a, b, b_again = run(tmp_path / "db.sqlite", script, hosts=gates)
    assert a.status == "ok"
    assert (b.status, b.next_poll) == ("deferred", T0 + timedelta(seconds=30))
    assert b.reason == f"host_delay of {origin(server.base_url)}"
    assert b_again.status == "ok"
    assert [h.path for h in server.hits] == ["/a.xml", "/b.xml"]


@pytest.mark.parametrize("paced", [True, False])
def test_host_delay_holds_on_the_wire_however_late_the_requests_leave(
    tmp_path: Path, paced: bool
) -> None:
    # Turns a second apart on the polls' clock, but every poll runs at the same real moment:
    # only pacing keeps their requests host_delay apart on arrival.
    server = FaultServer(clock=lambda: datetime.now(UTC))
    delay = timedelta(milliseconds=200)
    try:
        for i in range(5):
            server.serve_bytes(f"/f{i}.xml", FEED, "application/rss+xml")
        gates = HostGates({origin(server.base_url): HostLimit(5, delay)}, paced=paced)

        async def script(ctx: PollContext) -> list[PollOutcome]:
            return await asyncio.gather(
                *(poll(ctx, f"f{i}", server.url(f"/f{i}.xml"), T0 + i * SECOND) for i in range(5))
            )

        outcomes = run(tmp_path / "db.sqlite", script, hosts=gates)
        arrivals = sorted(h.at for h in server.hits if h.at is not None)
    finally:
        server.close()
    assert [o.status for o in outcomes] == ["ok"] * 5 and len(arrivals) == 5
    closest = min(b - a for a, b in itertools.pairwise(arrivals))
    # Unpaced, they arrive together; the slack is the clock's and the loop's, never the delay's.
    assert (closest >= delay - timedelta(milliseconds=2)) is paced


def test_when_the_network_is_down_no_feed_is_penalised(tmp_path: Path) -> None:
    # Ten feeds on five hosts that all refuse connections: what the daemon sees with no network.
    urls = [f"http://127.0.0.1:{free_port()}/feed.xml" for _ in range(5)]
    feeds = [(f"f{i}", urls[i % 5]) for i in range(10)]

    async def script(ctx: PollContext) -> tuple[list[PollOutcome], list[PollOutcome]]:
        first = [await poll(ctx, name, url, T0) for name, url in feeds]
        second = [await poll(ctx, name, url, T0 + 30 * M) for name, url in feeds]
        return first, second

    first, second = run(tmp_path / "db.sqlite", script)
    assert all(o.status == "error" for o in first + second)
    # Once the pattern is clear, errors are recorded but nobody's backoff grows.
    assert all("network down, no backoff" in o.reason for o in second)
    assert all(o.next_poll == T0 + 60 * M for o in second)
    states = [state_of(tmp_path / "db.sqlite", name) for name, _ in feeds]
    assert all(s.backoff_level <= 1 and s.error_count == 2 for s in states)
    assert all(s.last_error and "cannot connect" in s.last_error for s in states)


def test_the_decision_and_its_state_survive_a_restart(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    server.serve_status("/f.xml", 500)
    url = server.url("/f.xml")

    async def script(ctx: PollContext) -> PollOutcome:
        await poll(ctx, "f", url, T0)
        return await poll(ctx, "f", url, T0 + 30 * M)

    outcome = run(db, script)
    state = state_of(db, "f")  # a fresh connection: what a restarted daemon reads
    assert (state.next_poll, state.next_reason) == (outcome.next_poll, outcome.reason)
    assert (state.backoff_level, state.failing_since, state.http_status) == (2, T0, 500)


def test_adaptive_mode_polls_a_busy_feed_more_often_than_its_interval(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server, db = servers[0], tmp_path / "db.sqlite"
    items = "".join(
        f"<item><title>{i}</title><guid>n{i}</guid>"
        f"<pubDate>{format_datetime(T0 - i * 10 * M, usegmt=True)}</pubDate></item>"
        for i in range(10)
    )
    busy = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Busy</title>'
        f"<link>http://example.org/</link><description>d</description>{items}</channel></rss>"
    ).encode()
    server.serve_bytes("/busy.xml", busy, "application/rss+xml")
    policy = PollPolicy(
        interval=30 * M, min_interval=M, max_interval=24 * H, adaptive=True, jitter=False
    )
    outcome = run(
        db, lambda ctx: poll_source(ctx, Feed("busy", server.url("/busy.xml"), policy), T0)
    )
    # An entry every 10 minutes: polled every 5, not every 30.
    assert (outcome.next_poll, outcome.reason) == (T0 + 5 * M, "adaptive 5m")


def test_a_restart_blocks_a_host_again_until_its_stored_retry_after(tmp_path: Path) -> None:
    config = parse_config(
        {
            "feeds": [
                {"name": "busy", "url": "http://a.example/busy.xml"},
                {"name": "sibling", "url": "http://a.example/other.xml"},
            ]
        }
    )
    states = {
        "busy": FeedState(
            "busy",
            "http://a.example/busy.xml",
            next_poll=T0 + 10 * M,
            next_reason="Retry-After 10m",
            next_kind=NextKind.RETRY_AFTER,
        )
    }
    gates = make_gates(config, states, T0)
    assert gates.blocked_until("http://a.example", T0 + M) == T0 + 10 * M
    assert make_gates(config, states, T0 + 11 * M).blocked_until("http://a.example", T0) is None


def test_a_redirect_loop_is_an_error_that_backs_off(
    servers: list[FaultServer], tmp_path: Path
) -> None:
    server = servers[0]
    server.serve_redirect("/a.xml", "/b.xml", 301)
    server.serve_redirect("/b.xml", "/a.xml", 308)
    outcome = run(tmp_path / "db.sqlite", lambda ctx: poll(ctx, "f", server.url("/a.xml"), T0))
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error.startswith("redirect loop")
    assert outcome.reason == "backoff after 1 error: 30m"
    state = state_of(tmp_path / "db.sqlite", "f")
    assert state.redirect_url is None  # a loop never moves the feed
