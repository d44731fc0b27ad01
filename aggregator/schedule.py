"""When each feed is next due (pure policy) and the APScheduler wiring that fires its polls.

The schedule's state lives in the database (`feeds.next_poll`): on start, a feed whose next poll
is still ahead waits for it, and overdue feeds are spread over a short window rather than fired in
one burst.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

MAX_JITTER = timedelta(minutes=5)
MAX_SPREAD = timedelta(minutes=1)
MISFIRE_GRACE = timedelta(minutes=5)


def jitter(interval: timedelta) -> timedelta:
    """Random slack added to each run, so feeds of one interval do not fire in lock-step."""
    return min(interval / 10, MAX_JITTER)


def first_run(
    stored_next: datetime | None, now: datetime, interval: timedelta, rng: random.Random
) -> datetime:
    """When a feed should first be polled after the daemon starts.

    A stored next poll still ahead is kept (capped at one interval, in case the interval was
    shortened); a feed never polled, or overdue, goes within a window of a tenth of its interval
    (at most a minute), so a restart does not fetch everything at the same instant.
    """
    if stored_next is not None and stored_next > now:
        return min(stored_next, now + interval)
    spread = min(interval / 10, MAX_SPREAD)
    return now + timedelta(seconds=rng.uniform(0, spread.total_seconds()))


class FeedScheduler:
    """One APScheduler job per feed, on its interval with jitter; coalesced, one at a time."""

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def add(
        self,
        name: str,
        interval: timedelta,
        start: datetime,
        poll: Callable[[str], Awaitable[None]],
    ) -> None:
        self._scheduler.add_job(
            poll,
            IntervalTrigger(
                seconds=int(interval.total_seconds()),
                jitter=int(jitter(interval).total_seconds()) or None,
                timezone=UTC,
            ),
            args=[name],
            id=name,
            name=f"poll {name}",
            next_run_time=start,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
            replace_existing=True,
        )

    def remove(self, name: str) -> None:
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        when: datetime | None = job.next_run_time if job is not None else None
        return when.astimezone(UTC) if when is not None else None
