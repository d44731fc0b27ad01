"""Same story across feeds: match keys, text fingerprints, grouping into stories. Pure.

An output shows each story once. Two stored entries are the same story when they share a match
key (the canonical link with scheme, host case and a trailing slash ignored), a globally unique
guid, an audio or video file (the same episode in two podcasts), or — in "near" mode — most
word triples of the shorter text appear in the other (found through bottom-k MinHash sketches,
then counted exactly) and they were published within a time window of each other. Grouping is
the transitive closure of that relation, so it does not depend on the order entries are read in.
"""

from __future__ import annotations

import html
import re
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from ..ingest.identity import canonical_url
from ..ingest.media import playable_keys
from ..ingest.tracking import strip_tracking
from ..models import StoredEntry
from ..outputs.textnorm import is_chrome, is_stamp, items, normalise, tokens, weight

DedupeMode = Literal["off", "exact", "near"]
# Fewer shingles than this and two unrelated texts agree too easily: such entries are only
# merged by exact keys.
MIN_SHINGLES = 8
# Blocks shorter than this (in Latin letters' worth, `textnorm.weight`) are a headline, a
# credit, a footer or a caption far more often than the story: like jusText's length_low, they
# are left out of the fingerprint when the text has enough longer blocks (SHORT_BLOCK * 2).
SHORT_BLOCK = 70

_TAG = re.compile(r"<[^>]*>")
# Elements that hold a page's chrome by HTML's own semantics, in any language: menus, footers,
# side boxes, page headers, forms. nh3 keeps them, and scraped full-text feeds carry them.
_CHROME_ELEMENT = re.compile(
    r"(?is)<(nav|footer|aside|header|form|button|script|style)\b[^>]*>.*?</\1\s*>"
)
_BLOCK_TAG = re.compile(
    r"(?i)</?(p|div|br|li|ul|ol|h[1-6]|blockquote|section|article|tr|td)\b[^>]*>"
)
# Lines that syndication and page scrapers add around the story; never part of it.
_BOILERPLATE_EN = (
    r"read more|continue reading|read the full|follow us|subscribe|sign up|"
    r"share this|click here|this (article|story) (was |first |originally )|originally published|"
    r"the post .* appeared first|©|copyright|all rights reserved|advertisement|related:|"
    r"you may also like|more from|photo:|image:|getty images|reuters/|ap photo"
)
# The same lines in the other languages the dedupe bench covers (matched after normalising).
_BOILERPLATE_WORLD = (
    "阅读全文", "点击查看", "原文链接", "版权所有", "责任编辑", "相关阅读", "延伸阅读", "来源：",
    "続きを読む", "関連記事", "無断転載", "写真：", "この記事は",
    "관련기사", "관련 기사", "기사 더보기", "무단 전재", "무단전재", "저작권자", "구독하기",
    "อ่านต่อ", "อ่านเพิ่มเติม", "ข่าวที่เกี่ยวข้อง", "ติดตามข่าว",
    "और पढ़ें", "यह भी पढ़ें", "संबंधित खबरें", "हमें फॉलो करें", "सर्वाधिकार सुरक्षित",
    "مزید پڑھیں", "یہ بھی پڑھیں", "متعلقہ خبریں", "ہمیں فالو کریں", "جملہ حقوق محفوظ",
    "اقرأ أيضا", "اقرأ المزيد", "أخبار ذات صلة", "تابعونا", "جميع الحقوق محفوظة",
)  # fmt: skip
_BOILERPLATE = re.compile(
    r"(?i)^[\W_]*("
    + _BOILERPLATE_EN
    + "|"
    + "|".join(re.escape(normalise(p)) for p in _BOILERPLATE_WORLD)
    + ")"
)
# A date or time stamp line such as "29 Sep, 2023 18:28" or "Updated 10:02 GMT".
_STAMP = re.compile(
    r"(?i)^(?=.*\d)\s*(updated|published|posted)?\s*[\d\s,:/.\-]*"
    r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)?[a-z]*[\d\s,:/.\-]*(gmt|utc|am|pm)?\s*$"
)


