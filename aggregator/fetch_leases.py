"""`aggregator fetch` on a PostgreSQL store that pollers share: the command leases the feeds it
polls as a poller does, so that no feed is polled twice and no host another poller has is
sent a request; it renews the leases while it runs and hands back what it did not poll. I/O
(the database).

Its own node id names it in the leases and the hosts it owns meanwhile (nodes.ThisNode, as a
poller's does). Each of its polls writes with that lease, which ends it, as a poller's write
does (store/postgres.py `save_poll_if`); a Retry-After it is answered is recorded for every
poller, and one they recorded holds for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from .cluster_gates import ClusterGates
from .errors import AggregatorError, StoreError
from .ingest.hosts import HostLimit
from .nodes import ThisNode
from .page_hosts import SharedPageHosts
from .runtime import Runtime
from .store.postgres_claims import NamedClaim, PostgresClaims
from .store.protocol import Store

log = logging.getLogger("aggregator.fetch")


def _claims(store: Store) -> PostgresClaims:
    if not isinstance(store, PostgresClaims):
        raise StoreError("leasing feeds needs a PostgreSQL store")
    return store


def _renew(store: Store, owner: str, names: list[str], lease: timedelta) -> list[str]:
    return _claims(store).renew(owner, names, lease)


@dataclass(frozen=True, slots=True)
class Late:
    """A feed whose turn on its host comes after the command's wait: not leased, not polled."""

    name: str
    reason: str  # "host_delay of …" or "Retry-After of …", as a deferred poll says
    when: datetime  # its turn, on our clock


class SharedFetch:
    """The leases of one `aggregator fetch` run beside pollers: `claim` the feeds, `start`
    each granted one when its start comes, `again` after a Retry-After deferred it (the
    deferral's write ended its lease), `close` at the end. `held` says, per feed left to
    the pollers, why."""

    def __init__(self, runtime: Runtime, deadline: datetime) -> None:
        """`deadline`: the end of the command's --max-wait; no turn after it is leased."""
        self.runtime = runtime
        self.deadline = deadline
        self.node = ThisNode("fetch", "", datetime.now(UTC)).node_id
        self.held: dict[str, str] = {}
        self._starts: dict[str, datetime] = {}  # each feed granted → its start (our clock)
        # The database's clock minus ours, erring late: a start or a block ends no sooner.
        self._offset: timedelta | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        # The claim spaces the starts and gives this process the hosts with a delay, whose
        # pacing then keeps it on the wire (as a poller's, see cluster.py); a Retry-After
        # goes to the hosts table for every poller.
        gates = ClusterGates(*runtime.ctx.hosts.limits(), self._block)
        gates.carry_from(runtime.ctx.hosts)  # with the stored Retry-Afters
        runtime.ctx = replace(runtime.ctx, lease=self.node, hosts=gates)
        # Its article pages take their hosts as a poller's do (page_hosts.py).
        runtime.articles.shared = SharedPageHosts(
            runtime.store,
            self.node,
            lambda: runtime.config,
            lambda: runtime.ctx.hosts,
            self._clock_offset,
        )

    async def claim(self, names: Sequence[str]) -> tuple[list[str], list[Late]]:
        """Lease what of `names` no poller holds (the others go to `held`): the granted
        names, in order, and those whose turn comes after the wait."""
        claimed = await self._claim(names)
        gates = self.runtime.ctx.hosts
        for host, slots in claimed.slots.items():
            # A host without a delay: the slots other pollers' requests leave.
            gates.configure(host, HostLimit(slots, gates.limit(host).delay))
        late = [
            Late(
                s.name,
                f"{'Retry-After' if s.origin in claimed.blocked else 'host_delay'} of {s.origin}",
                s.at - self._clock_offset(),
            )
            for s in claimed.late.values()
        ]
        if self._renewing is None:
            self._renewing = asyncio.ensure_future(self._renew())
        return [c.name for c in claimed.claims], late

    async def start(self, name: str) -> None:
        """Wait for the start the claim gave `name` (our clock; at least this late)."""
        while (wait := (self._starts[name] - datetime.now(UTC)).total_seconds()) > 0:
            await asyncio.sleep(wait)

    async def again(self, name: str) -> bool:
        """Lease `name` again once its deferral ended, and wait for its start; False (and
        why in `held`) when a poller has it or its host now, or it cannot be leased."""
        try:
            claimed = await self._claim([name])
        except AggregatorError as e:
            self.held[name] = f"not leased again: {e}"
            return False
        if not any(c.name == name for c in claimed.claims):
            if name in claimed.late:
                when = claimed.late[name].at - self._clock_offset()
                self.held[name] = f"its turn comes at {when:%H:%M:%S} UTC, after --max-wait"
            return False
        await self.start(name)
        return True

    def lost(self, name: str) -> None:
        """Our lease of `name` ran out and a poller took the feed: its poll counts."""
        self.held[name] = "a poller took its lease over"

    async def _claim(self, names: Sequence[str]) -> NamedClaim:
        rt, node = self.runtime, self.node
        lease = rt.config.aggregator.lease
        limits, default = rt.ctx.hosts.limits()
        wait = self.deadline - datetime.now(UTC)
        claimed: NamedClaim = await rt.store.write(
            lambda s: _claims(s).claim_named(node, names, lease, limits, default, wait)
        )
        # Read after the commit: clock minus this is never more than the true offset.
        offset = claimed.clock - datetime.now(UTC)
        self._offset = offset if self._offset is None else max(self._offset, offset)
        self.held.update(claimed.held)
        gates = rt.ctx.hosts
        for host, until in claimed.blocked.items():
            if isinstance(gates, ClusterGates):
                gates.learn(host, until - self._offset)
        for c in claimed.claims:
            rt.ctx.states.put(c.state)
            self._starts[c.name] = c.start - self._offset
        return claimed

    def _clock_offset(self) -> timedelta:
        return self._offset or timedelta(0)

    async def _renew(self) -> None:
        """Keep the leases alive while the command runs (turns and Retry-After may be waited
        for up to --max-wait, longer than a lease)."""
        rt, node = self.runtime, self.node
        lease = rt.config.aggregator.lease
        while True:
            await asyncio.sleep(max(lease.total_seconds() / 3, 0.5))
            try:
                await rt.store.write(
                    functools.partial(_renew, owner=node, names=list(self._starts), lease=lease)
                )
            except AggregatorError as e:
                log.error("lease renewal failed: %s", e)

    def _block(self, host: str, until: datetime) -> None:
        """A host answered Retry-After: recorded (database clock) for every poller."""
        at, store = until + self._clock_offset(), self.runtime.store

        async def write() -> None:
            try:
                await store.write(lambda s: _claims(s).block_host(host, at))
            except AggregatorError as e:
                log.error("recording the Retry-After of %s failed: %s", host, e)

        task = asyncio.ensure_future(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        """Stop renewing, finish recording blocks, and end every lease still ours (feeds not
        polled: gone, cut short, or deferred past the wait), so pollers may take them now."""
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        if self._writes:
            await asyncio.wait(set(self._writes))
        names, node = list(self._starts), self.node
        if names:
            try:
                await self.runtime.store.write(lambda s: _claims(s).release(node, names))
            except AggregatorError as e:
                log.warning("handing back %d lease(s) failed (they run out): %s", len(names), e)
