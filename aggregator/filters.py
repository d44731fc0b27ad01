"""Output rules: include/exclude patterns compiled once at config load, matched many times. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .models import Entry, StoredEntry


def compile_rule(rule: str) -> re.Pattern[str]:
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
            if not body:
                raise ValueError("empty regex")
            try:
                return re.compile(body, re.IGNORECASE if flags == "i" else 0)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from e
    # \b only works next to word characters; a keyword such as "C++" needs lookarounds instead.
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", re.IGNORECASE)


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


@dataclass(frozen=True, slots=True)
class Rules:
    """An output's include and exclude patterns. No include rules means everything is included."""

    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def compile(cls, include: Sequence[str], exclude: Sequence[str]) -> Rules:
        return cls(tuple(compile_rule(r) for r in include), tuple(compile_rule(r) for r in exclude))

    def matches(self, entry: Entry) -> bool:
        """True when some include rule matches (or there is none) and no exclude rule does."""
        if not self.include and not self.exclude:
            return True
        text = _haystack(entry)
        if self.include and not any(p.search(text) for p in self.include):
            return False
        return not any(p.search(text) for p in self.exclude)

    def select(self, entries: Iterable[Entry]) -> list[Entry]:
        return [e for e in entries if self.matches(e)]


def select(items: Iterable[StoredEntry], rules: Rules, limit: int) -> list[StoredEntry]:
    """The first `limit` items (in the order given) that pass the rules; stops reading early."""
    out: list[StoredEntry] = []
    if limit <= 0:
        return out
    for item in items:
        if rules.matches(item.entry):
            out.append(item)
            if len(out) >= limit:
                break
    return out