def match_key(url: str) -> str:
    """The key two links of the same page share, across feeds.

    Built on `identity.canonical_url` (fragment and default port gone), then every tracking
    parameter of the ClearURLs catalog (`tracking`), scheme, a leading "www." and a trailing
    slash are dropped: across publishers' feeds these never name different pages. Not used for
    identity within a feed, where the scheme or slash might, and where stored keys must not
    change when the catalog grows.
    """
    canon = strip_tracking(canonical_url(url))
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
    # The same episode in two feeds: one audio or video file (its signed query ignored).
    keys.update("media:" + key for key in playable_keys(e.media))
    return frozenset(keys)


_KEYS: dict[tuple[str, str | None, str | None, int], tuple[str, ...]] = {}


def _sorted_keys(item: StoredEntry) -> tuple[str, ...]:
    # Cached: every render groups mostly the same entries again.
    e = item.entry
    cache_key = (e.uid, e.link, e.guid, hash(e.media.enclosures))
    keys = _KEYS.get(cache_key)
    if keys is None:
        keys = tuple(sorted(exact_keys(item)))
        if len(_KEYS) >= 20_000:
            _KEYS.clear()
        _KEYS[cache_key] = keys
    return keys


def chrome_line(block: str, words: Sequence[str] | None = None) -> bool:
    """Whether one block of text is page chrome rather than story, in any script: boilerplate,
    a bare date stamp, or items with no sentence punctuation of any script, many of them or
    separated by > | / (a menu, a breadcrumb, the line of icon names a scraper picks up).

    `words` are the block's `textnorm.items` when the caller has them and the block is
    normalised already (as in `story_text`); otherwise the block is normalised here.
    """
    if words is None:
        block = normalise(block)
        words = items(block)
    found = list(words)
    if is_stamp(block, found) or (len(found) <= 10 and _STAMP.match(block)):
        return True  # a stamp is a short line: the English look-ahead scans the whole block
    return bool(_BOILERPLATE.match(block)) or is_chrome(block, found)


def story_text(title: str, summary: str, content: str) -> str:
    """The story's own words: markup, page chrome, stamps and syndication boilerplate removed.

    Text is normalised (`textnorm.normalise`) and split into blocks (paragraphs, lines), without
    the elements that hold chrome (nav, footer, aside, header, forms); a block is dropped when
    it is boilerplate, a bare date stamp, the headline again, or page chrome:
    items with no punctuation of any script, many of them or separated by > | / (a menu, a
    breadcrumb, the line of icon names a scraper picks up). Short blocks are dropped too when
    the text has enough long ones. What is left is tokens joined by spaces: words, or pairs of
    characters in Chinese, Japanese, Thai and the other scripts written without spaces.
    """
    body = content if len(content) >= len(summary) else summary
    if "</" in body:
        body = _CHROME_ELEMENT.sub("\n", body)
    body = _BLOCK_TAG.sub("\n", body)
    body = normalise(html.unescape(_TAG.sub(" ", body)))
    title_tokens = tokens(normalise(html.unescape(title)))
    kept: list[tuple[list[str], int]] = []
    for block in body.splitlines():
        words = items(block)
        if not words:
            continue
        if chrome_line(block, words):
            continue
        toks = tokens(block, words)
        if toks == title_tokens:
            continue  # the headline repeated as the first line of the body
        kept.append((toks, weight(block)))
    long = [toks for toks, w in kept if w >= SHORT_BLOCK]
    if sum(w for _, w in kept if w >= SHORT_BLOCK) >= 2 * SHORT_BLOCK:
        text = " ".join(" ".join(toks) for toks in long)
    else:
        text = " ".join(" ".join(toks) for toks, _ in kept)
    t = " ".join(title_tokens)
    # A body that merely repeats the title adds nothing to tell stories apart.
    if t and text.startswith(t):
        text = text[len(t) :].strip()
    return text or t


