"""The poller's side of sharing a PostgreSQL store: a claim tick (APScheduler) takes due feeds
under a lease, each is polled by the normal poll_source at the start time its claim gave, and
leases of polls still running are renewed. I/O (the database, the network).

Which feed polls when, and its next state, are decided exactly as on SQLite (decide.py,
feedstate.py); only the "who polls it, and when may its request start" comes from the claim
(store/postgres_claims.py), in which the database's clock is the only clock. A host with a
host_delay belongs to one poller at a time (the claim makes it so), whose own pacing keeps the
delay on the wire. A Retry-After a host answers is recorded for the whole cluster (the hosts
table), not only for this process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from .cluster_gates import ClaimedStates, ClusterGates
from .config.resolved import Config
from .errors import AggregatorError, LeaseLost, StoreError
from .ingest.hosts import HostGates
from .ingest.poll import poll_source
from .ingest.schedule import capped_waits
from .models import FeedState, PollOutcome
from .page_hosts import SharedPageHosts
from .runtime import Runtime, make_gates
from .store.postgres_claims import Claim, Claimed, PostgresClaims
from .store.protocol import Store

log = logging.getLogger("aggregator.cluster")

CLAIM_TICK = 1.0  # seconds between claims (sooner when a poll ends and frees a slot)
# Feeds held per max_concurrency: polls beyond it wait for a slot (ctx.work) under their lease,
# so that the next claim is taken while the polls run, not after them (a warm round of 2,000
# feeds on one poller: 740 → 920 feeds/s).
CLAIM_DEPTH = 2
DRAIN_SECONDS = 5.0  # what a stop gives the polls under way
CLOCK_EVERY = 10.0  # seconds between readings of the database's clock
STORE_RETRY = timedelta(minutes=1)  # a poll that failed on the store is claimed again then
HAND_BACK_EVERY = timedelta(seconds=3)  # retries of a release while the database is down


def _claims(store: Store) -> PostgresClaims:
    if not isinstance(store, PostgresClaims):
        raise StoreError("claiming feeds needs a PostgreSQL store")
    return store


def _capped(
    config: Config, states: Mapping[str, FeedState], now: datetime
) -> list[tuple[str, datetime, datetime]]:
    policies = {name: feed.policy for name, feed in config.feeds.items()}
    return capped_waits(policies, states, now)


class ClaimLoop:
    """Claims due feeds for this poller and polls them; `start` it on an open runtime, and
    `stop` it before the runtime closes. `on_outcome(outcome, now)` hears every poll."""

    def __init__(
        self,
        on_outcome: Callable[[PollOutcome, datetime], None] = lambda outcome, now: None,
        tick: float = CLAIM_TICK,
    ) -> None:
        self._on_outcome = on_outcome
        self._tick_every = tick
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._runtime: Runtime | None = None
        self.node = ""
        self._offset = timedelta(0)  # the database's clock minus ours
        self._held: dict[str, asyncio.Task[None]] = {}  # claimed, not finished
        self._started: set[str] = set()  # of those, the polls whose request may be under way
        self._stopping = False
        self._ticking = False
        self._again = False  # a tick came while one ran
        self._woken = False  # a tick is armed for now
        self._skip: set[str] = set()  # stored feeds not in the config of `_skip_for`
        self._skip_for: Config | None = None
        self._capped_for: Config | None = None  # the config whose waits were capped
        self._writes: set[asyncio.Task[None]] = set()
        # (round trip, the database's clock minus ours) of the last clock readings.
        self._clock: deque[tuple[timedelta, timedelta]] = deque(maxlen=6)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def held(self) -> int:
        """How many feeds this poller holds a lease of now."""
        return len(self._held)

    def start(self, runtime: Runtime, node: str) -> None:
        """Start claiming as `node` (the node's id, nodes.ThisNode: unique to this process)
        on `runtime`, whose store must be PostgreSQL: its polls' writes end their leases,
        its gates share Retry-After."""
        self._runtime, self.node = runtime, node
        runtime.make_hosts = self._gates
        gates = self._gates(runtime.config, runtime.states, datetime.now(UTC))
        gates.carry_from(runtime.ctx.hosts)  # with the stored Retry-Afters make_gates applied
        runtime.ctx = replace(runtime.ctx, lease=self.node, hosts=gates, states=ClaimedStates())
        runtime.articles.shared = SharedPageHosts(
            runtime.store,
            node,
            lambda: runtime.config,
            lambda: runtime.ctx.hosts,
            self._clock_offset,
        )
        lease = runtime.config.aggregator.lease.total_seconds()
        self._scheduler.add_job(
            self._renew,
            "interval",
            seconds=max(lease / 3, 0.5),
            id="renew",
            coalesce=True,
            max_instances=1,
        )
        # Start times are the database's clock: ours is compared with it now and then.
        self._scheduler.add_job(
            self._sync_clock_quietly, "interval", seconds=CLOCK_EVERY, id="clock", coalesce=True
        )
        self._arm(datetime.now(UTC))
        self._scheduler.start()
        log.info("poller %s claims due feeds every %.1f s", self.node, self._tick_every)

    def _clock_offset(self) -> timedelta:
        return self._offset

    def _gates(self, config: Config, states: Mapping[str, FeedState], now: datetime) -> HostGates:
        limits, default = make_gates(config, states, now).limits()
        return ClusterGates(limits, default, self._block)

    def _arm(self, when: datetime) -> None:
        """The next claim tick: one one-shot job, re-armed after each tick. (APScheduler
        would drop a one-shot job that fires while its last run is still counted as running,
        so it may run beside it and `_tick` itself lets one claim run at a time.)"""
        self._scheduler.add_job(
            self._tick,
            DateTrigger(run_date=when, timezone=UTC),
            id="claim",
            name="claim due feeds",
            misfire_grace_time=None,
            max_instances=4,
            replace_existing=True,
        )

    def _free(self) -> tuple[int, int]:
        """The places free for claims (CLAIM_DEPTH per slot of max_concurrency, less the feeds
        held), and how many must be before a claim is worth making. A claim costs the
        database about as much for 3 feeds as for 30 (its scan, the hosts' locks, the idle
        hosts let go): it waits until a good part of the depth is free, while the polls held
        keep every slot busy. Claiming as each poll ended, the cold bench round's claims took
        3 feeds each."""
        assert self._runtime is not None
        settings = self._runtime.config.aggregator
        free = CLAIM_DEPTH * settings.max_concurrency - len(self._held)
        return free, max(1, settings.max_concurrency // 2)

    def _wake(self) -> None:
        """A poll ended: claim again now rather than at the next tick (once for all the polls
        that end meanwhile: re-arming the job costs more than a poll's 304), once a claim is
        worth making."""
        free, worth = self._free()
        if free < worth:
            return  # a later poll's end wakes it
        if self._ticking:  # the claim under way claims once more when it ends
            self._again = True
        elif not self._woken and not self._stopping and self._scheduler.running:
            self._woken = True
            self._arm(datetime.now(UTC))

    async def _tick(self) -> None:
        self._woken = False
        if self._ticking:  # a claim is under way: it claims once more when it ends
            self._again = True
            return
        self._ticking, self._again = True, False
        try:
            if not self._clock:
                await self._sync_clock()
            await self._claim()
        except AggregatorError as e:
            # The database is down or refused: said once a tick, tried again at the next.
            log.error("claim failed: %s", e)
        finally:
            self._ticking = False
            if not self._stopping and self._scheduler.running:
                later = timedelta(seconds=0 if self._again else self._tick_every)
                self._arm(datetime.now(UTC) + later)

    async def _sync_clock(self) -> None:
        """Measure the database's clock against ours (on a reader: the writer may be busy).
        Of the last few samples, the one with the shortest round trip is the most exact."""
        rt = self._runtime
        assert rt is not None
        before = datetime.now(UTC)
        clock = await rt.store.read(lambda s: _claims(s).db_clock())
        after = datetime.now(UTC)
        self._clock.append((after - before, clock - (before + (after - before) / 2)))
        self._offset = min(self._clock)[1]

    async def _claim(self) -> None:
        rt = self._runtime
        assert rt is not None
        settings = rt.config.aggregator
        free, worth = self._free()
        if free < worth or self._stopping:
            return
        moves = await self._caps(rt)
        if moves:
            try:
                moved = await rt.store.write_aside(lambda s: _claims(s).bring_forward(moves))
            except AggregatorError:
                self._capped_for = None  # tried again at the next claim
                raise
            log.info("%d stored next poll(s) brought forward to the config's intervals", moved)
        limits, default = rt.ctx.hosts.limits()
        skip, node, lease = sorted(self._skipped(rt)), self.node, settings.lease
        claimed: Claimed = await rt.store.write_aside(
            lambda s: _claims(s).claim_due(node, skip, free, lease, limits, default)
        )
        gates = rt.ctx.hosts
        if isinstance(gates, ClusterGates):
            # Polls claimed earlier that have not started must not start into a host that
            # has since answered another poller with Retry-After (they are deferred).
            for host, until in claimed.blocked.items():
                gates.learn(host, until - self._offset)
        for claim in claimed.claims:
            rt.ctx.states.put(claim.state)
            task = asyncio.ensure_future(self._poll(claim))
            self._held[claim.name] = task
            task.add_done_callback(functools.partial(self._finished, claim.name))

    async def _caps(self, rt: Runtime) -> list[tuple[str, datetime, datetime]]:
        """Once for each config (at the first claim, and after each reload): the stored next
        polls it cuts short, as the SQLite daemon caps its timers at a start or a reload (a
        shortened interval applies at once). From the states as stored then (Runtime.follow
        reads them again); the database moves only those no poll decided anew since."""
        if self._capped_for is rt.config:
            return []
        self._capped_for = rt.config
        # Every feed's policy against its stored state: a quarter of a second for 100,000
        # feeds, off the event loop (on a copy of the states, which stay the loop's).
        return await asyncio.to_thread(_capped, rt.config, dict(rt.states), datetime.now(UTC))

    def _skipped(self, rt: Runtime) -> set[str]:
        """The stored feeds this poller must not claim: those its config does not have (a
        feed removed from it, or added to another poller's config and not yet to ours)."""
        if self._skip_for is not rt.config:
            self._skip_for = rt.config
            self._skip = set(rt.states) - set(rt.config.feeds)
        return self._skip

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._held.get(name) is task:
            del self._held[name]
        self._started.discard(name)
        self._wake()

    async def _poll(self, claim: Claim) -> None:
        rt = self._runtime
        assert rt is not None
        start = claim.start - self._offset  # on our clock
        wait = (start - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        name = claim.name
        feed = rt.config.feeds.get(name)
        if feed is None:  # not ours: dropped by a reload, or only in another poller's config
            self._skip.add(name)
            await self._release([name])
            return
        now = datetime.now(UTC)

        def started() -> datetime:
            # It holds a slot now: its request may go out (a stop gives it time to end, a
            # lost lease no longer cancels it). Until then it waited beside the slots.
            nonlocal now
            self._started.add(name)
            now = datetime.now(UTC)
            return now

        try:
            outcome = await poll_source(rt.ctx, feed, now, started)
        except LeaseLost:
            # Our lease expired and another poller claimed the feed: its poll counts.
            log.warning("poll of %s dropped: another poller holds its lease now", name)
            return
        except AggregatorError as e:
            # Claimed again after an interval, or within STORE_RETRY of a store failure (as
            # SQLite's daemon tries such a feed again), not only when the lease runs out.
            log.error("poll of %s failed: %s", name, e)
            retry = rt.config.aggregator.interval
            if isinstance(e, StoreError):
                retry = min(retry, STORE_RETRY)
            self._spawn(self._hand_back(name, retry, claim.lease_until - self._offset))
            return
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            log.info("poll of %s cancelled at shutdown", name)
            return
        except Exception:
            log.exception("poll of %s failed unexpectedly", name)
            return
        self._on_outcome(outcome, now)

    async def _sync_clock_quietly(self) -> None:
        try:
            await self._sync_clock()
        except AggregatorError as e:
            log.error("reading the database's clock failed: %s", e)

    async def _renew(self) -> None:
        """Extend the leases of the feeds still held; one lost to another poller is logged
        (our write would be refused) and, if its poll has not started, never started."""
        rt = self._runtime
        names = list(self._held)
        if rt is None or not names:
            return
        node, lease = self.node, rt.config.aggregator.lease
        try:
            kept = set(await rt.store.write_aside(lambda s: _claims(s).renew(node, names, lease)))
        except AggregatorError as e:
            log.error("lease renewal failed: %s", e)
            return
        for name in names:
            task = self._held.get(name)
            if name not in kept and task is not None:
                log.warning("lease of %s lost to another poller", name)
                if name not in self._started:
                    task.cancel()

    def _block(self, host: str, until: datetime) -> None:
        """Record a host's Retry-After (our clock) in the database, for every poller."""
        rt = self._runtime
        if rt is None:
            return
        at = until + self._offset

        async def write() -> None:
            try:
                await rt.store.write_aside(lambda s: _claims(s).block_host(host, at))
            except AggregatorError as e:
                log.error("recording the Retry-After of %s failed: %s", host, e)

        self._spawn(write())

    async def _release(self, names: list[str]) -> None:
        rt = self._runtime
        if rt is None or not names:
            return
        node = self.node
        try:
            await rt.store.write_aside(lambda s: _claims(s).release(node, names))
        except AggregatorError as e:
            log.error("releasing %d lease(s) failed: %s", len(names), e)

    async def _hand_back(self, name: str, after: timedelta, expires: datetime) -> None:
        """Release a feed whose poll failed, to be claimed again `after` from now; while the
        database cannot be written, tried again every few seconds until the lease (ending at
        `expires`, our clock) would have run out anyway."""
        rt = self._runtime
        assert rt is not None
        node = self.node
        while not self._stopping:
            try:
                await rt.store.write_aside(lambda s: _claims(s).release(node, [name], after))
                return
            except AggregatorError as e:
                if datetime.now(UTC) + HAND_BACK_EVERY >= expires:
                    return
                log.debug("releasing the lease of %s failed, trying again: %s", name, e)
            await asyncio.sleep(HAND_BACK_EVERY.total_seconds())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Stop claiming; hand back the claims whose poll has not started (other pollers take
        them at once), give the polls under way `grace` seconds, then cancel the rest (their
        leases run out; a write that reached the store commits whole or not at all)."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        waiting = [n for n in self._held if n not in self._started]
        for name in waiting:
            self._held[name].cancel()
        await self._release(waiting)
        running = set(self._held.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=grace)
        await self._let_go()

    async def _let_go(self) -> None:
        """Give up the hosts this poller owned (the claims did so as their last leases
        ended; the polls that ended since leave some): other pollers need not wait for the
        ownership to run out."""
        rt, node = self._runtime, self.node
        if rt is None:
            return
        try:
            await rt.store.write_aside(lambda s: _claims(s).let_go(node))
        except AggregatorError as e:
            log.error("giving up this poller's hosts failed: %s", e)
