"""Pollers sharing the feeds of one PostgreSQL store: due feeds claimed under a lease, with
their hosts' politeness slots, in one transaction; leases renewed and released; a host-wide
Retry-After recorded for every poller. I/O.

The database's clock (`clock_timestamp()`) is the only clock here: pollers on several machines
never compare their own clocks with each other. A claim locks its candidate feeds with
`FOR UPDATE SKIP LOCKED` (two pollers claiming at once take different feeds, and neither waits
for the other), then the rows of their hosts in name order (claims touching the same hosts
queue there, in one order, so they cannot deadlock), counts each host's live leases, and hands
out start times (ingest/slots.py). A poll's write ends its lease in its own transaction
(postgres.PostgresStore.save_poll_if).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..ingest.feedstate import poll_url
from ..ingest.hosts import HostLimit, origin
from ..ingest.slots import CLAIM_AHEAD, HostRow, Start, plan_named, plan_starts
from ..models import FeedState
from .postgres_connection import PostgresBase, Row, pg_store_errors
from .rows import _feed_state_from_row

# The due feeds not leased (or whose lease expired), at most the free slots of each host, the
# most overdue first (never polled first), locked; a feed another claim holds is skipped, not
# waited for (the LIMIT comes after the skip, so two claimers at once take the first free ones
# each). The scan walks the due index in order and stops after `scan` feeds of hosts that
# can take a start now, so a claim costs the same with ten or a hundred thousand feeds due;
# the hosts that cannot (full, blocked, another poller's) are passed over on the way. The
# outer conditions are checked again on a row a concurrent claim or poll committed meanwhile
# (READ COMMITTED re-reads a row it locks), so a feed just claimed elsewhere is never taken.
_CANDIDATES = """
WITH lim(origin, concurrency) AS (
    SELECT * FROM unnest(%(origins)s::text[], %(concurrency)s::int[])
), busy AS (
    SELECT origin, count(*) AS n FROM feeds
    WHERE lease_owner IS NOT NULL AND lease_until >= now() GROUP BY origin
), due AS MATERIALIZED (
    SELECT f.name, f.origin, coalesce(f.next_poll, '-infinity') AS due_at,
        coalesce(lim.concurrency, %(default)s) - coalesce(busy.n, 0) AS free
    FROM feeds f
    LEFT JOIN hosts h ON h.origin = f.origin
    LEFT JOIN lim ON lim.origin = f.origin
    LEFT JOIN busy ON busy.origin = f.origin
    WHERE f.gone = 0 AND coalesce(f.next_poll, '-infinity') <= now()
    AND f.name <> ALL(%(skip)s)
    AND (f.lease_until IS NULL OR f.lease_until < now())
    AND (h.blocked_until IS NULL OR h.blocked_until <= now() + %(ahead)s)
    AND (h.next_start IS NULL OR h.next_start <= now() + %(ahead)s)
    AND (h.owner IS NULL OR h.owner = %(owner)s OR h.owner_until < now())
    AND coalesce(lim.concurrency, %(default)s) > coalesce(busy.n, 0)
    ORDER BY coalesce(f.next_poll, '-infinity'), f.name
    LIMIT %(scan)s
), ranked AS (
    SELECT name, free, row_number() OVER (PARTITION BY origin ORDER BY due_at, name) AS rank
    FROM due
)
SELECT f.* FROM feeds f
WHERE f.name IN (SELECT name FROM ranked WHERE rank <= free)
AND f.gone = 0 AND coalesce(f.next_poll, '-infinity') <= now()
AND (f.lease_until IS NULL OR f.lease_until < now())
ORDER BY coalesce(f.next_poll, '-infinity'), f.name
LIMIT %(n)s
FOR UPDATE OF f SKIP LOCKED
"""
# How many grantable feeds a claim looks at, per feed it may claim: a host's feeds beyond its
# free slots take places in the scan without being granted.
SCAN_PER_CLAIM = 4


@dataclass(frozen=True, slots=True)
class Claim:
    """A feed this poller now holds: its state as stored, and when (database clock) its
    request may start and its lease ends."""

    name: str
    origin: str  # the host its request goes to
    state: FeedState
    start: datetime
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim gave, and the database's clock when it was made (for the poller to
    turn start times into its own clock's)."""

    claims: tuple[Claim, ...]
    clock: datetime
    # Hosts under a Retry-After now (until when), whoever recorded it: a poller applies them
    # to the polls it claimed before, which have not started yet.
    blocked: Mapping[str, datetime] = field(default_factory=dict)


