"""Bounds on what one feed document may make us do, and the cuts that enforce them. Pure.
Nothing past a limit is an error: it is truncated or dropped, and tallied for the feed's status."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import TypeVar

from ..models import ParsedEntry, Person

T = TypeVar("T")

# Why: a parse and a sanitise cost more than linear time on some inputs (feedparser's e-mail
# regex is quadratic in an author's length; an HTML parser's scope checks cost the nesting
# depth at every tag), so every field is cut down before those libraries see it.


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds, with their config keys' names. Sizes are in bytes before parsing (UTF-8) and
    in characters after; both are at most the limit."""

    max_nesting: int = 128  # XML elements in the document, HTML elements in one field
    max_title_size: int = 2048
    max_author_size: int = 256  # feedparser's e-mail regex is quadratic in this
    max_content_size: int = 512 * 1024  # each of summary and content; any other text too
    max_entries_per_document: int = 2000
    max_links_per_entry: int = 1000  # <link> elements of an entry; anchors in one field
    max_elements_per_entry: int = 10_000  # XML elements in an entry; HTML elements in one field


DEFAULT_LIMITS = Limits()


class Tally:
    """What the cuts did to one document: (what happened, limit key) → how many times."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, what: str, key: str, count: int = 1) -> None:
        self.counts[(what, key)] += count

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self, limits: Limits) -> str | None:
        """One line for the feed's status, e.g. "cut down: 98000 entries dropped
        (max_entries_per_document 2000)"; None when nothing was cut."""
        if not self.counts:
            return None
        parts = [
            f"{count} {what} ({key} {getattr(limits, key)})"
            for (what, key), count in sorted(self.counts.items())
        ]
        return "cut down: " + "; ".join(parts)


# HTML elements that never hold others (void) or that the parser closes by itself when a
# sibling starts: neither deepens the stack of open elements.
_VOID = ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param")
_VOID_MORE = ("source", "track", "wbr")
_SELF_CLOSING = ("p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody")
_SELF_CLOSING_MORE = ("tfoot", "colgroup", "caption", "rb", "rt", "rp", "rtc")
_FLAT = frozenset((*_VOID, *_VOID_MORE, *_SELF_CLOSING, *_SELF_CLOSING_MORE))
_HTML_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")


def cut_html(fragment: str, limits: Limits, tally: Tally, field: str) -> str:
    """`fragment` cut short where it passes a limit: its size, nesting depth, elements or
    anchors. The cut falls before the offending tag; the sanitiser closes what is left open."""
    if len(fragment) > limits.max_content_size:
        fragment = fragment[: limits.max_content_size]
        tally.add(f"{field} truncated", "max_content_size")
    fewest = min(limits.max_nesting, limits.max_elements_per_entry, limits.max_links_per_entry)
    if fragment.count("<") <= fewest:
        return fragment  # too few tags to pass any limit: the common case, and a cheap one
    depth = elements = links = 0
    for m in _HTML_TAG.finditer(fragment):
        name = m.group(2).lower()
        if m.group(1):
            if name not in _FLAT and depth:
                depth -= 1
            continue
        elements += 1
        links += name == "a"
        depth += name not in _FLAT
        key = (
            "max_nesting"
            if depth > limits.max_nesting
            else "max_elements_per_entry"
            if elements > limits.max_elements_per_entry
            else "max_links_per_entry"
            if links > limits.max_links_per_entry
            else None
        )
        if key is not None:
            tally.add(f"{field} cut short", key)
            return fragment[: m.start()]
    return fragment


def _truncated(value: str, size: int, tally: Tally, what: str, key: str) -> str:
    if len(value) <= size:
        return value
    tally.add(what, key)
    return value[:size]


def _cut_list(items: tuple[T, ...], size: int, tally: Tally, what: str, key: str) -> tuple[T, ...]:
    if len(items) <= size:
        return items
    tally.add(what, key)
    return items[:size]


def _people(people: tuple[Person, ...], limits: Limits, tally: Tally) -> tuple[Person, ...]:
    people = _cut_list(
        people, limits.max_links_per_entry, tally, "author lists cut short", "max_links_per_entry"
    )
    size = limits.max_author_size
    if all(len(p.name) <= size and len(p.email) <= size for p in people):
        return people
    tally.add("authors truncated", "max_author_size")
    return tuple(replace(p, name=p.name[:size], email=p.email[:size]) for p in people)


def bound_entry(entry: ParsedEntry, limits: Limits, tally: Tally) -> ParsedEntry:
    """An entry with every field within its limit (the same limits the document pass applies
    before parsing; this catches JSON Feed and whatever a parser assembles from pieces)."""
    links = limits.max_links_per_entry
    enclosures = entry.media.enclosures
    bounded = {
        "title": _truncated(
            entry.title, limits.max_title_size, tally, "titles truncated", "max_title_size"
        ),
        "author": _truncated(
            entry.author, limits.max_author_size, tally, "authors truncated", "max_author_size"
        ),
        "summary": cut_html(entry.summary, limits, tally, "summaries") if entry.summary else "",
        "content": cut_html(entry.content, limits, tally, "contents") if entry.content else "",
        "categories": _cut_list(
            entry.categories,
            limits.max_elements_per_entry,
            tally,
            "category lists cut short",
            "max_elements_per_entry",
        ),
        "authors": _people(entry.authors, limits, tally),
        "media": entry.media
        if len(enclosures) <= links
        else replace(
            entry.media,
            enclosures=_cut_list(
                enclosures, links, tally, "enclosure lists cut short", "max_links_per_entry"
            ),
        ),
    }
    if all(value is getattr(entry, name) for name, value in bounded.items()):
        return entry
    return replace(entry, **bounded)  # type: ignore[arg-type]
