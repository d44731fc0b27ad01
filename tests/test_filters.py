"""Output rules: compiling keywords and regexes, include/exclude, select() with a limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.ingest.identity import identify
from aggregator.models import Entry, ParsedEntry, StoredEntry
from aggregator.outputs.filters import Rules, compile_rule, select

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
    assert Rules.compile(include, exclude).matches(entry) is expected


def test_rules_select_keeps_order() -> None:
    rules = Rules.compile(["budget", "sport"], ["/^live:/i"])
    entries = [SPORT, TRANSPORT, LIVE_POLITICS, POLITICS, BY_AUTHOR]
    assert rules.select(entries) == [SPORT, POLITICS, BY_AUTHOR]


ITEMS = [stored(make_entry(f"Story {i}", summary="sport" if i % 2 else "news")) for i in range(10)]


@pytest.mark.parametrize(
    ("include", "limit", "expected"),
    [
        ((), 3, [0, 1, 2]),
        ((), 10, list(range(10))),
        ((), 50, list(range(10))),
        ((), 0, []),
        ((), -1, []),
        (("sport",), 3, [1, 3, 5]),
        (("sport",), 100, [1, 3, 5, 7, 9]),
        (("news",), 1, [0]),
        (("nothing-matches",), 5, []),
    ],
)
def test_select(include: tuple[str, ...], limit: int, expected: list[int]) -> None:
    got = select(ITEMS, Rules.compile(include, ()), limit)
    assert got == [ITEMS[i] for i in expected]


def test_select_stops_reading_early() -> None:
    read: list[int] = []

    def items() -> object:
        for i, item in enumerate(ITEMS):
            read.append(i)
            yield item

    got = select(items(), Rules(), 2)  # type: ignore[arg-type]
    assert got == ITEMS[:2]
    assert read == [0, 1]


_words = st.sampled_from(["sport", "transport", "budget", "live:", "C++", "news", "Sport"])


@st.composite
def stored_entries(draw: st.DrawFn) -> list[StoredEntry]:
    titles = draw(st.lists(st.lists(_words, min_size=1, max_size=4), max_size=12))
    return [stored(make_entry(" ".join(t), guid=f"g{i}")) for i, t in enumerate(titles)]


@given(
    stored_entries(),
    st.lists(st.sampled_from(["sport", "/^live:/i", "C++", "budget"]), max_size=2),
    st.lists(st.sampled_from(["transport", "news", "/sport/"]), max_size=2),
    st.integers(min_value=0, max_value=5),
)
def test_select_is_idempotent(
    items: list[StoredEntry], include: list[str], exclude: list[str], extra: int
) -> None:
    rules = Rules.compile(include, exclude)
    limit = len(items) + extra
    once = select(items, rules, limit)
    assert select(once, rules, limit) == once
    assert all(rules.matches(i.entry) for i in once)
    # Order is preserved: the result is a subsequence of the input.
    positions = [items.index(i) for i in once]
    assert positions == sorted(positions)


@given(stored_entries(), st.integers(min_value=0, max_value=15))
def test_select_respects_limit(items: list[StoredEntry], limit: int) -> None:
    got = select(items, Rules.compile(["sport"], []), limit)
    assert len(got) <= limit
    assert got == [i for i in items if Rules.compile(["sport"], []).matches(i.entry)][:limit]
