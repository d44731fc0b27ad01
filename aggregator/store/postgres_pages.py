"""A host taken by one poller for its article pages (PostgreSQL): while it is, no other
poller polls the host or fetches its pages, so the taker's own gates (host_concurrency,
host_delay) bound every request the cluster sends there, as a claim's host ownership does
for feed polls (postgres_claims.py). I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .postgres_connection import PostgresBase, pg_store_errors

# The host is free for `owner`: nobody owns it (or its ownership ran out, or it is ours), no
# Retry-After holds, and no other poller has a poll of it under a live lease (a host without
# a host_delay is owned by nobody while its feeds are polled). Run after the row is locked,
# as a statement of its own: its snapshot then sees every claim that held the row before.
# The hold runs from the request's start, which waits for the host's next start (a
# host_delay after the previous owner's last request): a long delay must not outlast it.
_TAKE = """
UPDATE hosts h SET owner = %(owner)s, delay = %(delay)s,
    owner_until = greatest(
        CASE WHEN h.owner = %(owner)s THEN h.owner_until END,
        greatest(h.next_start, clock_timestamp()) + %(hold)s),
    pages_until = greatest(h.pages_until, greatest(h.next_start, clock_timestamp()) + %(hold)s)
WHERE h.origin = %(host)s
AND (h.owner IS NULL OR h.owner = %(owner)s OR h.owner_until < clock_timestamp())
AND (h.blocked_until IS NULL OR h.blocked_until <= clock_timestamp())
AND NOT EXISTS (
    SELECT 1 FROM feeds f WHERE f.origin = h.origin AND f.lease_owner <> %(owner)s
    AND f.lease_until >= clock_timestamp()
)
RETURNING greatest(h.next_start, clock_timestamp()) AS start
"""


@pg_store_errors
class PageHosts(PostgresBase):
    """Hosts taken for article pages, on one connection (mixed into PostgresStore)."""

    def take_for_pages(
        self, owner: str, host: str, delay: timedelta, hold: timedelta
    ) -> datetime | None:
        """Make `owner` the one poller of `host` for `hold` (a page's request at most), if
        the host is free for it. Returns when its next request may start on the database's
        clock (a host_delay after the previous owner's last one), or None: another poller
        has the host now."""
        with self._transaction():
            self.conn.execute(
                b"INSERT INTO hosts (origin) VALUES (%s) ON CONFLICT DO NOTHING", [host]
            )
            # The row first, in a statement of its own: a claim holding it commits before
            # the check below reads the feeds' leases.
            self.conn.execute(b"SELECT 1 FROM hosts WHERE origin = %s FOR UPDATE", [host])
            row = self._one(_TAKE, {"owner": owner, "host": host, "delay": delay, "hold": hold})
        return row["start"] if row is not None else None

    def end_pages(self, owner: str, host: str) -> None:
        """`owner`'s pages of `host` are done: its next claim gives the host up, unless it
        holds feeds of it then (postgres_claims._let_go)."""
        self.conn.execute(
            b"UPDATE hosts SET pages_until = NULL WHERE origin = %s AND owner = %s",
            [host, owner],
        )
