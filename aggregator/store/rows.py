"""Rows ↔ models: how entries, feed state, hints and timestamps are written in SQLite and read
back. Pure (no I/O): dicts and rows in, models out.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from ..ingest.identity import clean_text, with_first_seen_date
from ..ingest.media import authors_from_json, authors_json, media_from_json, media_json
from ..models import Entry, FeedHints, FeedState, FeedStatus, NextKind, StoredEntry, Validators


def _ts(when: datetime | None) -> str | None:
    """Timestamps are stored as fixed-width UTC ISO 8601 text, so they sort as strings."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _dt(text: str | datetime | None) -> datetime | None:
    # PostgreSQL's timestamptz columns arrive as datetimes already (store/postgres.py).
    if isinstance(text, datetime):
        return text
    return datetime.fromisoformat(text) if text else None


def _hints_json(hints: FeedHints) -> str:
    return json.dumps(
        {
            "ttl_minutes": hints.ttl_minutes,
            "update_minutes": hints.update_minutes,
            "skip_hours": list(hints.skip_hours),
            "skip_days": list(hints.skip_days),
        }
    )


def _hints_from(text: str | None) -> FeedHints:
    if not text:
        return FeedHints()
    d = json.loads(text)
    return FeedHints(
        ttl_minutes=d.get("ttl_minutes"),
        update_minutes=d.get("update_minutes"),
        skip_hours=tuple(d.get("skip_hours") or ()),
        skip_days=tuple(d.get("skip_days") or ()),
    )


def _entry_row(entry: Entry) -> dict[str, Any]:
    return {
        "feed": entry.feed,
        "key": entry.key,
        "key_kind": entry.key_kind,
        "uid": entry.uid,
        "guid": entry.guid,
        "link": entry.link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "author": entry.author,
        "categories": json.dumps(list(entry.categories), ensure_ascii=False),
        "published": _ts(entry.published),
        "updated": _ts(entry.updated),
        "date_known": int(entry.date_known),
        "content_hash": entry.content_hash,
        "stable_hash": entry.stable_hash or None,
        "media": media_json(entry.media),
        "authors": authors_json(entry.authors),
    }


