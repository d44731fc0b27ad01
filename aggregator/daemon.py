"""Starts and stops everything: store threads, parse pool, fetcher, scheduler, HTTP server.

SIGTERM and SIGINT stop scheduling, give in-flight polls a few seconds, let every queued write
commit, and exit cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import signal
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

from aiohttp import web

from .config import Config, FeedConfig
from .fetch import Fetcher
from .hosts import HostGates, HostLimit, origin
from .models import FeedState, PollOutcome
from .poll import PollContext, poll_source
from .schedule import FeedScheduler, first_run, jitter
from .server import Metrics, OutputServer
from .store import StoreThreads

log = logging.getLogger("aggregator.daemon")
DRAIN_SECONDS = 5.0
MIN_REARM = timedelta(seconds=1)


def make_parse_pool(workers: int) -> Executor:
    """A process pool for parsing, one worker per core unless configured.

    forkserver, not fork: forking a process that runs an event loop and threads can deadlock.
    """
    count = workers or os.cpu_count() or 1
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver"))


def make_fetcher(config: Config) -> Fetcher:
    s = config.aggregator
    return Fetcher(
        user_agent=s.user_agent,
        timeout=s.timeout.total_seconds(),
        max_body_size=s.max_body_size,
        max_concurrency=s.max_concurrency,
    )


def make_gates(
    config: Config, states: Mapping[str, FeedState] | None = None, now: datetime | None = None
) -> HostGates:
    """Per-host limits from every feed's settings (and the host it was redirected to).

    With `now`, a stored Retry-After that is still ahead blocks its host again, so a restart
    does not let the other feeds of a host that asked us to wait fetch at once.
    """
    s = config.aggregator
    gates = HostGates(default=HostLimit(s.host_concurrency, s.host_delay))
    for feed in config.feeds:
        policy = config.policy_of(feed)
        limit = HostLimit(policy.host_concurrency, policy.host_delay)
        state = (states or {}).get(feed.name)
        for url in (feed.url, state.redirect_url if state is not None else None):
            if url:
                gates.configure(origin(url), limit)
        if (
            now is not None
            and state is not None
            and state.url == feed.url
            and state.next_poll is not None
            and state.next_poll > now
            and (state.next_reason or "").startswith("Retry-After ")
        ):
            gates.block(origin(state.redirect_url or feed.url), state.next_poll)
    return gates


class Daemon:
    """One running aggregator. `run()` returns when a stop signal arrives."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.generation = 0
        self.metrics = Metrics()
        self.scheduler = FeedScheduler()
        self._stop = asyncio.Event()
        self._in_flight: set[asyncio.Task[object]] = set()
        self._ctx: PollContext | None = None
        self._rng = random.Random()

    def stop(self) -> None:
        self._stop.set()

    def _on_write(self, generation: int) -> None:
        self.generation = max(self.generation, generation)

    async def _poll(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None and self._ctx is not None
        self._in_flight.add(task)
        next_run: datetime | None = None
        try:
            feed = self.config.feed(name)
            now = datetime.now(UTC)
            outcome: PollOutcome = await poll_source(
                self._ctx, feed.name, feed.url, now, policy=self.config.policy_of(feed)
            )
            next_run = outcome.next_poll
            self.metrics.polls.labels(outcome.status).inc()
            self.metrics.entries.labels("new").inc(outcome.new)
            self.metrics.entries.labels("updated").inc(outcome.updated)
        except KeyError:
            log.warning("feed %s is no longer configured", name)
        except Exception:
            # A bug in one poll must not stop the others, nor lose this feed's schedule.
            log.exception("poll of %s failed unexpectedly", name)
            next_run = datetime.now(UTC) + self.config.aggregator.interval
        finally:
            self._in_flight.discard(task)
        if next_run is not None and not self._stop.is_set():
            # At least a second ahead: the job must not come due while this run still counts
            # as its one allowed instance, or APScheduler would skip it and drop the feed.
            soonest = datetime.now(UTC) + MIN_REARM
            self.scheduler.add(name, max(next_run, soonest), self._poll)

    def _schedule(self, feed: FeedConfig, state: FeedState | None, now: datetime) -> None:
        """Arm a feed's first poll after a start from its stored decision; a gone feed waits
        for its URL to change in the config."""
        if state is not None and state.gone:
            log.info("feed %s is gone (HTTP 410) and is not polled", feed.name)
            return
        policy = self.config.policy_of(feed)
        reason = (state.next_reason or "") if state is not None else ""
        if reason.startswith("interval "):
            # A plain interval decision: a shortened interval in the config applies at once.
            cap = policy.interval + jitter(policy.interval)
        elif state is not None and (state.backoff_level > 0 or reason.startswith("Retry-After")):
            # A feed in backoff or Retry-After keeps its longer wait across a restart.
            cap = max(policy.max_backoff, policy.max_interval)
        else:
            cap = policy.max_interval
        stored_next = state.next_poll if state is not None else None
        start = first_run(stored_next, now, policy.interval, self._rng, cap)
        self.scheduler.add(feed.name, start, self._poll)

    async def run(self) -> None:
        settings = self.config.aggregator
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        store = StoreThreads(settings.database)
        pool = make_parse_pool(settings.parse_workers)
        runner: web.AppRunner | None = None
        try:
            feeds = [(f.name, f.url) for f in self.config.feeds]
            await store.write(lambda s: s.sync_feeds(feeds))
            self.generation = await store.read(lambda s: s.generation())
            states = {s.name: s for s in await store.read(lambda s: s.feed_states())}
            async with make_fetcher(self.config) as fetcher:
                now = datetime.now(UTC)
                self._ctx = PollContext(
                    fetcher, store, pool, self._on_write, hosts=make_gates(self.config, states, now)
                )
                for feed in self.config.feeds:
                    self._schedule(feed, states.get(feed.name), now)
                self.scheduler.start()
                server = OutputServer(
                    store,
                    lambda: self.config,
                    lambda: self.generation,
                    lambda: self.scheduler.running,
                    self.metrics,
                )
                runner = web.AppRunner(server.app(), access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, settings.host, settings.port)
                await site.start()
                log.info(
                    "serving %d output(s) of %d feed(s) on http://%s (public URL %s)",
                    len(self.config.outputs),
                    len(self.config.feeds),
                    settings.listen,
                    settings.base_url,
                )
                await self._stop.wait()
                log.info("stopping")
                self.scheduler.shutdown()
                await self._drain()
        finally:
            self.scheduler.shutdown()
            if runner is not None:
                await runner.cleanup()
            pool.shutdown(wait=True, cancel_futures=True)
            # Waits for queued writes: a poll that reached the writer is committed whole.
            await asyncio.to_thread(store.close)
            log.info("stopped")

    async def _drain(self) -> None:
        """Let in-flight polls finish for a moment, then cancel the rest (their fetches)."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(set(self._in_flight), timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_SECONDS)


def run_daemon(config: Config) -> None:
    """Run the daemon in a fresh event loop until SIGTERM or SIGINT."""
    asyncio.run(Daemon(config).run())
