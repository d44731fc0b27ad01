"""Transactions on one SQLite connection: BEGIN IMMEDIATE … COMMIT, or a savepoint inside an
open one; sqlite3 errors come out as StoreError. I/O.

Why not sqlite-utils' `Database.atomic()`: it opens with a plain (deferred) BEGIN. A deferred
transaction takes the write lock only at its first write, and when another connection (a CLI run,
a backup, a second process) holds it then, SQLite fails the write at once with SQLITE_BUSY
instead of waiting out busy_timeout: a reader cannot be upgraded to a writer while another
writer may have changed what it read. BEGIN IMMEDIATE takes the write lock up front, where
busy_timeout does apply, so a unit of work either waits its turn or never starts.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import StoreError


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
            raise StoreError(f"cannot start a transaction: {e}") from e

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
                raise StoreError(f"write failed: {exc}") from exc
            return
        if exc_type is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"write failed: {exc}") from exc
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"commit failed: {e}") from e
