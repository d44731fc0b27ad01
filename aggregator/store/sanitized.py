"""The SQLite queries of the re-sanitising pass (ingest/resanitize.py): entries read in rowid
batches, written back cleaned, and the pass's progress kept in `meta`. I/O.

The progress is three meta keys: `sanitize_policy` (the policy every row has), and while a pass
runs, `sanitize_target` (the policy it applies) and `sanitize_rowid` (how far it got), so that a
restart resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .connection import SqliteBase
from .protocol import Sanitized, SanitizeRow

# The meta rows that hold the pass's progress (the same query on either dialect).
PROGRESS_QUERY = (
    "SELECT key, value FROM meta WHERE key IN "
    "('sanitize_policy', 'sanitize_target', 'sanitize_rowid')"
)


def resume_point(meta: Mapping[str, str], policy: str) -> int | None:
    """From the progress keys: the row after which rows still need `policy` (0: all of them);
    None when every row has it. Shared by both stores."""
    if meta.get("sanitize_policy") == policy:
        return None
    if meta.get("sanitize_target") == policy:
        return int(meta.get("sanitize_rowid") or 0)
    return 0


# A progress key written (both stores' query, %s placeholders as PostgreSQL has them).
SAVE_PROGRESS = (
    "INSERT INTO meta (key, value) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def progress_rows(policy: str, last: int, done: bool) -> list[tuple[str, str]]:
    """The progress keys a batch leaves: how far the pass applying `policy` got and, once it
    is `done`, that every row has it."""
    progress = [("sanitize_target", policy), ("sanitize_rowid", str(last))]
    if done:
        progress.append(("sanitize_policy", policy))
    return progress


def resume_after(store: SqliteBase, policy: str) -> int | None:
    """The rowid after which rows still need `policy`; None when every row has it."""
    return resume_point(dict(store.db.execute(PROGRESS_QUERY).fetchall()), policy)


def read_batch(store: SqliteBase, after: int, rows: int) -> list[SanitizeRow]:
    return [
        (r[0], r[1], r[2], r[3], r[4])
        for r in store.db.execute(
            "SELECT rowid, summary, content, link, content_hash FROM entries WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            [after, rows],
        )
    ]


def write_batch(
    store: SqliteBase, policy: str, cleaned: Sequence[Sanitized], last: int, done: bool
) -> int:
    """Write one batch and the progress in one transaction; returns the store generation."""
    with store.atomic():
        # Only rows still as they were read: a poll that updated one meanwhile stored it
        # sanitised under the current policy already, and must not be undone.
        store.db.conn.executemany(
            "UPDATE entries SET summary = ?, content = ? WHERE rowid = ? AND content_hash = ?",
            [(s, c, rowid, h) for rowid, s, c, h in cleaned],
        )
        store.db.conn.executemany(
            SAVE_PROGRESS.replace("%s", "?"), progress_rows(policy, last, done)
        )
        if cleaned:
            store.bump_generation()
    return store.generation()
