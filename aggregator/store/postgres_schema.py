"""The PostgreSQL schema: numbered migrations, applied on open in one transaction under an
advisory lock, recorded in `schema_migrations`. I/O.

The tables mirror SQLite's after all of its migrations (store/schema.py), with timestamptz for
times (written and read in UTC). Flags stay 0/1 integers and JSON blobs (categories, media,
authors, hints) text, as on SQLite, so one row mapping (store/rows.py) serves both stores; the
store never queries into the blobs.

Full-text search: `entries.search` is a stored generated tsvector (title weighted A, summary B,
content C, so a query can be limited to one column as FTS5's `title:` is) under a GIN index.
It uses the text search configuration `aggregator`: no stemming and accents removed (unaccent),
as SQLite's `unicode61 remove_diacritics 2` tokenizer does, so both stores find the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ..ingest.hosts import origin
from .schema import kind_of_old_reason

# Any fixed 64-bit number, the same in every process: two daemons starting at once on a new
# database wait for each other here instead of both creating the tables.
MIGRATION_LOCK = 0x61676772_6D696772  # "aggr" "migr"

# Text longer than this is left out of the full-text index (PostgreSQL's tsvector holds at most
# 1 MB and positions up to 16,383): an entry with a huge body is still stored, and found by
# its title, summary and the start of its content.
INDEXED_CHARS = 200_000

Migration = Callable[[psycopg.Connection[Any]], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(number: int) -> Callable[[Migration], Migration]:
    """Register a migration. Numbers only grow; a released migration never changes."""

    def register(fn: Migration) -> Migration:
        assert not MIGRATIONS or MIGRATIONS[-1][0] < number, "migrations go in number order"
        MIGRATIONS.append((number, fn.__name__, fn))
        return fn

    return register


def _run(conn: psycopg.Connection[Any], *statements: str) -> None:
    for statement in statements:
        conn.execute(statement.encode())


@migration(1)
def m001_initial(conn: psycopg.Connection[Any]) -> None:
    """Everything SQLite's m001…m011 built, at once."""
    indexed = " || ".join(
        f"setweight(to_tsvector('aggregator', left({column}, {INDEXED_CHARS})), '{weight}')"
        for column, weight in (("title", "A"), ("summary", "B"), ("content", "C"))
    )
    _run(
        conn,
        # unaccent is a trusted extension (PostgreSQL 13+): the database's owner may add it.
        "CREATE EXTENSION IF NOT EXISTS unaccent",
        "CREATE TEXT SEARCH CONFIGURATION aggregator (COPY = simple)",
        "ALTER TEXT SEARCH CONFIGURATION aggregator "
        "ALTER MAPPING FOR hword, hword_part, word WITH unaccent, simple",
        # `rain-expected` is indexed as its parts alone, as unicode61 splits it: whole
        # hyphenated words would keep the query `rain-expected` from matching "rain expected".
        "ALTER TEXT SEARCH CONFIGURATION aggregator DROP MAPPING FOR asciihword, hword, numhword",
        """
        CREATE TABLE feeds (
            name text PRIMARY KEY,
            url text NOT NULL,
            title text,
            link text,
            etag text,
            last_modified text,
            body_hash text,
            last_poll timestamptz,
            last_ok timestamptz,
            last_status text,
            http_status integer,
            error_count integer NOT NULL DEFAULT 0,
            last_error text,
            next_poll timestamptz,
            warning text,
            next_reason text,
            backoff_level integer NOT NULL DEFAULT 0,
            failing_since timestamptz,
            redirect_url text,
            redirect_count integer NOT NULL DEFAULT 0,
            gone integer NOT NULL DEFAULT 0 CHECK (gone IN (0, 1)),
            hints text,
            language text,
            key_mode text NOT NULL DEFAULT 'guid'
        )
        """,
        f"""
        CREATE TABLE entries (
            id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- SQLite's rowid: resanitize's order
            feed text NOT NULL REFERENCES feeds(name),
            key text NOT NULL,
            key_kind text NOT NULL,
            uid text NOT NULL UNIQUE,
            guid text,
            link text,
            title text NOT NULL,
            summary text NOT NULL,
            content text NOT NULL,
            author text NOT NULL,
            categories text NOT NULL,
            published timestamptz NOT NULL,
            updated timestamptz NOT NULL,
            date_known integer NOT NULL CHECK (date_known IN (0, 1)),
            content_hash text NOT NULL,
            stable_hash text,
            media text,
            authors text,
            first_seen timestamptz NOT NULL,
            last_changed timestamptz NOT NULL,
            search tsvector GENERATED ALWAYS AS ({indexed}) STORED,
            PRIMARY KEY (feed, key)
        )
        """,
        "CREATE INDEX entries_feed_published ON entries (feed, published DESC)",
        "CREATE INDEX entries_published ON entries (published DESC)",
        "CREATE INDEX entries_search ON entries USING gin (search)",
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('generation', '0'), ('sanitize_policy', '')",
        """
        CREATE TABLE pruned (
            feed text NOT NULL,
            key text NOT NULL,
            content_hash text NOT NULL,
            pruned_at timestamptz NOT NULL,
            PRIMARY KEY (feed, key)
        )
        """,
        """
        CREATE TABLE articles (
            link text PRIMARY KEY,
            status text NOT NULL,
            url text NOT NULL,
            content text NOT NULL,
            text_length integer NOT NULL,
            method text,
            error text,
            fetched_at timestamptz NOT NULL
        )
        """,
        # A pruned entry takes its extraction state with it (a trigger on SQLite).
        """
        CREATE TABLE entry_articles (
            feed text NOT NULL,
            key text NOT NULL,
            link text NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            next_try timestamptz,
            error text,
            method text,
            source text,
            done_at timestamptz,
            PRIMARY KEY (feed, key),
            FOREIGN KEY (feed, key) REFERENCES entries (feed, key) ON DELETE CASCADE
        )
        """,
        "CREATE INDEX entry_articles_due ON entry_articles (status, next_try)",
        "CREATE INDEX entry_articles_link ON entry_articles (link)",
    )


