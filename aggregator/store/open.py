"""The store a `Database` names: SQLite for a path, PostgreSQL for a URL. I/O (it opens them).

The one place that picks the implementation: the CLI's commands and the daemon's store
threads ask here, and everything after sees only the Store protocol.
"""

from __future__ import annotations

import logging

from ..config.database import Database
from .protocol import Store
from .threads import StoreThreads

log = logging.getLogger("aggregator.store")


def open_store(database: Database) -> Store:
    """One connection, opened (and migrated): StoreError when that fails. For one thread
    only (a CLI command, or one of StoreThreads' threads)."""
    if database.url is not None:
        # Imported here: psycopg is not loaded by a daemon or command that runs on SQLite.
        from .postgres import PostgresStore

        return PostgresStore(database.url)
    from .sqlite import SqliteStore

    return SqliteStore(database.sqlite_path())


PG_WRITERS = 2


def store_threads(database: Database, readers: int = 2) -> StoreThreads:
    """The daemon's store threads over `database`, each thread with a connection of its own
    (a PostgreSQL connection that broke is reopened at its thread's next call)."""
    log.info("store: %s (%s)", database.display, database.kind)
    # Two writing connections on PostgreSQL: a poll's entries cost the server more than the
    # poller (their tsvector above all), and one connection is one server process, one core.
    # Two batches commit in parallel; each poll's write is still whole in one of them, and
    # the generation row they both update orders their commits.
    writers = PG_WRITERS if database.is_postgres else 1
    return StoreThreads(
        database.display, readers, opener=lambda: open_store(database), writers=writers
    )
