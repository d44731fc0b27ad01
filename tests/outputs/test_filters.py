"""Output rules: compiling keywords and regexes, include/exclude as the config compiles them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config.load import parse_config
from aggregator.ingest.identity import identify
from aggregator.models import Entry, ParsedEntry, StoredEntry
from aggregator.outputs.filters import Candidate, Filter, apply, compile_rule

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def make_entry(
    title: str,
    summary: str = "",
    *,
    content: str = "",
    author: str = "",
    link: str | None = None,
    categories: tuple[str, ...] = (),
    guid: str | None = None,
) -> Entry:
    parsed = ParsedEntry(
        guid=guid or title,
        guid_is_permalink=False,
        link=link,
        title=title,
        summary=summary,
        content=content,
        author=author,
        categories=categories,
        published=NOW - timedelta(hours=1),
        updated=None,
    )
    [entry] = identify("test", [parsed], NOW)
    return entry


def stored(entry: Entry) -> StoredEntry:
    return StoredEntry(
        entry=entry,
        first_seen=NOW,
        last_changed=NOW,
        feed_title="Test feed",
        feed_url="https://t.example/feed.xml",
        feed_link="https://t.example/",
    )


@pytest.mark.parametrize(
    ("rule", "text", "matches"),
    [
        ("sport", "Sport results", True),
        ("sport", "the SPORT section", True),
        ("sport", "Public transport strike", False),
        ("sport", "sports roundup", False),
        ("sport", "sport.", True),
        ("sport", "e-sport league", True),
        ("live blog", "Live Blog: the election", True),
        ("live blog", "liveblog", False),
        ("C++", "Why C++ still matters", True),
        ("C++", "c++, rust and go", True),
        ("C++", "c++20 modules", False),
        ("C++", "C++x", False),
        ("C++", "Objective-C is old", False),
        ("a.b", "a.b", True),
        ("a.b", "axb", False),  # a keyword is literal text, not a regex
        ("  padded  ", "a padded rule", True),
        ("/^live:/", "live: the match", True),
        ("/^live:/", "Live: the match", False),
        ("/^live:/i", "Live: the match", True),
        ("/^live:/", "we are live: now", False),
        ("/sport/", "transport", True),  # a regex is used as written, without word boundaries
        ("/(watch|live):/i", "WATCH: the moment", True),
        ("/a/b/", "xa/by", True),  # the last slash ends the regex
        ("/x/g", "/x/g", True),  # unknown flag: not a regex, a keyword
        ("/x/g", "x", False),
        ("/", "a / b", True),
    ],
)
def test_compile_rule(rule: str, text: str, matches: bool) -> None:
    assert (compile_rule(rule).search(text) is not None) is matches


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "empty rule"),
        ("   ", "empty rule"),
        ("//", "empty regex"),
        ("//i", "empty regex"),
        ("/(/", "invalid regex: missing \\)"),
        ("/[a-/i", "invalid regex: "),
        ("/*/", "invalid regex: nothing to repeat"),
    ],
)
def test_compile_rule_rejects(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_rule(rule)


def rules(include: Sequence[str], exclude: Sequence[str]) -> Filter:
    """The filter of an output with these include and exclude keys, as the config compiles it."""
    table = {"name": "o", "title": "O", "include": list(include), "exclude": list(exclude)}
    return parse_config({"outputs": [table]}).outputs["o"].filter


SPORT = make_entry("Cup final tonight", categories=("Sport",))
TRANSPORT = make_entry("Transport strike called off")
POLITICS = make_entry("Budget vote", summary="Parliament passes the budget")
LIVE_POLITICS = make_entry("Live: budget vote", summary="Follow the debate")
BY_AUTHOR = make_entry("Column", author="Jane Sport")
IN_CONTENT = make_entry("Weekend", content="<p>All the sport in one place</p>")
IN_LINK = make_entry("Link only", link="https://n.example/sport/123")


@pytest.mark.parametrize(
    ("include", "exclude", "entry", "expected"),
    [
        ((), (), TRANSPORT, True),
        (("sport",), (), SPORT, True),  # categories are searched
        (("sport",), (), TRANSPORT, False),
        (("sport",), (), BY_AUTHOR, True),
        (("sport",), (), IN_CONTENT, True),
        (("sport",), (), IN_LINK, True),
        (("sport", "budget"), (), POLITICS, True),  # any include rule is enough
        (("parliament",), (), POLITICS, True),  # summary is searched
        ((), ("sport",), SPORT, False),
        ((), ("sport",), TRANSPORT, True),
        ((), ("/^live:/i",), LIVE_POLITICS, False),
        ((), ("/^live:/i",), POLITICS, True),
        (("budget",), ("/^live:/i",), LIVE_POLITICS, False),  # exclude wins over include
        (("budget",), ("/^live:/i",), POLITICS, True),
        (("budget",), ("sport",), SPORT, False),
        (("/debate/",), ("sport",), LIVE_POLITICS, True),
    ],
)
def test_rules_matches(
    include: tuple[str, ...], exclude: tuple[str, ...], entry: Entry, expected: bool
) -> None:
    assert rules(include, exclude).keeps(Candidate(entry, None, NOW)) is expected


def test_rules_keep_order() -> None:
    flt = rules(["budget", "sport"], ["/^live:/i"])
    entries = [SPORT, TRANSPORT, LIVE_POLITICS, POLITICS, BY_AUTHOR]
    kept = apply(flt, [stored(e) for e in entries], NOW)
    assert [i.entry for i in kept] == [SPORT, POLITICS, BY_AUTHOR]


ITEMS = [stored(make_entry(f"Story {i}", summary="sport" if i % 2 else "news")) for i in range(10)]


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        ((), list(range(10))),
        (("sport",), [1, 3, 5, 7, 9]),
        (("news",), [0, 2, 4, 6, 8]),
        (("nothing-matches",), []),
    ],
)
def test_apply(include: tuple[str, ...], expected: list[int]) -> None:
    assert apply(rules(include, ()), ITEMS, NOW) == [ITEMS[i] for i in expected]


_words = st.sampled_from(["sport", "transport", "budget", "live:", "C++", "news", "Sport"])


@st.composite
def stored_entries(draw: st.DrawFn) -> list[StoredEntry]:
    titles = draw(st.lists(st.lists(_words, min_size=1, max_size=4), max_size=12))
    return [stored(make_entry(" ".join(t), guid=f"g{i}")) for i, t in enumerate(titles)]


@given(
    stored_entries(),
    st.lists(st.sampled_from(["sport", "/^live:/i", "C++", "budget"]), max_size=2),
    st.lists(st.sampled_from(["transport", "news", "/sport/"]), max_size=2),
)
def test_apply_is_idempotent(
    items: list[StoredEntry], include: list[str], exclude: list[str]
) -> None:
    flt = rules(include, exclude)
    once = apply(flt, items, NOW)
    assert apply(flt, once, NOW) == once
    assert all(flt.keeps(Candidate(i.entry, None, NOW)) for i in once)
    # Order is preserved: the result is a subsequence of the input.
    positions = [items.index(i) for i in once]
    assert positions == sorted(positions)
