"""The wiring of a poller, shared by the daemon and `aggregator fetch`: store threads, parse
pool, fetcher, host gates, article queue and poll context, opened together and closed in the
right order. I/O (the database, worker processes, the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .config.resolved import Config, Feed
from .ingest.articles import ArticleQueue
from .ingest.fetch import Fetcher
from .ingest.hosts import HostGates, HostLimit, origin
from .ingest.poll import PollContext
from .ingest.schedule import stored_block
from .ingest.workers import DeadlinePool
from .metrics import Metrics, TimedFetcher
from .models import FeedState, FeedStatus
from .store.open import store_threads
from .store.threads import StoreThreads

PARSE_TIMEOUT = 15.0  # seconds; the config's parse_timeout in the daemon


def make_parse_pool(workers: int, deadline: float = PARSE_TIMEOUT) -> DeadlinePool:
    """A process pool for parsing, one worker per core unless configured; a parse that runs
    past `deadline` seconds has its worker replaced (see workers.py)."""
    count = workers or os.cpu_count() or 1
    return DeadlinePool(count, deadline, preload=("aggregator.ingest.poll",))


def make_fetcher(config: Config, metrics: Metrics | None = None) -> Fetcher:
    """The fetcher the config asks for; with `metrics`, one that times every fetch."""
    s = config.aggregator
    make = Fetcher if metrics is None else functools.partial(TimedFetcher, metrics=metrics)
    return make(
        user_agent=s.user_agent,
        timeout=s.timeout.total_seconds(),
        max_body_size=s.max_body_size,
        max_concurrency=s.max_concurrency,
    )


def make_gates(
    config: Config,
    states: Mapping[str, FeedState] | None = None,
    now: datetime | None = None,
    *,
    paced: bool = True,
) -> HostGates:
    """Per-host limits from every feed's settings (and the host it was redirected to).

    With `now`, a stored Retry-After that is still ahead blocks its host again, so a restart
    does not let the other feeds of a host that asked us to wait fetch at once. `paced`
    (HostGates.pace) is off only for polls driven by an injected clock.
    """
    s = config.aggregator
    gates = HostGates(default=HostLimit(s.host_concurrency, s.host_delay), paced=paced)
    for feed in config.feeds.values():
        limit = HostLimit(feed.policy.host_concurrency, feed.policy.host_delay)
        state = (states or {}).get(feed.name)
        for url in (feed.url, state.redirect_url if state is not None else None):
            if url:
                gates.configure(origin(url), limit)
        if now is not None and (block := stored_block(state, feed.url, now)) is not None:
            gates.block(*block)
    return gates


def store_for(config: Config) -> StoreThreads:
    """The store threads on the config's database, opened (and migrated)."""
    return store_threads(config.aggregator.database)


@contextlib.asynccontextmanager
async def opened_store_threads(config: Config) -> AsyncIterator[StoreThreads]:
    """The store alone, for a process that polls nothing (a server); closed on exit."""
    store = store_for(config)
    try:
        yield store
    finally:
        await store.aclose()


@dataclass(slots=True)
class Runtime:
    """What one poller runs on. `follow` swaps in a reloaded config: the poll context is
    replaced whole, so polls under way finish with the gates and limits they started with."""

    config: Config
    store: StoreThreads
    pool: DeadlinePool
    fetcher: Fetcher
    ctx: PollContext
    articles: ArticleQueue
    states: dict[str, FeedStatus]  # as stored when opened (or at the last `follow`)
    generation: int  # the store's, when opened
    # Builds the host gates from a config (make_gates; the claim loop's share the cluster's).
    make_hosts: Callable[[Config, Mapping[str, FeedState], datetime], HostGates] = make_gates

    def feed(self, name: str) -> Feed:
        """A feed's current settings, resolved by the config (KeyError: not configured)."""
        return self.config.feeds[name]

    def follow(self, config: Config, states: Mapping[str, FeedStatus], now: datetime) -> None:
        """Apply a reloaded config: host limits, sanitiser and parse limits, parse deadline.
        `states` are the feeds' stored states as of now (after the config's feeds synced)."""
        self.config = config
        self.states = dict(states)
        # The hosts' pacing and Retry-After outlive the gates: a reload changes limits only.
        hosts = self.make_hosts(config, states, now)
        hosts.carry_from(self.ctx.hosts)
        self.ctx = replace(
            self.ctx,
            hosts=hosts,
            embed_hosts=frozenset(config.aggregator.embed_hosts),
            limits=config.aggregator.limits,
        )
        self.pool.deadline = config.aggregator.parse_timeout.total_seconds()


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    metrics: Metrics | None = None,
    on_write: Callable[[int], None] = lambda generation: None,
) -> AsyncIterator[Runtime]:
    """Open the store (migrating it), sync the configured feeds into it, start the parse pool
    and the fetcher, and build the gates (a stored Retry-After still ahead blocks its host)
    and the poll context. On exit the fetcher closes first, then the pool, then the store,
    which commits every queued write: a poll that reached the writer is committed whole.

    `metrics` times every fetch and counts article results; `on_write` hears the store
    generation after each commit (the daemon's render cache and WebSub notifier)."""
    s = config.aggregator
    store = store_for(config)
    try:
        pool = make_parse_pool(s.parse_workers, s.parse_timeout.total_seconds())
        try:
            feeds = [(f.name, f.url) for f in config.feeds.values()]
            await store.write(lambda st: st.sync_feeds(feeds))
            generation = await store.read(lambda st: st.generation())
            states = {st.name: st for st in await store.read(lambda st: st.feed_states())}
            async with make_fetcher(config, metrics) as fetcher:
                rt: Runtime

                def on_result(result: str) -> None:
                    if metrics is not None:
                        metrics.articles.labels(result).inc()

                # The queue reads the runtime's config and gates at each use: a reload's
                # settings and limits apply to it at once.
                articles = ArticleQueue(
                    store,
                    fetcher,
                    pool,
                    lambda: rt.config,
                    lambda: rt.ctx.hosts,
                    on_write,
                    on_result=on_result,
                )
                ctx = PollContext(
                    fetcher,
                    store,
                    pool,
                    on_write,
                    hosts=make_gates(config, states, datetime.now(UTC)),
                    work=asyncio.Semaphore(s.max_concurrency),
                    embed_hosts=frozenset(s.embed_hosts),
                    articles=articles,
                    limits=s.limits,
                )
                rt = Runtime(config, store, pool, fetcher, ctx, articles, states, generation)
                yield rt
        finally:
            # In a thread: the slots take up to POLL_STEP to notice, and the loop must not block.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
    finally:
        # Waits for queued writes: a poll that reached the writer is committed whole.
        await store.aclose()
