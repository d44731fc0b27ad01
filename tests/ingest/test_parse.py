"""Parsing every fixture feed: counts, titles, links, UTC dates, errors, sanitising, golden files.

Regenerate the golden files after an intended change with:
    PYTHONPATH=tests .venv/bin/python tests/ingest/test_parse.py
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests_support import DATA

from aggregator.errors import FeedError, ParseError
from aggregator.ingest.media import authors_json, media_json
from aggregator.ingest.parse import parse_feed
from aggregator.ingest.poll import digest
from aggregator.models import Entry, ParsedFeed

GOLDEN = DATA / "golden"
GOLDEN_NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
GOLDEN_FILES = ["rss20.xml", "atom10.xml", "jsonfeed11.json", "podcast.rss.xml", "podcast.atom.xml"]

CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
    ".html": "text/html; charset=utf-8",
}


def parse(name: str, headers: dict[str, str] | None = None) -> ParsedFeed:
    path = DATA / name
    if headers is None:
        headers = {"Content-Type": CONTENT_TYPES[path.suffix]}
    return parse_feed(name, path.read_bytes(), headers, f"https://feeds.example/{name}")


def ingest(name: str) -> list[Entry]:
    """The entries a first poll of a fixture would store: parsed, keyed and sanitised."""
    path = DATA / name
    headers = {"Content-Type": CONTENT_TYPES[path.suffix]}
    url = f"https://feeds.example/{name}"
    return list(digest(name, path.read_bytes(), headers, url, GOLDEN_NOW, {}).new)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (file, feed title, [(entry title, link, published, updated)]) — dates as UTC ISO strings.
EXPECTED: list[tuple[str, str, list[tuple[str, str, str | None, str | None]]]] = [
    (
        "rss091.xml",
        "Harbour Town Gazette",
        [
            (
                "Ferry timetable changes for the winter season",
                "https://gazette.example.org/2023/10/ferry-winter-timetable.html",
                None,
                None,
            ),
            (
                "Lifeboat crew rescues stranded kayakers",
                "https://gazette.example.org/2023/10/lifeboat-kayakers.html",
                None,
                None,
            ),
            (
                "Fish market reopens after refurbishment",
                "https://gazette.example.org/2023/09/fish-market-reopens.html",
                None,
                None,
            ),
        ],
    ),
    (
        "rss092.xml",
        "Allotment Notes",
        [
            (
                "Lifting the last of the potatoes",
                "https://allotment.example.com/2023/10/07/potatoes",
                None,
                None,
            ),
            (
                "Saving seed from runner beans",
                "https://allotment.example.com/2023/09/30/runner-bean-seed",
                None,
                None,
            ),
            (
                "Compost bins, rebuilt",
                "https://allotment.example.com/2023/09/23/compost-bins",
                None,
                None,
            ),
        ],
    ),
    (
        "rss10.rdf",
        "Hill Observatory News",
        [
            (
                "Public observing night: Saturn and the Moon",
                "https://observatory.example.org/news/2023/10/public-night",
                None,
                "2023-10-05T19:45:00+00:00",
            ),
            (
                "The new 60 cm mirror has arrived",
                "https://observatory.example.org/news/2023/09/new-mirror",
                None,
                "2023-09-21T10:15:00+00:00",
            ),
            (
                "Talk: what comets are made of",
                "https://observatory.example.org/news/2023/09/comet-talk",
                None,
                "2023-09-02T18:00:00+00:00",
            ),
        ],
    ),
    (
        "rss20.xml",
        "Byte Street Engineering Blog",
        [
            (
                "Migrating our job queue to SQLite",
                "https://blog.example.com/posts/sqlite-job-queue/",
                "2023-10-11T09:00:00+00:00",
                None,
            ),
            (
                "Post-mortem: the 14-minute DNS outage",
                "https://blog.example.com/posts/dns-outage/?utm_source=rss&utm_medium=feed",
                "2023-10-03T14:45:00+00:00",
                None,
            ),
            (
                "We are hiring a site reliability engineer",
                "https://blog.example.com/posts/hiring-sre/",
                "2023-09-22T12:00:00+00:00",
                None,
            ),
            (
                "Draft notes on observability budgets",
                "https://blog.example.com/notes/observability-budgets/",
                None,
                None,
            ),
        ],
    ),
    (
        "atom03.xml",
        "Tram Spotter",
        [
            (
                "Line 7 extension opens to passengers",
                "https://trams.example.net/2023/10/line-7-extension",
                "2023-10-09T16:00:00+00:00",
                "2023-10-09T16:20:00+00:00",
            ),
            (
                "Night service trial extended",
                "https://trams.example.net/2023/09/night-service",
                "2023-09-28T07:30:00+00:00",
                "2023-09-28T07:30:00+00:00",
            ),
            (
                "Visiting the depot open day",
                "https://trams.example.net/2023/09/depot-open-day",
                "2023-09-16T12:00:00+00:00",
                "2023-09-17T08:05:00+00:00",
            ),
        ],
    ),
    (
        "atom10.xml",
        "Slow Kitchen",
        [
            (
                "Sourdough with a 48-hour cold proof",
                "https://recipes.example.org/2023/10/sourdough-48h",
                "2023-10-10T06:30:00+00:00",
                "2023-10-10T07:00:00+00:00",
            ),
            (
                "Braised leeks & white beans",
                "https://recipes.example.org/2023/09/braised-leeks",
                "2023-09-24T15:00:00+00:00",
                "2023-09-25T07:10:00+00:00",
            ),
            (
                "Pantry list for autumn",
                "https://recipes.example.org/2023/09/pantry-autumn",
                None,
                "2023-09-12T08:00:00+00:00",
            ),
        ],
    ),
    (
        "jsonfeed10.json",
        "Trail Running Log",
        [
            (
                "The ridge loop in fog",
                "https://trails.example.org/2023/10/ridge-loop",
                "2023-10-01T15:20:00+00:00",
                None,
            ),
            (
                "Shoes after 800 km",
                "https://trails.example.org/2023/09/shoes",
                "2023-09-18T07:45:00+00:00",
                None,
            ),
        ],
    ),
    (
        "jsonfeed11.json",
        "Pocket Synth Weekly",
        [
            (
                "Building a low-pass filter mod",
                "https://synth.example.com/2023/10/filter-mod?utm_source=jsonfeed",
                "2023-10-08T14:00:00+00:00",
                "2023-10-08T15:30:00+00:00",
            ),
            (
                "Review: an eight-step sequencer",
                "https://synth.example.com/2023/09/sequencer-review",
                "2023-09-30T00:00:00+00:00",
                None,
            ),
            (
                "Patch of the week: glassy bells",
                "https://synth.example.com/2023/09/patch-of-the-week",
                "2023-09-15T18:00:00+00:00",
                None,
            ),
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "title", "expected"), EXPECTED, ids=[case[0] for case in EXPECTED]
)
def test_fixture_feed(
    name: str, title: str, expected: list[tuple[str, str, str | None, str | None]]
) -> None:
    feed = parse(name)
    assert feed.title == title
    assert feed.warning is None
    got = [(e.title, e.link, e.published, e.updated) for e in feed.entries]
    want = [(t, link, utc(p) if p else None, utc(u) if u else None) for t, link, p, u in expected]
    assert got == want
    for e in feed.entries:
        for when in (e.published, e.updated):
            assert when is None or when.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("name", "entries"),
    [
        ("rss20-edited.xml", 4),
        ("bozo-with-entries.xml", 2),
        ("hostile.xml", 2),
        ("future-and-bad-dates.xml", 3),
        ("dup-guids.xml", 3),
        ("section-russia.rss.xml", 2),
        ("section-world.rss.xml", 2),
        ("top-stories.atom.xml", 1),
    ],
)
def test_other_fixture_counts(name: str, entries: int) -> None:
    assert len(parse(name).entries) == entries


@pytest.mark.parametrize(
    ("name", "link", "ttl"),
    [
        ("rss20.xml", "https://blog.example.com/", 60),
        ("section-russia.rss.xml", "https://news.example/russia/", 15),
        ("atom10.xml", "https://recipes.example.org/", None),
        ("jsonfeed11.json", "https://synth.example.com/", None),
    ],
)
def test_feed_metadata(name: str, link: str, ttl: int | None) -> None:
    feed = parse(name)
    assert (feed.link, feed.ttl_minutes) == (link, ttl)


def test_rss20_fields() -> None:
    first, second, _, undated = parse("rss20.xml").entries
    assert first.guid == "https://blog.example.com/posts/sqlite-job-queue/"
    assert first.categories == ("Databases", "Operations")
    assert first.author == "alice@blog.example.com (Alice Moreau)"
    assert first.summary == "Why a single file beat a message broker for our workload."
    assert first.content.startswith("<p>Why a single file beat a message broker")
    assert "<h2>Write-ahead logging</h2>" in first.content
    assert (second.guid, second.guid_is_permalink) == ("byte-street-post-1187", False)
    assert second.author == "Bilal Haddad"
    assert (undated.published, undated.updated) == (None, None)


def test_permalink_guid_without_link_becomes_the_link() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>P</title>'
        b"<link>https://p.example/</link><description>d</description><item><title>One</title>"
        b'<guid isPermaLink="true">https://p.example/one</guid></item><item><title>Two</title>'
        b'<guid isPermaLink="false">p-2</guid></item></channel></rss>'
    )
    feed = parse_feed("p", body, {"Content-Type": "application/rss+xml"}, "https://p.example/f")
    one, two = feed.entries
    assert (one.guid, one.link, one.guid_is_permalink) == (
        "https://p.example/one",
        "https://p.example/one",
        True,
    )
    assert (two.guid, two.link, two.guid_is_permalink) == ("p-2", None, False)


def test_atom10_xml_base_resolves_relative_links() -> None:
    leeks = ingest("atom10.xml")[1]
    assert leeks.author == "Ana Ferreira"
    assert leeks.link == "https://recipes.example.org/2023/09/braised-leeks"
    assert 'href="https://recipes.example.org/ingredients/crusty-bread"' in leeks.content
    assert 'src="https://recipes.example.org/2023/09/img/leeks.jpg"' in leeks.content


def test_jsonfeed_fields() -> None:
    first, second = parse("jsonfeed10.json").entries
    assert first.author == "Sam Achebe"
    assert first.categories == ("races", "fells")
    assert first.content == "<p>22 km, 1,100 m of climbing and <strong>zero</strong> views.</p>"
    assert second.content == "The lugs are gone but the uppers survived."
    assert second.author == "Guest: Ruth Mbeki"
    synth = parse("jsonfeed11.json").entries
    assert [e.guid for e in synth] == [
        "https://synth.example.com/2023/10/filter-mod",
        "psw-2023-0930",
        "psw-2023-0915",
    ]
    assert synth[1].author == "Lea Schmidt"


def test_json_feed_is_detected_without_a_content_type() -> None:
    feed = parse("jsonfeed11.json", headers={})
    assert feed.title == "Pocket Synth Weekly"
    assert len(feed.entries) == 3


def test_json_feed_relative_url_and_feed_author() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "T",
        "feed_url": "https://j.example/blog/feed.json",
        "authors": [{"name": "Feed Author"}],
        "items": [{"id": "1", "url": "posts/one", "content_text": "x"}, "not an item"],
    }
    feed = parse_feed("j", json.dumps(doc).encode(), {}, "https://elsewhere.example/")
    [e] = feed.entries
    assert e.link == "https://j.example/blog/posts/one"
    assert e.author == "Feed Author"
    assert (e.published, e.updated) == (None, None)


def test_well_formed_feed_without_content_type_has_no_warning() -> None:
    feed = parse("rss20.xml", headers={})
    assert feed.warning is None
    assert len(feed.entries) == 4


def test_empty_but_valid_feed_is_not_an_error() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Empty</title>'
        b"<link>https://e.example/</link><description>d</description></channel></rss>"
    )
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/rss+xml"}):
        feed = parse_feed("empty", body, headers, "https://e.example/feed")
        assert (feed.title, feed.entries, feed.warning) == ("Empty", (), None)


@pytest.mark.parametrize("name", ["bozo-with-entries.xml", "hostile.xml"])
def test_bozo_feed_keeps_entries_with_a_warning(name: str) -> None:
    feed = parse(name)
    assert len(feed.entries) == 2
    assert feed.warning is not None
    assert feed.warning.startswith("malformed feed, entries kept: ")
    assert "not well-formed" in feed.warning


def test_bozo_with_entries_titles() -> None:
    feed = parse("bozo-with-entries.xml")
    assert [e.title for e in feed.entries] == [
        "Fish & chips Friday: two for one",
        "Bread & milk bundle",
    ]
    assert [e.guid for e in feed.entries] == ["deal-301", "deal-302"]


@pytest.mark.parametrize(
    "headers", [{"Content-Type": "text/html; charset=utf-8"}, {}, {"Content-Type": "text/plain"}]
)
def test_html_page_raises_parse_error(headers: dict[str, str]) -> None:
    with pytest.raises(ParseError) as info:
        parse("not-a-feed.html", headers=headers)
    assert info.value.feed == "not-a-feed.html"
    assert str(info.value).startswith("not-a-feed.html: not a feed")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "invalid JSON"),
        (b"{\xff\xfe}", "invalid JSON"),
        (b'{"title": "no version", "items": []}', "JSON without a JSON Feed version"),
        (b'{"version": "1.1", "items": []}', "JSON without a JSON Feed version"),
        (b'["https://jsonfeed.org/version/1.1"]', "JSON without a JSON Feed version"),
    ],
)
def test_bad_json_raises_parse_error(body: bytes, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_feed("jf", body, {"Content-Type": "application/json"}, "https://j.example/feed")
    assert info.value.feed == "jf"
    assert info.value.message.startswith("not a feed: ")
    assert message in info.value.message


def test_plain_text_is_not_a_feed() -> None:
    with pytest.raises(ParseError) as info:
        parse_feed("txt", b"hello, world\n", {"Content-Type": "text/plain"}, "https://t.example/")
    assert info.value.feed == "txt"


def _assert_harmless(html: str) -> None:
    lower = html.lower()
    assert "<script" not in lower
    assert "onerror" not in lower
    assert "onclick" not in lower
    assert "javascript:" not in lower
    assert "<iframe" not in lower
    assert "expression(" not in lower.replace("styled with expression()", "")


def test_hostile_content_is_sanitised() -> None:
    prize, entities = ingest("hostile.xml")
    for e in (prize, entities):
        _assert_harmless(e.content)
        _assert_harmless(e.summary)
    assert "Plain text that must survive sanitising." in prize.content
    assert "Claim your prize" in prize.content
    assert "link" in entities.summary
    # Titles are plain text: the escaped markup is kept as text, never interpreted.
    assert entities.title == "Entities <script>alert(5)</script> in the title"


def test_json_feed_content_html_is_sanitised() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Hostile JSON",
        "items": [
            {
                "id": "h1",
                "content_html": (
                    '<p onclick="steal()">Hello</p><script>alert(1)</script>'
                    '<img src="https://j.example/x.png" onerror="alert(2)">'
                    '<a href="javascript:alert(3)">click</a><iframe src="https://j.example/"></iframe>'
                ),
            }
        ],
    }
    body = json.dumps(doc).encode()
    [e] = digest("hj", body, {}, "https://j.example/feed.json", GOLDEN_NOW, {}).new
    _assert_harmless(e.content)
    assert "Hello" in e.content
    assert 'src="https://j.example/x.png"' in e.content
    assert "click" in e.content


@pytest.mark.parametrize("error", [ParseError("feed-x", "not a feed: invalid JSON (line 1)")])
def test_parse_error_pickles(error: ParseError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ParseError
    assert isinstance(copy, FeedError)
    assert (copy.feed, copy.message) == ("feed-x", "not a feed: invalid JSON (line 1)")
    assert str(copy) == str(error) == "feed-x: not a feed: invalid JSON (line 1)"


def test_raised_parse_error_pickles() -> None:
    with pytest.raises(ParseError) as info:
        parse("not-a-feed.html")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.feed, copy.message) == (info.value.feed, info.value.message)


# --- Golden files -----------------------------------------------------------------------------


def _normalised(entry: Entry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "key_kind": entry.key_kind,
        "uid": entry.uid,
        "guid": entry.guid,
        "link": entry.link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "author": entry.author,
        "categories": list(entry.categories),
        "published": entry.published.isoformat(),
        "updated": entry.updated.isoformat(),
        "date_known": entry.date_known,
        "content_hash": entry.content_hash,
        # Files and authors as stored (media.py's JSON), where the entry has them.
        **({"media": json.loads(m)} if (m := media_json(entry.media)) else {}),
        **({"authors": json.loads(a)} if (a := authors_json(entry.authors)) else {}),
    }


def golden_actual(name: str) -> list[dict[str, Any]]:
    return [_normalised(e) for e in ingest(name)]


def regenerate_golden() -> None:
    """Rewrite tests/data/golden/*.json from the current code; review the diff before committing."""
    GOLDEN.mkdir(exist_ok=True)
    for name in GOLDEN_FILES:
        text = json.dumps(golden_actual(name), indent=2, ensure_ascii=False) + "\n"
        (GOLDEN / f"{name}.json").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert golden_actual(name) == expected


if __name__ == "__main__":
    regenerate_golden()
