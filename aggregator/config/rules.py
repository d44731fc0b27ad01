"""The filter keys a feed or an output table may have (include, exclude, rule trees, max_age,
language), validated, and their compilation into one `filters.Filter`. Pure.

Compiled once, when the config is resolved: a poll or a render only matches.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..config.settings import Strict
from ..config.values import Duration, check_rules, format_duration
from ..outputs.filters import (
    FIELDS,
    AllOf,
    AnyOf,
    Filter,
    Language,
    MaxAge,
    Not,
    Rule,
    Text,
    compile_keyword,
    compile_regex,
    compile_rule,
)

FieldName = Literal["title", "summary", "content", "link", "author", "category"]
assert set(FIELDS) == set(FieldName.__args__)  # type: ignore[attr-defined]


# A rule node's kinds: the config's key and the attribute it is read into.
_RULE_KINDS = (
    ("keyword", "keyword"),
    ("regex", "regex"),
    ("all", "all_"),
    ("any", "any_"),
    ("not", "not_"),
    ("max_age", "max_age"),
    ("language", "language"),
)


class RuleTable(Strict):
    """One node of a rule tree: exactly one of keyword, regex, all, any, not, max_age, language.

    `fields` narrows a keyword or regex to some of title, summary, content, link, author and
    category (all of them by default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keyword: str | None = None
    regex: str | None = None
    fields: tuple[FieldName, ...] = ()
    all_: tuple[RuleTable, ...] | None = Field(default=None, alias="all")
    any_: tuple[RuleTable, ...] | None = Field(default=None, alias="any")
    not_: RuleTable | None = Field(default=None, alias="not")
    max_age: Duration | None = None
    language: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RuleTable:
        kinds = [key for key, attr in _RULE_KINDS if getattr(self, attr) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a rule needs exactly one of keyword, regex, all, any, not, max_age, language"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.fields and kinds[0] not in ("keyword", "regex"):
            raise ValueError("fields only applies to keyword and regex rules")
        if self.keyword is not None and not self.keyword.strip():
            raise ValueError("empty keyword")
        if self.regex is not None:
            compile_regex(self.regex)
        return self

    def compile(self) -> Rule:
        if self.keyword is not None:
            return Text(compile_keyword(self.keyword), self.fields)
        if self.regex is not None:
            return Text(compile_regex(self.regex), self.fields)
        if self.all_ is not None:
            return AllOf(tuple(r.compile() for r in self.all_))
        if self.any_ is not None:
            return AnyOf(tuple(r.compile() for r in self.any_))
        if self.not_ is not None:
            return Not(self.not_.compile())
        if self.max_age is not None:
            return MaxAge(self.max_age)
        assert self.language is not None
        return Language(tuple(x.lower() for x in self.language))


class FilterKeys(Strict):
    """The filter keys shared by feeds (applied before storing) and outputs (at render time)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    filters: tuple[RuleTable, ...] = ()
    max_age: Duration | None = None
    language: tuple[str, ...] = ()

    _rule_lists = field_validator("include", "exclude")(classmethod(lambda cls, v: check_rules(v)))

    def compiled_filter(self, max_per_feed: int | None = None) -> Filter:
        """The filter these keys describe; check names say which key dropped an entry."""
        checks: list[tuple[str, Rule]] = []
        if self.include:
            checks.append(("include", AnyOf(tuple(Text(compile_rule(r)) for r in self.include))))
        for i, r in enumerate(self.exclude):
            checks.append((f"exclude[{i}] {r!r}", Not(Text(compile_rule(r)))))
        for i, spec in enumerate(self.filters):
            checks.append((f"filters[{i}]", spec.compile()))
        if self.max_age is not None:
            checks.append((f"max_age {format_duration(self.max_age)}", MaxAge(self.max_age)))
        if self.language:
            checks.append(
                (
                    f"language {', '.join(self.language)}",
                    Language(tuple(x.lower() for x in self.language)),
                )
            )
        return Filter(tuple(checks), max_per_feed)
