"""Identity of entries within a feed: canonical links, the key ladder, content hashes. Pure."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import re2

from ..ingest.media import media_fingerprint
from ..ingest.tracking import strip_tracking
from ..models import Entry, KeyKind, Known, ParsedEntry

UpdatePolicy = Literal["ignore", "update", "republish"]
KeyMode = Literal["guid", "link"]

# Query parameters that only say how a reader reached the link; dropping them never changes the
# page. Prefix matches are for families such as utm_source/utm_medium/utm_campaign.
# Frozen: entry keys and content hashes are built on canonical_url, so a name added here would
# make stored entries come back as new or updated. The kept, growing list (ClearURLs, in
# `tracking`) serves where nothing is stored under it: cross-feed matching and `reconcile`.
TRACKING_PREFIXES = ("utm_", "_hs", "mtm_", "pk_", "oly_")
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "mkt_tok",
        "vero_id",
        "vero_conv",
        "ncid",
        "wt_mc",
        "wt.mc_id",
        "cmpid",
        "s_cid",
        "ocid",
        "spm",
    }
)
DEFAULT_PORTS = {"http": 80, "https": 443}
# Feeds predating RSS are not plausible: such a date is a placeholder (often the Unix epoch).
EARLIEST_PLAUSIBLE = datetime(1995, 1, 1, tzinfo=UTC)
UID_NAMESPACE = uuid.UUID("6f1f7f2e-2a4e-5b8e-9a52-5d1c9b0a7e11")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _is_tracking(name: str) -> bool:
    lower = name.lower()
    return lower in TRACKING_PARAMS or lower.startswith(TRACKING_PREFIXES)


@functools.lru_cache(maxsize=16384)
def canonical_url(url: str) -> str:
    """Normalise a link so that the same page has one spelling.

    Lower-cases scheme and host, drops the default port, the fragment and tracking parameters,
    and sorts the remaining query parameters. Path case and trailing slashes are kept: within one
    feed they can name different pages. Memoised: an entry's link is wanted by its key, its
    hashes and its stored form, and inline links recur from one poll to the next.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if not parts.netloc:
        return text
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    if parts.username:
        userinfo = parts.username + (f":{parts.password}" if parts.password else "")
        host = f"{userinfo}@{host}"
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)
    ]
    query.sort()
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query, doseq=True), ""))


def clean_text(text: str) -> str:
    """Drop characters that XML 1.0 forbids, so that every stored string can be republished."""
    return _CONTROL.sub("", text)


def content_hash(entry: ParsedEntry) -> str:
    """Hash of what a reader sees of an entry; timestamps are left out so that a feed that only
    bumps its dates does not make the entry "updated"."""
    link = canonical_url(entry.link) if entry.link else ""
    h = hashlib.sha256()
    for part in (entry.title, entry.summary, entry.content, link, entry.author):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    # Only entries with files hash them: the hashes of all others stay as they were stored.
    if files := media_fingerprint(entry.media, stable=False):
        h.update(files.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# Parts of an entry that change on every render of a page without the story changing.
_URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>]+")
# RE2, not re: this alternation runs over every new entry's whole text, and Python's
# backtracking engine tries each branch at each position (about 40x slower on 5 KB of HTML).
_VOLATILE = re2.compile(
    r"(?i)"
    r"\b\d{4}-\d{2}-\d{2}([t ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(z|[+-]\d{2}:?\d{2})?)?\b"  # ISO
    r"|\b\d{1,2}:\d{2}(:\d{2})?\s*(am|pm|gmt|utc|[a-z]{3,4}t)?\b"  # clock times
    r"|\b[\d.,]+\s*[km]?\s+(views?|reads?|comments?|shares?|likes?|replies|reactions?)\b"
    r"|\b(views?|comments?|shares?|likes?)\s*:?\s*[\d.,]+[km]?\b"
    r"|\b(updated|posted|published)?\s*\d+\s+(seconds?|minutes?|hours?|days?)\s+ago\b"
    r"|\b(cache|cb|v|ts|t|_)=\d+\b"  # cache busters in inline URLs
)


def _inline_url(match: re.Match[str]) -> str:
    url = match.group(0)
    # Only a query or a fragment carries what varies between renders (tracking parameters);
    # canonicalising every inline URL was a third of the cost of keying an entry.
    return canonical_url(url) if "?" in url or "#" in url else url


