"""What a poll is given: the feed to poll (a PollFeed, its settings resolved once per config)
and the machinery every poll of a process shares (PollContext, with its StateCache). No I/O.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from ..config.credentials import RequestOptions
from ..ingest.decide import PollPolicy
from ..ingest.fetch import Fetcher
from ..ingest.hosts import HostGates, NetworkWatch
from ..ingest.identity import UpdatePolicy
from ..ingest.limits import DEFAULT_LIMITS, Limits
from ..models import FeedState
from ..outputs.filters import Filter
from ..store.threads import StoreThreads

if TYPE_CHECKING:
    from ..ingest.articles import ArticleQueue

DEFAULT_POLICY = PollPolicy(interval=timedelta(minutes=30), jitter=False)


class StateCache:
    """Each feed's polling state exactly as this process last wrote it, so that a poll reads
    nothing before its request (the read was a third of a 304's cost). Trusted only while no
    other process has committed to the database (`StoreThreads.external_changes`); cleared
    whenever the daemon rewrites feed rows itself (a reload's sync_feeds)."""

    def __init__(self) -> None:
        self._states: dict[str, FeedState] = {}
        self._seen = 0

    def get(self, name: str, external_changes: int) -> FeedState | None:
        if external_changes != self._seen:
            self._states.clear()
            self._seen = external_changes
        return self._states.get(name)

    def put(self, state: FeedState) -> None:
        self._states[state.name] = state

    def drop(self, name: str) -> None:
        self._states.pop(name, None)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


class PollFeed(Protocol):
    """What a poll needs to know of its feed, resolved once per config rather than per poll."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def policy(self) -> PollPolicy: ...
    @property
    def update_policy(self) -> UpdatePolicy: ...
    @property
    def filter(self) -> Filter | None: ...  # the feed's own rules: what they drop is not stored
    @property
    def request_options(self) -> RequestOptions | None: ...


@dataclass(frozen=True, slots=True)
class Feed:
    """A feed to poll made directly (tests, the benches: a public feed without rules, polled
    every 30 minutes without jitter); the daemon passes the config's resolved feeds."""

    name: str
    url: str
    policy: PollPolicy = DEFAULT_POLICY
    update_policy: UpdatePolicy = "update"
    filter: Filter | None = None
    request_options: RequestOptions | None = None


@dataclass(frozen=True, slots=True)
class PollContext:
    """The shared machinery a poll uses. `parse_pool` runs parse_feed off the event loop
    (a process pool in the daemon); `on_write` hears the store generation after each commit."""

    fetcher: Fetcher
    store: StoreThreads
    parse_pool: Executor | None
    on_write: Callable[[int], None] = lambda generation: None
    hosts: HostGates = field(default_factory=HostGates)
    network: NetworkWatch = field(default_factory=NetworkWatch)
    rng: random.Random = field(default_factory=random.Random)
    # Polls between request and parsed body; the daemon sizes it to max_concurrency.
    work: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))
    # Hosts whose https iframes (video players) survive sanitising; see sanitize.py.
    embed_hosts: frozenset[str] = frozenset()
    states: StateCache = field(default_factory=StateCache)
    # Queues the article pages of new entries of feeds with full_content (see articles.py).
    articles: ArticleQueue | None = None
    # What one document may make a parse do (see limits.py).
    limits: Limits = DEFAULT_LIMITS
    # The poller's node id when feeds are claimed with leases (PostgreSQL, claims.py): each
    # poll's write ends its lease, and is refused (LeaseLost) once another poller holds it.
    lease: str | None = None