@migration(2)
def m002_next_kind(conn: psycopg.Connection[Any]) -> None:
    """The rule that set each feed's next poll, beside its reason (as SQLite's m012, whose
    one-off data migration fills it for the rows stored before from their reason)."""
    _run(conn, "ALTER TABLE feeds ADD COLUMN next_kind text")
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute("SELECT name, next_reason FROM feeds WHERE next_reason IS NOT NULL")
    for name, reason in rows.fetchall():
        if (kind := kind_of_old_reason(reason)) is not None:
            conn.execute("UPDATE feeds SET next_kind = %s WHERE name = %s", [kind, name])


@migration(3)
def m003_claims(conn: psycopg.Connection[Any]) -> None:
    """Pollers sharing the feeds (postgres_claims.py): each feed's origin (that of its
    redirect target, else of its URL: what politeness counts per), its lease (who polls it,
    until when), and a row per host with the start the next request may take and a
    host-wide Retry-After."""
    _run(
        conn,
        "ALTER TABLE feeds ADD COLUMN origin text",
        "ALTER TABLE feeds ADD COLUMN lease_owner text",
        "ALTER TABLE feeds ADD COLUMN lease_until timestamptz",
        "CREATE TABLE hosts (origin text PRIMARY KEY, next_start timestamptz, "
        "blocked_until timestamptz)",
        # The claim's scan: feeds that may be due; and the leases held, counted per host.
        "CREATE INDEX feeds_due ON feeds (next_poll) WHERE gone = 0",
        "CREATE INDEX feeds_leased ON feeds (origin) WHERE lease_owner IS NOT NULL",
        "CREATE INDEX hosts_blocked ON hosts (blocked_until)",
    )
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute("SELECT name, url, redirect_url FROM feeds").fetchall()
    cur.executemany(
        "UPDATE feeds SET origin = %s WHERE name = %s",
        [(origin(redirect or url), name) for name, url, redirect in rows],
    )


