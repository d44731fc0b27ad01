"""The claim loop (cluster.py) in one process, on the real PostgreSQL test server and loopback
feed servers: leases renewed while a slow poll runs, unstarted claims handed back at a stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from feedserver import FeedServer

from aggregator.cluster import ClaimLoop
from aggregator.config.load import load_config
from aggregator.models import FeedState, NextKind, PollOutcome
from aggregator.runtime import open_runtime
from aggregator.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def host() -> Iterator[FeedServer]:
    server = FeedServer("127.0.0.2")
    try:
        yield server
    finally:
        server.close()


def rows(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql.encode()).fetchall()


async def until(check: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def config(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer, **settings: Any
) -> Any:
    names = ("slow", "next", "last")
    for name in names:
        host.serve_slow(f"/{name}.xml", 0.0)
    body = "".join(f'[[feeds]]\nname = "{n}"\nurl = "{host.url(f"/{n}.xml")}"\n\n' for n in names)
    return load_config(write_config(body, **{"database": pg_url, "interval": "1h", **settings}))


def test_a_poll_longer_than_its_lease_keeps_it(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer
) -> None:
    cfg = config(write_config, pg_url, host, lease="3s", host_delay="0s", host_concurrency=3)
    host.serve_slow("/slow.xml", 5.0)  # past the lease: only renewals keep it
    outcomes: list[PollOutcome] = []

    async def run() -> None:
        async with open_runtime(cfg) as one, open_runtime(cfg) as other:
            first, second = ClaimLoop(lambda o, now: outcomes.append(o)), ClaimLoop()
            first.start(one, "first")
            await until(lambda: first.held == 3, "the first poller to claim every feed")
            second.start(other, "second")  # claims nothing while the leases are renewed
            await until(lambda: len(outcomes) == 3, "every poll to end")
            await first.stop()
            await second.stop()

    asyncio.run(run())
    assert sorted((o.feed, o.status) for o in outcomes) == [
        ("last", "ok"),
        ("next", "ok"),
        ("slow", "ok"),
    ]
    assert len(host.requests("/slow.xml")) == 1  # never taken over, never polled twice
    assert rows(pg_url, "SELECT count(*) FROM feeds WHERE lease_owner IS NOT NULL") == [(0,)]


def test_a_stop_hands_back_the_claims_not_started(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer
) -> None:
    # One host, a start every 2 s: of the three feeds, two are claimed with starts ahead.
    cfg = config(write_config, pg_url, host, host_delay="2s", host_concurrency=3)

    async def run() -> None:
        async with open_runtime(cfg) as rt:
            loop = ClaimLoop()
            loop.start(rt, "only")
            await until(lambda: loop.held == 3, "the poller to claim every feed")
            await until(lambda: len(host.requests()) == 1, "the first poll")
            await loop.stop()

    asyncio.run(run())
    assert len(host.requests()) == 1
    leased = rows(pg_url, "SELECT name FROM feeds WHERE lease_owner IS NOT NULL ORDER BY name")
    assert leased == []  # the two waiting for their start were released for other pollers
    polled = rows(pg_url, "SELECT name FROM feeds WHERE last_status = 'ok'")
    assert polled == [("last",)]


def test_a_claim_waiting_for_a_free_slot_has_not_started(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer
) -> None:
    """A poller holds more claims than it runs at once (cluster.CLAIM_DEPTH): one waiting for
    a free slot has sent nothing, so a stop hands it back at once, as one waiting for its
    start, and it is never polled by this poller."""
    cfg = config(write_config, pg_url, host, max_concurrency=1, host_delay="0s", host_concurrency=3)
    host.serve_slow("/last.xml", 3.0)  # the first claimed holds the only slot meanwhile

    async def run() -> None:
        async with open_runtime(cfg) as rt:
            loop = ClaimLoop()
            loop.start(rt, "only")
            await until(lambda: loop.held == 2, "the poller to claim two feeds")
            await asyncio.sleep(1.0)  # the first one's request under way, the other waiting
            await loop.stop()

    asyncio.run(run())
    assert host.requests("/next.xml") == []
    leased = rows(pg_url, "SELECT name FROM feeds WHERE lease_owner IS NOT NULL ORDER BY name")
    assert leased == []  # released by the stop, not left to run out
    polled = rows(pg_url, "SELECT name FROM feeds WHERE last_status = 'ok'")
    assert polled == [("last",)]


def test_each_feed_is_polled_again_when_its_next_poll_comes(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer
) -> None:
    cfg = config(write_config, pg_url, host, interval="5s", min_interval="5s", host_delay="0s")

    async def run() -> None:
        async with open_runtime(cfg) as one, open_runtime(cfg) as other:
            # A feed of another poller's config (stored after ours were opened): never ours.
            with psycopg.connect(pg_url) as conn:
                conn.execute(
                    "INSERT INTO feeds (name, url, origin) VALUES ('stranger', %s, %s)",
                    [host.url("/stranger.xml"), host.base_url],
                )
            first, second = ClaimLoop(), ClaimLoop()
            first.start(one, "first")
            second.start(other, "second")
            await until(
                lambda: all(len(host.requests(f"/{n}.xml")) >= 3 for n in ("slow", "next", "last")),
                "three polls of every feed",
            )
            await first.stop()
            await second.stop()

    asyncio.run(run())
    assert host.requests("/stranger.xml") == []
    assert rows(pg_url, "SELECT lease_owner FROM feeds WHERE name = 'stranger'") == [(None,)]
    for name in ("slow", "next", "last"):
        arrivals = [r.monotonic for r in host.requests(f"/{name}.xml")]
        # Polled on its 5 s interval by one poller or the other, never twice for one due time
        # (a second poll of one due time would come at once, not seconds later).
        assert min(b - a for a, b in itertools.pairwise(arrivals)) > 2.5, (name, arrivals)


def test_a_shortened_interval_brings_stored_next_polls_forward(
    write_config: Callable[..., Path], pg_url: str, host: FeedServer
) -> None:
    # As the SQLite daemon caps its timers: at a start and at each reload, a stored plain
    # interval decision comes forward to the config's interval; a server's Retry-After stays.
    cfg = config(write_config, pg_url, host, interval="2h", max_interval="2h", host_delay="0s")
    now = datetime.now(UTC).replace(microsecond=0)
    day, noon = now + timedelta(days=1), now + timedelta(hours=12)
    store = PostgresStore(pg_url)
    try:
        store.sync_feeds([(name, feed.url) for name, feed in cfg.feeds.items()])
        for name, kind, when in (
            ("slow", NextKind.INTERVAL, day),
            ("next", NextKind.RETRY_AFTER, noon),
        ):
            store.save_poll(
                FeedState(name, cfg.feeds[name].url, last_poll=now, next_poll=when, next_kind=kind)
            )
    finally:
        store.close()

    def next_polls() -> dict[str, datetime]:
        return dict(rows(pg_url, "SELECT name, next_poll FROM feeds WHERE name <> 'last'"))

    async def run() -> dict[str, datetime]:
        async with open_runtime(cfg) as rt:
            loop = ClaimLoop()
            loop.start(rt, "only")
            await until(lambda: next_polls()["slow"] < day, "the start to cap the stored wait")
            capped = next_polls()
            # A reload to a shorter interval: capped again at the next claim.
            shorter = config(write_config, pg_url, host, interval="30m", host_delay="0s")
            states = {s.name: s for s in await rt.store.read(lambda s: s.feed_states())}
            rt.follow(shorter, states, datetime.now(UTC))
            await until(lambda: next_polls()["slow"] < capped["slow"], "the reload to cap it again")
            await loop.stop()
            return capped

    capped = asyncio.run(run())
    assert now + timedelta(hours=2) <= capped["slow"] <= now + timedelta(hours=2, minutes=6)
    after = next_polls()
    assert now + timedelta(minutes=30) <= after["slow"] <= now + timedelta(minutes=34)
    assert capped["next"] == after["next"] == noon  # the Retry-After is kept
    assert host.requests("/slow.xml") == host.requests("/next.xml") == []  # none came due
