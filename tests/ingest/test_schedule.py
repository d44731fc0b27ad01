"""Scheduling policy (pure) and the APScheduler wiring on a real event loop."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.ingest.decide import PollPolicy
from aggregator.ingest.schedule import (
    FeedScheduler,
    capped_waits,
    first_poll,
    first_run,
    jitter,
    restart_cap,
    stored_block,
)
from aggregator.models import FeedState, NextKind

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (timedelta(seconds=30), timedelta(seconds=3)),
        (timedelta(minutes=30), timedelta(minutes=3)),
        (timedelta(hours=2), timedelta(minutes=5)),  # capped
        (timedelta(days=1), timedelta(minutes=5)),
    ],
)
def test_jitter_is_a_tenth_of_the_interval_at_most_five_minutes(
    interval: timedelta, expected: timedelta
) -> None:
    assert jitter(interval) == expected


def test_a_stored_next_poll_still_ahead_is_kept() -> None:
    stored = NOW + timedelta(minutes=7)
    assert first_run(stored, NOW, timedelta(minutes=30), random.Random(1)) == stored


def test_a_stored_next_poll_beyond_a_shortened_interval_is_capped() -> None:
    stored = NOW + timedelta(hours=5)
    assert first_run(stored, NOW, timedelta(hours=1), random.Random(1)) == NOW + timedelta(hours=1)


@pytest.mark.parametrize("stored", [None, NOW - timedelta(days=1), NOW])
def test_overdue_or_new_feeds_are_spread_over_a_short_window(stored: datetime | None) -> None:
    rng = random.Random(7)
    times = [first_run(stored, NOW, timedelta(minutes=30), rng) for _ in range(200)]
    assert all(NOW <= t <= NOW + timedelta(minutes=1) for t in times)
    # Spread out, not one burst at the same instant.
    assert len({t for t in times}) > 150


def test_short_intervals_spread_over_a_tenth_of_the_interval() -> None:
    rng = random.Random(3)
    times = [first_run(None, NOW, timedelta(seconds=10), rng) for _ in range(50)]
    assert all(NOW <= t <= NOW + timedelta(seconds=1) for t in times)


def test_a_longer_cap_keeps_a_stored_backoff_across_a_restart() -> None:
    stored = NOW + timedelta(hours=20)
    start = first_run(stored, NOW, timedelta(hours=1), random.Random(1), timedelta(hours=24))
    assert start == stored


H = timedelta(hours=1)
POLICY = PollPolicy(interval=H, max_interval=24 * H, max_backoff=48 * H)
URL = "https://a.example/feed.xml"


def stored(kind: NextKind | None, level: int = 0, **fields: object) -> FeedState:
    return FeedState("f", URL, next_kind=kind, backoff_level=level, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "cap"),
    [
        (None, H + jitter(H)),  # never polled
        (stored(None), H + jitter(H)),  # no decision yet
        (stored(NextKind.INTERVAL), H + jitter(H)),  # a shortened interval applies at once
        (stored(NextKind.RETRY_AFTER), 48 * H),  # the server's wait is honoured
        (stored(NextKind.BACKOFF, 3), 48 * H),
        (stored(NextKind.HOST_DELAY, 2), 48 * H),  # deferred while in backoff
        (stored(NextKind.NETWORK_DOWN, 2), 48 * H),
        (stored(NextKind.HOST_DELAY), 24 * H),
        (stored(NextKind.NETWORK_DOWN), 24 * H),
        (stored(NextKind.HINT), 24 * H),  # the feed's own ttl or caching headers
        (stored(NextKind.ADAPTIVE), 24 * H),
        (stored(NextKind.GONE), 24 * H),  # gone, then its URL changed
    ],
)
def test_which_stored_wait_a_restart_honours(state: FeedState | None, cap: timedelta) -> None:
    assert restart_cap(state, POLICY) == cap


def test_first_poll_after_a_start() -> None:
    rng = random.Random(1)
    ahead = NOW + 20 * H
    assert first_poll(stored(NextKind.GONE, gone=True), NOW, POLICY, rng) is None
    assert first_poll(stored(NextKind.BACKOFF, 5, next_poll=ahead), NOW, POLICY, rng) == ahead
    assert first_poll(stored(NextKind.INTERVAL, next_poll=ahead), NOW, POLICY, rng) == (
        NOW + H + jitter(H)
    )
    # A feed added by a reload and never polled goes now; a known one keeps its decision.
    assert first_poll(None, NOW, POLICY, rng, added=True) == NOW
    polled = stored(NextKind.HINT, next_poll=NOW + 2 * H, last_poll=NOW - H)
    assert first_poll(polled, NOW, POLICY, rng, added=True) == NOW + 2 * H
    start = first_poll(None, NOW, POLICY, rng)
    assert start is not None and NOW <= start <= NOW + timedelta(minutes=1)


def test_the_stored_waits_a_start_or_a_reload_cuts_short() -> None:
    # For pollers that claim feeds by their stored next poll (PostgreSQL), as first_poll caps
    # the SQLite daemon's timers.
    far = NOW + 20 * H
    states = {
        "interval": stored(NextKind.INTERVAL, next_poll=far),
        "soon": stored(NextKind.INTERVAL, next_poll=NOW + H / 2),
        "retry": stored(NextKind.RETRY_AFTER, next_poll=far),
        "hint": stored(NextKind.HINT, next_poll=NOW + 30 * H),
        "gone": stored(NextKind.GONE, next_poll=far, gone=True),
        "never": stored(None),
    }
    policies = {name: POLICY for name in [*states, "new"]}
    moves = capped_waits(policies, states, NOW.replace(microsecond=123))
    assert moves == [
        ("interval", far, NOW + H + jitter(H)),  # a shortened interval applies at once
        ("hint", NOW + 30 * H, NOW + 24 * H),  # at most max_interval
    ]


def test_a_stored_retry_after_blocks_its_host_until_it_passes() -> None:
    until = NOW + 10 * timedelta(minutes=1)
    state = stored(NextKind.RETRY_AFTER, next_poll=until)
    assert stored_block(state, URL, NOW) == ("https://a.example", until)
    assert stored_block(state, URL, until) is None
    assert stored_block(state, "https://b.example/feed.xml", NOW) is None  # another URL now
    redirected = stored(
        NextKind.RETRY_AFTER, next_poll=until, redirect_url="https://c.example/feed.xml"
    )
    assert stored_block(redirected, URL, NOW) == ("https://c.example", until)
    for kind in (NextKind.BACKOFF, NextKind.HOST_DELAY, NextKind.INTERVAL, None):
        assert stored_block(stored(kind, next_poll=until), URL, NOW) is None


def test_scheduler_fires_each_feed_once_and_a_poll_rearms_its_job() -> None:
    async def scenario() -> tuple[list[str], datetime | None, datetime | None]:
        fired: list[str] = []
        done = asyncio.Event()
        scheduler = FeedScheduler()

        async def poll(name: str) -> None:
            fired.append(name)
            if name == "a":
                # What the daemon does with a poll's decision: arm the feed's next (one-shot) run.
                scheduler.add(name, datetime.now(UTC) + timedelta(hours=1), poll)
            if len(fired) == 2:
                done.set()

        now = datetime.now(UTC)
        scheduler.add("a", now, poll)
        scheduler.add("b", now, poll)
        scheduler.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
            return fired, scheduler.next_run("a"), scheduler.next_run("b")
        finally:
            scheduler.shutdown()

    fired, next_a, next_b = asyncio.run(scenario())
    assert sorted(fired) == ["a", "b"]
    assert next_a is not None and next_a.tzinfo is not None
    assert timedelta(minutes=50) < next_a - datetime.now(UTC) <= timedelta(hours=1)
    assert next_b is None  # one-shot: not re-armed, not run again
