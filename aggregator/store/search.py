"""Full-text search: FTS5 query validation and the SQL the store runs. Pure apart from an
in-memory SQLite database used to check a query's syntax at config load.
"""

from __future__ import annotations

import re
import sqlite3

FTS_TABLE = "entries_fts"
FTS_COLUMNS = ("title", "summary", "content")


def check_query(query: str) -> str:
    """Raise `ValueError` unless `query` is a valid FTS5 query, such as
    `latin america NOT sport`, `"climate summit"` or `title:putin OR title:kremlin`."""
    if not query.strip():
        raise ValueError("empty query")
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE VIRTUAL TABLE q USING fts5({', '.join(FTS_COLUMNS)})")
        conn.execute("SELECT rowid FROM q WHERE q MATCH ?", [query]).fetchall()
    except sqlite3.Error as e:
        raise ValueError(f"invalid search query: {e}") from e
    finally:
        conn.close()
    return query


# What makes a query FTS syntax rather than plain words: operators, phrases, prefixes, groups,
# a column filter. A hyphen or a dot alone (`wildfly-10`, `15.5`) does not.
_SYNTAX = re.compile(r'\b(AND|OR|NOT|NEAR)\b|["*()^]|\b(' + "|".join(FTS_COLUMNS) + r")\s*:")
_WORDLIKE = re.compile(r"\w")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def to_fts(text: str) -> str | None:
    """What people type, as an FTS5 query: FTS syntax (`"climate summit"`, `title:putin OR
    kremlin`, `sport NOT football`) when the text uses it and it parses, plain words
    otherwise, each quoted so `iOS 15.5`, `C#` and `wildfly-10` search for what they say.
    None when nothing in it can be searched for (only punctuation)."""
    # Control characters (a NUL ends SQLite's reading of the query) are never search terms.
    text = _CONTROL.sub(" ", text).strip()
    if not text:
        return None
    if _SYNTAX.search(text):
        try:
            return check_query(text)
        except ValueError:
            pass  # not valid syntax after all: search for the words
    words = [w for w in text.split() if _WORDLIKE.search(w)]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def within(base: str | None, query: str) -> str:
    """`query` narrowed to the entries `base` (an output's own query) selects."""
    return f"({base}) AND ({query})" if base else query


def fts_schema() -> list[str]:
    """Statements creating the index over entries and the triggers that keep it current."""
    cols = ", ".join(FTS_COLUMNS)
    new = ", ".join(f"new.{c}" for c in FTS_COLUMNS)
    old = ", ".join(f"old.{c}" for c in FTS_COLUMNS)
    t = FTS_TABLE
    return [
        f"CREATE VIRTUAL TABLE {t} USING fts5({cols}, content='entries', content_rowid='rowid', "
        "tokenize='unicode61 remove_diacritics 2')",
        f"CREATE TRIGGER entries_fts_ai AFTER INSERT ON entries BEGIN "
        f"INSERT INTO {t}(rowid, {cols}) VALUES (new.rowid, {new}); END",
        f"CREATE TRIGGER entries_fts_ad AFTER DELETE ON entries BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) VALUES ('delete', old.rowid, {old}); END",
        f"CREATE TRIGGER entries_fts_au AFTER UPDATE OF {cols} ON entries BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) VALUES ('delete', old.rowid, {old}); "
        f"INSERT INTO {t}(rowid, {cols}) VALUES (new.rowid, {new}); END",
        f"INSERT INTO {t}({t}) VALUES ('rebuild')",
    ]
