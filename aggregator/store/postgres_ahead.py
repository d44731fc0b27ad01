"""A poller's leased state writes on PostgreSQL, many in one round trip: the writes of a
batch's 304s, unchanged bodies and errors sent together before the batch's calls run. I/O.

Each call of a write batch runs in a savepoint of its own (threads._Batcher): three round
trips to the server for a one-statement write, and thirty-two of them in a row held the
poller's writer (and so the release of its leases) for some 20 ms. `write_ahead` sends the
guarded UPDATE of every such write of the batch at once (psycopg's executemany pipelines
them), remembers which went through, and the poll's own call then finds its write done
(`done_ahead`) instead of making it; a write that did not go through (the lease or the row
changed since the claim) is made the long way by its call, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..ingest.feedstate import next_state, poll_url
from ..ingest.feedstate import second as _second
from ..ingest.hosts import origin
from ..models import FeedState
from .postgres_connection import PostgresBase
from .postgres_schema import GENERATION
from .protocol import AheadWrite
from .rows import FEED_COLUMNS, _feed_values

COLUMNS = (*FEED_COLUMNS, "origin")
# A leased poll's write in one statement, as SQLite's guarded UPDATE (rows._UPDATE_FEED_IF):
# the whole state, the lease ended, only while the poller holds the lease and the row holds
# the state its poll started from; with the generation, which a write without entries keeps.
# No row back: the lease was lost or another process wrote the row, told apart the long way.
_LEASED_IF = (
    f"UPDATE feeds SET ({', '.join(COLUMNS)}, lease_owner, lease_until) = "
    f"({', '.join(['%s'] * len(COLUMNS))}, NULL, NULL) "
    "WHERE name = %s AND lease_owner = %s"
    + "".join(f" AND {c} IS NOT DISTINCT FROM %s" for c in FEED_COLUMNS)
)
UPDATE_LEASED_IF = _LEASED_IF + f" RETURNING {GENERATION} AS generation"
# Ahead of a batch: whether each went through; the generation is read once for them all.
_AHEAD = _LEASED_IF + " RETURNING name"


def state_values(state: FeedState) -> list[Any]:
    """The stored form of each FEED_COLUMNS field, as SQLite keeps them: times in whole
    seconds, no hints as NULL (a new feed's row has no hints: its first write is guarded by
    its row as it is, which JSON for the empty hints never matched)."""

    def t(when: datetime | None) -> datetime | None:
        return _second(when) if when is not None else None

    return _feed_values(state, t)


def row_values(state: FeedState) -> list[Any]:
    """The COLUMNS values of a state's row: its fields, and the origin its polls go to (the
    redirect target's once a permanent redirect moved the feed)."""
    return [*state_values(state), origin(poll_url(state, state.url))]


def leased_params(expected: FeedState, state: FeedState, lease: str) -> list[Any]:
    """UPDATE_LEASED_IF's parameters: `state` written over `expected`, under `lease`."""
    return [*row_values(state), state.name, lease, *state_values(expected)]


class WriteAhead(PostgresBase):
    """The writes made ahead of a batch's calls (mixed into PostgresStore)."""

    # name → (expected, state, lease, generation) of each write made ahead and not yet
    # claimed by its call; only ever filled and emptied within one batch, on its thread.
    _ahead: dict[str, tuple[FeedState, FeedState, str, int]] | None = None

    def write_ahead(self, items: Sequence[AheadWrite]) -> None:
        """Make the state writes of `items` in one round trip, inside the batch's open
        transaction (so they commit with it, or not at all), and remember those that went
        through. Any failure leaves every one of them to its call."""
        self._ahead = None
        states = [next_state(item.old, item.rec) for item in items]
        params = [
            leased_params(item.old, state, item.lease)
            for item, state in zip(items, states, strict=True)
        ]
        done: dict[str, tuple[FeedState, FeedState, str, int]] = {}
        with self._transaction():  # a savepoint: a failure here undoes only these writes
            cur = self.conn.cursor()
            cur.executemany(_AHEAD.encode(), params, returning=True)
            # A state-only write moves no generation: the one of the whole batch so far.
            generation = self._generation()
            for item, state in zip(items, states, strict=True):
                row = cur.fetchone()
                if row is not None and state.name not in done:
                    done[state.name] = (item.old, state, item.lease, generation)
                cur.nextset()
        self._ahead = done

    def forget_ahead(self) -> None:
        """The batch is over: no call may find a write of it done any more."""
        self._ahead = None

    def done_ahead(self, expected: FeedState | None, state: FeedState, lease: str) -> int | None:
        """The generation after this very write (the same state over the same expected one,
        under the same lease) if `write_ahead` made it; else None."""
        ahead = self._ahead
        hit = ahead.get(state.name) if ahead else None
        if ahead is None or hit is None:
            return None
        if hit[2] != lease or hit[0] != expected or hit[1] != state:
            return None
        del ahead[state.name]
        return hit[3]
