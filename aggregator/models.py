"""Value objects shared by every stage of the data flow. Pure: no I/O, imports nothing of ours."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

KeyKind = Literal["guid", "link", "hash"]
PollStatus = Literal["ok", "not_modified", "unchanged", "error"]
OutputFormat = Literal["atom", "rss", "json"]


@dataclass(frozen=True, slots=True)
class Validators:
    """What the last 200 response said about itself, sent back on the next conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A 200 response whose body was read in full (within the size cap)."""

    url: str  # after redirects
    status: int
    body: bytes
    headers: Mapping[str, str]
    validators: Validators
    elapsed: float  # seconds


@dataclass(frozen=True, slots=True)
class NotModified:
    """A 304: the feed has not changed since the validators we sent."""

    url: str
    headers: Mapping[str, str]
    elapsed: float


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One entry as the parser saw it, before identity is decided. Dates are aware UTC or None."""

    guid: str | None
    guid_is_permalink: bool
    link: str | None
    title: str
    summary: str
    content: str
    author: str
    categories: tuple[str, ...]
    published: datetime | None
    updated: datetime | None
    base: str | None = None  # base URL for relative links in summary and content


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed feed document: its own metadata, its entries, and a warning if it was malformed."""

    title: str
    link: str | None
    entries: tuple[ParsedEntry, ...]
    warning: str | None = None
    ttl_minutes: int | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry with its identity decided: ready to be compared with the store and written."""

    feed: str
    key: str
    key_kind: KeyKind
    uid: str  # the id published in outputs; derived from (feed, key), so stable across renders
    guid: str | None
    link: str | None  # canonical
    title: str
    summary: str
    content: str
    author: str
    categories: tuple[str, ...]
    published: datetime  # aware UTC; the first-seen time when the feed gave none usable
    updated: datetime  # aware UTC
    date_known: bool  # False when published/updated fell back to the first-seen time
    content_hash: str  # over the feed's own (unsanitised) text, so it is stable across versions
    stable_hash: str = ""  # content hash without volatile parts; "" when not computed
    base: str | None = None  # for resolving relative links while sanitising; not stored


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry read back from the store, with when we first and last saw it change."""

    entry: Entry
    first_seen: datetime
    last_changed: datetime
    feed_title: str
    feed_url: str
    feed_link: str | None


@dataclass(frozen=True, slots=True)
class FeedState:
    """A feed's polling state as stored: what the next poll sends and what status shows."""

    name: str
    url: str
    title: str | None = None
    link: str | None = None
    validators: Validators = field(default_factory=Validators)
    body_hash: str | None = None
    last_poll: datetime | None = None
    last_ok: datetime | None = None
    last_status: str | None = None
    http_status: int | None = None
    error_count: int = 0
    last_error: str | None = None
    next_poll: datetime | None = None
    warning: str | None = None
    entry_count: int = 0
    language: str | None = None
    key_mode: str = "guid"  # "link" once the feed's guids proved unusable


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll did, for logs, the CLI summary and metrics."""

    feed: str
    status: PollStatus
    new: int = 0
    updated: int = 0
    error: str | None = None
    elapsed_ms: int = 0


@dataclass(frozen=True, slots=True)
class PollRecord:
    """Everything one poll writes, committed by the store in a single transaction."""

    feed: str
    url: str
    now: datetime
    status: PollStatus
    next_poll: datetime | None
    http_status: int | None = None
    validators: Validators | None = None  # None: keep the stored ones
    body_hash: str | None = None
    title: str | None = None
    link: str | None = None
    warning: str | None = None
    error: str | None = None
    new: tuple[Entry, ...] = ()
    updated: tuple[Entry, ...] = ()
    language: str | None = None
    key_mode: str | None = None  # None: keep the stored one