_INSERT_ENTRY = (
    "INSERT INTO entries (feed, key, key_kind, uid, guid, link, title, summary, content, author, "
    "categories, published, updated, date_known, content_hash, stable_hash, media, authors, "
    "first_seen, last_changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _entry_from_row(row: sqlite3.Row | dict[str, Any]) -> Entry:
    # Text is cleaned on the way in; cleaning again on the way out means that a row written by
    # an older version with a character XML forbids cannot break a whole output.
    published = _dt(row["published"])
    updated = _dt(row["updated"])
    assert published is not None and updated is not None
    return Entry(
        feed=row["feed"],
        key=row["key"],
        key_kind=row["key_kind"],
        uid=row["uid"],
        guid=row["guid"],
        link=row["link"],
        title=clean_text(row["title"]),
        summary=clean_text(row["summary"]),
        content=clean_text(row["content"]),
        author=clean_text(row["author"]),
        categories=tuple(clean_text(c) for c in json.loads(row["categories"])),
        published=published,
        updated=updated,
        date_known=bool(row["date_known"]),
        content_hash=row["content_hash"],
        stable_hash=row["stable_hash"] or "",
        media=media_from_json(row["media"]),
        authors=authors_from_json(row["authors"]),
    )


def _stored_from_row(r: sqlite3.Row) -> StoredEntry:
    """An entry row joined with its feed's title, url and link (as feed_title, feed_url,
    feed_link)."""
    first_seen = _dt(r["first_seen"])
    last_changed = _dt(r["last_changed"])
    assert first_seen is not None and last_changed is not None
    return StoredEntry(
        entry=_entry_from_row(r),
        first_seen=first_seen,
        last_changed=last_changed,
        feed_title=r["feed_title"] or r["feed"],
        feed_url=r["feed_url"],
        feed_link=r["feed_link"],
    )


_KINDS = {kind.value: kind for kind in NextKind}
_NO_HINTS = FeedHints()

# A feed's row holds its FeedState, all of it, in these columns (after `name`): written whole by
# every poll, read back as the same FeedState.
FEED_COLUMNS = (
    "url",
    "title",
    "link",
    "etag",
    "last_modified",
    "body_hash",
    "last_poll",
    "last_ok",
    "last_status",
    "http_status",
    "error_count",
    "last_error",
    "next_poll",
    "warning",
    "language",
    "key_mode",
    "next_reason",
    "next_kind",
    "backoff_level",
    "failing_since",
    "redirect_url",
    "redirect_count",
    "gone",
    "hints",
)
_UPDATE_FEED = f"UPDATE feeds SET {', '.join(f'{c} = ?' for c in FEED_COLUMNS)} WHERE name = ?"
_INSERT_FEED = (
    f"INSERT INTO feeds (name, {', '.join(FEED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in range(len(FEED_COLUMNS) + 1))})"
)
# The same, only while the row is still the one a poll started from (optimistic concurrency:
# another process may have written it since); a guard, not a computation of any column.
_UPDATE_FEED_IF = _UPDATE_FEED + "".join(f" AND {c} IS ?" for c in FEED_COLUMNS)
_INSERT_FEED_IF = _INSERT_FEED + " ON CONFLICT (name) DO NOTHING"


@functools.lru_cache(maxsize=4096)
def _hints_text(hints: FeedHints) -> str | None:
    # Cached: every poll writes its feed's hints, and a feed's hints rarely change.
    return _hints_json(hints) if hints != _NO_HINTS else None


def _feed_values(
    state: FeedState,
    ts: Callable[[datetime | None], Any] = _ts,
    hints: Callable[[FeedHints], str | None] = _hints_text,
) -> list[Any]:
    """The FEED_COLUMNS values of a feed's state, in order; `ts` and `hints` give a dialect's
    stored form of a time and of the hints (SQLite's by default)."""
    return [
        state.url,
        state.title,
        state.link,
        state.validators.etag,
        state.validators.last_modified,
        state.body_hash,
        ts(state.last_poll),
        ts(state.last_ok),
        state.last_status,
        state.http_status,
        state.error_count,
        state.last_error,
        ts(state.next_poll),
        state.warning,
        state.language,
        state.key_mode,
        state.next_reason,
        str(state.next_kind) if state.next_kind is not None else None,
        state.backoff_level,
        ts(state.failing_since),
        state.redirect_url,
        state.redirect_count,
        int(state.gone),
        hints(state.hints),
    ]


# A pruned entry's content hash, when its feed edited it (%s placeholders, as in entry_update).
UPDATE_PRUNED = "UPDATE pruned SET content_hash = %s WHERE feed = %s AND key = %s"


def entry_update(entry: Entry, first_seen: datetime, now: object) -> tuple[str, list[Any]]:
    """The UPDATE of an updated entry's row (%s placeholders; SQLite's callers put in `?`) and
    its parameters; `now`, its last_changed, in the dialect's form of a time. first_seen and
    uid are left out: an update never changes an entry's identity."""
    row = _entry_row(with_first_seen_date(entry, first_seen))
    row["last_changed"] = now
    row.pop("uid")
    keys = ("feed", "key")
    sets = ", ".join(f"{k} = %s" for k in row if k not in keys)
    params = [v for k, v in row.items() if k not in keys] + [entry.feed, entry.key]
    return f"UPDATE entries SET {sets} WHERE feed = %s AND key = %s", params


def _feed_state_from_row(r: sqlite3.Row) -> FeedState:
    """A feeds row as the FeedState it was written from."""
    return FeedState(
        name=r["name"],
        url=r["url"],
        title=r["title"],
        link=r["link"],
        validators=Validators(r["etag"], r["last_modified"]),
        body_hash=r["body_hash"],
        last_poll=_dt(r["last_poll"]),
        last_ok=_dt(r["last_ok"]),
        last_status=r["last_status"],
        http_status=r["http_status"],
        error_count=r["error_count"],
        last_error=r["last_error"],
        next_poll=_dt(r["next_poll"]),
        warning=r["warning"],
        language=r["language"],
        key_mode=r["key_mode"],
        next_reason=r["next_reason"],
        next_kind=_KINDS.get(r["next_kind"] or ""),
        backoff_level=r["backoff_level"],
        failing_since=_dt(r["failing_since"]),
        redirect_url=r["redirect_url"],
        redirect_count=r["redirect_count"],
        gone=bool(r["gone"]),
        hints=_hints_from(r["hints"]),
    )


_STATE_FIELDS = tuple(f.name for f in fields(FeedState))


def _feed_status_from_row(r: sqlite3.Row) -> FeedStatus:
    """A feeds row with its entry_count column, for status pages."""
    state = _feed_state_from_row(r)
    return FeedStatus(
        **{name: getattr(state, name) for name in _STATE_FIELDS}, entry_count=r["entry_count"]
    )
