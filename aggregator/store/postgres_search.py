"""FTS5 queries as PostgreSQL tsqueries, so `query =` outputs and `aggregator search` mean the
same on both stores. Pure.

The store's callers speak FTS5 (config validates `query =` with SQLite's own parser, and
search.to_fts turns typed text into it), so the PostgreSQL store translates instead of asking
users for a second syntax: words and "phrases" (AND when side by side), AND, OR, NOT, (groups),
prefixes (`clim*`), `a + b` phrases and column filters (`title:`, `{title summary}:`, `-content:`;
the index weighs title A, summary B, content C). NEAR(a b) means both, anywhere (PostgreSQL has
no "within N words" across operands); `^` (start of a column) is ignored.

The result is text for `to_tsquery('aggregator', …)` with every term quoted, so the words
themselves go through the same parser and dictionaries as the indexed text and no term can
be taken for an operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_WEIGHTS = {"title": "A", "summary": "B", "content": "C"}
_ALL = "ABC"
_TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([(){}:*+^,\-])|([^\s"(){}:*+^,\-]+))')
_KEYWORDS = ("AND", "OR", "NOT")


class QueryError(ValueError):
    """Not an FTS5 query this translation understands."""


def _tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind "s" a string (bareword or quoted), "p" punctuation, "k" an
    operator keyword."""
    out: list[tuple[str, str]] = []
    pos = 0
    query = query.rstrip()
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"cannot read the query at {query[pos:]!r}")
        quoted, punct, word = m.groups()
        if quoted is not None:
            out.append(("s", quoted.replace('""', '"')))
        elif punct is not None:
            out.append(("p", punct))
        elif word in _KEYWORDS or word == "NEAR":
            out.append(("k", word))
        else:
            out.append(("s", word))
        pos = m.end()
    return out


def _term(text: str, prefix: bool, weights: str) -> str:
    # Inside a quoted tsquery operand a quote is doubled and a backslash escapes.
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    suffix = ("*" if prefix else "") + (weights if weights != _ALL else "")
    return f"{quoted}:{suffix}" if suffix else quoted


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (text is not None and tok[1] != text):
            raise QueryError(f"expected {text or kind!r} at token {self.i + 1}")
        self.i += 1
        return tok[1]

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == kind and (text is None or tok[1] == text)

    def skip(self, kind: str, text: str | None = None) -> bool:
        """Step over the next token if it is this one; whether it was."""
        if not self.at(kind, text):
            return False
        self.i += 1
        return True

    # Precedence as FTS5 has it: NOT binds tightest, then AND (written or implied), then OR.
    def any(self, weights: str) -> str:
        return self.chain(self.all, weights, "({} | {})", lambda: self.skip("k", "OR"))

    def all(self, weights: str) -> str:
        return self.chain(self.nots, weights, "({} & {})", self.and_follows)

    def nots(self, weights: str) -> str:
        return self.chain(self.unit, weights, "({} & !{})", lambda: self.skip("k", "NOT"))

    def chain(
        self, operand: Callable[[str], str], weights: str, form: str, more: Callable[[], bool]
    ) -> str:
        """Operands joined left to right into `form` while `more()` (which steps over the
        operator, if written) says another follows."""
        left = operand(weights)
        while more():
            left = form.format(left, operand(weights))
        return left

    def and_follows(self) -> bool:
        # AND, written (stepped over) or implied by the next unit; OR or a ')' ends the run.
        if self.peek() is None or self.at("k", "OR") or self.at("p", ")"):
            return False
        self.skip("k", "AND")
        return True

    def unit(self, weights: str) -> str:
        weights = self.columns(weights)
        self.skip("p", "^")  # start of column: not expressible, the term alone
        if self.skip("p", "("):
            inner = self.any(weights)
            self.take("p", ")")
            return inner
        if self.skip("k", "NEAR"):
            self.take("p", "(")
            terms = [self.phrase(weights)]
            while not self.at("p", ")") and not self.at("p", ","):
                terms.append(self.phrase(weights))
            if self.skip("p", ","):
                self.take("s")  # the distance
            self.take("p", ")")
            return "(" + " & ".join(terms) + ")"
        return self.phrase(weights)

    def columns(self, weights: str) -> str:
        """A column filter before a unit, if any: the weights it leaves searchable."""
        start = self.i
        exclude = self.skip("p", "-")
        names: list[str] = []
        if self.skip("p", "{"):
            while not self.at("p", "}"):
                names.append(self.take("s"))
            self.i += 1
        elif (
            self.at("s")
            and self.i + 1 < len(self.tokens)
            and self.tokens[self.i + 1]
            == (
                "p",
                ":",
            )
        ):
            names.append(self.take("s"))
        if not names:
            self.i = start
            if exclude:
                raise QueryError("a '-' stands only before a column filter")
            return weights
        self.take("p", ":")
        unknown = [n for n in names if n not in _WEIGHTS]
        if unknown:
            raise QueryError(f"no such column: {unknown[0]}")
        chosen = {_WEIGHTS[n] for n in names}
        if exclude:
            chosen = set(_ALL) - chosen
        return "".join(w for w in weights if w in chosen)

    def phrase(self, weights: str) -> str:
        parts = [self.string(weights)]
        while self.skip("p", "+"):
            parts.append(self.string(weights))
        return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"

    def string(self, weights: str) -> str:
        text = self.take("s")
        prefix = self.skip("p", "*")
        return _term(text, prefix, weights)


def to_tsquery(query: str) -> str:
    """The FTS5 `query` as text for `to_tsquery('aggregator', …)`; QueryError if it is not
    FTS5 (or uses a column the entries do not have)."""
    parser = _Parser(query)
    if parser.peek() is None:
        raise QueryError("empty query")
    out = parser.any(_ALL)
    if parser.peek() is not None:
        raise QueryError(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return out
