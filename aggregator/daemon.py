"""Runs the daemon: the poller (wired by runtime.py), the scheduler, the HTTP server and the
periodic jobs (jobs.py), and stops them in order.

A process runs one role: `all` (poller and server, the default), `poller` (polls; serves only
/healthz and /metrics) or `server` (serves every output and page from the store; polls
nothing). On SQLite a lock next to the database keeps it to one poller; servers take no lock.

SIGTERM and SIGINT stop scheduling, give in-flight polls a few seconds, let every queued write
commit, and exit cleanly. SIGHUP, or a change of the config file on disk, reloads the config
without a restart (see reload.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from aiohttp import web

from . import jobs
from .config.load import load_config
from .config.reload import CHECK_EVERY, ConfigWatcher, plan_reload
from .config.resolved import Config, Feed
from .errors import AggregatorError, ConfigError, StoreError
from .ingest.poll import poll_source
from .ingest.schedule import FeedScheduler, first_poll
from .logs import PollTally, setup_logging
from .metrics import Metrics, record_outcome
from .models import FeedState, PollOutcome
from .nodes import ThisNode, refresh_node
from .outputs.websub import HubNotifier
from .runtime import Runtime, open_runtime, opened_store_threads
from .server import OutputServer
from .store.lock import DaemonLock
from .store.threads import StoreThreads

if TYPE_CHECKING:
    from .cluster import ClaimLoop

log = logging.getLogger("aggregator.daemon")
DRAIN_SECONDS = 5.0
MIN_REARM = timedelta(seconds=1)
STORE_RETRY = timedelta(minutes=1)  # a poll that failed on the store
Role = Literal["all", "poller", "server"]
ROLES: tuple[Role, ...] = get_args(Role)


class Daemon:
    """One running aggregator. `run()` returns when a stop signal arrives."""

    def __init__(
        self,
        config: Config,
        config_path: str | os.PathLike[str] | None = None,
        role: Role = "all",
    ) -> None:
        self.config = config
        self.role: Role = role
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
        self._runtime: Runtime | None = None
        self._rng = random.Random()
        self._notifier: HubNotifier | None = None
        self._claims: ClaimLoop | None = None  # a poller on PostgreSQL

    def stop(self) -> None:
        self._stop.set()

    def _on_write(self, generation: int) -> None:
        if generation > self.generation and self._notifier is not None:
            self._notifier.changed()
        self.generation = max(self.generation, generation)

    async def _poll(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None and self._runtime is not None
        self._in_flight.add(task)
        next_run: datetime | None = None
        try:
            feed = self.config.feeds[name]
            now = datetime.now(UTC)
            outcome: PollOutcome = await poll_source(self._runtime.ctx, feed, now)
            next_run = outcome.next_poll
            record_outcome(self.metrics, outcome, now)
            self.tally.add(outcome)
        except KeyError:
            log.warning("feed %s is no longer configured", name)
        except AggregatorError as e:
            # Expected failures (the database is locked, full or unreachable) get one line, not
            # a traceback, and the feed is tried again later rather than dropped; after a store
            # failure within STORE_RETRY, so a database outage delays polls by no more than
            # that once it is over (while it lasts, the retry fails at its read, unfetched).
            log.error("poll of %s failed: %s", name, e)
            wait = self.config.aggregator.interval
            if isinstance(e, StoreError):
                wait = min(wait, STORE_RETRY)
            next_run = datetime.now(UTC) + wait
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
        """Arm a feed's first poll after a start from its stored decision (schedule.first_poll);
        a gone feed waits for its URL to change in the config."""
        start = first_poll(state, now, feed.policy, self._rng, added)
        if start is None:
            log.info("feed %s is gone (HTTP 410) and is not polled", feed.name)
            return
        self.scheduler.add(feed.name, start, self._poll)

    @property
    def polls(self) -> bool:
        return self.role != "server"

    @property
    def serves(self) -> bool:
        """Whether this process serves the outputs and pages (every role serves /healthz)."""
        return self.role != "poller"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # One poller per SQLite file; servers only read it (and PostgreSQL shares on purpose).
        lock = DaemonLock(self.config.aggregator.database) if self.polls else None
        if lock is not None:
            lock.acquire()
        try:
            await self._run(loop)
        finally:
            if lock is not None:
                lock.release()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload("SIGHUP")))
        try:
            if not self.polls:
                async with opened_store_threads(self.config) as store:
                    self._store = store
                    self.generation = await store.read(lambda s: s.generation())
                    states = {s.name: s for s in await store.read(lambda s: s.feed_states())}
                    self.metrics.board.reset(list(self.config.feeds), states)
                    await self._serve(None, store)
                return
            async with open_runtime(
                self.config, metrics=self.metrics, on_write=self._on_write
            ) as runtime:
                self._runtime, self._store = runtime, runtime.store
                self.generation = runtime.generation
                self.metrics.board.reset(list(self.config.feeds), runtime.states)
                await self._serve(runtime, runtime.store)
        finally:
            log.info("stopped")

    def _healthy(self) -> bool:
        # A server has no scheduler: nothing of its own to be stopped.
        if self._claims is not None:
            return self._claims.running
        return self.scheduler.running if self.polls else True

    def _record(self, outcome: PollOutcome, now: datetime) -> None:
        record_outcome(self.metrics, outcome, now)
        self.tally.add(outcome)

    async def _serve(self, runtime: Runtime | None, store: StoreThreads) -> None:
        """Schedule every feed (with a runtime), serve HTTP and run the background jobs until
        a stop signal; then stop scheduling, drain the polls, cancel the jobs and close the
        server (the runtime closes after: fetcher, pool, store)."""
        node = ThisNode(self.role, self.config.aggregator.listen, datetime.now(UTC))
        server = OutputServer(
            store,
            lambda: self.config,
            lambda: self.generation,
            self._healthy,
            self.metrics,
            reload_status=lambda: self.reload_status,
            config_loaded=lambda: self.config_loaded,
            role=self.role,
            node_id=node.node_id,
        )
        runner: web.AppRunner | None = None
        try:
            if self.serves:
                await self._start_notifier(server)
            if runtime is not None and self.config.aggregator.database.is_postgres:
                # Pollers sharing a PostgreSQL store claim due feeds instead (imported here:
                # a daemon on SQLite loads no psycopg).
                from .cluster import ClaimLoop

                # Leased under the node's id: the owner of a lease is a row of the nodes table.
                self._claims = ClaimLoop(self._record)
                self._claims.start(runtime, node.node_id)
            elif runtime is not None:
                now = datetime.now(UTC)
                for feed in self.config.feeds.values():
                    self._schedule(feed, runtime.states.get(feed.name), now)
                self.scheduler.start()
            runner = web.AppRunner(server.app(outputs=self.serves), access_log=None)
            await runner.setup()
            settings = self.config.aggregator
            await web.TCPSite(runner, settings.host, settings.port).start()
            log.info(
                "%s: %s %d output(s) of %d feed(s) on http://%s (public URL %s)",
                self.role,
                "serving" if self.serves else "polling; health and metrics for",
                len(self.config.outputs),
                len(self.config.feeds),
                settings.listen,
                settings.base_url,
            )
            current = self._current
            if runtime is not None:
                self._spawn(runtime.articles.run())
                self._spawn(jobs.summaries(current, self._take_tally, self._sleep))
                self._spawn(jobs.prunes(store, current, self._sleep))
                self._spawn(self._resanitize())
            else:
                self._spawn(jobs.boards(store, current, self.metrics.board, self._sleep))
            if self.serves:
                # Role all too: other processes commit beside it (more pollers on PostgreSQL,
                # `aggregator fetch` on SQLite), and its render cache must see their entries.
                self._spawn(jobs.follow_generation(store, self._on_write, self._sleep))
            self._spawn(jobs.heartbeats(store, self.metrics.board, self._sleep))
            # Every role records itself, for /status's list of the nodes and their configs.
            self._spawn(refresh_node(store, node, current, self._sleep))
            if self._watcher is not None:
                self._spawn(self._watch(self._watcher))
            await self._stop.wait()
            log.info("stopping")
            self.scheduler.shutdown()
            if self._claims is not None:
                await self._claims.stop(DRAIN_SECONDS)
            await self._drain()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
            self.scheduler.shutdown()
            if runner is not None:
                await runner.cleanup()

    def _current(self) -> Config:
        return self.config

    def _take_tally(self) -> PollTally:
        tally, self.tally = self.tally, PollTally()
        return tally

    def _resanitize(self) -> Coroutine[Any, Any, None]:
        assert self._runtime is not None
        return jobs.resanitize_stored(
            self._runtime.store,
            self._runtime.pool,
            lambda: self.config,
            self._on_write,
            self._resanitize_lock,
        )

    async def _start_notifier(self, server: OutputServer) -> None:
        """With a WebSub hub configured, ping it whenever an output changes. Seeded before
        the first poll, so only changes made by this run are announced."""
        if self.config.aggregator.hub is None:
            return

        async def etag_of(name: str) -> str:
            return (await server.rendered(name, "atom")).etag

        notifier = HubNotifier(
            lambda: self.config, etag_of, lambda r: self.metrics.hub_pings.labels(r).inc()
        )
        await notifier.seed()
        self._notifier = notifier
        self._spawn(notifier.run())

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
        if self.polls:
            # Rows first: a feed is in the database before its first poll can fire. (A server
            # leaves the rows to the pollers: its config may be older than theirs.)
            feeds = [(f.name, f.url) for f in new.feeds.values()]
            await self._store.write(lambda s: s.sync_feeds(feeds))
        if self._runtime is not None:
            # sync_feeds drops a changed URL's validators and state: read them afresh.
            self._runtime.ctx.states.clear()
        states = {s.name: s for s in await self._store.read(lambda s: s.feed_states())}
        # Swapped whole: the server drops its render cache when the Config object changes,
        # and every poll reads its feed's url from the current config.
        self.config = new
        self.metrics.board.reset(list(new.feeds), states)
        for name in plan.removed:
            self.scheduler.remove(name)
        if self._runtime is not None:
            # Host limits may have changed; polls under way finish with the gates they hold.
            self._runtime.follow(new, states, now)
        # The claim loop takes due feeds from the config at each claim: nothing to arm.
        arms = self.polls and self._claims is None
        for feed in plan.added if arms else ():
            self._schedule(feed, states.get(feed.name), now, added=True)
        for feed in plan.rescheduled if arms else ():
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


def run_daemon(
    config: Config, config_path: str | os.PathLike[str] | None = None, role: Role = "all"
) -> None:
    """Run the daemon in a fresh event loop until SIGTERM or SIGINT."""
    asyncio.run(Daemon(config, config_path, role).run())
