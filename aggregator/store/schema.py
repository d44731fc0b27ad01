"""The database file's schema: opening a connection set up for us, and the numbered migrations
m001… in order (sqlite-utils `Migrations`), applied on every open. I/O.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from ..config.secret import redact, strip_userinfo
from .search import FTS_TABLE, fts_schema

migrations = Migrations("aggregator")


def open_database(path: Path) -> sqlite_utils.Database:
    """A connection to the file at `path` (created if missing), in WAL mode, migrated.
    Raises sqlite3.Error or OSError; the Store wraps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread is off only so that close() can run anywhere; StoreThreads
    # still keeps every connection on the one thread that uses it.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA busy_timeout = 30000")
    if db.journal_mode != "wal":
        db.enable_wal()
    # WAL with synchronous=NORMAL never corrupts the file and never loses a commit to
    # a killed process; only a power cut may lose the last transactions.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    migrations.apply(db)
    return db


# Migrations run in the order they are registered here, each once per database file: a new one
# goes at the end with the next free number (m009 was never used). A migration never changes
# once released: a database that ran it will not run it again.


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE feeds (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            title TEXT,
            link TEXT,
            etag TEXT,
            last_modified TEXT,
            body_hash TEXT,
            last_poll TEXT,
            last_ok TEXT,
            last_status TEXT,
            http_status INTEGER,
            error_count INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_poll TEXT,
            warning TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE entries (
            feed TEXT NOT NULL REFERENCES feeds(name),
            key TEXT NOT NULL,
            key_kind TEXT NOT NULL,
            uid TEXT NOT NULL UNIQUE,
            guid TEXT,
            link TEXT,
            title TEXT NOT NULL,
            summary TEXT NOT NULL,
            content TEXT NOT NULL,
            author TEXT NOT NULL,
            categories TEXT NOT NULL,
            published TEXT NOT NULL,
            updated TEXT NOT NULL,
            date_known INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_changed TEXT NOT NULL,
            PRIMARY KEY (feed, key)
        )
        """
    )
    db.execute("CREATE INDEX entries_feed_published ON entries (feed, published DESC)")
    db.execute("CREATE INDEX entries_published ON entries (published DESC)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('generation', '0')")


@migrations()
def m002_polling(db: sqlite_utils.Database) -> None:
    # Everything the polling decision needs to resume exactly after a restart.
    for column in (
        "next_reason TEXT",
        "backoff_level INTEGER NOT NULL DEFAULT 0",
        "failing_since TEXT",
        "redirect_url TEXT",
        "redirect_count INTEGER NOT NULL DEFAULT 0",
        "gone INTEGER NOT NULL DEFAULT 0",
        "hints TEXT",
    ):
        db.execute(f"ALTER TABLE feeds ADD COLUMN {column}")


@migrations()
def m003_dedupe(db: sqlite_utils.Database) -> None:
    # Full-text index over title, summary and content, kept current by triggers, so every
    # writer (polls, pruning) updates it in the same transaction as the entries.
    for statement in fts_schema():
        db.execute(statement)
    # The feed's declared language (for language rules) and how its entries are keyed: "guid"
    # until the feed shows missing, blank or repeated guids, then "link" for good.
    db.execute("ALTER TABLE feeds ADD COLUMN language TEXT")
    db.execute("ALTER TABLE feeds ADD COLUMN key_mode TEXT NOT NULL DEFAULT 'guid'")
    # Hash of the entry with volatile parts (stamps, counters, tracking parameters) removed:
    # what decides whether an entry was really edited. NULL for rows stored before.
    db.execute("ALTER TABLE entries ADD COLUMN stable_hash TEXT")


@migrations()
def m004_retention(db: sqlite_utils.Database) -> None:
    """Tombstones of pruned entries: enough to recognise them if their feed still carries them."""
    db.execute(
        """
        CREATE TABLE pruned (
            feed TEXT NOT NULL,
            key TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            pruned_at TEXT NOT NULL,
            PRIMARY KEY (feed, key)
        )
        """
    )


@migrations()
def m005_fts_merging(db: sqlite_utils.Database) -> None:
    """Merge the full-text index's segments in larger steps: with FTS5's defaults (automerge 4,
    crisismerge 16) indexing was 326 us an entry, with 16 and 64 it is 270 us, and queries over
    40,000 entries take the same time (measured on the bench farm's entries)."""
    db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('automerge', 16)")
    db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('crisismerge', 64)")


@migrations()
def m006_sanitize_once(db: sqlite_utils.Database) -> None:
    """Renders no longer sanitise stored content, so the rows stored so far are sanitised once
    more under the current policy, in the background (see resanitize.py): an empty policy
    matches none."""
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sanitize_policy', '')")


@migrations()
def m007_media(db: sqlite_utils.Database) -> None:
    """An entry's files, picture and iTunes tags, and its authors one by one: JSON (see
    media.py), NULL for the many entries without them."""
    db.execute("ALTER TABLE entries ADD COLUMN media TEXT")
    db.execute("ALTER TABLE entries ADD COLUMN authors TEXT")


@migrations()
def m008_articles(db: sqlite_utils.Database) -> None:
    """Full content from article pages (see articles.py): `articles`, one row per page fetched,
    keyed by the match key of its link; `entry_articles`, what became of each entry's page."""
    db.execute(
        """
        CREATE TABLE articles (
            link TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            url TEXT NOT NULL,
            content TEXT NOT NULL,
            text_length INTEGER NOT NULL,
            method TEXT,
            error TEXT,
            fetched_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE entry_articles (
            feed TEXT NOT NULL,
            key TEXT NOT NULL,
            link TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try TEXT,
            error TEXT,
            method TEXT,
            source TEXT,
            done_at TEXT,
            PRIMARY KEY (feed, key)
        )
        """
    )
    db.execute("CREATE INDEX entry_articles_due ON entry_articles (status, next_try)")
    db.execute("CREATE INDEX entry_articles_link ON entry_articles (link)")
    # A pruned entry takes its extraction state with it.
    db.execute(
        "CREATE TRIGGER entry_articles_ad AFTER DELETE ON entries BEGIN "
        "DELETE FROM entry_articles WHERE feed = old.feed AND key = old.key; END"
    )


@migrations()
def m010_no_userinfo(db: sqlite_utils.Database) -> None:
    """Feed URLs lose their user:password@ (the config now turns it into credentials that are
    never stored): blank it in the URLs and errors stored by older versions."""
    rows = db.execute(
        "SELECT name, url, redirect_url, last_error FROM feeds "
        "WHERE url LIKE '%@%' OR redirect_url LIKE '%@%' OR last_error LIKE '%@%'"
    ).fetchall()
    for name, url, redirect_url, last_error in rows:
        db.execute(
            "UPDATE feeds SET url = ?, redirect_url = ?, last_error = ? WHERE name = ?",
            (
                strip_userinfo(url),
                strip_userinfo(redirect_url) if redirect_url else redirect_url,
                redact(last_error) if last_error else last_error,
                name,
            ),
        )


@migrations()
def m011_text_only_hashes(db: sqlite_utils.Database) -> None:
    """Stable hashes cover an entry's files since m007; mark those computed without them
    (identity.TEXT_ONLY), so a podcast's stored episodes get their files on the next poll
    without all coming back as edited (or, with update_policy "republish", redated to now)."""
    db.execute(
        "UPDATE entries SET stable_hash = 't:' || stable_hash "
        "WHERE media IS NULL AND stable_hash IS NOT NULL"
    )


# Reasons a stored decision gave before m012, by the start decide.py and poll.py wrote them
# with, and the kind of each (models.NextKind): read once, by m012, and never again.
_REASON_KINDS = (
    ("gone", "gone"),
    ("Retry-After", "retry_after"),  # the feed's own, and "Retry-After of <host>" deferrals
    ("network down", "network_down"),
    ("backoff after", "backoff"),
    ("interval ", "interval"),
    ("adaptive ", "adaptive"),
    ("host_delay of", "host_delay"),
    ("ttl ", "hint"),
    ("sy:updatePeriod ", "hint"),
    ("Cache-Control max-age ", "hint"),
    ("Expires ", "hint"),
)


def kind_of_old_reason(reason: str) -> str | None:
    """The kind of a decision stored with only its reason (before m012); None if unknown."""
    return next((kind for start, kind in _REASON_KINDS if reason.startswith(start)), None)


@migrations()
def m012_next_kind(db: sqlite_utils.Database) -> None:
    """The rule that set each feed's next poll, beside its reason for people, so that nothing
    reads the reason back to decide (a restart honours a stored wait by its kind: see
    schedule.restart_cap). A one-off data migration fills the kind of the rows stored before
    from their reason: the only place a reason is ever parsed. One it does not know stays NULL,
    which a restart treats as no decision (a plain interval)."""
    db.execute("ALTER TABLE feeds ADD COLUMN next_kind TEXT")
    rows = db.execute(
        "SELECT name, next_reason FROM feeds WHERE next_reason IS NOT NULL"
    ).fetchall()
    for name, reason in rows:
        if (kind := kind_of_old_reason(reason)) is not None:
            db.execute("UPDATE feeds SET next_kind = ? WHERE name = ?", [kind, name])


@migrations()
def m013_nodes(db: sqlite_utils.Database) -> None:
    """The running aggregator processes (store/nodes.py): each refreshes its row every few
    seconds, so /status lists the live ones and warns when their configs differ."""
    db.execute(
        """
        CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            listen TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            started TEXT NOT NULL,
            last_seen TEXT NOT NULL
        )
        """
    )
