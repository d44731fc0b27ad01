"""Starts and stops everything: store threads, parse pool, fetcher, scheduler, HTTP server.

SIGTERM and SIGINT stop scheduling, give in-flight polls a few seconds, let every queued write
commit, and exit cleanly. SIGHUP, or a change of the config file on disk, reloads the config
without a restart (see reload.py). A lock next to the database keeps it to one daemon.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import signal
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from .config.load import load_config
from .config.reload import CHECK_EVERY, ConfigWatcher, plan_reload
from .config.resolved import Config, Feed
from .errors import AggregatorError, ConfigError
from .health import HEARTBEAT_EVERY, Heartbeat
from .ingest.articles import ArticleQueue
from .ingest.fetch import Fetcher
from .ingest.hosts import HostGates, HostLimit, origin
from .ingest.poll import PollContext, poll_source
from .ingest.resanitize import resanitize
from .ingest.schedule import FeedScheduler, first_run, jitter
from .ingest.workers import DeadlinePool
from .logs import PollTally, setup_logging
from .metrics import Metrics, TimedFetcher, record_outcome
from .models import FeedState, PollOutcome
from .outputs.websub import HubNotifier
from .server import OutputServer
from .store.lock import DaemonLock
from .store.sqlite import Store
from .store.threads import StoreThreads

log = logging.getLogger("aggregator.daemon")
DRAIN_SECONDS = 5.0
PRUNE_EVERY = timedelta(days=1)
FIRST_PRUNE_DELAY = timedelta(minutes=5)  # after a start, when no prune was ever recorded
MIN_REARM = timedelta(seconds=1)
PARSE_TIMEOUT = 15.0  # seconds; the config's parse_timeout in the daemon


def make_parse_pool(workers: int, deadline: float = PARSE_TIMEOUT) -> DeadlinePool:
    """A process pool for parsing, one worker per core unless configured; a parse that runs
    past `deadline` seconds has its worker replaced (see workers.py)."""
    count = workers or os.cpu_count() or 1
    return DeadlinePool(count, deadline, preload=("aggregator.ingest.poll",))


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


def make_gates(
    config: Config, states: Mapping[str, FeedState] | None = None, now: datetime | None = None
) -> HostGates:
    """Per-host limits from every feed's settings (and the host it was redirected to).

    With `now`, a stored Retry-After that is still ahead blocks its host again, so a restart
    does not let the other feeds of a host that asked us to wait fetch at once.
    """
    s = config.aggregator
    gates = HostGates(default=HostLimit(s.host_concurrency, s.host_delay))
    for feed in config.feeds.values():
        limit = HostLimit(feed.policy.host_concurrency, feed.policy.host_delay)
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


def make_article_queue(
    daemon: Daemon, store: StoreThreads, fetcher: Fetcher, pool: DeadlinePool
) -> ArticleQueue:
    """The daemon's article queue: it follows reloads (settings, and the gates a reload
    rebuilds) and tells the outputs when an entry's content changed."""

    def hosts() -> HostGates:
        assert daemon._ctx is not None
        return daemon._ctx.hosts

    return ArticleQueue(
        store,
        fetcher,
        pool,
        lambda: daemon.config,
        hosts,
        daemon._on_write,
        on_result=lambda result: daemon.metrics.articles.labels(result).inc(),
    )


