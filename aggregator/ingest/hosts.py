"""Per-host politeness and the network-wide view, shared by every poll of one process.

A host is an origin (scheme, host and port): the unit a server's Retry-After and rate limits
apply to. For each one this keeps a limit on requests in flight (`host_concurrency`), a minimum
spacing between request starts (`host_delay`: turns reserved on the poll's own `now`, so an
injected clock drives them, and, when `paced`, kept on the wire by the monotonic clock) and a
host-wide "not before" set by a 429 or 503 with Retry-After. It also watches for the whole
network failing at once, so that feeds are not penalised for it.
No I/O; the asyncio it uses is a semaphore per host and the pacing sleep.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from ..ingest.decide import jitter
from ..models import NextKind

NETWORK_WINDOW = timedelta(hours=1)  # polls older than this say nothing about the network now
NETWORK_SAMPLE = 20  # the most recent polls (of that hour) that are looked at
NETWORK_MIN_POLLS = 8  # fewer recent polls than this never prove the network is down
NETWORK_DOWN_SHARE = 0.9  # ... and nearly all of them failed without any HTTP answer


@functools.lru_cache(maxsize=65536)
def origin(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased: what politeness is counted per. Cached: it
    runs on every poll, for the same few thousand URLs."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


@dataclass(frozen=True, slots=True)
class HostLimit:
    concurrency: int = 1
    delay: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class HostWait:
    """A poll put off by its host: when it may run, the rule that said so, and why."""

    when: datetime
    kind: NextKind
    reason: str


def spread_after(
    blocked: datetime, now: datetime, last_poll: datetime | None, rng: random.Random
) -> datetime:
    """When a feed of a host blocked by a Retry-After until `blocked` is polled: within the
    first jitter span after it, those waiting longest first, since queueing a busy host's
    feeds in the same order each time starves the last ones."""
    spread = jitter(blocked - now)
    age = now - last_poll if last_poll is not None else None
    share = min(1.0, (blocked - now) / age) if age else 0.0
    return blocked + spread * share * rng.uniform(0.9, 1.0) + spread * rng.uniform(0, 0.05)


def _nothing() -> None:
    pass


class HostGates:
    """Concurrency, spacing and Retry-After per origin. One per Fetcher / daemon."""

    def __init__(
        self,
        limits: dict[str, HostLimit] | None = None,
        default: HostLimit | None = None,
        *,
        paced: bool = False,
    ) -> None:
        """`paced`: requests really wait for their host_delay (see `pace`); off where an
        injected clock drives the polls and real waiting would only slow a test down."""
        self._limits = dict(limits or {})
        self._default = default or HostLimit()
        self._paced = paced
        self._sent: dict[str, float] = {}  # host → monotonic time its last request went out
        self._starting: dict[str, asyncio.Lock] = {}  # held from `pace` until `sent`
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._next_start: dict[str, datetime] = {}  # when the next newcomer may start
        self._last_start: dict[str, datetime] = {}
        self._booked: dict[tuple[str, str], datetime] = {}  # (host, feed) → its turn
        self._blocked: dict[str, datetime] = {}

    def configure(self, host: str, limit: HostLimit) -> None:
        """Merge a feed's limit into its host's: the most polite of all its feeds wins."""
        old = self._limits.get(host)
        if old is not None:
            limit = HostLimit(min(old.concurrency, limit.concurrency), max(old.delay, limit.delay))
        self._limits[host] = limit

    def carry_from(self, old: HostGates) -> None:
        """Continue `old`'s memory of the hosts (a config reload builds new gates): without
        it, the first request to a host after a reload could leave right after the last one
        sent before it, and a Retry-After learnt meanwhile would be forgotten.

        The wire's memory (`_sent`, and the lock each host's starts pass one at a time) is
        shared, not copied: polls under way keep the old gates, and what they send counts for
        the new ones too. So is a host's request slot, while its concurrency is unchanged.
        Booked turns and blocks are copied (a block merged with one the new gates have)."""
        self._sent = old._sent
        self._starting = old._starting
        for host, slot in old._slots.items():
            if old.limit(host).concurrency == self.limit(host).concurrency:
                self._slots.setdefault(host, slot)
        self._next_start = {**old._next_start, **self._next_start}
        self._last_start = {**old._last_start, **self._last_start}
        self._booked = {**old._booked, **self._booked}
        for host, until in old._blocked.items():
            # Directly, not by `block`: a subclass may send a block on (ClusterGates), and
            # this one was sent when it was learnt.
            self._blocked[host] = max(until, self._blocked.get(host, until))

    def limit(self, host: str) -> HostLimit:
        return self._limits.get(host, self._default)

    def limits(self) -> tuple[dict[str, HostLimit], HostLimit]:
        """The hosts' own limits, where they differ from the one every other host gets, and
        that one. (Every feed's host is configured, most with the default: a PostgreSQL
        claim sends these with each claim, and joined them all against every candidate.)"""
        default = self._default
        return {h: r for h, r in self._limits.items() if r != default}, default

    def blocked_until(self, host: str, now: datetime) -> datetime | None:
        """The host's Retry-After time if it is still ahead of `now`."""
        until = self._blocked.get(host)
        return until if until is not None and until > now else None

    def block(self, host: str, until: datetime) -> None:
        """A 429/503 named a time: no feed of this host is fetched before it."""
        self._blocked[host] = max(until, self._blocked.get(host, until))

    def wait(
        self, host: str, now: datetime, feed: str, last_poll: datetime | None, rng: random.Random
    ) -> HostWait | None:
        """When a poll of `feed` on `host` may run instead of `now`; None when it may run now
        (its start slot is then taken). A host under a Retry-After waits for it; otherwise
        the feed takes its `host_delay` turn (see `reserve`)."""
        blocked = self.blocked_until(host, now)
        if blocked is not None:
            when = spread_after(blocked, now, last_poll, rng)
            return HostWait(when, NextKind.RETRY_AFTER, f"Retry-After of {host}")
        free = self.reserve(host, now, feed)
        if free is not None:
            return HostWait(free, NextKind.HOST_DELAY, f"host_delay of {host}")
        return None

    def reserve(self, host: str, now: datetime, key: str = "") -> datetime | None:
        """Take a start slot on `host` at `now` for `key` (a feed), or book its turn.

        Returns None when the request may start now, else the booked time to come back at.
        Turns are handed out first come, first served, `delay` apart: a feed that was told to
        come back is not overtaken by one that arrives later, so no feed of a busy host starves.
        """
        delay = self.limit(host).delay
        last = self._last_start.get(host)
        spaced = last is None or now - last >= delay
        turn = self._booked.pop((host, key), None)
        if turn is not None and turn > now:
            self._booked[(host, key)] = turn
            return turn
        free = self._next_start.get(host)
        if spaced and (turn is not None or free is None or free <= now):
            self._last_start[host] = now
            self._next_start[host] = max(free or now, now + delay)
            return None
        # Not yet: book the next free turn (a late-coming booked feed rebooks at the front).
        start = max(free or now, (last or now) + delay, now)
        if turn is not None:
            start = max((last or now) + delay, now)
        self._booked[(host, key)] = start
        self._next_start[host] = max(free or start, start + delay)
        return start

    def try_reserve(self, host: str, now: datetime) -> bool:
        """Take a start slot on `host` at `now` only if it is free, booking nothing otherwise:
        for background requests (article pages), which must never take a feed poll's turn.
        Free means: no Retry-After, `delay` passed since the last start, no turn booked ahead
        and a request slot open."""
        if self.blocked_until(host, now) is not None or self.slot(host).locked():
            return False
        last = self._last_start.get(host)
        free = self._next_start.get(host)
        if (last is not None and now - last < self.limit(host).delay) or (
            free is not None and free > now
        ):
            return False
        self._last_start[host] = now
        self._next_start[host] = now + self.limit(host).delay
        return True

    async def pace(self, host: str) -> Callable[[], None]:
        """Wait for `host`'s turn on the wire; returns `sent`, to call once the request's
        headers are written (the Fetcher does) or it failed before that (call it in a
        `finally` too: it acts once). Called inside the host slot, right before the request.

        The turn reserved on the poll's `now` plans the order, but the request leaves later
        (after the state read, the wait for the slot, a busy loop, the connection), and two
        turns 10 ms apart could reach the server together. So one request of a host at a time
        goes from here to `sent`, and the next leaves `host_delay` after the previous `sent`
        by the monotonic clock: starts on one host are never closer than the delay."""
        delay = self.limit(host).delay.total_seconds()
        if not self._paced or delay <= 0:
            return _nothing
        lock = self._starting.get(host)
        if lock is None:
            lock = self._starting[host] = asyncio.Lock()
        await lock.acquire()
        try:
            while (last := self._sent.get(host)) is not None and (
                wait := last + delay - time.monotonic()
            ) > 0:
                await asyncio.sleep(wait)
        except BaseException:
            lock.release()
            raise
        return functools.partial(self._on_sent, host, lock, [False])

    def _on_sent(self, host: str, lock: asyncio.Lock, done: list[bool]) -> None:
        if not done[0]:
            done[0] = True
            self._sent[host] = time.monotonic()
            lock.release()

    def slot(self, host: str) -> asyncio.Semaphore:
        """The host's `concurrency` request slots: `async with gates.slot(host):` holds one for
        the duration of a fetch. (The semaphore itself, not a generator-based context manager:
        this runs on every poll.)"""
        sem = self._slots.get(host)
        if sem is None:
            sem = self._slots[host] = asyncio.Semaphore(self.limit(host).concurrency)
        return sem


class NetworkWatch:
    """Recent poll results across all feeds: if nearly all of them failed without any HTTP
    answer (DNS, refused, timeouts), it is our network that is down, not the feeds."""

    def __init__(self) -> None:
        self._recent: deque[tuple[datetime, str, bool]] = deque(maxlen=256)

    def record(self, now: datetime, host: str, unreachable: bool) -> None:
        self._recent.append((now, host, unreachable))

    def down(self, now: datetime) -> bool:
        recent = [(h, u) for t, h, u in self._recent if now - t <= NETWORK_WINDOW]
        recent = recent[-NETWORK_SAMPLE:]
        if len(recent) < NETWORK_MIN_POLLS or len({h for h, _ in recent}) < 2:
            return False
        return sum(u for _, u in recent) >= NETWORK_DOWN_SHARE * len(recent)
