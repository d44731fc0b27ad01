"""Same story across feeds: match keys, text fingerprints, grouping into stories. Pure.

An output shows each story once. Two stored entries are the same story when they share a match
key (the canonical link with scheme, host case and a trailing slash ignored), a globally unique
guid, or — in "near" mode — their text fingerprints are nearly equal and they were seen within a
time window of each other. Grouping is the transitive closure of that relation, so it does not
depend on the order entries are read in.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from .identity import canonical_url
from .models import StoredEntry

DedupeMode = Literal["off", "exact", "near"]
BITS = 64
# Fewer shingles than this and two unrelated texts agree too easily: such entries are only
# merged by exact keys.
MIN_SHINGLES = 8
SHINGLE = 3

_TAG = re.compile(r"<[^>]*>")
_BLOCK_TAG = re.compile(
    r"(?i)</?(p|div|br|li|ul|ol|h[1-6]|blockquote|section|article|tr|td)\b[^>]*>"
)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.,!?…:;\"'”’»)]")
# Lines that syndication and page scrapers add around the story; never part of it.
_BOILERPLATE = re.compile(
    r"(?i)^\s*(read more|continue reading|read the full|follow us|subscribe|sign up|"
    r"share this|click here|this (article|story) (was |first |originally )|originally published|"
    r"the post .* appeared first|©|copyright|all rights reserved|advertisement|related:|"
    r"you may also like|more from|photo:|image:|getty images|reuters/|ap photo)"
)
# A date or time stamp line such as "29 Sep, 2023 18:28" or "Updated 10:02 GMT".
_STAMP = re.compile(
    r"(?i)^(?=.*\d)\s*(updated|published|posted)?\s*[\d\s,:/.\-]*"
    r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)?[a-z]*[\d\s,:/.\-]*(gmt|utc|am|pm)?\s*$"
)


def match_key(url: str) -> str:
    """The key two links of the same page share, across feeds.

    Built on `identity.canonical_url` (tracking parameters, fragment and default port gone),
    then scheme, a leading "www." and a trailing slash are dropped: across publishers' feeds
    these never name different pages. Not used for identity within a feed, where they might.
    """
    canon = canonical_url(url)
    try:
        parts = urlsplit(canon)
    except ValueError:
        return canon
    if not parts.netloc:
        return canon
    host = parts.netloc.lower().removeprefix("www.")
    path = parts.path.rstrip("/")
    return f"{host}{path}" + (f"?{parts.query}" if parts.query else "")


def exact_keys(item: StoredEntry) -> frozenset[str]:
    """Keys that prove two entries are one story: the link, and a guid that is globally unique
    (a URL, a tag: or urn: URI). A bare guid such as "583812" is only unique within its feed."""
    e = item.entry
    keys: set[str] = set()
    if e.link:
        keys.add("link:" + match_key(e.link))
    guid = (e.guid or "").strip()
    lower = guid.lower()
    if lower.startswith(("http://", "https://")):
        keys.add("link:" + match_key(guid))
    elif lower.startswith(("tag:", "urn:")) and not lower.startswith("urn:uuid:00000000"):
        keys.add("guid:" + guid)
    return frozenset(keys)


def story_text(title: str, summary: str, content: str) -> str:
    """The story's own words: markup, page chrome, stamps and syndication boilerplate removed.

    Text is split into blocks (paragraphs, lines); a block is dropped when it is boilerplate, a
    bare date stamp, or a long run of words with no sentence punctuation at all (a menu or the
    line of icon names a scraper picks up from a page).
    """
    body = content if len(content) >= len(summary) else summary
    body = _BLOCK_TAG.sub("\n", body)
    body = html.unescape(_TAG.sub(" ", body))
    kept: list[str] = []
    for block in body.splitlines():
        words = _WORD.findall(block)
        if not words:
            continue
        if _BOILERPLATE.match(block) or _STAMP.match(block):
            continue
        if len(words) >= 12 and not _SENTENCE_END.search(block):
            continue
        kept.append(" ".join(words))
    text = " ".join(kept).lower()
    t = " ".join(_WORD.findall(title.lower()))
    # A body that merely repeats the title adds nothing to tell stories apart.
    if t and text.startswith(t):
        text = text[len(t) :].strip()
    return text or t


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A text's word 3-shingles (hashed) and their 64-bit simhash."""

    shingles: frozenset[int]
    simhash: int


@lru_cache(maxsize=8192)
def fingerprint_text(text: str) -> Fingerprint | None:
    """Fingerprint normalised text; None when it is too short to compare reliably."""
    words = text.split()
    shingles = frozenset(
        _h64(" ".join(words[i : i + SHINGLE])) for i in range(max(0, len(words) - SHINGLE + 1))
    )
    if len(shingles) < MIN_SHINGLES:
        return None
    counts = [0] * BITS
    for h in shingles:
        for bit in range(BITS):
            counts[bit] += 1 if (h >> bit) & 1 else -1
    sim = 0
    for bit in range(BITS):
        if counts[bit] > 0:
            sim |= 1 << bit
    return Fingerprint(shingles, sim)