class Daemon:
    """One running aggregator. `run()` returns when a stop signal arrives."""

    def __init__(self, config: Config, config_path: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        # Made now, so that it knows the file as it was when `config` was read from it.
        self._watcher = ConfigWatcher(self.config_path) if self.config_path else None
        self.reload_status: dict[str, Any] | None = None  # shown in /healthz and /status
        self.config_loaded = datetime.now(UTC)  # when the running config was read
        self.tally = PollTally()
        self._reload_lock = asyncio.Lock()
        self._resanitize_lock = asyncio.Lock()
        self._store: StoreThreads | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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
        next_run: datetime | None = None
        try:
            feed = self.config.feeds[name]
            now = datetime.now(UTC)
            outcome: PollOutcome = await poll_source(
                self._ctx, feed.name, feed.url, now, policy=feed.policy
            )
            next_run = outcome.next_poll
            record_outcome(self.metrics, outcome, now)
            self.tally.add(outcome)
        except KeyError:
            log.warning("feed %s is no longer configured", name)
        except AggregatorError as e:
            # Expected failures (the database is locked or full) get one line, not a traceback,
            # and the feed is tried again later rather than dropped.
            log.error("poll of %s failed: %s", name, e)
            next_run = datetime.now(UTC) + self.config.aggregator.interval
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
            # Cut short by shutdown after its grace period: a write that reached the writer
            # commits whole, and the feed is polled again after the restart.
            log.info("poll of %s cancelled at shutdown", name)
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

    def _schedule(
        self, feed: Feed, state: FeedState | None, now: datetime, added: bool = False
    ) -> None:
        """Arm a feed's first poll after a start from its stored decision; a gone feed waits
        for its URL to change in the config. A feed `added` by a reload that was never polled
        is polled now (its host's limits permitting): only a cold start spreads first polls."""
        if state is not None and state.gone:
            log.info("feed %s is gone (HTTP 410) and is not polled", feed.name)
            return
        if added and (state is None or state.last_poll is None):
            self.scheduler.add(feed.name, now, self._poll)
            return
        policy = feed.policy
        reason = (state.next_reason or "") if state is not None else ""
        if not reason or reason.startswith("interval "):
            # No decision yet, or a plain interval one: a shortened interval applies at once.
            cap = policy.interval + jitter(policy.interval)
        elif state is not None and (state.backoff_level > 0 or reason.startswith("Retry-After")):
            # A feed in backoff or Retry-After keeps its longer wait across a restart.
            cap = max(policy.max_backoff, policy.max_interval)
        else:
            cap = policy.max_interval
        stored_next = state.next_poll if state is not None else None
        start = first_run(stored_next, now, policy.interval, self._rng, cap)
        self.scheduler.add(feed.name, start, self._poll)

    def _feed_config(self, name: str) -> Feed | None:
        # Read through self.config on every poll, so a reloaded config applies at once.
        return self.config.feeds.get(name)

    async def run(self) -> None:
        settings = self.config.aggregator
        loop = asyncio.get_running_loop()
        lock = DaemonLock(settings.database)
        lock.acquire()
        try:
            await self._run(loop, lock)
        finally:
            lock.release()

    async def _run(self, loop: asyncio.AbstractEventLoop, lock: DaemonLock) -> None:
        settings = self.config.aggregator
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload("SIGHUP")))
        store = StoreThreads(settings.database)
        self._store = store
        pool = make_parse_pool(settings.parse_workers, settings.parse_timeout.total_seconds())
        runner: web.AppRunner | None = None
        try:
            feeds = [(f.name, f.url) for f in self.config.feeds.values()]
            await store.write(lambda s: s.sync_feeds(feeds))
            self.generation = await store.read(lambda s: s.generation())
            states = {s.name: s for s in await store.read(lambda s: s.feed_states())}
            self.metrics.board.reset(list(self.config.feeds), states)
            async with make_fetcher(self.config, self.metrics) as fetcher:
                now = datetime.now(UTC)
                articles = make_article_queue(self, store, fetcher, pool)
                self._ctx = PollContext(
                    fetcher,
                    store,
                    pool,
                    self._on_write,
                    self._feed_config,
                    hosts=make_gates(self.config, states, now),
                    work=asyncio.Semaphore(self.config.aggregator.max_concurrency),
                    embed_hosts=frozenset(self.config.aggregator.embed_hosts),
                    articles=articles,
                    limits=self.config.aggregator.limits,
                )
                server = OutputServer(
                    store,
                    lambda: self.config,
                    lambda: self.generation,
                    lambda: self.scheduler.running,
                    self.metrics,
                    reload_status=lambda: self.reload_status,
                    config_loaded=lambda: self.config_loaded,
                )
                notifier_task = await self._start_notifier(server)
                now = datetime.now(UTC)
                for feed in self.config.feeds.values():
                    self._schedule(feed, states.get(feed.name), now)
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
                self._spawn(articles.run())
                self._spawn(self._summaries())
                self._spawn(self._prunes())
                self._spawn(self._heartbeats())
                self._spawn(self._resanitize())
                if self._watcher is not None:
                    self._spawn(self._watch(self._watcher))
                await self._stop.wait()
                log.info("stopping")
                self.scheduler.shutdown()
                await self._drain()
                if notifier_task is not None:
                    notifier_task.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
            self.scheduler.shutdown()
            if runner is not None:
                await runner.cleanup()
            # In a thread: the slots take up to POLL_STEP to notice, and the loop must not block.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
            # Waits for queued writes: a poll that reached the writer is committed whole.
            await store.aclose()
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

    def _spawn(self, coro: Any) -> None:
        """Run a background task of the daemon; it is cancelled at shutdown."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug: say so loudly rather than lose the watcher or the prune silently.
            log.error("background task failed", exc_info=task.exception())

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the daemon stops; True when it is stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            return False
        return True

    # --- hot reload --------------------------------------------------------------------------

    async def _watch(self, watcher: ConfigWatcher) -> None:
        while not await self._sleep(CHECK_EVERY):
            if await asyncio.to_thread(watcher.changed):
                await self.reload("file change")

    async def reload(self, trigger: str) -> bool:
        """Re-read and re-validate the config file; apply the difference if it is valid.

        An invalid file is logged with every problem and recorded in `reload_status`; the
        daemon keeps running on the config it has. Returns whether the new config was applied.
        """
        if self.config_path is None:
            log.warning("reload (%s) ignored: the daemon was not started from a file", trigger)
            return False
        async with self._reload_lock:
            now = datetime.now(UTC)
            if self._watcher is not None:
                # The watcher compares later versions with the one loaded now, whatever the
                # trigger: a file changed back to its old text after a SIGHUP is still a change.
                await asyncio.to_thread(self._watcher.mark)
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
                summary = await self._apply(new, now)
            except AggregatorError as e:
                log.error("reload (%s) failed, keeping the running config: %s", trigger, e)
                # A bad file lists each of its problems; any other failure is its own one.
                problems = list(e.problems) if isinstance(e, ConfigError) else [str(e)]
                self.reload_status = {
                    "status": "failed",
                    "trigger": trigger,
                    "at": now.isoformat(),
                    "error": str(e),
                    "problems": problems,
                }
                return False
            self.reload_status = {"status": "ok", "trigger": trigger, "at": now.isoformat()}
            self.config_loaded = now
            log.info("reload (%s) applied: %s", trigger, summary)
            return True

    async def _apply(self, new: Config, now: datetime) -> str:
        old = self.config
        plan = plan_reload(old, new)
        assert self._store is not None
        # Rows first: a feed is in the database before its first poll can fire.
        feeds = [(f.name, f.url) for f in new.feeds.values()]
        await self._store.write(lambda s: s.sync_feeds(feeds))
        if self._ctx is not None:
            # sync_feeds drops a changed URL's validators and state: read them afresh.
            self._ctx.states.clear()
        states = {s.name: s for s in await self._store.read(lambda s: s.feed_states())}
        # Swapped whole: the server drops its render cache when the Config object changes,
        # and every poll reads its feed's url from the current config.
        self.config = new
        self.metrics.board.reset(list(new.feeds), states)
        for name in plan.removed:
            self.scheduler.remove(name)
        if self._ctx is not None:
            # Host limits may have changed; polls under way finish with the gates they hold.
            self._ctx = replace(
                self._ctx,
                hosts=make_gates(new, states, now),
                embed_hosts=frozenset(new.aggregator.embed_hosts),
                limits=new.aggregator.limits,
            )
            if isinstance(self._ctx.parse_pool, DeadlinePool):
                self._ctx.parse_pool.deadline = new.aggregator.parse_timeout.total_seconds()
        for feed in plan.added:
            self._schedule(feed, states.get(feed.name), now, added=True)
        for feed in plan.rescheduled:
            # The planned poll is kept (a plain interval one is capped at the new interval).
            state, planned = states.get(feed.name), self.scheduler.next_run(feed.name)
            if state is not None and planned is not None:
                state = replace(state, next_poll=planned)
            self._schedule(feed, state, now)
        s_old, s_new = old.aggregator, new.aggregator
        if s_old.embed_hosts != s_new.embed_hosts:
            self._spawn(self._resanitize())
        if (s_old.log_level, s_old.log_format) != (s_new.log_level, s_new.log_format):
            setup_logging(s_new.log_level, s_new.log_format)
        for key in plan.needs_restart:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
        return plan.summary()

    # --- periodic work -----------------------------------------------------------------------

    async def _summaries(self) -> None:
        """A summary line of the polls every `summary_interval`, when there were any."""
        while not await self._sleep(self.config.aggregator.summary_interval.total_seconds()):
            tally, self.tally = self.tally, PollTally()
            if sum(tally.statuses.values()):
                feeds = len(self.config.feeds)
                log.info("%s", tally.line(feeds), extra=tally.fields(feeds))

    async def _heartbeats(self) -> None:
        """Probe the write lock through the writer thread every few seconds, for /healthz:
        a health check must not write, and a stuck writer shows as a stale heartbeat."""
        assert self._store is not None
        store = self._store
        while True:
            try:
                await store.write_batched(lambda s: s.check_writable())
                beat = Heartbeat(datetime.now(UTC))
            except AggregatorError as e:
                beat = Heartbeat(datetime.now(UTC), str(e))
            self.metrics.board.heartbeat = beat
            if await self._sleep(HEARTBEAT_EVERY.total_seconds()):
                return

    async def _resanitize(self) -> None:
        """Bring stored content to the current sanitiser policy (once after it changed)."""
        assert self._store is not None and self._ctx is not None
        async with self._resanitize_lock:  # a reload while a pass runs: the next one follows
            s = self.config.aggregator
            try:
                await resanitize(
                    self._store,
                    self._ctx.parse_pool,
                    frozenset(s.embed_hosts),
                    s.limits,
                    self._on_write,
                )
            except AggregatorError as e:
                log.error("re-sanitising stored entries failed (retried at the next start): %s", e)

    async def _prunes(self) -> None:
        """Apply retention once a day; the last run is stored, so restarts do not skip it."""
        assert self._store is not None
        store = self._store
        last = await store.read(lambda s: s.last_prune())
        now = datetime.now(UTC)
        due = last + PRUNE_EVERY if last is not None else now + FIRST_PRUNE_DELAY
        while not await self._sleep((due - datetime.now(UTC)).total_seconds()):
            now = datetime.now(UTC)
            s = self.config.aggregator
            prune = functools.partial(
                Store.prune,
                now=now,
                retention_days=s.retention_days,
                max_per_feed=s.max_entries_per_feed,
            )
            try:
                pruned = await store.write(prune)
                log.info("prune: %d entries deleted", pruned)
            except AggregatorError as e:
                log.error("prune failed: %s", e)
            due = now + PRUNE_EVERY


def run_daemon(config: Config, config_path: str | os.PathLike[str] | None = None) -> None:
    """Run the daemon in a fresh event loop until SIGTERM or SIGINT."""
    asyncio.run(Daemon(config, config_path).run())
