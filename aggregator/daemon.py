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
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import UTC, datetime

from aiohttp import web

from .config import Config, FeedConfig
from .fetch import Fetcher
from .metrics import TimedFetcher, record_outcome, seed_last_success
from .models import PollOutcome
from .poll import PollContext, poll_source
from .schedule import FeedScheduler, first_run
from .server import Metrics, OutputServer
from .store import StoreThreads
from .websub import HubNotifier

log = logging.getLogger("aggregator.daemon")
DRAIN_SECONDS = 5.0


def make_parse_pool(workers: int) -> Executor:
    """A process pool for parsing, one worker per core unless configured.

    forkserver, not fork: forking a process that runs an event loop and threads can deadlock.
    """
    count = workers or os.cpu_count() or 1
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver"))


def make_fetcher(config: Config, metrics: Metrics | None = None) -> Fetcher:
    """The fetcher the config asks for; with `metrics`, one that times every fetch."""
    s = config.aggregator
    if metrics is not None:
        return TimedFetcher(
            user_agent=s.user_agent,
            timeout=s.timeout.total_seconds(),
            max_body_size=s.max_body_size,
            max_concurrency=s.max_concurrency,
            metrics=metrics,
        )
    return Fetcher(
        user_agent=s.user_agent,
        timeout=s.timeout.total_seconds(),
        max_body_size=s.max_body_size,
        max_concurrency=s.max_concurrency,
    )


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
        self._notifier: HubNotifier | None = None

    def stop(self) -> None:
        self._stop.set()

    def _on_write(self, generation: int) -> None:
        if generation > self.generation and self._notifier is not None:
            self._notifier.changed()
        self.generation = max(self.generation, generation)

    async def _poll(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None and self._ctx is not None
        self._in_flight.add(task)
        try:
            feed = self.config.feed(name)
            now = datetime.now(UTC)
            outcome: PollOutcome = await poll_source(
                self._ctx, feed.name, feed.url, now, self.scheduler.next_run(name)
            )
            record_outcome(self.metrics, outcome, now)
        except KeyError:
            log.warning("feed %s is no longer configured", name)
        except Exception:
            # A bug in one poll must not stop the others; it is logged with its traceback.
            log.exception("poll of %s failed unexpectedly", name)
        finally:
            self._in_flight.discard(task)

    def _schedule(self, feed: FeedConfig, stored_next: datetime | None, now: datetime) -> None:
        interval = self.config.interval_of(feed)
        start = first_run(stored_next, now, interval, self._rng)
        self.scheduler.add(feed.name, interval, start, self._poll)

    def _feed_config(self, name: str) -> FeedConfig | None:
        # Read through self.config on every poll, so a reloaded config applies at once.
        return next((f for f in self.config.feeds if f.name == name), None)

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
            seed_last_success(self.metrics, states.values())
            async with make_fetcher(self.config, self.metrics) as fetcher:
                self._ctx = PollContext(fetcher, store, pool, self._on_write, self._feed_config)
                server = OutputServer(
                    store,
                    lambda: self.config,
                    lambda: self.generation,
                    lambda: self.scheduler.running,
                    self.metrics,
                )
                notifier_task = await self._start_notifier(server)
                now = datetime.now(UTC)
                for feed in self.config.feeds:
                    state = states.get(feed.name)
                    self._schedule(feed, state.next_poll if state else None, now)
                self.scheduler.start()
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
                if notifier_task is not None:
                    notifier_task.cancel()
        finally:
            self.scheduler.shutdown()
            if runner is not None:
                await runner.cleanup()
            pool.shutdown(wait=True, cancel_futures=True)
            # Waits for queued writes: a poll that reached the writer is committed whole.
            await asyncio.to_thread(store.close)
            log.info("stopped")

    async def _start_notifier(self, server: OutputServer) -> asyncio.Task[None] | None:
        """With a WebSub hub configured, ping it whenever an output changes. Seeded before
        the first poll, so only changes made by this run are announced."""
        if self.config.aggregator.hub is None:
            return None

        async def etag_of(name: str) -> str:
            return (await server.rendered(name, "atom")).etag

        notifier = HubNotifier(
            lambda: self.config, etag_of, lambda r: self.metrics.hub_pings.labels(r).inc()
        )
        await notifier.seed()
        self._notifier = notifier
        return asyncio.create_task(notifier.run())

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