def simhash(text: str) -> int | None:
    """The 64-bit simhash over word 3-shingles of normalised text (None if too short)."""
    fp = fingerprint_text(text)
    return fp.simhash if fp else None


def fingerprint(item: StoredEntry) -> Fingerprint | None:
    e = item.entry
    return fingerprint_text(story_text(e.title, e.summary, e.content))


def similarity(a: int, b: int) -> float:
    """Simhash similarity: 1.0 for equal fingerprints, about 0.5 for unrelated texts."""
    return 1.0 - (a ^ b).bit_count() / BITS


# Below this simhash similarity two texts cannot reach any allowed threshold of containment in
# practice (unrelated texts sit near 0.5); skipping them keeps the pairwise pass cheap.
PREFILTER = 0.7


def resemblance(a: Fingerprint, b: Fingerprint) -> float:
    """Shared shingles over the shorter text's shingles: 1.0 when one copy contains the other,
    so a syndicated copy cut short or with a line added still matches its original."""
    if similarity(a.simhash, b.simhash) < PREFILTER:
        return 0.0
    return len(a.shingles & b.shingles) / min(len(a.shingles), len(b.shingles))


@dataclass(frozen=True, slots=True)
class Story:
    """One story in an output: the copy shown, and the copies from other feeds merged into it."""

    item: StoredEntry
    merged: tuple[StoredEntry, ...] = ()

    @property
    def sources(self) -> tuple[StoredEntry, ...]:
        return (self.item, *self.merged)


@dataclass(frozen=True, slots=True)
class DedupeSettings:
    """How an output merges duplicates: mode, resemblance threshold (0.5–1.0), time window."""

    mode: DedupeMode = "near"
    threshold: float = 0.8
    window: timedelta = timedelta(days=2)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _when(item: StoredEntry) -> float:
    # The publisher's date (the first-seen time when it gave none): a feed subscribed to later
    # sees an old story late, but its date still says when the story ran.
    return item.entry.published.timestamp()


def group(
    items: Iterable[StoredEntry],
    settings: DedupeSettings,
    feed_order: Mapping[str, int] | None = None,
) -> list[Story]:
    """Group entries into stories, newest story first.

    The representative of a story is its earliest first-seen copy, ties broken by the feed's
    position in the config (`feed_order`), then by uid, so any input order gives the same result.
    Stories are ordered like the store orders entries: by the representative's published time,
    newest first.
    """
    order = feed_order or {}
    entries = sorted(items, key=lambda i: i.entry.uid)
    if settings.mode == "off":
        return _ordered([Story(i) for i in entries])
    uf = _Union(len(entries))
    first_by_key: dict[str, int] = {}
    for idx, item in enumerate(entries):
        for key in sorted(exact_keys(item)):
            if key in first_by_key:
                uf.join(first_by_key[key], idx)
            else:
                first_by_key[key] = idx
    if settings.mode == "near":
        _join_near(entries, settings, uf)
    groups: dict[int, list[StoredEntry]] = {}
    for idx, item in enumerate(entries):
        groups.setdefault(uf.find(idx), []).append(item)
    stories = []
    for members in groups.values():
        members.sort(key=lambda i: (i.first_seen, order.get(i.entry.feed, len(order)), i.entry.uid))
        stories.append(Story(members[0], tuple(members[1:])))
    return _ordered(stories)


def _join_near(entries: Sequence[StoredEntry], settings: DedupeSettings, uf: _Union) -> None:
    prints = [
        (i, fp, _when(e)) for i, e in enumerate(entries) if (fp := fingerprint(e)) is not None
    ]
    prints.sort(key=lambda t: (t[2], t[0]))
    window = settings.window.total_seconds()
    for a in range(len(prints)):
        ia, fa, ta = prints[a]
        for b in range(a + 1, len(prints)):
            ib, fb, tb = prints[b]
            if tb - ta > window:
                break
            if entries[ia].entry.feed == entries[ib].entry.feed:
                continue  # one feed does not carry a story twice; its entries are distinct
            if resemblance(fa, fb) >= settings.threshold:
                uf.join(ia, ib)


def _ordered(stories: list[Story]) -> list[Story]:
    def key(s: Story) -> tuple[float, float, str]:
        i = s.item
        return (-i.entry.published.timestamp(), -i.first_seen.timestamp(), i.entry.uid)

    return sorted(stories, key=key)


__all__ = [
    "DedupeMode",
    "DedupeSettings",
    "Fingerprint",
    "Story",
    "exact_keys",
    "fingerprint",
    "group",
    "match_key",
    "resemblance",
    "simhash",
    "similarity",
    "story_text",
]