@pg_store_errors
class PostgresClaims(PostgresBase):
    """Claims, leases and host rows on one PostgreSQL connection (mixed into PostgresStore)."""

    def db_clock(self) -> datetime:
        """The database's clock now."""
        row = self._one("SELECT clock_timestamp() AS now")
        assert row is not None
        now: datetime = row["now"]
        return now

    def claim_due(
        self,
        owner: str,
        skip: Sequence[str],
        limit: int,
        lease: timedelta,
        limits: Mapping[str, HostLimit],
        default: HostLimit,
        ahead: timedelta = CLAIM_AHEAD,
    ) -> Claimed:
        """Claim up to `limit` of the due feeds, but those in `skip` (stored, but not in this
        poller's config: usually none, so the whole config is not sent each time), for
        `owner`, in one transaction: each granted feed is leased to `owner` until
        its start plus `lease`, its host's next start moved on. `limits` are the hosts' own
        (HostGates.limits), `default` the rest's."""
        if limit <= 0:
            return Claimed((), self.db_clock())
        with self._transaction():
            rows = self._all(
                _CANDIDATES,
                {
                    "origins": list(limits),
                    "concurrency": [rule.concurrency for rule in limits.values()],
                    "default": default.concurrency,
                    "skip": list(skip),
                    "ahead": ahead,
                    "n": limit,
                    "scan": limit * SCAN_PER_CLAIM,
                    "owner": owner,
                },
            )
            states = {r["name"]: _feed_state_from_row(r) for r in rows}  # type: ignore[arg-type]
            hosts = self._origins(rows, states)
            plan_now, rows_of, owned = self._lock_hosts(sorted(set(hosts.values())), owner)
            plan = plan_starts(
                [(r["name"], hosts[r["name"]]) for r in rows if hosts[r["name"]] not in owned],
                rows_of,
                limits,
                default,
                plan_now,
                limit,
                ahead,
            )
            if plan.starts:
                self._all(
                    "UPDATE feeds f SET lease_owner = %(owner)s, lease_until = g.at + %(lease)s "
                    "FROM unnest(%(names)s::text[], %(ats)s::timestamptz[]) AS g(name, at) "
                    "WHERE f.name = g.name RETURNING f.name",
                    {
                        "owner": owner,
                        "lease": lease,
                        "names": [s.name for s in plan.starts],
                        "ats": [s.at for s in plan.starts],
                    },
                )
                self.conn.execute(
                    b"UPDATE hosts h SET next_start = g.at "
                    b"FROM unnest(%(hosts)s::text[], %(ats)s::timestamptz[]) AS g(origin, at) "
                    b"WHERE h.origin = g.origin",
                    {"hosts": list(plan.next_start), "ats": list(plan.next_start.values())},
                )
                self._own(owner, plan.starts, limits, default, lease)
            # The hosts whose last lease of ours a poll's write ended since the last claim
            # (once a claim, not once a poll: until then they stay ours, idle).
            self._let_go(owner)
            blocked = self._all(
                "SELECT origin, blocked_until FROM hosts WHERE blocked_until > %s", [plan_now]
            )
        claims = tuple(
            Claim(s.name, s.origin, states[s.name], s.at, s.at + lease) for s in plan.starts
        )
        return Claimed(claims, plan_now, {r["origin"]: r["blocked_until"] for r in blocked})

    def _origins(self, rows: Sequence[Row], states: Mapping[str, FeedState]) -> dict[str, str]:
        """Each locked feed row's origin, the host its request goes to: as stored (every
        state write stores it, from the same poll_url), else derived and written back (a row
        written by an older version, or a copy)."""
        hosts = {r["name"]: r["origin"] for r in rows}
        stale = [(origin(poll_url(states[n], states[n].url)), n) for n, h in hosts.items() if not h]
        if stale:
            self._many("UPDATE feeds SET origin = %s WHERE name = %s", stale)
            hosts.update((n, h) for h, n in stale)
        return hosts

    def _own(
        self,
        owner: str,
        starts: Sequence[Start],
        limits: Mapping[str, HostLimit],
        default: HostLimit,
        lease: timedelta,
    ) -> None:
        """Make `owner` the one poller of each granted host that has a host_delay, until its
        last lease there ends. Start times from the database's clock cannot space requests
        across pollers (a poller that gets to its start late would bring it close to the next
        poller's); one poller a host at a time can, by its own pacing (HostGates.pace)."""
        until: dict[str, datetime] = {}
        for s in starts:
            if limits.get(s.origin, default).delay > timedelta(0):
                until[s.origin] = max(until.get(s.origin, s.at), s.at) + lease
        if until:
            # One statement for every host, not one a host (a claim of 30 feeds held ~30).
            self.conn.execute(
                b"UPDATE hosts h SET owner = %(owner)s, delay = g.delay, owner_until = "
                b"CASE WHEN h.owner = %(owner)s THEN greatest(h.owner_until, g.until) "
                b"ELSE g.until END FROM unnest(%(hosts)s::text[], %(delays)s::interval[], "
                b"%(untils)s::timestamptz[]) AS g(origin, delay, until) "
                b"WHERE h.origin = g.origin",
                {
                    "owner": owner,
                    "hosts": list(until),
                    "delays": [limits.get(host, default).delay for host in until],
                    "untils": list(until.values()),
                },
            )

    def _let_go(self, owner: str) -> None:
        """Give up every host of `owner`'s where it holds no lease any more (nor a hold for
        its article pages, postgres_pages.py). Another poller's
        first start there comes a host_delay after now, after every request of ours to the
        host: they were all sent before the leases ended. A host row locked elsewhere (a
        fetch or a Retry-After being recorded) is left for the next call: a claim holds its
        own hosts' rows already, and waiting for another in no set order could deadlock."""
        # Each set once (MATERIALIZED): as a subquery of the UPDATE, the planner ran the
        # locking scan again for every owned host, 16-40 ms a claim with 100 hosts.
        self.conn.execute(
            b"WITH mine AS MATERIALIZED ("
            b"SELECT DISTINCT origin FROM feeds WHERE lease_owner = %(owner)s"
            b"), idle AS MATERIALIZED ("
            b"SELECT o.origin FROM hosts o WHERE o.owner = %(owner)s "
            b"AND NOT EXISTS (SELECT 1 FROM mine WHERE mine.origin = o.origin) "
            b"AND (o.pages_until IS NULL OR o.pages_until < clock_timestamp()) "
            b"FOR UPDATE OF o SKIP LOCKED"
            b") UPDATE hosts h SET owner = NULL, owner_until = NULL, "
            b"next_start = greatest(h.next_start, clock_timestamp() + h.delay) "
            b"FROM idle WHERE h.origin = idle.origin AND h.owner = %(owner)s",
            {"owner": owner},
        )

    def _lock_hosts(
        self, origins: list[str], owner: str
    ) -> tuple[datetime, dict[str, HostRow], set[str]]:
        """Lock the hosts' rows (made if missing) in name order; then, with every claim of
        these hosts held off, the clock, each host's live leases, and the hosts another
        poller owns (it took them since the candidates were read)."""
        if origins:
            self.conn.execute(
                b"INSERT INTO hosts (origin) SELECT o FROM unnest(%s::text[]) AS o "
                b'ORDER BY o COLLATE "C" ON CONFLICT DO NOTHING',
                [origins],
            )
        locked = self._all(
            'SELECT * FROM hosts WHERE origin = ANY(%s) ORDER BY origin COLLATE "C" FOR UPDATE',
            [origins],
        )
        now = self.db_clock()
        busy = {
            r["origin"]: r["n"]
            for r in self._all(
                "SELECT origin, count(*) AS n FROM feeds WHERE origin = ANY(%s) "
                "AND lease_owner IS NOT NULL AND lease_until >= %s GROUP BY origin",
                [origins, now],
            )
        }
        rows = {
            r["origin"]: HostRow(
                r["origin"], busy.get(r["origin"], 0), r["next_start"], r["blocked_until"]
            )
            for r in locked
        }
        owned = {
            r["origin"]
            for r in locked
            if r["owner"] not in (None, owner) and r["owner_until"] >= now
        }
        return now, rows, owned

    def renew(self, owner: str, names: Sequence[str], lease: timedelta) -> list[str]:
        """Extend `owner`'s leases of `names` to at least `lease` from now; returns the names
        it still held (a lease another poller took over is not renewed)."""
        # A row locked now is being written by the poller's own writer (its poll's write ends
        # the lease): skipped, not waited for, as that writer may be waiting for a row this
        # statement holds. Such a feed is still ours until that write commits.
        rows = self._all(
            "UPDATE feeds SET lease_until = greatest(lease_until, clock_timestamp() + %(lease)s) "
            "WHERE name IN (SELECT name FROM feeds WHERE lease_owner = %(owner)s "
            "AND name = ANY(%(names)s) FOR UPDATE SKIP LOCKED) RETURNING name, origin",
            {"lease": lease, "owner": owner, "names": list(names)},
        )
        skipped = sorted(set(names) - {r["name"] for r in rows})
        busy = self._all(
            "SELECT name FROM feeds WHERE lease_owner = %s AND name = ANY(%s)", [owner, skipped]
        )
        self.conn.execute(
            b"UPDATE hosts SET owner_until = greatest(owner_until, clock_timestamp() + %s) "
            b"WHERE owner = %s AND origin = ANY(%s)",
            [lease, owner, sorted({r["origin"] for r in rows if r["origin"]})],
        )
        return sorted([r["name"] for r in rows] + [r["name"] for r in busy])

    def bring_forward(self, moves: Sequence[tuple[str, datetime, datetime]]) -> int:
        """Move each (feed, stored, when) of `moves` to `when` while its row still holds the
        next poll `stored` (a poll since decided anew) and is not leased (a poll under way
        will), so a claim takes it then (schedule.capped_waits). Returns how many moved."""
        rows = self._all(
            "UPDATE feeds f SET next_poll = g.at "
            "FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS g(name, was, at) "
            "WHERE f.name = g.name AND f.next_poll = g.was "
            "AND (f.lease_until IS NULL OR f.lease_until < now()) RETURNING f.name",
            [[m[0] for m in moves], [m[1] for m in moves], [m[2] for m in moves]],
        )
        return len(rows)

    def release(self, owner: str, names: Sequence[str], after: timedelta = timedelta(0)) -> int:
        """End `owner`'s leases of `names` without a poll (a claim not started before a stop):
        other pollers may claim the feeds at once, or, with `after`, once that much time has
        passed (a poll whose write failed is tried again then, as on SQLite). Returns how
        many were released."""
        if after > timedelta(0):
            sql = "UPDATE feeds SET lease_until = clock_timestamp() + %s "
            params: list[Any] = [after, owner, list(names)]
        else:
            sql = "UPDATE feeds SET lease_owner = NULL, lease_until = NULL "
            params = [owner, list(names)]
        with self._transaction():
            rows = self._all(
                sql + "WHERE lease_owner = %s AND name = ANY(%s) RETURNING name, origin", params
            )
            # Every host of `owner`'s where it holds no lease now: these feeds' hosts, and
            # those whose last lease a poll's write ended since its last claim.
            self._let_go(owner)
        return len(rows)

    def let_go(self, owner: str) -> None:
        """Give up every host of `owner`'s where it holds no lease (a poller that stops)."""
        self._let_go(owner)

    def block_host(self, host: str, until: datetime) -> None:
        """A host-wide Retry-After (database clock): no poller starts a request to `host`
        before `until` (a later block already recorded stands)."""
        self.conn.execute(
            b"INSERT INTO hosts (origin, blocked_until) VALUES (%s, %s) ON CONFLICT (origin) "
            b"DO UPDATE SET blocked_until = greatest(hosts.blocked_until, excluded.blocked_until)",
            [host, until],
        )

    def host_rows(self) -> dict[str, dict[str, Any]]:
        """Every host's row, by origin (for /status and tests)."""
        return {r["origin"]: r for r in self._all("SELECT * FROM hosts ORDER BY origin")}

    def claim_named(
        self,
        owner: str,
        names: Sequence[str],
        lease: timedelta,
        limits: Mapping[str, HostLimit],
        default: HostLimit,
        within: timedelta,
    ) -> NamedClaim:
        """Lease the feeds `names` to `owner` (a one-off `aggregator fetch`), due or not, in
        one transaction, but those another poller holds: leased to it, being claimed by it
        right now, or of a host it owns or fills (ingest/slots.plan_named). A host with a
        delay becomes `owner`'s as in `claim_due`, so pollers keep off it until the last of
        these leases ends; a feed whose turn would come after `within` is not leased."""
        with self._transaction():
            rows = self._all(
                "SELECT * FROM feeds WHERE name = ANY(%(names)s) AND (lease_owner IS NULL "
                "OR lease_owner = %(owner)s OR lease_until < now()) "
                "ORDER BY name FOR UPDATE SKIP LOCKED",
                {"names": list(names), "owner": owner},
            )
            states = {r["name"]: _feed_state_from_row(r) for r in rows}  # type: ignore[arg-type]
            hosts = self._origins(rows, states)
            others = self._all(
                "SELECT name, lease_owner FROM feeds WHERE name = ANY(%s)",
                [sorted(set(names) - set(states))],
            )
            origins = sorted(set(hosts.values()))
            now, rows_of, owned = self._lock_hosts(origins, owner)
            found = self._all(
                "SELECT origin, owner FROM hosts WHERE origin = ANY(%s)", [sorted(owned)]
            )
            busy = self._all(
                "SELECT origin, count(*) AS n FROM feeds WHERE origin = ANY(%s) "
                "AND lease_owner <> %s AND lease_until >= %s GROUP BY origin",
                [origins, owner, now],
            )
            plan = plan_named(
                [(n, hosts[n]) for n in names if n in states],
                rows_of,
                {r["origin"]: r["owner"] for r in found},
                {r["origin"]: r["n"] for r in busy},
                limits,
                default,
                now,
                within,
            )
            self._many(
                "UPDATE feeds SET lease_owner = %s, lease_until = %s WHERE name = %s",
                [(owner, s.at + lease, s.name) for s in plan.starts],
            )
            self._own(owner, plan.starts, limits, default, lease)
        held = {
            r["name"]: f"leased by {r['lease_owner'] or 'a poller claiming it now'}" for r in others
        }
        claims = tuple(
            Claim(s.name, s.origin, states[s.name], s.at, s.at + lease) for s in plan.starts
        )
        blocked = {
            h: row.blocked_until
            for h, row in rows_of.items()
            if row.blocked_until is not None and row.blocked_until > now
        }
        return NamedClaim(claims, now, blocked, {**held, **plan.held}, plan.late, plan.slots)


@dataclass(frozen=True, slots=True)
class NamedClaim(Claimed):
    """What a claim of named feeds gave (PostgresClaims.claim_named): the granted claims,
    the feeds left to other pollers with why, those whose turn comes too late with it, and
    the request slots the claimer may use on each granted host."""

    held: Mapping[str, str] = field(default_factory=dict)
    late: Mapping[str, Start] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)
