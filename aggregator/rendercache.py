"""The render cache of the server: each output page rendered from the store only when the
store generation changed since its last render, on render threads of its own (never on the
event loop), and kept as gzipped bytes with their ETag; the bytes of the last render keep
being served while the next one is made. I/O: store reads on those threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from .config.resolved import Config
from .metrics import Metrics
from .outputs.httpcache import Cached, make_cached
from .outputs.plan import PageNotFound, PlanCache, Rendered, ServedFormat, render_output
from .outputs.publish import CONTENT_TYPES
from .store.protocol import Store
from .store.threads import StoreThreads

SERVED_TYPES: dict[ServedFormat, str] = {
    "atom": CONTENT_TYPES["atom"],
    "rss": CONTENT_TYPES["rss"],
    "json": CONTENT_TYPES["json"],
    "html": "text/html; charset=utf-8",
    "opml": "text/x-opml; charset=utf-8",
}
CACHE_LIMIT = 512  # rendered pages kept; ?page= and ?limit= can ask for many
RENDER_THREADS = 4  # outputs rendered at once, each on a thread of the renders' own
log = logging.getLogger("aggregator.server")  # render failures are the server's lines

# An output, a format, a page and its size (None: the output's own).
PageKey = tuple[str, ServedFormat, int, int | None]


class RenderCache:
    """Rendered pages of the outputs. `config` and `generation` are read at each request: a
    new Config object empties the cache (rules or sources may have changed), a store write
    makes what is cached stale (served while one render brings it up to date)."""

    def __init__(
        self,
        store: StoreThreads,
        config: Callable[[], Config],
        generation: Callable[[], int],
        metrics: Metrics,
        plans: PlanCache | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.generation = generation
        self.metrics = metrics
        # An output's plan, shared by the renders of its formats and pages (see plan.py).
        self.plans = plans if plans is not None else PlanCache()
        self._cache: dict[PageKey, tuple[Rendered, Cached]] = {}
        # The render in flight per page, with the config it renders under.
        self._refreshing: dict[PageKey, tuple[Config, asyncio.Task[tuple[Rendered, Cached]]]] = {}
        self._lanes: dict[str, asyncio.Lock] = {}  # one render at a time per output
        self._render_threads = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="render")
        self._config_seen: Config | None = None
        # When this config took effect: the date of what depends only on it (OPML).
        self._config_since = datetime.now(UTC).replace(microsecond=0)

    async def close(self) -> None:
        """Cancel the renders under way and stop the render threads."""
        for _, task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.to_thread(self._render_threads.shutdown, True, cancel_futures=True)

    def _check_config(self) -> Config:
        config = self.config()
        if config is not self._config_seen:
            # Rules or sources may have changed: nothing cached can be trusted.
            self._cache.clear()
            self._config_seen = config
            self._config_since = datetime.now(UTC).replace(microsecond=0)
        return config

    async def rendered(
        self, name: str, fmt: ServedFormat, page: int = 1, per_page: int | None = None
    ) -> Rendered:
        """The output as of the current store generation: rendered now, or from the cache
        when the store has not changed since (what the WebSub notifier compares)."""
        return (await self.served(name, fmt, page, per_page, fresh=True))[0]

    async def served(
        self, name: str, fmt: ServedFormat, page: int, per_page: int | None, fresh: bool = False
    ) -> tuple[Rendered, Cached]:
        """The cached body while it is current. After a store change the body cached before
        it is still served (unless `fresh`) while one render brings it up to date in the
        background: a subscriber never waits for a render once the output was rendered once."""
        config = self._check_config()
        key = (name, fmt, page, per_page)
        # The common case, a cache hit, takes no lock: it is the whole cost of serving.
        cached = self._cache.get(key)
        if cached is not None and cached[0].generation >= self.generation():
            self.metrics.cache_hits.inc()
            return cached
        running = self._refreshing.get(key)
        # A render started before a reload is of the old sources, rules and links: whoever
        # asks after the reload waits for one of the new config (it takes the output's lane
        # after the old one), never joins the old.
        if running is not None and running[0] is config:
            task = running[1]
        else:
            task = asyncio.ensure_future(self._refresh(config, key))
            self._refreshing[key] = (config, task)
            task.add_done_callback(functools.partial(self._refreshed, key))
        if cached is not None and not fresh:
            self.metrics.stale_served.inc()
            return cached
        # Shielded: a subscriber who hangs up must not cancel the render others wait for.
        return await asyncio.shield(task)

    def _refreshed(self, key: PageKey, task: asyncio.Task[tuple[Rendered, Cached]]) -> None:
        running = self._refreshing.get(key)
        if running is not None and running[1] is task:
            del self._refreshing[key]
        error = None if task.cancelled() else task.exception()
        if isinstance(error, PageNotFound):
            # The page is past the end now (fewer stories): the next request gets its 404.
            self._cache.pop(key, None)
        elif error is not None:
            # Whoever waited got the error; one served stale must still leave a trace.
            log.error("render of %s failed: %s", key, error)

    async def _refresh(self, config: Config, key: PageKey) -> tuple[Rendered, Cached]:
        name, fmt, page, per_page = key
        # One render at a time per output (its formats and pages share one plan of it), on
        # threads of their own: a slow output holds one of them, never another output's turn.
        async with self._lanes.setdefault(name, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached is not None and cached[0].generation >= self.generation():
                return cached
            since = self._config_since

            def render(store: Store) -> tuple[Rendered, Cached]:
                fresh = render_output(store, config, name, fmt, page, per_page, plans=self.plans)
                # Compressed on the render thread too: gzip of a big body takes most of a
                # second, which on the loop would stall every other request.
                return fresh, make_cached(
                    fresh.body,
                    SERVED_TYPES[fmt],
                    # An OPML follows the config: it dates from when the config took effect.
                    since if fmt == "opml" else fresh.last_modified,
                    fresh.etag,
                )

            entry = await self.store.read(render, self._render_threads)
        self.metrics.renders.labels(fmt).inc()
        if config is self._config_seen:  # a reload meanwhile: this render is of the old rules
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()  # rare (many ?limit= values): re-rendering is the cost
            self._cache[key] = entry
        return entry