def _unvolatile(text: str) -> str:
    text = _URL_IN_TEXT.sub(_inline_url, text)
    stable: str = _VOLATILE.sub("", text)
    return stable


# Prefix of a stored stable hash that was computed without the entry's files: every row
# stored before files were recorded (m007), marked by m011. See `identify`.
TEXT_ONLY = "t:"


def stable_hash(entry: ParsedEntry) -> str:
    """Hash of an entry without its volatile parts (time stamps, counters, tracking parameters
    in inline links): an entry is "updated" only when this changes."""
    return _stable_hashes(entry)[0]


def _stable_hashes(entry: ParsedEntry) -> tuple[str, str]:
    """The stable hash, and the same hash of the text alone (without the entry's files)."""
    link = canonical_url(entry.link) if entry.link else ""
    h = hashlib.sha256()
    for part in (entry.title, entry.summary, entry.content, link, entry.author):
        h.update(_unvolatile(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    text = h.hexdigest()
    # A new file or a new length is an update; a new signature in a file's query is not.
    if files := media_fingerprint(entry.media, stable=True):
        h.update(files.encode("utf-8", "surrogatepass"))
        return h.hexdigest(), text
    return text, text


def guids_unusable(entries: Sequence[ParsedEntry]) -> bool:
    """True when a document's guids cannot key its entries: some are missing or blank, or two
    entries share one. Such a feed is keyed by link (then hash) from then on."""
    seen: set[str] = set()
    for e in entries:
        guid = (e.guid or "").strip()
        if not guid or guid in seen:
            return True
        seen.add(guid)
    return False


def is_empty(entry: ParsedEntry | Entry) -> bool:
    """An entry with nothing to show: no title, link, text or file (an empty `<item/>`)."""
    return not (
        entry.title.strip()
        or entry.link
        or entry.summary.strip()
        or entry.content.strip()
        or entry.media.enclosures
    )


def _title_date_hash(entry: ParsedEntry) -> str:
    when = entry.published or entry.updated
    stamp = when.isoformat() if when else ""
    return hashlib.sha256(f"{entry.title}\x1f{stamp}".encode()).hexdigest()[:32]


def key_ladder(entry: ParsedEntry, mode: KeyMode = "guid") -> list[tuple[KeyKind, str]]:
    """The keys an entry can be known by, best first: its guid (unless the feed is keyed by
    link), its canonical link, a hash of its title and date."""
    rungs: list[tuple[KeyKind, str]] = []
    if mode == "guid" and entry.guid and entry.guid.strip():
        rungs.append(("guid", entry.guid.strip()))
    if entry.link and entry.link.strip():
        rungs.append(("link", canonical_url(entry.link)))
    rungs.append(("hash", _title_date_hash(entry)))
    return rungs


def uid_for(feed: str, key: str) -> str:
    """The id an entry is published under: derived from feed and key, so it never changes."""
    name = feed + "\n" + key
    return f"urn:uuid:{uuid.uuid5(UID_NAMESPACE, name)}"


def plausible_date(when: datetime | None, now: datetime) -> datetime | None:
    """A feed's date if it can be believed: none before 1995; a future date is clamped to now."""
    if when is None or when < EARLIEST_PLAUSIBLE:
        return None
    return min(when, now)


def identify(
    feed: str,
    entries: Iterable[ParsedEntry],
    now: datetime,
    mode: KeyMode = "guid",
    known: Mapping[str, Known] | None = None,
) -> list[Entry]:
    """Key every entry of one fetched document and normalise its fields.

    Each entry takes the best rung of the key ladder not already taken by an earlier entry of the
    same document (feeds that repeat a guid keep both stories); entries identical on every rung
    are dropped as repeats. Dates that are missing or implausible become `now`, the first-seen
    time; `Entry.date_known` says which.

    An entry whose key and content hash are what `known` has takes the stored stable hash
    instead of computing it: equal inputs give equal hashes, and the stable hash (every inline
    link canonicalised) is most of the cost of keying an entry.
    """
    known = known or {}
    taken: set[str] = set()
    seen_ladders: set[tuple[tuple[KeyKind, str], ...]] = set()
    out: list[Entry] = []
    for parsed in entries:
        if is_empty(parsed):
            continue  # nothing a subscriber could read: never republished
        ladder = tuple(key_ladder(parsed, mode))
        if ladder in seen_ladders:
            # The same item listed twice: without this it would take the next free rung and be
            # published a second time.
            continue
        seen_ladders.add(ladder)
        chosen: tuple[KeyKind, str] | None = None
        for kind, value in ladder:
            key = f"{kind}:{value}"
            if key not in taken:
                chosen = (kind, key)
                break
        if chosen is None:
            continue
        kind, key = chosen
        taken.add(key)
        published = plausible_date(parsed.published, now)
        updated = plausible_date(parsed.updated, now)
        date_known = (published or updated) is not None
        first = published or updated or now
        c_hash = content_hash(parsed)
        stored = known.get(key)
        backfill = False
        if stored is not None and stored.stable_hash and stored.content_hash == c_hash:
            s_hash = stored.stable_hash
        else:
            s_hash, text_hash = _stable_hashes(parsed)
            if stored is not None and stored.stable_hash == TEXT_ONLY + text_hash:
                # Stored before files were recorded, and its text is as it was: an entry
                # without files is unchanged; one with files gets them written, as a
                # backfill rather than an edit (never republished, whatever the policy).
                backfill = s_hash != text_hash
                s_hash = s_hash if backfill else stored.stable_hash
        out.append(
            Entry(
                feed=feed,
                key=key,
                key_kind=kind,
                uid=uid_for(feed, key),
                guid=parsed.guid.strip() if parsed.guid else None,
                link=canonical_url(parsed.link) if parsed.link else None,
                title=clean_text(parsed.title),
                summary=clean_text(parsed.summary),
                content=clean_text(parsed.content),
                author=clean_text(parsed.author),
                categories=tuple(clean_text(c) for c in parsed.categories),
                published=first,
                updated=max(updated or first, first),
                date_known=date_known,
                content_hash=c_hash,
                stable_hash=s_hash,
                base=parsed.base,
                authors=parsed.authors,
                media=parsed.media,
                backfill=backfill,
            )
        )
    return out


def with_first_seen_date(entry: Entry, first_seen: datetime) -> Entry:
    """An undated entry keeps the date it was first seen, not the time of a later poll."""
    if entry.date_known:
        return entry
    return replace(entry, published=first_seen, updated=first_seen)


def reconcile(entries: Sequence[Entry], known: Mapping[str, Known]) -> list[Entry]:
    """Give entries whose key is new the key of a stored entry with the same link.

    A publisher that re-keys every entry at once (a mass guid change), or a feed that switches
    from guid to link keys, would otherwise publish its whole history again as new stories.
    Links are compared without any tracking parameter of the ClearURLs catalog, so a link-keyed
    feed that changes `?ref=rss` to `?ref=feed` keeps its entries too. A stored entry is claimed
    at most once, and never while its own key is still in the document.
    """
    present = {e.key for e in entries}
    by_link: dict[str, str] = {}
    for key, k in sorted(known.items()):
        if k.link and key not in present:
            by_link.setdefault(strip_tracking(k.link), key)
    out: list[Entry] = []
    for e in entries:
        if (
            e.key not in known
            and e.link
            and (old := by_link.pop(strip_tracking(e.link), None)) is not None
        ):
            e = replace(e, key=old, uid=known[old].uid)
        out.append(e)
    return out


def diff(
    entries: Sequence[Entry], known: Mapping[str, Known], policy: UpdatePolicy, now: datetime
) -> tuple[list[Entry], list[Entry]]:
    """Split a document's entries into new and updated ones (the rest are unchanged).

    An entry is updated when its stable hash changed (its content hash, for rows stored before
    stable hashes existed). `policy` "ignore" never updates; "republish" dates an update at
    `now`, so it rises to the top of the outputs. A backfill (the files of an entry stored
    before files were recorded) is written whatever the policy, and never redated.
    """
    new: list[Entry] = []
    updated: list[Entry] = []
    for e in entries:
        k = known.get(e.key)
        if k is None:
            new.append(e)
            continue
        changed = (
            k.stable_hash != e.stable_hash if k.stable_hash else k.content_hash != e.content_hash
        )
        if e.backfill and changed:
            updated.append(e)  # files the store never had: filled in, not an edit
            continue
        if not changed or policy == "ignore":
            continue
        if policy == "republish":
            e = replace(e, published=now, updated=now, date_known=True)
        updated.append(e)
    return new, updated


__all__ = [
    "Known",
    "canonical_url",
    "clean_text",
    "content_hash",
    "diff",
    "guids_unusable",
    "identify",
    "is_empty",
    "key_ladder",
    "plausible_date",
    "reconcile",
    "stable_hash",
    "uid_for",
    "with_first_seen_date",
]
