"""The host gates and the state cache of a poller whose claims plan its polls' starts
(cluster.py): its starts are the claim's, its Retry-Afters go to every poller, its states
are the rows its claims locked. I/O only through `on_block`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from .ingest.context import StateCache
from .ingest.hosts import HostGates, HostLimit
from .models import FeedState


class ClusterGates(HostGates):
    """Host gates of a poller whose starts the claim spaced already: no local `host_delay`
    turn is taken (the claim's start times plan them, and only this poller polls a host with a
    delay while it holds feeds of it), and a Retry-After is also sent to `on_block`, which
    records it for every poller."""

    def __init__(
        self,
        limits: dict[str, HostLimit],
        default: HostLimit,
        on_block: Callable[[str, datetime], None],
    ) -> None:
        # Paced: starts keep host_delay on the wire as on SQLite; since the host is this
        # poller's alone meanwhile, across the cluster too.
        super().__init__(limits, default, paced=True)
        self._on_block = on_block

    def reserve(self, host: str, now: datetime, key: str = "") -> datetime | None:
        return None  # the claim gave this poll its start on the host

    def block(self, host: str, until: datetime) -> None:
        super().block(host, until)
        self._on_block(host, until)

    def learn(self, host: str, until: datetime) -> None:
        """A Retry-After another poller recorded: held here too (not sent back)."""
        super().block(host, until)


class ClaimedStates(StateCache):
    """The states of the feeds this poller holds, as its claims read them (their rows locked
    then): trusted whatever other processes commit meanwhile, which the SQLite cache cannot
    be. Every poll here is of a claimed feed, whose row only its lease holder writes; a write
    by anyone else (`aggregator fetch`) is caught by save_poll_if, which compares the row."""

    def get(self, name: str, external_changes: int) -> FeedState | None:
        return super().get(name, 0)
