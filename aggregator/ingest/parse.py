"""Fetched bytes and headers → ParsedFeed. CPU-bound and pure: never touches the network.

feedparser handles RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 (its loose parser copes with broken XML);
JSON Feed 1.0/1.1, which feedparser 6 does not read, is mapped here by hand. Runs in a worker
process, so everything it returns or raises must pickle.

Summary and content come back as raw HTML (plain text escaped): the caller sanitises them with
sanitize.py once it knows which entries are new or changed. Every field comes back within the
limits (limits.py): an XML document is cut down before feedparser reads it (cutdown.py).
"""

from __future__ import annotations

import calendar
import functools
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser
import feedparser.mixin
import feedparser.urls

from ..errors import ParseError
from ..ingest.cutdown import cut_document
from ..ingest.feedlinks import advertised_hint
from ..ingest.fields import plain_text, safe_url
from ..ingest.limits import DEFAULT_LIMITS, Limits, Tally, bound_entry
from ..ingest.media import (
    authors_of_feedparser,
    authors_of_json,
    media_of_feedparser,
    media_of_json,
)
from ..ingest.sanitize import html_to_text, text_to_html
from ..models import FeedHints, ParsedEntry, ParsedFeed

JSON_FEED_PREFIX = "https://jsonfeed.org/version/"
_SY_PERIODS = {"hourly": 60, "daily": 1440, "weekly": 10080, "monthly": 43200, "yearly": 525600}
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# feedparser keeps only the last <hour> and <day> of skipHours / skipDays, so read them here.
_SKIP_HOURS = re.compile(rb"<skipHours\b[^>]*>(.*?)</skipHours>", re.DOTALL | re.IGNORECASE)
_SKIP_DAYS = re.compile(rb"<skipDays\b[^>]*>(.*?)</skipDays>", re.DOTALL | re.IGNORECASE)
_HOUR = re.compile(rb"<hour>\s*(\d{1,2})\s*</hour>", re.IGNORECASE)
_DAY = re.compile(rb"<day>\s*([A-Za-z]+)\s*</day>", re.IGNORECASE)


# feedparser resolves xml:base afresh at every start tag, make_safe_absolute_uri(base, base) on
# the same two strings for nearly every element of a document: 11% of a parse worker's time on
# the bench farm. It is a pure function of its arguments, so it is memoised where the parser
# looks it up.
feedparser.mixin.make_safe_absolute_uri = functools.lru_cache(maxsize=4096)(
    feedparser.urls.make_safe_absolute_uri
)


def _struct_to_dt(value: time.struct_time | None) -> datetime | None:
    if value is None:
        return None
    try:
        # feedparser normalises to UTC struct_time; timegm treats it as such.
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _as_html(detail: Mapping[str, Any] | None, value: str) -> str:
    """A text construct's value as HTML: plain text is escaped, HTML is kept (raw; it is
    sanitised later, and only for entries that are new or changed)."""
    kind = _str(detail.get("type")) if detail else ""
    return text_to_html(value) if kind == "text/plain" else value


def _content(entry: Mapping[str, Any]) -> tuple[str, str | None]:
    parts = entry.get("content") or []
    # Prefer HTML over plain text where a feed offers both.
    chosen = next((p for p in parts if "html" in _str(p.get("type"))), parts[0] if parts else None)
    if chosen is None:
        return "", None
    return _as_html(chosen, _str(chosen.get("value"))), _str(chosen.get("base")) or None


def _title(entry: Mapping[str, Any]) -> str:
    title = _str(entry.get("title"))
    detail = entry.get("title_detail")
    # Titles are republished as plain text; one given as HTML keeps only its text.
    if detail and "html" in _str(detail.get("type")):
        return plain_text(html_to_text(title))
    return plain_text(title)


def _from_feedparser(entry: Mapping[str, Any], url: str) -> ParsedEntry:
    guid = _str(entry.get("id")) or None
    content, content_base = _content(entry)
    summary_detail = entry.get("summary_detail")
    base = content_base or (_str(summary_detail.get("base")) if summary_detail else "") or url
    return ParsedEntry(
        guid=guid,
        guid_is_permalink=bool(entry.get("guidislink")),
        link=safe_url(_str(entry.get("link"))),
        title=_title(entry),
        summary=_as_html(summary_detail, _str(entry.get("summary"))),
        content=content,
        author=_str(entry.get("author")),
        categories=tuple(
            t for t in (_str(tag.get("term")) for tag in entry.get("tags") or []) if t
        ),
        published=_struct_to_dt(entry.get("published_parsed")),
        # `in` first: reading a missing updated_parsed makes feedparser fall back to
        # published_parsed with a DeprecationWarning (feedparser issue 310).
        updated=_struct_to_dt(entry["updated_parsed"] if "updated_parsed" in entry else None),  # noqa: SIM401
        base=base,
        authors=authors_of_feedparser(entry),
        media=media_of_feedparser(entry),
    )


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _json_author(item: Mapping[str, Any]) -> str:
    authors = item.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return ", ".join(_str(a.get("name")) for a in authors if _str(a.get("name")))
    author = item.get("author")
    return _str(author.get("name")) if isinstance(author, dict) else ""


