"""Article pages on a poller that shares its store (PostgreSQL): each page's host is taken
for this poller before the page's request (store/postgres_pages.py), so host_concurrency and
host_delay hold for pages across the cluster as they do for feed polls: the one poller of a
host spaces and counts its pages and its polls there with its own gates. I/O (the database).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from .config.resolved import Config
from .errors import AggregatorError, StoreError
from .ingest.hosts import HostGates
from .store.postgres_pages import PageHosts
from .store.protocol import Store
from .store.threads import StoreThreads

log = logging.getLogger("aggregator.cluster")

# What a page's hold on its host adds to the request's timeout: a poller that dies holding
# it keeps the host from the others no longer than this.
HOLD_MARGIN = timedelta(seconds=10)


def _pages(store: Store) -> PageHosts:
    if not isinstance(store, PageHosts):
        raise StoreError("sharing hosts for article pages needs a PostgreSQL store")
    return store


class SharedPageHosts:
    """ArticleQueue's `shared` on a poller: `take` before a page's request, `done` after."""

    def __init__(
        self,
        store: StoreThreads,
        node: str,
        config: Callable[[], Config],
        gates: Callable[[], HostGates],
        offset: Callable[[], timedelta],
    ) -> None:
        self._store, self._node = store, node
        self._config, self._gates, self._offset = config, gates, offset
        self._taken: dict[str, int] = {}  # host → this poller's pages under way there

    async def take(self, host: str) -> datetime | None:
        """Take `host` for one request; when (our clock) it may start, or None: another
        poller has the host now (its pages and polls are spaced by that poller)."""
        node, delay = self._node, self._gates().limit(host).delay
        hold = self._config().aggregator.timeout + HOLD_MARGIN
        try:
            start = await self._store.write_aside(
                lambda s: _pages(s).take_for_pages(node, host, delay, hold)
            )
        except AggregatorError as e:
            log.error("taking %s for its article pages failed: %s", host, e)
            return None
        if start is None:
            return None
        self._taken[host] = self._taken.get(host, 0) + 1
        return start - self._offset()

    async def done(self, host: str) -> None:
        """One request of `host` taken for is over; the last one hands the host back."""
        left = self._taken.get(host, 0) - 1
        if left > 0:
            self._taken[host] = left
            return
        self._taken.pop(host, None)
        node = self._node
        try:
            await self._store.write_aside(lambda s: _pages(s).end_pages(node, host))
        except AggregatorError as e:  # the hold runs out by itself
            log.error("handing %s back after its article pages failed: %s", host, e)