def _h32(text: str) -> int:
    # CRC-32: stable across processes (renders must not depend on PYTHONHASHSEED) and five
    # times cheaper than a cryptographic hash; collisions among one text's few hundred
    # shingles are negligible.
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A text's word 3-shingles (hashed), and its bottom-k sketch: the SKETCH smallest of them.

    The sketch is a bottom-k MinHash: two texts that share most shingles almost surely share a
    sketch value, so candidates are found through an index of sketch values instead of by
    comparing every pair; `resemblance` then decides on the full shingle sets.

    The shingles are kept packed, 4 bytes each, because fingerprints are cached across renders:
    as a frozenset of ints one took ~50 KB, and the cache of a busy output ~500 MB.
    """

    packed: array[int]  # sorted distinct 32-bit shingle hashes
    sketch: tuple[int, ...]

    @property
    def shingles(self) -> frozenset[int]:
        return frozenset(self.packed)


SKETCH = 12
COMMON = 64
MIN_SHARED = 2


@lru_cache(maxsize=1024)
def fingerprint_text(text: str) -> Fingerprint | None:
    """Fingerprint normalised text; None when it is too short to compare reliably."""
    # Each distinct word is hashed once, and a shingle's hash is that of the tuple of its three
    # words' hashes (a tuple of ints hashes the same in every process, unlike a str): hashing
    # each joined triple instead was 640 us an entry of the farm's text, most of a cold plan.
    words = text.split()
    table = {w: _h32(w) for w in set(words)}
    h = [table[w] for w in words]
    shingles = sorted({hash(t) & 0xFFFFFFFF for t in zip(h, h[1:], h[2:], strict=False)})
    if len(shingles) < MIN_SHINGLES:
        return None
    return Fingerprint(array("I", shingles), tuple(shingles[:SKETCH]))


_BY_ENTRY: dict[tuple[str, str, int], Fingerprint | None] = {}


def fingerprint(item: StoredEntry) -> Fingerprint | None:
    """An entry's fingerprint, cached by uid and content hash: every render reads the same
    entries again, and normalising their text is most of the cost of near-dedupe."""
    e = item.entry
    # The length too: an article page's text replaces the content without changing the
    # content hash (which is over the feed's own text), and dedupe compares the fuller text.
    key = (e.uid, e.content_hash, len(e.content))
    try:
        return _BY_ENTRY[key]
    except KeyError:
        pass
    # Reader threads share the cache: each step is one atomic dict operation.
    fp = fingerprint_text(story_text(e.title, e.summary, e.content))
    if len(_BY_ENTRY) >= 20_000:
        _BY_ENTRY.clear()
    _BY_ENTRY[key] = fp
    return fp


def resemblance(a: Fingerprint, b: Fingerprint) -> float:
    """Shared shingles over the shorter text's shingles: 1.0 when one copy contains the other,
    so a syndicated copy cut short or with a line added still matches its original."""
    return _resemblance(a.shingles, b.shingles)


def _resemblance(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / min(len(a), len(b))


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
        for key in _sorted_keys(item):
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
    prints: dict[int, Fingerprint] = {}
    index: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        fp = fingerprint(e)
        if fp is None:
            continue
        prints[i] = fp
        for h in fp.sketch:
            index.setdefault(h, []).append(i)
    window = settings.window.total_seconds()
    # Copies of one story share most sketch values; texts that merely share a stock phrase
    # share one. Counting first keeps the exact comparison for the plausible pairs.
    shared: dict[tuple[int, int], int] = {}
    for members in index.values():
        if len(members) > COMMON:
            continue  # a shingle in that many texts is a stock phrase, not a sign of one story
        for x in range(len(members)):
            feed = entries[members[x]].entry.feed
            for y in range(x + 1, len(members)):
                if entries[members[y]].entry.feed == feed:
                    continue  # one feed does not carry a story twice; its entries are distinct
                pair = (members[x], members[y])
                shared[pair] = shared.get(pair, 0) + 1
    # Shingle sets are unpacked only for entries in a plausible pair, and only for this render.
    sets: dict[int, frozenset[int]] = {}

    def shingles(i: int) -> frozenset[int]:
        found = sets.get(i)
        if found is None:
            found = sets[i] = prints[i].shingles
        return found

    for (a, b), count in sorted(shared.items()):
        if count < MIN_SHARED:
            continue
        if abs(_when(entries[a]) - _when(entries[b])) > window:
            continue
        if _resemblance(shingles(a), shingles(b)) >= settings.threshold:
            uf.join(a, b)


def _ordered(stories: list[Story]) -> list[Story]:
    # Newest published first, then latest first-seen, then uid ascending: two stable sorts
    # (reverse=True keeps ties in order), cheaper than building timestamps for a key.
    out = sorted(stories, key=lambda s: s.item.entry.uid)
    out.sort(key=lambda s: (s.item.entry.published, s.item.first_seen), reverse=True)
    return out


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
    "story_text",
]
