"""`aggregator copy-store`: an SQLite store copied into a PostgreSQL one, table by table, in one
transaction, and the rows counted on both sides. I/O.

What is copied is everything a store holds that matters: the feeds' polling state, the
entries (with their content and stable hashes, which recognise an entry on the next poll),
the tombstones of pruned entries, the article pages and what became of each entry's page,
and `meta` (the re-sanitising pass's progress, the last prune). Entries keep their SQLite
rowid as their id, so the re-sanitising pass resumes where it was. Not copied: SQLite's
full-text index (PostgreSQL computes its own), the migrations' bookkeeping, and rows that
describe running processes rather than the store (nodes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import StoreError
from ..ingest.hosts import origin
from .postgres import PostgresStore
from .postgres_schema import GENERATION
from .sqlite import SqliteStore
from .wrapping import cause

# In this order: an entry names its feed, an entry's article state names its entry.
TABLES = ("feeds", "entries", "pruned", "articles", "entry_articles", "meta")
# Columns PostgreSQL computes itself (the full-text vector).
GENERATED = frozenset({"search"})


@dataclass(frozen=True, slots=True)
class TableCount:
    """One table's rows: in the source, and in the target after the copy."""

    table: str
    source: int
    target: int


class CopyError(StoreError):
    """The copy was refused (a target that is not empty) or its counts did not match;
    nothing was written to the target."""


def copy_store(
    source: Path,
    target_url: str,
    *,
    replace: bool = False,
    progress: Callable[[str, int], None] = lambda table, rows: None,
) -> list[TableCount]:
    """Copy the SQLite store at `source` into the PostgreSQL store at `target_url`.

    The source is read in one read transaction (a consistent snapshot, while a daemon may
    still write it); the target is written in one transaction, checked row count by row
    count before it commits: a failed copy leaves the target as it was. A target that holds
    any feed or entry is refused unless `replace`, which empties it first. `progress` hears
    each table's name and row count once it is copied.
    """
    if not source.is_file():
        raise StoreError(f"no database at {source}")
    SqliteStore(source).close()  # migrated to the current schema, as the daemon would
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {source}: {e}") from e
    target = PostgresStore(target_url)
    try:
        src.execute("BEGIN")  # one snapshot for every table
        with target.conn.transaction():
            _refuse_or_empty(target, replace)
            counts = [_copy_table(src, target, table, progress) for table in TABLES]
            _after(target)
            wrong = [c for c in counts if c.source != c.target]
            if wrong:
                raise CopyError(
                    "the copy's counts differ, nothing was written: "
                    + ", ".join(f"{c.table} {c.source} read, {c.target} written" for c in wrong)
                )
        return counts
    except sqlite3.Error as e:
        raise StoreError(f"reading {source} failed: {e}") from e
    except psycopg.Error as e:
        raise StoreError(f"copy to {target.path} failed: {cause(e)}") from e
    finally:
        src.close()
        target.close()


def _refuse_or_empty(target: PostgresStore, replace: bool) -> None:
    held = {t: _count(target, t) for t in ("feeds", "entries", "pruned")}
    if not any(held.values()):
        return
    if not replace:
        what = ", ".join(f"{n} {t}" for t, n in held.items() if n)
        raise CopyError(
            f"{target.path} is not empty ({what}): copy into an empty database, or give "
            "--replace to delete what it holds first"
        )
    target.conn.execute(
        "TRUNCATE entry_articles, articles, pruned, entries, feeds RESTART IDENTITY CASCADE"
    )


def _columns(src: sqlite3.Connection, target: PostgresStore, table: str) -> list[str]:
    """The columns both stores have (a later migration's columns keep their default)."""
    theirs = {r[1] for r in src.execute(f"PRAGMA table_info({table})")}
    return [c for c in _target_columns(target, table) if c in theirs and c not in GENERATED]


def _target_columns(target: PostgresStore, table: str) -> list[str]:
    return [
        r["column_name"]
        for r in target.conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [table],
        )
    ]


def _copy_table(
    src: sqlite3.Connection,
    target: PostgresStore,
    table: str,
    progress: Callable[[str, int], None],
) -> TableCount:
    if table == "meta":
        return _copy_meta(src, target)
    columns = _columns(src, target, table)
    selected = list(columns)
    if table == "entries":
        # The rowid becomes the id: the resanitize pass's progress counts in it.
        selected = ["rowid", *columns]
        columns = ["id", *columns]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    read = src.execute(f"SELECT {', '.join(selected)} FROM {table} ORDER BY rowid")
    copied = 0
    with target.conn.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)
    ) as copy:
        while rows := read.fetchmany(1000):
            for row in rows:
                copy.write_row(row)
            copied += len(rows)
    source_rows = src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    progress(table, copied)
    return TableCount(table, int(source_rows), _count(target, table))


def _copy_meta(src: sqlite3.Connection, target: PostgresStore) -> TableCount:
    rows = src.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    kept = [(k, v) for k, v in rows if k != "generation"]
    target.conn.cursor().executemany(
        "INSERT INTO meta (key, value) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        kept,
    )
    # The generation only grows: past both stores' own, so every render cache that knew the
    # target before sees the change.
    # The slots' counts are folded into meta's, all in this transaction.
    source_gen = int(dict(rows).get("generation", "0"))
    target.conn.execute(
        f"UPDATE meta SET value = (GREATEST({GENERATION}, %s) + 1)::text WHERE key = 'generation'",
        [source_gen],
    )
    target.conn.execute("UPDATE generation_slots SET value = 0")
    present = _count_keys(target, [k for k, _ in rows])
    return TableCount("meta", len(rows), present)


def _after(target: PostgresStore) -> None:
    # What PostgreSQL keeps of a feed beyond SQLite's columns, derived as its migration
    # derives it for the rows it finds: the origin politeness counts per (migration 3,
    # claims), of the redirect target or else of the URL.
    if "origin" in _target_columns(target, "feeds"):
        rows = target.conn.execute("SELECT name, url, redirect_url FROM feeds").fetchall()
        target.conn.cursor().executemany(
            "UPDATE feeds SET origin = %s WHERE name = %s",
            [(origin(r["redirect_url"] or r["url"]), r["name"]) for r in rows],
        )
    # New entries get ids after the copied ones.
    target.conn.execute(
        "SELECT setval(pg_get_serial_sequence('entries', 'id'), "
        "COALESCE((SELECT max(id) FROM entries), 0) + 1, false)"
    )


def _count(target: PostgresStore, table: str) -> int:
    row: Any = target.conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
    ).fetchone()
    return int(row["n"])


def _count_keys(target: PostgresStore, keys: Sequence[str]) -> int:
    row: Any = target.conn.execute(
        "SELECT count(*) AS n FROM meta WHERE key = ANY(%s)", [list(keys)]
    ).fetchone()
    return int(row["n"])
