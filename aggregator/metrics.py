"""Feeding the Prometheus metrics from the poll pipeline, without the pipeline knowing of them.

The metric objects themselves live in server.Metrics (one registry per daemon).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .fetch import Fetcher
from .models import FeedState, Fetched, NotModified, PollOutcome
from .server import Metrics


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
    """Count one poll: its result, the entries it stored, and the feed's last success."""
    metrics.polls.labels(outcome.status).inc()
    metrics.entries.labels("new").inc(outcome.new)
    metrics.entries.labels("updated").inc(outcome.updated)
    if outcome.status != "error":
        metrics.last_success.labels(outcome.feed).set(now.timestamp())


def seed_last_success(metrics: Metrics, states: Iterable[FeedState]) -> None:
    """Carry each feed's stored last success over a restart."""
    for state in states:
        if state.last_ok is not None:
            metrics.last_success.labels(state.name).set(state.last_ok.timestamp())