def _parse_json_feed(name: str, body: bytes, url: str, limits: Limits, tally: Tally) -> ParsedFeed:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParseError(name, f"not a feed: invalid JSON ({e})") from e
    except RecursionError as e:
        raise ParseError(name, "not a feed: JSON nested too deep to read") from e
    if not isinstance(doc, dict) or not _str(doc.get("version")).startswith(JSON_FEED_PREFIX):
        raise ParseError(name, "not a feed: JSON without a JSON Feed version")
    home = safe_url(_str(doc.get("home_page_url")))
    base = _str(doc.get("feed_url")) or url
    entries = []
    items = doc.get("items")
    items = items if isinstance(items, list) else []
    if len(items) > limits.max_entries_per_document:
        dropped = len(items) - limits.max_entries_per_document
        tally.add("entries dropped", "max_entries_per_document", dropped)
        items = items[: limits.max_entries_per_document]
    for item in items:
        if not isinstance(item, dict):
            continue
        link = _str(item.get("url")) or _str(item.get("external_url"))
        content = _str(item.get("content_html")) or text_to_html(_str(item.get("content_text")))
        entries.append(
            bound_entry(
                ParsedEntry(
                    guid=_str(item.get("id")) or None,
                    guid_is_permalink=False,
                    link=safe_url(urljoin(base, link)) if link else None,
                    title=plain_text(_str(item.get("title"))),
                    summary=_str(item.get("summary")),
                    content=content,
                    author=_json_author(item) or _json_author(doc),
                    categories=tuple(_str(t) for t in item.get("tags") or [] if _str(t)),
                    published=_iso(item.get("date_published")),
                    updated=_iso(item.get("date_modified")),
                    base=base,
                    authors=authors_of_json(item) or authors_of_json(doc),
                    media=media_of_json(item),
                ),
                limits,
                tally,
            )
        )
    return ParsedFeed(
        title=plain_text(_str(doc.get("title")))[: limits.max_title_size],
        link=home,
        entries=tuple(entries),
        language=_str(doc.get("language")) or None,
        warning=tally.summary(limits),
    )


def _looks_like_json(body: bytes, content_type: str) -> bool:
    return "json" in content_type or body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def looks_like_html(body: bytes, content_type: str) -> bool:
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    return "html" in content_type or head.startswith((b"<!doctype html", b"<html"))


def parse_feed(
    name: str,
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    limits: Limits = DEFAULT_LIMITS,
) -> ParsedFeed:
    """Parse one fetched document of feed `name`.

    `headers` are the response headers (their Content-Type charset and Content-Location guide
    feedparser); `url` is the final URL, the base for relative links. A malformed ("bozo") feed
    that still yields entries is kept, with the problem in `warning`; a document with neither
    entries nor a recognisable feed format raises ParseError. What `limits` cut off is said in
    `warning` too ("cut down: ...").
    """
    lower = {k.lower(): v for k, v in headers.items()}
    tally = Tally()
    if _looks_like_json(body, lower.get("content-type", "")):
        return _parse_json_feed(name, body, url, limits, tally)
    body = cut_document(body, limits, tally)
    response_headers = dict(lower)
    response_headers.setdefault("content-location", url)
    # feedparser's sanitiser and relative-URI passes are half its parse time, spent on every
    # entry of every changed document; sanitize.py does both, only for new or changed entries.
    result = feedparser.parse(
        body,
        response_headers=response_headers,
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    entries = tuple(bound_entry(_from_feedparser(e, url), limits, tally) for e in result.entries)
    problem = result.get("bozo_exception") if result.get("bozo") else None
    if isinstance(problem, feedparser.NonXMLContentType):
        # A missing or non-XML Content-Type says nothing about the document itself: a
        # well-formed feed served as text/plain (or with no header) is neither malformed nor,
        # when it has no items yet, "not a feed".
        problem = None
    if not entries and (problem is not None or not result.get("version")):
        if looks_like_html(body, lower.get("content-type", "")):
            # Typically a login wall, a challenge page or a parked domain: never "an empty feed".
            # Or the site's home page: then say which feed URL the page itself advertises.
            hint = advertised_hint(body, url)
            raise ParseError(name, f"not a feed: the server sent an HTML page{hint}")
        detail = f": {problem}" if problem is not None else ""
        raise ParseError(name, f"not a feed (no entries and no feed format recognised){detail}")
    feed = result.feed
    ttl = _str(feed.get("ttl"))
    return ParsedFeed(
        title=plain_text(_str(feed.get("title"))),
        link=safe_url(_str(feed.get("link"))),
        entries=entries,
        warning=_warning(problem, tally.summary(limits)),
        ttl_minutes=int(ttl) if ttl.isdigit() else None,
        language=_str(feed.get("language")) or None,
        hints=_hints(feed, body),
    )


def _warning(problem: object, cut: str | None) -> str | None:
    malformed = f"malformed feed, entries kept: {problem}" if problem is not None else None
    return "; ".join(w for w in (malformed, cut) if w) or None


def _hints(feed: Mapping[str, Any], body: bytes) -> FeedHints:
    """How often the feed says it changes: <ttl>, sy:updatePeriod / sy:updateFrequency,
    skipHours and skipDays. Nonsense values are ignored, never an error."""
    ttl = _str(feed.get("ttl"))
    period = _SY_PERIODS.get(_str(feed.get("sy_updateperiod")).lower())
    frequency = _str(feed.get("sy_updatefrequency"))
    update = None
    if period is not None:
        update = max(
            1, period // (int(frequency) if frequency.isdigit() and frequency != "0" else 1)
        )
    hours: set[int] = set()
    days: set[int] = set()
    if m := _SKIP_HOURS.search(body):
        hours = {int(h) % 24 for h in _HOUR.findall(m.group(1)) if int(h) <= 24}
    if m := _SKIP_DAYS.search(body):
        names = {d.decode("ascii").lower() for d in _DAY.findall(m.group(1))}
        days = {i for i, name in enumerate(_DAYS) if name in names}
    return FeedHints(
        ttl_minutes=int(ttl) if ttl.isdigit() and 0 < int(ttl) <= 525600 else None,
        update_minutes=update,
        skip_hours=tuple(sorted(hours)),
        skip_days=tuple(sorted(days)),
    )
