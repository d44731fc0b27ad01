"""One SQLite connection of ours: opened and migrated, its transactions (BEGIN IMMEDIATE … COMMIT,
or a savepoint inside an open one), and every sqlite3 error turned into StoreError. I/O.

Why not sqlite-utils' `Database.atomic()`: it opens with a plain (deferred) BEGIN. A deferred
transaction takes the write lock only at its first write, and when another connection (a CLI run,
a backup, a second process) holds it then, SQLite fails the write at once with SQLITE_BUSY
instead of waiting out busy_timeout: a reader cannot be upgraded to a writer while another
writer may have changed what it read. BEGIN IMMEDIATE takes the write lock up front, where
busy_timeout does apply, so a unit of work either waits its turn or never starts.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..config.secret import redact
from ..errors import StoreError
from .schema import open_database

C = TypeVar("C", bound=type)


def _failure(what: str, path: Path, e: sqlite3.Error) -> StoreError:
    # sqlite3's messages name no value of ours, but redact() stays the rule for any message.
    return StoreError(f"{what} failed on {path}: {redact(str(e))}")


def _wrapped(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    what = name.replace("_", " ")
    if inspect.isgeneratorfunction(fn):
        # A generator's errors come while it is iterated (a page read by fetchmany), not
        # when it is called: the wrapper has to be a generator too.
        @functools.wraps(fn)
        def generator(self: SqliteBase, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(self, *args, **kwargs)
            except sqlite3.Error as e:
                raise _failure(what, self.path, e) from e

        return generator

    @functools.wraps(fn)
    def method(self: SqliteBase, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise _failure(what, self.path, e) from e

    return method


def store_errors(cls: C) -> C:
    """Class decorator: every public method of `cls` raises StoreError("<method> failed on
    <file>: <cause>"), chained, for any sqlite3 error, reads as much as writes. Done once here
    rather than by hand in each method, so that a new method cannot forget it."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, _wrapped(name, value))
    return cls


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
            raise StoreError(f"cannot open database {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    def atomic(self) -> Atomic:
        return Atomic(self.db.conn)

    _atomic = atomic

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
            raise StoreError(f"database is not writable: {e}") from e
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")
