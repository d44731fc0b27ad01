"""Filter rules: include/exclude patterns and rule trees, compiled once when the config is
resolved (config/rules.py) and matched many times. Pure.

User regexes run on RE2, a linear-time engine, so no pattern can hang the daemon (a
catastrophic-backtracking regex such as `(a+)+$` is as fast as any other). Keywords are escaped
literals, which Python's engine matches in linear time too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import re2

from ..models import Entry, StoredEntry


class Matcher(Protocol):
    """A compiled pattern: Python's re.Pattern (keywords) or an RE2 regexp (regexes)."""

    def search(self, text: str) -> object | None: ...


def compile_regex(body: str, ignore_case: bool = False) -> Matcher:
    """Compile a user regex on RE2. Raises `ValueError` naming the problem.

    Python's parser checks it first, for its familiar messages; RE2 then rejects what it cannot
    run in linear time (backreferences, lookarounds).
    """
    if not body:
        raise ValueError("empty regex")
    try:
        re.compile(body)
    except re.error as e:
        raise ValueError(f"invalid regex: {e}") from e
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        matcher: Matcher = re2.compile(body, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(
            f"invalid regex: {reason} (backreferences and lookarounds are not supported)"
        ) from e
    return matcher


def compile_keyword(text: str) -> Matcher:
    """A keyword matches case-insensitively on word boundaries: "sport" misses "transport"."""
    # \b only works next to word characters; a keyword such as "C++" needs lookarounds instead.
    return re.compile(rf"(?<!\w){re.escape(text.strip())}(?!\w)", re.IGNORECASE)


def compile_rule(rule: str) -> Matcher:
    """Compile one rule: `/regex/` (optionally `/regex/i`) as written, anything else as a keyword.

    A keyword matches case-insensitively on word boundaries, so "sport" does not match
    "transport". Raises `ValueError` with the regex engine's message for a bad pattern.
    """
    text = rule.strip()
    if not text:
        raise ValueError("empty rule")
    if len(text) >= 2 and text.startswith("/"):
        body, sep, flags = text[1:].rpartition("/")
        if sep and flags in ("", "i"):
            return compile_regex(body, ignore_case=flags == "i")
    return compile_keyword(text)


def _haystack(entry: Entry) -> str:
    return "\n".join(
        (
            entry.title,
            entry.summary,
            entry.content,
            entry.author,
            entry.link or "",
            *entry.categories,
        )
    )


# --- rule trees -----------------------------------------------------------------------------

FIELDS = ("title", "summary", "content", "link", "author", "category")


def field_text(entry: Entry, field: str) -> str:
    if field == "category":
        return "\n".join(entry.categories)
    if field == "link":
        return entry.link or ""
    text: str = getattr(entry, field)
    return text


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a rule looks at: the entry, its feed's language, and the time of this unit of work."""

    entry: Entry
    language: str | None
    now: datetime


@dataclass(frozen=True, slots=True)
class Text:
    """A keyword or regex matched on some fields (all of them when `fields` is empty)."""

    pattern: Matcher
    fields: tuple[str, ...] = ()

    def test(self, c: Candidate) -> bool:
        if not self.fields:
            return self.pattern.search(_haystack(c.entry)) is not None
        return any(self.pattern.search(field_text(c.entry, f)) is not None for f in self.fields)


@dataclass(frozen=True, slots=True)
class MaxAge:
    """Published no longer ago than `age`."""

    age: timedelta

    def test(self, c: Candidate) -> bool:
        return c.now - c.entry.published <= self.age


@dataclass(frozen=True, slots=True)
class Language:
    """The feed's language is one of these ("en" matches "en-GB"); an unknown language passes,
    since most feeds do not declare one."""

    languages: tuple[str, ...]

    def test(self, c: Candidate) -> bool:
        if not c.language:
            return True
        lang = c.language.lower()
        return any(lang == w or lang.startswith(w + "-") for w in self.languages)


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Rule, ...]

    def test(self, c: Candidate) -> bool:
        return all(p.test(c) for p in self.parts)


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Rule, ...]

    def test(self, c: Candidate) -> bool:
        return any(p.test(c) for p in self.parts)


@dataclass(frozen=True, slots=True)
class Not:
    part: Rule

    def test(self, c: Candidate) -> bool:
        return not self.part.test(c)


Rule = Text | MaxAge | Language | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class Filter:
    """Everything an output (or a feed) keeps: named checks that must all pass, then a cap per
    source feed. The names say which rule dropped an entry (`aggregator preview`)."""

    checks: tuple[tuple[str, Rule], ...] = ()
    max_per_feed: int | None = None

    def reason(self, c: Candidate) -> str | None:
        """The name of the first check the candidate fails, or None if it is kept."""
        for name, rule in self.checks:
            if not rule.test(c):
                return name
        return None

    def keeps(self, c: Candidate) -> bool:
        return self.reason(c) is None


def apply(
    flt: Filter,
    items: Iterable[StoredEntry],
    now: datetime,
    languages: dict[str, str | None] | None = None,
    dropped: list[tuple[StoredEntry, str]] | None = None,
) -> list[StoredEntry]:
    """The items (in the order given) that pass the filter, at most `max_per_feed` per feed.

    Filtering the result again gives the same result. Dropped items and the name of the rule
    that dropped them are appended to `dropped` when it is given.
    """
    langs = languages or {}
    per_feed: dict[str, int] = {}
    out: list[StoredEntry] = []
    for item in items:
        why = flt.reason(Candidate(item.entry, langs.get(item.entry.feed), now))
        if why is None and flt.max_per_feed is not None:
            if per_feed.get(item.entry.feed, 0) >= flt.max_per_feed:
                why = "max_per_feed"
            else:
                per_feed[item.entry.feed] = per_feed.get(item.entry.feed, 0) + 1
        if why is None:
            out.append(item)
        elif dropped is not None:
            dropped.append((item, why))
    return out
