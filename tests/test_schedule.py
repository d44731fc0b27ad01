"""Scheduling policy (pure) and the APScheduler wiring on a real event loop."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.ingest.schedule import FeedScheduler, first_run, jitter

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