@migration(4)
def m004_nodes(conn: psycopg.Connection[Any]) -> None:
    """The running aggregator processes, as SQLite's m013 (store/nodes.py): any number of
    pollers and servers over this database, each refreshing its row every few seconds."""
    _run(
        conn,
        """
        CREATE TABLE nodes (
            node_id text PRIMARY KEY,
            role text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            listen text NOT NULL,
            config_hash text NOT NULL,
            started timestamptz NOT NULL,
            last_seen timestamptz NOT NULL
        )
        """,
    )


@migration(5)
def m005_host_owner(conn: psycopg.Connection[Any]) -> None:
    """A host with a host_delay belongs to one poller at a time (postgres_claims.py): who,
    until when, and the delay its release keeps before the next poller's first start."""
    _run(
        conn,
        "ALTER TABLE hosts ADD COLUMN owner text",
        "ALTER TABLE hosts ADD COLUMN owner_until timestamptz",
        "ALTER TABLE hosts ADD COLUMN delay interval NOT NULL DEFAULT '0'",
    )


@migration(6)
def m006_claim_scan(conn: psycopg.Connection[Any]) -> None:
    """The claim's scan in due order, stopping at the first feeds it can grant (new feeds,
    never polled, first), instead of ranking every due feed each claim; and the hosts a
    poller owns, for its release of those where it holds no lease any more."""
    _run(
        conn,
        "DROP INDEX feeds_due",
        "CREATE INDEX feeds_due ON feeds ((coalesce(next_poll, '-infinity')), name) WHERE gone = 0",
        "CREATE INDEX hosts_owner ON hosts (owner) WHERE owner IS NOT NULL",
    )


# Slots the generation is counted in (migration 7): a write bumps one no other transaction
# holds, so writers never queue behind one row; more writers at once than this share slots.
GENERATION_SLOTS = 16
# The store generation: the count migrations and copy-store fold into meta, plus the slots'.
GENERATION = (
    "((SELECT value::bigint FROM meta WHERE key = 'generation')"
    " + (SELECT coalesce(sum(value), 0) FROM generation_slots))::bigint"
)


@migration(7)
def m007_generation_slots(conn: psycopg.Connection[Any]) -> None:
    """The generation counted in slots: with one row, every write that added entries held
    that row's lock from its bump to its commit, and a batch (up to 64 polls in one
    transaction) kept every other writer of every poller waiting meanwhile."""
    _run(
        conn,
        "CREATE TABLE generation_slots (slot integer PRIMARY KEY, value bigint NOT NULL DEFAULT 0)",
        f"INSERT INTO generation_slots (slot) SELECT generate_series(0, {GENERATION_SLOTS - 1})",
    )


@migration(8)
def m008_page_hosts(conn: psycopg.Connection[Any]) -> None:
    """A host taken by one poller for its article pages, until when (postgres_pages.py)."""
    _run(conn, "ALTER TABLE hosts ADD COLUMN pages_until timestamptz")


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations this database has not run, all in one transaction, under the
    advisory lock. Returns the numbers applied (none when it is up to date). Raises
    psycopg.Error; the store wraps it."""
    with conn.transaction():
        # A transaction-level lock: released by the commit or the rollback, never left behind.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        _run(
            conn,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())",
        )
        cur = conn.cursor(row_factory=tuple_row)
        done = {version for (version,) in cur.execute("SELECT version FROM schema_migrations")}
        applied = []
        for number, name, fn in MIGRATIONS:
            if number in done:
                continue
            fn(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", [number, name]
            )
            applied.append(number)
        return applied
