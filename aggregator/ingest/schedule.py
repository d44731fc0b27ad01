"""When each feed is first due after a start (pure) and the APScheduler wiring that fires polls.

The schedule's state lives in the database (`feeds.next_poll` and `next_kind`, decided by
decide.py after each poll): on start, a feed whose next poll is still ahead waits for it, and
overdue feeds are spread over a short window rather than fired in one burst. Which stored waits
a restart honours is decided here, from the kind of the stored decision (never its reason
text). Each feed has one one-shot job; the poll's decision arms the next one.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from ..ingest.decide import MAX_JITTER, PollPolicy, jitter
from ..ingest.feedstate import poll_url, second
from ..ingest.hosts import origin
from ..models import FeedState, NextKind

__all__ = [
    "MAX_JITTER",
    "FeedScheduler",
    "capped_waits",
    "first_poll",
    "first_run",
    "jitter",
    "restart_cap",
    "stored_block",
]

MAX_SPREAD = timedelta(minutes=1)


def first_run(
    stored_next: datetime | None,
    now: datetime,
    interval: timedelta,
    rng: random.Random,
    cap: timedelta | None = None,
) -> datetime:
    """When a feed should first be polled after the daemon starts.

    A stored next poll still ahead is kept, capped at `cap` (default: one interval, in case the
    interval was shortened; the daemon passes a longer cap for a feed in backoff or Retry-After,
    so a restart does not cut a server's requested wait short); a feed never polled, or overdue,
    goes within a window of a tenth of its interval (at most a minute), so a restart does not
    fetch everything at the same instant.
    """
    if stored_next is not None and stored_next > now:
        return min(stored_next, now + (cap or interval))
    spread = min(interval / 10, MAX_SPREAD)
    return now + timedelta(seconds=rng.uniform(0, spread.total_seconds()))


def restart_cap(state: FeedState | None, policy: PollPolicy) -> timedelta:
    """The longest stored wait a (re)start honours for a feed.

    A plain interval decision (or none yet) is capped at one interval, so a shortened interval
    applies at once; a feed in backoff or under a Retry-After keeps its longer wait, so a
    restart does not cut a server's requested wait short; any other decision (the feed's own
    hints, the adaptive interval, a host_delay turn) keeps a wait of up to max_interval.
    """
    kind = state.next_kind if state is not None else None
    if state is None or kind is None or kind is NextKind.INTERVAL:
        return policy.interval + jitter(policy.interval)
    if state.backoff_level > 0 or kind is NextKind.RETRY_AFTER:
        return max(policy.max_backoff, policy.max_interval)
    return policy.max_interval


def first_poll(
    state: FeedState | None,
    now: datetime,
    policy: PollPolicy,
    rng: random.Random,
    added: bool = False,
) -> datetime | None:
    """When a feed is first polled after a start from its stored state; None: never (it is
    gone, until its URL changes). A feed `added` by a reload that was never polled is polled
    now (its host's limits permitting): only a cold start spreads first polls."""
    if state is not None and state.gone:
        return None
    if added and (state is None or state.last_poll is None):
        return now
    stored_next = state.next_poll if state is not None else None
    return first_run(stored_next, now, policy.interval, rng, restart_cap(state, policy))


def capped_waits(
    policies: Mapping[str, PollPolicy], states: Mapping[str, FeedState], now: datetime
) -> list[tuple[str, datetime, datetime]]:
    """The stored next polls that a (re)start or a reload cuts short, as (feed, stored time,
    new time): each later than `now` plus its restart_cap comes forward to that time (in
    whole seconds, as polls store it). For pollers that take due feeds from the stored next
    poll itself (PostgreSQL's claims), this is what first_poll does to the SQLite daemon's
    timers: a shortened interval applies at once, a server's longer wait is kept. Gone feeds
    wait for their URL to change, as there."""
    moves = []
    for name, policy in policies.items():
        state = states.get(name)
        if state is None or state.gone or state.next_poll is None:
            continue
        latest = second(now + restart_cap(state, policy))
        if state.next_poll > latest:
            moves.append((name, state.next_poll, latest))
    return moves


def stored_block(state: FeedState | None, url: str, now: datetime) -> tuple[str, datetime] | None:
    """The host and time a feed's stored Retry-After still blocks after a restart, so the
    other feeds of a host that asked us to wait do not fetch at once; None if it blocks none."""
    if (
        state is None
        or state.url != url
        or state.next_kind is not NextKind.RETRY_AFTER
        or state.next_poll is None
        or state.next_poll <= now
    ):
        return None
    return origin(poll_url(state, url)), state.next_poll


class FeedScheduler:
    """One one-shot APScheduler job per feed at its decided time; re-armed after each poll."""

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

    def add(self, name: str, when: datetime, poll: Callable[[str], Awaitable[None]]) -> None:
        """Poll `name` once at `when` (replacing any job it had)."""
        self._scheduler.add_job(
            poll,
            DateTrigger(run_date=when, timezone=UTC),
            args=[name],
            id=name,
            name=f"poll {name}",
            coalesce=True,
            max_instances=1,
            # A late job still runs, however late: a one-shot job that misfired would be dropped
            # and its feed never polled again.
            misfire_grace_time=None,
            replace_existing=True,
        )

    def remove(self, name: str) -> None:
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        when: datetime | None = job.next_run_time if job is not None else None
        return when.astimezone(UTC) if when is not None else None
