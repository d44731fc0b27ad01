"""One PostgreSQL connection of ours (psycopg 3): opened from a `postgresql://` URL and
migrated, its transactions, the store generation, and every psycopg error turned into
StoreError. I/O.

The password may be in the URL or come from libpq itself (PGPASSWORD, a pass file, a service
file): the URL is handed to libpq as it is, and shown only without its userinfo.
"""

from __future__ import annotations

import select
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from ..config.database import display_url
from ..config.secret import remember, split_userinfo
from ..errors import StoreError
from .postgres_schema import GENERATION, GENERATION_SLOTS, migrate
from .wrapping import cause, raising_store_error

Row = dict[str, Any]

# RETURNING's subqueries read the statement's snapshot, without this very update: hence + 1.
_BUMPED = f" RETURNING {GENERATION} + 1 AS value"
_BUMP_FREE_SLOT = (
    "WITH free AS (SELECT slot FROM generation_slots ORDER BY slot FOR UPDATE SKIP LOCKED"
    " LIMIT 1) UPDATE generation_slots g SET value = g.value + 1 FROM free"
    " WHERE g.slot = free.slot" + _BUMPED
)
# Every slot held by others (more writers at once than slots): wait for one of them.
_BUMP_OWN_SLOT = (
    "UPDATE generation_slots SET value = value + 1"
    f" WHERE slot = mod(pg_backend_pid(), {GENERATION_SLOTS})" + _BUMPED
)

# Seconds to wait for a connection when the URL does not say (libpq's default is forever: a
# daemon pointed at a host that drops packets would hang at start with no word).
CONNECT_TIMEOUT = 10
# How many times an idle connection's pending input is read before it counts as alive.
_GOODBYE_READS = 4


# Every public method of the PostgreSQL store classes: StoreError for any psycopg error.
pg_store_errors = raising_store_error(psycopg.Error)


@pg_store_errors
class PostgresBase:
    """One connection to a PostgreSQL database, migrated on open, and what every unit of work
    on it shares. Not thread-safe by design: it stays on the thread that uses it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = display_url(url)  # what messages and /status name it by
        password = split_userinfo(url)[2]
        if password:
            remember(password)  # blanked in every later log line and redacted message
        try:
            conninfo = url
            if "connect_timeout" not in conninfo_to_dict(url):
                conninfo = make_conninfo(url, connect_timeout=CONNECT_TIMEOUT)
            self.conn: psycopg.Connection[Row] = psycopg.connect(
                conninfo, autocommit=True, row_factory=dict_row
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot open database {self.path}: {cause(e)}") from e
        try:
            # Times come back as UTC datetimes whatever the server's or the role's zone.
            self.conn.execute("SET TIME ZONE 'UTC'")
            migrate(self.conn)
        except psycopg.Error as e:
            self.conn.close()
            raise StoreError(f"cannot migrate database {self.path}: {cause(e)}") from e

    def close(self) -> None:
        self.conn.close()

    def is_broken(self) -> bool:
        """Lost when psycopg saw it fail, or when the server has spoken on it while it was
        idle: the only thing an idle connection of ours can receive is the server's goodbye
        (a shutdown's FATAL message, or the socket's end), so that is polled for without
        waiting. A restart is noticed before the next statement, not by its failure."""
        conn = self.conn
        if conn.closed or conn.broken:
            return True
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False  # a transaction is open: the connection is in use
        try:
            # The goodbye comes as a message, then the socket's end: reading the one makes
            # the other readable, and reading that fails. Anything else (a notice) is read
            # and left for psycopg, and the socket goes quiet.
            for _ in range(_GOODBYE_READS):
                readable, _, _ = select.select([conn.fileno()], [], [], 0)
                if not readable:
                    return False
                conn.pgconn.consume_input()
        except (OSError, ValueError, psycopg.Error):
            return True
        return conn.pgconn.status == psycopg.pq.ConnStatus.BAD

    def _all(self, sql: str, params: Sequence[Any] | Row = ()) -> list[Row]:
        return self.conn.execute(sql.encode(), params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | Row = ()) -> Row | None:
        return self.conn.execute(sql.encode(), params).fetchone()

    def _run(self, sql: str, params: Sequence[Any]) -> list[Row]:
        # Any statement: its rows, or none (fetchall would raise on a DELETE).
        cur = self.conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description is not None else []

    @staticmethod
    def _stamp(when: datetime) -> datetime:
        return when  # a timestamptz parameter

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.cursor().executemany(sql.encode(), rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # psycopg's transaction() is BEGIN … COMMIT, or a savepoint inside an open one.
        try:
            with self.conn.transaction():
                yield
        except psycopg.Error as e:
            raise StoreError(f"write failed on {self.path}: {cause(e)}") from e

    def atomic(self) -> AbstractContextManager[None]:
        return self._transaction()

    _atomic = atomic

    def generation(self) -> int:
        return self._generation()

    def bump_generation(self) -> int:
        """Count one more change, in a slot no other open transaction holds (the one this
        transaction took already, if any, comes first): writers never wait for each other's
        commits here. The generation as this transaction sees it is returned: a writer
        committing beside it may have counted the same number, so the committed total (what
        servers follow, jobs.follow_generation) is the one to trust across processes."""
        row = self._one(_BUMP_FREE_SLOT) or self._one(_BUMP_OWN_SLOT)
        assert row is not None
        return int(row["value"])

    def _generation(self) -> int:
        row = self._one(f"SELECT {GENERATION} AS value")
        assert row is not None
        return int(row["value"])

    def data_version(self) -> int:
        """Moves whenever a transaction that writes starts or ends anywhere on the server (the
        snapshot a new transaction would take: its horizon and the ones still in progress),
        this connection's own included: the poller's in-memory states are then checked more
        often than needed, never less. A checksum of the snapshot: only changes count."""
        row = self._one("SELECT pg_current_snapshot()::text AS snapshot")
        assert row is not None
        return zlib.crc32(row["snapshot"].encode())

    def check_writable(self) -> None:
        """Raise StoreError unless a write can be made right now (waiting at most 5 s for a
        lock another session holds, as SQLite waits for its write lock)."""
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return  # inside a transaction already: it writes
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute("SET LOCAL lock_timeout = '5s'")
                self.conn.execute("UPDATE meta SET value = value WHERE key = 'generation'")
        except psycopg.Error as e:
            raise StoreError(f"database is not writable: {cause(e)}") from e
