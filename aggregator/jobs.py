"""The daemon's periodic background work: the poll summary line, the writer's heartbeat, the
daily prune and the re-sanitising pass. Each runs until `sleep` says the daemon is stopping.

I/O through the store threads only; the daemon spawns them (see daemon.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from .config.resolved import Config
from .errors import AggregatorError
from .health import HEARTBEAT_EVERY, FeedBoard, Heartbeat
from .ingest.resanitize import resanitize
from .logs import PollTally
from .models import FeedStatus
from .store.protocol import Store
from .store.threads import StoreThreads

log = logging.getLogger("aggregator.daemon")  # the lines operators know, under their logger
PRUNE_EVERY = timedelta(days=1)
FIRST_PRUNE_DELAY = timedelta(minutes=5)  # after a start, when no prune was ever recorded
# A prune recorded less than a day ago, but by no more than this, counts as due: the clocks
# of two nodes may differ a little, and a prune should not slip a whole day for it.
PRUNE_SLACK = timedelta(minutes=1)
BOARD_EVERY = 10.0  # seconds between a server's reads of the feeds' states
FOLLOW_EVERY = 0.5  # seconds between a server's reads of the store generation

# Waits the given seconds, or less if the daemon stops; True when it is stopping.
Sleep = Callable[[float], Awaitable[bool]]


async def summaries(
    config: Callable[[], Config], take: Callable[[], PollTally], sleep: Sleep
) -> None:
    """A summary line of the polls every `summary_interval`, when there were any. `take`
    hands over the tally so far and starts a new one."""
    while not await sleep(config().aggregator.summary_interval.total_seconds()):
        tally = take()
        if sum(tally.statuses.values()):
            feeds = len(config().feeds)
            log.info("%s", tally.line(feeds), extra=tally.fields(feeds))


async def heartbeats(store: StoreThreads, board: FeedBoard, sleep: Sleep) -> None:
    """Probe the write lock through the writer thread every few seconds, for /healthz:
    a health check must not write, and a stuck writer shows as a stale heartbeat. A database
    that cannot be written (a PostgreSQL server restarting or unreachable) is logged once when
    it fails and once when it is back; the writer reconnects at its next call meanwhile."""
    while True:
        try:
            await store.write_batched(lambda s: s.check_writable())
            beat = Heartbeat(datetime.now(UTC))
        except AggregatorError as e:
            beat = Heartbeat(datetime.now(UTC), str(e))
        before = board.heartbeat
        if beat.error is not None and (before is None or before.error is None):
            every = int(HEARTBEAT_EVERY.total_seconds())
            log.error("the database cannot be written (checked every %ds): %s", every, beat.error)
        elif beat.error is None and before is not None and before.error is not None:
            log.info("the database can be written again")
        board.heartbeat = beat
        if await sleep(HEARTBEAT_EVERY.total_seconds()):
            return


async def resanitize_stored(
    store: StoreThreads,
    pool: Executor | None,
    config: Callable[[], Config],
    on_write: Callable[[int], None],
    lock: asyncio.Lock,
) -> None:
    """Bring stored content to the current sanitiser policy (once after it changed)."""
    async with lock:  # a reload while a pass runs: the next one follows
        s = config().aggregator
        try:
            await resanitize(store, pool, frozenset(s.embed_hosts), s.limits, on_write)
        except AggregatorError as e:
            log.error("re-sanitising stored entries failed (retried at the next start): %s", e)


async def boards(
    store: StoreThreads, config: Callable[[], Config], board: FeedBoard, sleep: Sleep
) -> None:
    """For a process that polls nothing (a server): the feed board from the stored states,
    every few seconds, so its /healthz and /metrics follow the pollers' work."""
    while not await sleep(BOARD_EVERY):
        names = list(config().feeds)
        try:
            found = await store.read(functools.partial(_states, names=names))
            states = {s.name: s for s in found}
        except AggregatorError as e:
            log.warning("reading the feeds' states failed: %s", e)
            continue
        board.reset(names, states)


async def follow_generation(
    store: StoreThreads, on_write: Callable[[int], None], sleep: Sleep
) -> None:
    """For a process that polls nothing: the store's generation, read every FOLLOW_EVERY, so
    a commit made by a poller elsewhere reaches the render cache within a second."""
    while not await sleep(FOLLOW_EVERY):
        try:
            on_write(await store.read_batched(_generation))
        except AggregatorError as e:  # the heartbeat reports the store; try again shortly
            log.debug("reading the store generation failed: %s", e)


def _generation(store: Store) -> int:
    return store.generation()


def _states(store: Store, names: list[str]) -> list[FeedStatus]:
    return store.feed_states(names)


def _prune(store: Store, now: datetime, retention_days: int, max_per_feed: int) -> int | None:
    # Not functools.partial(Store.prune, ...): that is the protocol's own (empty) method.
    return store.prune(now, retention_days, max_per_feed)


async def prunes(store: StoreThreads, config: Callable[[], Config], sleep: Sleep) -> None:
    """Apply retention once a day; the last run is stored, so restarts do not skip it. Nodes
    sharing a PostgreSQL store prune one at a time (the store's prune lock), and a node whose
    turn comes after another node pruned waits for the next day instead of pruning again."""
    last = await store.read(lambda s: s.last_prune())
    now = datetime.now(UTC)
    due = last + PRUNE_EVERY if last is not None else now + FIRST_PRUNE_DELAY
    while not await sleep((due - datetime.now(UTC)).total_seconds()):
        now = datetime.now(UTC)
        last = await store.read(lambda s: s.last_prune())
        if last is not None and last + PRUNE_EVERY > now + PRUNE_SLACK:
            due = last + PRUNE_EVERY  # another node pruned meanwhile
            continue
        s = config().aggregator
        prune = functools.partial(
            _prune,
            now=now,
            retention_days=s.retention_days,
            max_per_feed=s.max_entries_per_feed,
        )
        try:
            pruned = await store.write(prune)
            if pruned is None:
                log.info("prune skipped: another node is pruning this database")
            else:
                log.info("prune: %d entries deleted", pruned)
        except AggregatorError as e:
            log.error("prune failed: %s", e)
        due = now + PRUNE_EVERY
