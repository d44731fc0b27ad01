"""What the daemon knows of its feeds and its writer in memory, for cheap health answers. Pure.

`/healthz` and `/metrics` read this board instead of the database: a health probe every few
seconds must neither scan the feeds table nor take the write lock. The board is seeded from the
stored states at start and on reload, then follows each poll's outcome; the writer's heartbeat
(a write-lock probe the daemon runs on its own clock, see daemon.py) says whether SQLite can
still be written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .models import FeedState, PollOutcome

# Every status a feed can show, in the order pages and metrics list them.
FEED_STATUSES = ("ok", "not_modified", "unchanged", "redirected", "error", "gone", "pending")
FAILING = frozenset({"error", "gone"})
HEARTBEAT_EVERY = timedelta(seconds=10)
# A heartbeat older than this means the writer thread is stuck (a write that never returns).
HEARTBEAT_STALE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed as the board knows it."""

    status: str
    last_ok: datetime | None = None
    failing_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The last write-lock probe of the writer thread: when, and its error if it failed."""

    at: datetime
    error: str | None = None


class FeedBoard:
    """Each configured feed's latest status, last success and failing-since time."""

    def __init__(self) -> None:
        self._feeds: dict[str, FeedHealth] = {}
        self.heartbeat: Heartbeat | None = None

    def reset(self, names: Iterable[str], states: Mapping[str, FeedState]) -> None:
        """Follow a (new) config: exactly `names`, from their stored states; a feed never
        polled is pending, so it has its series and its count from the start."""
        board: dict[str, FeedHealth] = {}
        for name in names:
            state = states.get(name)
            board[name] = (
                FeedHealth(state.status, state.last_ok, state.failing_since)
                if state is not None
                else FeedHealth("pending")
            )
        self._feeds = board

    def record(self, outcome: PollOutcome, now: datetime) -> None:
        """A poll finished; a deferred one (it never ran) changes nothing."""
        old = self._feeds.get(outcome.feed)
        if outcome.status == "deferred" or old is None:
            return
        if outcome.status in FAILING:
            since = old.failing_since if old.status in FAILING and old.failing_since else now
            self._feeds[outcome.feed] = FeedHealth(outcome.status, old.last_ok, since)
        else:
            self._feeds[outcome.feed] = FeedHealth(outcome.status, now, None)

    def items(self) -> list[tuple[str, FeedHealth]]:
        return list(self._feeds.items())

    def counts(self) -> dict[str, int]:
        """Feeds by status, every status present (0 when none)."""
        tally = Counter(h.status for h in self._feeds.values())
        return {status: tally[status] for status in FEED_STATUSES}

    def writer_problem(self, now: datetime) -> str | None:
        """Why the database cannot be written, or None. Before the first heartbeat the store
        was just opened (and migrated) by the writer, which proves it."""
        beat = self.heartbeat
        if beat is None:
            return None
        if beat.error is not None:
            return beat.error
        if now - beat.at > HEARTBEAT_STALE:
            age = int((now - beat.at).total_seconds())
            return f"the database writer has not answered for {age}s"
        return None


def health_doc(
    board: FeedBoard,
    now: datetime,
    scheduler_running: bool,
    reload_status: dict[str, Any] | None,
) -> tuple[bool, dict[str, Any]]:
    """The body of `/healthz` and whether the daemon is healthy: small and constant-size (no
    per-feed detail; that is `/status`)."""
    problems = []
    if not scheduler_running:
        problems.append("scheduler is not running")
    writer = board.writer_problem(now)
    if writer is not None:
        problems.append(writer)
    counts = board.counts()
    beat = board.heartbeat
    return not problems, {
        "status": "fail" if problems else "ok",
        "problems": problems,
        "feeds": {"total": sum(counts.values()), **counts},
        "failing": sum(counts[s] for s in FAILING),
        "writer": None
        if beat is None
        else {"checked": beat.at.isoformat(timespec="seconds"), "error": beat.error},
        # The last config reload: a failed one is shown here, but the daemon stays healthy on
        # the config it runs.
        "reload": reload_status,
    }
