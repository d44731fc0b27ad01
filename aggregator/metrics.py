"""The daemon's Prometheus metrics, and feeding them from the poll pipeline without the pipeline
knowing of them. Pure apart from the registry (one per daemon: tests start many).

Per-feed series (status, last success, seconds since it) are computed from the `FeedBoard` when
scraped, so every configured feed has them, including one that never succeeded, and a removed
feed's series disappear with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import ERROR_KINDS
from .health import FeedBoard
from .ingest.fetch import Fetcher
from .models import Fetched, NotModified, PollOutcome

POLL_RESULTS = ("ok", "not_modified", "unchanged", "error", "gone")

# A counter's label values known in advance, each present from the start at 0: a rate() over
# a series that appears only with its first event misses that event.
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "aggregator_polls": POLL_RESULTS,
    "aggregator_poll_errors": ERROR_KINDS,
    "aggregator_entries_stored": ("new", "updated"),
    "aggregator_renders": ("atom", "rss", "json", "html", "opml"),
    "aggregator_websub_pings": ("ok", "error"),
    "aggregator_articles": ("extracted", "failed", "retry"),
}

# `_created` series (one per counter and label set) double the scrape for a value nobody
# graphs. A process-wide switch of prometheus_client: the daemon owns its process.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class FeedCollector(Collector):
    """The per-feed gauges, read from the board at scrape time."""

    def __init__(self, board: FeedBoard, clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        by_status = GaugeMetricFamily(
            "aggregator_feeds", "Configured feeds by current status", labels=["status"]
        )
        for status, count in self.board.counts().items():
            by_status.add_metric([status], count)
        current = GaugeMetricFamily(
            "aggregator_feed_status",
            "1 for each feed's current status (the feed's other statuses are absent)",
            labels=["feed", "status"],
        )
        last = GaugeMetricFamily(
            "aggregator_feed_last_success_timestamp_seconds",
            "When each feed was last polled without error (Unix time; 0: never)",
            labels=["feed"],
        )
        since = GaugeMetricFamily(
            "aggregator_feed_seconds_since_last_success",
            "Seconds since each feed was last polled without error (+Inf: never)",
            labels=["feed"],
        )
        for name, health in self.board.items():
            current.add_metric([name, health.status], 1)
            ok = health.last_ok.timestamp() if health.last_ok is not None else None
            last.add_metric([name], ok or 0.0)
            since.add_metric([name], max(0.0, now - ok) if ok is not None else math.inf)
        yield from (by_status, current, last, since)


class Metrics:
    """Prometheus metrics of one daemon, in a registry of its own, and the board they read."""

    def __init__(self, board: FeedBoard | None = None) -> None:
        self.board = board or FeedBoard()
        self.registry = prometheus_client.CollectorRegistry()
        self.polls = self._counter("aggregator_polls", "Feed polls by result", "status")
        self.errors = self._counter(
            "aggregator_poll_errors", "Failed polls by kind of error", "kind"
        )
        self.entries = self._counter("aggregator_entries_stored", "Entries written", "kind")
        self.renders = self._counter("aggregator_renders", "Output renders", "format")
        self.cache_hits = self._counter("aggregator_output_cache_hits", "Outputs served from cache")
        self.stale_served = self._counter(
            "aggregator_output_stale_served",
            "Outputs served from the cache of an older store generation while re-rendered",
        )
        self.fetch_seconds = prometheus_client.Histogram(
            "aggregator_fetch_seconds",
            "Time to fetch a feed (request to last byte, or failure)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.hub_pings = self._counter(
            "aggregator_websub_pings", "WebSub hub pings by result", "result"
        )
        self.articles = self._counter(
            "aggregator_articles",
            "Article pages fetched for full content, by result (extracted, failed, retry)",
            "result",
        )
        self.registry.register(FeedCollector(self.board))

    def _counter(
        self, name: str, documentation: str, label: str | None = None
    ) -> prometheus_client.Counter:
        """A counter in this registry, by one label or none, with a series per known value."""
        counter = prometheus_client.Counter(
            name, documentation, [label] if label else [], registry=self.registry
        )
        for value in KNOWN_LABELS.get(name, ()):
            counter.labels(value)
        return counter


class TimedFetcher(Fetcher):
    """A Fetcher that records how long each fetch took, failures included, in a histogram."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def fetch(self, *args: Any, **kwargs: Any) -> Fetched | NotModified:
        started = time.monotonic()
        try:
            return await super().fetch(*args, **kwargs)
        finally:
            self._metrics.fetch_seconds.observe(time.monotonic() - started)


def record_outcome(metrics: Metrics, outcome: PollOutcome, now: datetime) -> None:
    """Count one poll: its result, its kind of error, the entries it stored, and the feed's
    new state on the board."""
    if outcome.status == "deferred":
        return  # no request was sent: not a poll
    metrics.polls.labels(outcome.status).inc()
    if outcome.status == "error":
        metrics.errors.labels(outcome.error_kind or "other").inc()
    metrics.entries.labels("new").inc(outcome.new)
    metrics.entries.labels("updated").inc(outcome.updated)
    metrics.board.record(outcome, now)
