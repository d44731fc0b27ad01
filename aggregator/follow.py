"""Following the store's generation for commits made by other processes: every FOLLOW_EVERY
a reader thread reads `generation()`, and a grown one is handed to `on_change` (the daemon's
generation, which the render cache and the WebSub notifier read). A server process polls
nothing itself, so this is how a poller's commit in another process, or on another machine,
reaches its render cache within a second. I/O through the store threads.

A read of one meta row every half second is nothing to either store; it needs no extra
connection (LISTEN/NOTIFY would hold one per server) and behaves the same on SQLite, where an
`aggregator fetch` beside the daemon commits from another process too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import AggregatorError
from .jobs import Sleep
from .store.threads import StoreThreads

log = logging.getLogger("aggregator.server")
FOLLOW_EVERY = 0.5  # seconds


async def follow_generation(
    store: StoreThreads,
    on_change: Callable[[int], None],
    sleep: Sleep,
    every: float = FOLLOW_EVERY,
) -> None:
    """Until `sleep` says the daemon stops: read the store generation every `every` seconds
    and pass it to `on_change` when it grew. A failing read (the database restarting) is
    logged once, and following resumes when the store answers again."""
    seen: int | None = None
    failing = False
    while True:
        try:
            generation = await store.read(lambda s: s.generation())
        except AggregatorError as e:
            if not failing:
                log.warning("cannot read the store generation (retrying): %s", e)
            failing = True
        else:
            if failing:
                log.info("reading the store generation again")
            failing = False
            if seen is None or generation > seen:
                seen = generation
                on_change(generation)
        if await sleep(every):
            return
