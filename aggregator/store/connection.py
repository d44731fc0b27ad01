"""One SQLite connection of ours: opened and migrated, its transactions (BEGIN IMMEDIATE … COMMIT,
or a savepoint inside an open one), and every sqlite3 error turned into StoreError. I/O.

Why not sqlite-utils' `Database.atomic()`: it opens with a plain (deferred) BEGIN. A deferred
transaction starts as a reader and asks for the write lock at its first write; if another
connection (a CLI run, a second process) committed since its first read, that upgrade fails at
once with SQLITE_BUSY (BUSY_SNAPSHOT in WAL mode), and busy_timeout cannot help: waiting would
not make what it read current. Several of ours read before they write (prune picks its
victims, an article's record reads the entries pending on it), so they would fail under load.
BEGIN IMMEDIATE takes the write lock up front, where busy_timeout does apply: a unit of work
waits its turn, then sees the latest commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config.secret import redact
from ..errors import StoreError
from .rows import _ts
from .schema import open_database
from .wrapping import raising_store_error

# Every public method of the SQLite store classes: StoreError for any sqlite3 error.
store_errors = raising_store_error(sqlite3.Error)


class Atomic:
    """BEGIN IMMEDIATE … COMMIT, turning sqlite3 errors into StoreError (and rolling back).

    Inside a transaction already open (a batch of writes, see `StoreThreads.write_batched`) it
    is a savepoint instead: the unit of work still commits or vanishes whole, without undoing
    the others of its batch.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.savepoint: str | None = None

    def __enter__(self) -> None:
        conn = self.conn
        try:
            if conn.in_transaction:
                self.savepoint = "unit"
                conn.execute("SAVEPOINT unit")
            else:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot start a transaction: {redact(str(e))}") from e

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        conn = self.conn
        if self.savepoint is not None:
            if exc_type is not None and conn.in_transaction:
                conn.execute("ROLLBACK TO unit")
            if conn.in_transaction:
                conn.execute("RELEASE unit")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"write failed: {redact(str(exc))}") from exc
            return
        if exc_type is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"write failed: {redact(str(exc))}") from exc
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"commit failed: {redact(str(e))}") from e


@store_errors
class SqliteBase:
    """One connection to the database file, migrated on open, and what every unit of work on
    it shares: transactions, the store generation. Not thread-safe by design: a connection
    stays on the thread that opened it (see threads.StoreThreads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = open_database(self.path)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {self.path}: {redact(str(e))}") from e

    def close(self) -> None:
        self.db.close()

    def is_broken(self) -> bool:
        return False  # a file's connection has no server to lose

    def atomic(self) -> Atomic:
        return Atomic(self.db.conn)

    _atomic = atomic

    def _run(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        # SQL written for both stores (`%s` placeholders, see nodes.py).
        rows: list[sqlite3.Row] = self.db.execute(sql.replace("%s", "?"), params).fetchall()
        return rows

    @staticmethod
    def _stamp(when: datetime) -> str | None:
        return _ts(when)  # the text form every SQLite time column holds

    def generation(self) -> int:
        return self._generation()

    def bump_generation(self) -> int:
        self.db.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )
        return self._generation()

    def _generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def data_version(self) -> int:
        # Moves only when another connection commits (PRAGMA data_version).
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def check_writable(self) -> None:
        if self.db.conn.in_transaction:
            return  # inside a batch of writes: this connection holds the write lock already
        # Wait a little for another process's write (a CLI run, a backup), not the full 30 s.
        self.db.execute("PRAGMA busy_timeout = 5000")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise StoreError(f"database is not writable: {redact(str(e))}") from e
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")
