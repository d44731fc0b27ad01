"""Host politeness across pollers: which claimed feeds may start, and when. Pure: no I/O.

Pollers sharing one PostgreSQL store claim due feeds in one transaction that holds the row of
each host concerned (store/postgres_claims.py); this decides, from those rows, which of the
candidates get a lease and the start time each may fetch at: at most `host_concurrency` leased
feeds per host across the cluster, starts `host_delay` apart, none before a host-wide
Retry-After. Every time is the database's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..ingest.hosts import HostLimit

# How far ahead of now a start may be handed out: a host whose next start is further off is
# left for a later claim (and other pollers) rather than held under a long lease meanwhile.
CLAIM_AHEAD = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class HostRow:
    """A host's row as the claim read it (locked), and its leased feeds counted then."""

    origin: str
    in_flight: int = 0  # feeds of this host under a live lease, any poller's
    next_start: datetime | None = None  # the earliest start the next request may take
    blocked_until: datetime | None = None  # a host-wide Retry-After


@dataclass(frozen=True, slots=True)
class Start:
    """A candidate granted: its feed, host, and when its request may start."""

    name: str
    origin: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Plan:
    """The starts granted, in candidate order, and each touched host's new next start."""

    starts: tuple[Start, ...] = ()
    next_start: Mapping[str, datetime] = field(default_factory=dict)


def plan_starts(
    candidates: Sequence[tuple[str, str]],
    hosts: Mapping[str, HostRow],
    limits: Mapping[str, HostLimit],
    default: HostLimit,
    now: datetime,
    limit: int,
    ahead: timedelta = CLAIM_AHEAD,
) -> Plan:
    """Grant up to `limit` of the (feed, origin) `candidates`, taken in their order (most
    overdue first), a start time each.

    A host grants one start per free slot (`concurrency` minus its leased feeds), the first at
    its next start or now, whichever is later, and never before its Retry-After; each start
    pushes the host's next start `delay` further. A start more than `ahead` of `now` is not
    granted: the feed stays due for a later claim. A host with no row yet is free.
    """
    starts: list[Start] = []
    free: dict[str, int] = {}
    next_at: dict[str, datetime] = {}
    for name, host in candidates:
        if len(starts) >= limit:
            break
        row = hosts.get(host) or HostRow(host)
        rule = limits.get(host, default)
        if host not in free:
            free[host] = rule.concurrency - row.in_flight
            next_at[host] = max(
                now, row.next_start or now, row.blocked_until or now
            )  # the host's next free start, as of this claim
        at = next_at[host]
        if free[host] <= 0 or at > now + ahead:
            continue
        starts.append(Start(name, host, at))
        free[host] -= 1
        next_at[host] = at + rule.delay
    granted = {s.origin for s in starts}
    return Plan(tuple(starts), {h: next_at[h] for h in sorted(granted)})


@dataclass(frozen=True, slots=True)
class NamedPlan:
    """What a claim of named feeds (`aggregator fetch`) grants: the starts, the feeds whose
    turn comes too late (with it), those left to other pollers (with why), and the request
    slots the claimer may use on each granted host without a delay."""

    starts: tuple[Start, ...] = ()
    late: Mapping[str, Start] = field(default_factory=dict)
    held: Mapping[str, str] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)


def plan_named(
    candidates: Sequence[tuple[str, str]],
    hosts: Mapping[str, HostRow],
    owners: Mapping[str, str],
    busy: Mapping[str, int],
    limits: Mapping[str, HostLimit],
    default: HostLimit,
    now: datetime,
    within: timedelta,
) -> NamedPlan:
    """Grant every one of the (feed, origin) `candidates` (unleased, locked) a start, as
    one-off polls of chosen feeds need, except on hosts another poller has.

    A host another poller owns (`owners`: one with a host_delay, see PostgresClaims._own) is
    left to it; so is a host without a delay whose `concurrency` other pollers' requests in
    flight (`busy`) fill: the claimer gets the slots left. On the others, starts go `delay`
    apart from the host's next start (or its Retry-After, or now), in candidate order; one
    after `now + within` is not granted but reported late."""
    starts: list[Start] = []
    late: dict[str, Start] = {}
    held: dict[str, str] = {}
    slots: dict[str, int] = {}
    next_at: dict[str, datetime] = {}
    for name, host in candidates:
        rule = limits.get(host, default)
        if host in owners:
            held[name] = f"its host {host} is polled by {owners[host]} now"
            continue
        free = rule.concurrency - busy.get(host, 0)
        if rule.delay <= timedelta(0) and free <= 0:
            held[name] = f"its host {host} has host_concurrency requests of other pollers"
            continue
        if host not in next_at:
            row = hosts.get(host) or HostRow(host)
            next_at[host] = max(now, row.next_start or now, row.blocked_until or now)
        at, next_at[host] = next_at[host], next_at[host] + rule.delay
        if at > now + within:
            late[name] = Start(name, host, at)
            continue
        starts.append(Start(name, host, at))
        slots[host] = free if rule.delay <= timedelta(0) else rule.concurrency
    return NamedPlan(tuple(starts), late, held, slots)
