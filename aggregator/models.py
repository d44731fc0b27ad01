"""Value objects shared by every stage of the data flow. Pure: no I/O, imports nothing of ours."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

REDIRECT_CONFIRMATIONS = 3  # good polls of a permanent redirect before advising a config change

KeyKind = Literal["guid", "link", "hash"]
PollStatus = Literal["ok", "not_modified", "unchanged", "error", "gone", "deferred"]
OutputFormat = Literal["atom", "rss", "json"]


class NextKind(StrEnum):
    """Which rule set a feed's next poll time (decide.py, or a deferral in poll.py): what a
    restart or another poller acts on. The human reason string is kept beside it, for people."""

    INTERVAL = "interval"  # the feed's interval (raised to min_interval, capped at max_interval)
    ADAPTIVE = "adaptive"  # half the observed time between the feed's entries
    HINT = "hint"  # the feed's own ttl, sy:updatePeriod, Cache-Control max-age or Expires
    BACKOFF = "backoff"  # after errors: the interval doubled per error, up to max_backoff
    NETWORK_DOWN = "network_down"  # the network failed, not the feed: the regular wait
    RETRY_AFTER = "retry_after"  # the feed's, or its host's, 429/503 Retry-After
    HOST_DELAY = "host_delay"  # deferred: the host's host_delay had not passed
    GONE = "gone"  # a 410: never polled again until its URL changes


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
    # Where the chain of 301/308 redirects from the requested URL leads (None: no permanent
    # move). A 302/307 anywhere in the chain stops it: a temporary move changes nothing.
    permanent_url: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    """A 304: the feed has not changed since the validators we sent."""

    url: str
    headers: Mapping[str, str]
    elapsed: float
    permanent_url: str | None = None


@dataclass(frozen=True, slots=True)
class FeedHints:
    """What a feed document says about how often to poll it: RSS <ttl>, sy:updatePeriod and
    sy:updateFrequency (as one period), skipHours (UTC hours) and skipDays (0 = Monday)."""

    ttl_minutes: int | None = None
    update_minutes: int | None = None
    skip_hours: tuple[int, ...] = ()
    skip_days: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Person:
    """An author as a feed names them; every field may be empty, URLs are http(s) only."""

    name: str = ""
    email: str = ""
    url: str = ""
    avatar: str = ""


@dataclass(frozen=True, slots=True)
class Enclosure:
    """A media file attached to an entry: RSS enclosure, Atom rel=enclosure, JSON Feed
    attachment or Media RSS content. `length` 0 and `duration` None mean unknown."""

    url: str
    type: str = ""
    length: int = 0  # bytes
    duration: int | None = None  # seconds
    medium: str = ""  # Media RSS medium: audio, video, image, document


@dataclass(frozen=True, slots=True)
class Media:
    """What a podcast or media app needs of an entry: its files, its picture and its iTunes
    episode tags (`explicit` None: not said)."""

    enclosures: tuple[Enclosure, ...] = ()
    image: str = ""  # itunes:image, media:thumbnail or JSON Feed image
    duration: int | None = None  # itunes:duration, seconds
    explicit: bool | None = None
    episode: int | None = None
    season: int | None = None
    episode_type: str = ""  # full, trailer, bonus

    def __bool__(self) -> bool:
        return self != _NO_MEDIA


_NO_MEDIA = Media()


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
    authors: tuple[Person, ...] = ()  # `author` is their names as one string
    media: Media = field(default_factory=Media)


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed feed document: its own metadata, its entries, and a warning if it was malformed."""

    title: str
    link: str | None
    entries: tuple[ParsedEntry, ...]
    warning: str | None = None
    ttl_minutes: int | None = None
    language: str | None = None
    hints: FeedHints = field(default_factory=FeedHints)


@dataclass(frozen=True, slots=True)
class Known:
    """What the store knows of one entry of a feed: enough to decide new / updated / unchanged."""

    uid: str
    content_hash: str
    stable_hash: str | None
    link: str | None


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
    authors: tuple[Person, ...] = ()
    media: Media = field(default_factory=Media)
    # Only its files are new to the store, which stored it before files were recorded: the
    # entry is written without counting as an edit (identity.identify). Not stored.
    backfill: bool = False


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
    language: str | None = None
    key_mode: str = "guid"  # "link" once the feed's guids proved unusable
    next_reason: str | None = None
    next_kind: NextKind | None = None  # None: never polled (or stored by an older version)
    backoff_level: int = 0  # consecutive errors that count for backoff
    failing_since: datetime | None = None
    redirect_url: str | None = None  # where a 301/308 said the feed moved; polled instead
    redirect_count: int = 0  # consecutive good polls that confirmed redirect_url
    gone: bool = False  # a 410: never polled again until its URL changes in the config
    hints: FeedHints = field(default_factory=FeedHints)

    @property
    def status(self) -> str:
        """ok / not_modified / unchanged / error / gone / redirected / pending, for people."""
        if self.gone:
            return "gone"
        if self.last_status == "error":
            return "error"
        if self.redirect_url:
            return "redirected"
        return self.last_status or "pending"

    @property
    def config_hint(self) -> str | None:
        """Advice once a permanent redirect has been seen consistently."""
        if self.redirect_url and self.redirect_count >= REDIRECT_CONFIRMATIONS:
            return f"moved permanently to {self.redirect_url}: update the feed's url in the config"
        return None


@dataclass(frozen=True, slots=True)
class FeedStatus(FeedState):
    """A feed's state as status pages show it: its polling state and its stored entries."""

    entry_count: int = 0


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll did, for logs, the CLI summary and metrics."""

    feed: str
    status: PollStatus
    new: int = 0
    updated: int = 0
    error: str | None = None
    elapsed_ms: int = 0
    next_poll: datetime | None = None  # None: never again (gone)
    reason: str = ""
    error_kind: str | None = None  # errors.error_kind of the error, for the errors metric


@dataclass(frozen=True, slots=True)
class PollRecord:
    """What one poll saw and decided: the input of `feedstate.next_state`, which turns it into
    the feed's next state, and the entries the poll writes with that state."""

    feed: str
    url: str
    now: datetime
    status: PollStatus
    next_poll: datetime | None  # the decision (None: never again)
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
    next_reason: str | None = None
    hints: FeedHints | None = None  # None: keep the stored ones
    next_kind: NextKind | None = None
    # Where the response's chain of 301/308 redirects led (None: no permanent move).
    permanent_url: str | None = None
    network_down: bool = False  # an error while nearly every feed failed: no backoff for it


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One running aggregator process as the `nodes` table records it: who it is, what it
    runs, and when it last said it was alive (refreshed every few seconds by the node)."""

    node_id: str
    role: str  # all, poller or server
    host: str  # the machine's host name
    pid: int
    listen: str  # HOST:PORT it serves HTTP on
    config_hash: str  # of the resolved config's content (config/fingerprint.py)
    started: datetime
    last_seen: datetime
