"""Filter rule trees: table-driven matching, validation at load, RE2 safety, properties."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filters import NOW, make_entry, stored

from aggregator.config.load import parse_config
from aggregator.config.resolved import Output
from aggregator.errors import ConfigError
from aggregator.models import Entry, StoredEntry
from aggregator.outputs.filters import Candidate, apply, compile_rule

PUTIN = make_entry(
    "Russia wants strong Latin America",
    "Putin spoke in Moscow",
    categories=("Russia", "Latin America"),
    link="https://n.example/russia/1",
    author="Staff",
)
FOOTBALL = make_entry(
    "Cup final in Buenos Aires", "Latin America's biggest match", categories=("Sport",)
)
RATES = make_entry("Central bank raises rates", content="<p>Inflation in Brazil</p>")


def output(**keys: Any) -> Output:
    """Output "o" as the config resolves it, with `keys` in its table."""
    return parse_config({"outputs": [{"name": "o", "title": "O", **keys}]}).outputs["o"]


@pytest.mark.parametrize(
    ("keys", "entry", "kept"),
    [
        ({"filters": [{"keyword": "putin", "fields": ["summary"]}]}, PUTIN, True),
        ({"filters": [{"keyword": "putin", "fields": ["title"]}]}, PUTIN, False),
        ({"filters": [{"keyword": "sport", "fields": ["category"]}]}, FOOTBALL, True),
        ({"filters": [{"keyword": "sport", "fields": ["category"]}]}, PUTIN, False),
        ({"filters": [{"regex": "^https://n\\.example/russia/", "fields": ["link"]}]}, PUTIN, True),
        ({"filters": [{"regex": "(?i)^staff$", "fields": ["author"]}]}, PUTIN, True),
        ({"filters": [{"regex": "^staff$", "fields": ["author"]}]}, PUTIN, False),
        ({"filters": [{"keyword": "brazil", "fields": ["content"]}]}, RATES, True),
        (
            {"filters": [{"all": [{"keyword": "latin america"}, {"not": {"keyword": "sport"}}]}]},
            PUTIN,
            True,
        ),
        (
            {"filters": [{"all": [{"keyword": "latin america"}, {"not": {"keyword": "sport"}}]}]},
            FOOTBALL,
            False,
        ),
        ({"filters": [{"any": [{"keyword": "brazil"}, {"keyword": "putin"}]}]}, RATES, True),
        ({"filters": [{"any": [{"keyword": "brazil"}, {"keyword": "putin"}]}]}, FOOTBALL, False),
        # Several trees must all match; include/exclude still work beside them.
        ({"filters": [{"keyword": "latin"}, {"keyword": "moscow"}]}, FOOTBALL, False),
        ({"include": ["Latin America"], "exclude": ["sport"]}, FOOTBALL, False),
        ({"include": ["Latin America"], "exclude": ["sport"]}, PUTIN, True),
        ({"max_age": "2h"}, PUTIN, True),  # published an hour before NOW
        ({"max_age": "30m"}, PUTIN, False),
        ({"filters": [{"not": {"max_age": "30m"}}]}, PUTIN, True),
    ],
)
def test_rules(keys: dict[str, Any], entry: Entry, kept: bool) -> None:
    assert output(**keys).filter.keeps(Candidate(entry, "en", NOW)) is kept


@pytest.mark.parametrize(
    ("wanted", "language", "kept"),
    [
        (["en"], "en", True),
        (["en"], "en-GB", True),
        (["en"], "EN-us", True),
        (["en"], "ru", False),
        (["de", "fr"], "fr-CA", True),
        (["en"], None, True),  # undeclared: kept
        (["EN"], "en-gb", True),
    ],
)
def test_language(wanted: list[str], language: str | None, kept: bool) -> None:
    assert output(language=wanted).filter.keeps(Candidate(PUTIN, language, NOW)) is kept


def test_the_dropping_rule_is_named() -> None:
    flt = output(include=["Latin America"], exclude=["cup", "sport"], max_age="30m").filter
    assert flt.reason(Candidate(FOOTBALL, None, NOW)) == "exclude[0] 'cup'"
    assert flt.reason(Candidate(RATES, None, NOW)) == "include"
    assert flt.reason(Candidate(PUTIN, None, NOW)) == "max_age 30m"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one of keyword, regex"),
        ({"keyword": "a", "regex": "b"}, "(got keyword, regex)"),
        ({"keyword": " "}, "empty keyword"),
        ({"regex": "(a"}, "invalid regex: missing ),"),
        ({"regex": "(a)\\1"}, "backreferences and lookarounds are not supported"),
        ({"regex": "(?<!x)y"}, "not supported"),
        ({"max_age": "7d", "fields": ["title"]}, "fields only applies"),
        ({"keyword": "a", "fields": ["body"]}, "Input should be"),
        ({"nope": "a"}, "unknown key"),
        ({"all": [{"keyword": "a"}, {"regex": "["}]}, "invalid regex"),
    ],
)
def test_bad_rules_are_caught_at_load(spec: dict[str, Any], message: str) -> None:
    data = {
        "feeds": [{"name": "a", "url": "https://a.example/f"}],
        "outputs": [{"name": "o", "title": "O", "filters": [spec]}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert "outputs[0].filters[0]" in text and message in text, text


def test_feed_rules_are_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"feeds\[0\].exclude\[0\]: invalid regex"):
        parse_config({"feeds": [{"name": "a", "url": "https://a.example/f", "exclude": ["/(/"]}]})
    config = parse_config(
        {"feeds": [{"name": "a", "url": "https://a.example/f", "filters": [{"keyword": "x"}]}]}
    )
    assert len(config.feeds["a"].filter.checks) == 1


def test_catastrophic_regex_cannot_hang() -> None:
    # On a backtracking engine this takes longer than the age of the universe; RE2 is linear.
    pattern = compile_rule("/(a+)+$/")
    assert pattern.search("a" * 50_000 + "b") is None
    assert (
        output(filters=[{"regex": "(x+x+)+y"}]).filter.keeps(
            Candidate(make_entry("x" * 20_000), None, NOW)
        )
        is False
    )


def _item(feed: str, n: int, title: str) -> StoredEntry:
    e = make_entry(title, guid=f"{feed}-{n}")
    return stored(e.__class__(**{**{f: getattr(e, f) for f in e.__slots__}, "feed": feed}))


TITLES = ["Latin America summit", "Sport results", "Rates rise", "Putin in Moscow", "Rain"]
items_strategy = st.lists(
    st.builds(_item, st.sampled_from(["a", "b", "c"]), st.integers(0, 99), st.sampled_from(TITLES)),
    max_size=20,
)
filters_strategy = st.builds(
    lambda include, exclude, cap, age: (
        output(include=include, exclude=exclude, max_per_feed=cap, max_age=age).filter
    ),
    st.lists(st.sampled_from(["latin", "rates", "moscow"]), max_size=2),
    st.lists(st.sampled_from(["sport", "rain"]), max_size=2),
    st.one_of(st.none(), st.integers(1, 3)),
    st.one_of(st.none(), st.sampled_from(["30m", "2h"])),
)


@settings(max_examples=80, deadline=None)
@given(items_strategy, filters_strategy)
def test_filtering_twice_equals_filtering_once(items: list[StoredEntry], flt: Any) -> None:
    once = apply(flt, items, NOW)
    assert apply(flt, once, NOW) == once


def test_max_per_feed_keeps_the_first_of_each_feed() -> None:
    items = [_item("a", n, f"A{n}") for n in range(3)] + [_item("b", n, f"B{n}") for n in range(3)]
    dropped: list[tuple[StoredEntry, str]] = []
    kept = apply(output(max_per_feed=2).filter, items, NOW, dropped=dropped)
    assert [i.entry.title for i in kept] == ["A0", "A1", "B0", "B1"]
    assert [(i.entry.title, why) for i, why in dropped] == [
        ("A2", "max_per_feed"),
        ("B2", "max_per_feed"),
    ]


def test_max_age_uses_the_injected_now() -> None:
    flt = output(max_age="2h").filter
    assert flt.keeps(Candidate(PUTIN, None, NOW))
    assert not flt.keeps(Candidate(PUTIN, None, NOW + timedelta(hours=2)))
