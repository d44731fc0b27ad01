"""Documents cut down to the limits before the parser reads them (cutdown.py, limits.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import feedparser
import hostile
import pytest
from conftest import DATA_DIR

from aggregator.errors import ParseError
from aggregator.ingest.cutdown import cut_document
from aggregator.ingest.limits import DEFAULT_LIMITS, Limits, Tally, cut_html
from aggregator.ingest.parse import parse_feed
from aggregator.ingest.poll import digest

URL = "http://127.0.0.1/feed"
XML = {"Content-Type": "application/xml"}


@pytest.mark.parametrize("path", sorted(p.name for p in DATA_DIR.glob("*.xml")))
def test_ordinary_documents_pass_untouched(path: str) -> None:
    body = (DATA_DIR / path).read_bytes()
    tally = Tally()
    assert cut_document(body, DEFAULT_LIMITS, tally) is body
    assert not tally


# What each hostile document leaves, and what the feed's warning says about it.
HOSTILE = [
    ("deep-html", "summaries cut short (max_nesting 128)"),
    ("deep-xml", "elements nested too deep dropped (max_nesting 128)"),
    ("huge-fields", "title fields truncated (max_title_size 2048)"),
    ("quadratic-author", "author fields truncated (max_author_size 256)"),
    ("many-entries", "98001 entries dropped (max_entries_per_document 2000)"),
    ("many-links", "links of an entry dropped (max_links_per_entry 1000)"),
]


@pytest.mark.parametrize(("name", "said"), HOSTILE)
def test_hostile_documents_are_cut_down_and_keep_their_entries(name: str, said: str) -> None:
    body = hostile.HOSTILE[name]()
    parsed = parse_feed(name, body, XML, URL)
    assert parsed.warning is not None and said in parsed.warning
    assert parsed.warning.startswith("cut down: ")  # still well-formed: not "malformed"
    titles = {e.title for e in parsed.entries}
    assert f"{name} ordinary" in titles
    for e in parsed.entries:
        assert len(e.title) <= DEFAULT_LIMITS.max_title_size
        assert len(e.author) <= DEFAULT_LIMITS.max_author_size
        assert len(e.summary) <= DEFAULT_LIMITS.max_content_size
        assert len(e.content) <= DEFAULT_LIMITS.max_content_size
    assert len(parsed.entries) <= DEFAULT_LIMITS.max_entries_per_document


def test_an_entry_past_the_entry_limit_is_dropped_whole() -> None:
    limits = Limits(max_entries_per_document=3)
    parsed = parse_feed("m", hostile.many_entries(count=10), XML, URL, limits)
    # The ordinary entry comes first, then entries 0 and 1; the others are gone, and the
    # document closes as before.
    guids = [(e.guid or "").rpartition("/")[2] for e in parsed.entries]
    assert guids == ["many-entries-ordinary", "many-entries-0", "many-entries-1"]
    assert parsed.warning == "cut down: 8 entries dropped (max_entries_per_document 3)"


def test_truncation_splits_neither_a_character_nor_an_entity() -> None:
    limits = Limits(max_title_size=64)
    for filler in ("é" * 40, "&amp;" * 20, "a&lt;" * 20):
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>c</title>'
            f"<item><guid>1</guid><title>{filler}</title></item></channel></rss>"
        ).encode()
        cut = cut_document(body, limits, Tally())
        assert len(cut) < len(body)
        result = feedparser.parse(cut)
        assert not result.bozo, result.bozo_exception
        title = result.entries[0].title
        assert title and set(title) <= set(feedparser.parse(body).entries[0].title)


def test_an_unterminated_deep_element_is_dropped_to_the_end() -> None:
    body = b'<rss version="2.0"><channel><item><guid>1</guid>' + b"<x>" * 500
    cut = cut_document(body, DEFAULT_LIMITS, Tally())
    assert cut.count(b"<x>") < DEFAULT_LIMITS.max_nesting


def test_markup_inside_cdata_and_comments_is_text() -> None:
    # Unclosed tags inside CDATA or a comment are not elements: nothing is nested, nothing cut.
    inner = "<br>" * 1000
    body = (
        '<rss version="2.0"><channel><title>c</title><!-- ' + "<x>" * 300 + " -->"
        f"<item><guid>1</guid><description><![CDATA[{inner}]]></description></item>"
        "</channel></rss>"
    ).encode()
    tally = Tally()
    assert cut_document(body, DEFAULT_LIMITS, tally) is body
    assert not tally


@pytest.mark.parametrize(
    ("fragment", "key", "kept"),
    [
        ("<div>" * 300 + "x", "max_nesting", 128),
        ("<p>a" * 300, None, 300),  # paragraphs close each other: not nested
        ("<br>" * 300, None, 300),  # void elements hold nothing
        ("<a href=/x>l</a>" * 1500, "max_links_per_entry", 1000),
        ("<span>s</span>" * 12000, "max_elements_per_entry", 10000),
    ],
)
def test_cut_html(fragment: str, key: str | None, kept: int) -> None:
    tally = Tally()
    out = cut_html(fragment, DEFAULT_LIMITS, tally, "contents")
    assert out.count("<") - out.count("</") == kept
    assert [k for _, k in tally.counts] == ([key] if key else [])


def test_json_feed_is_bounded_too() -> None:
    items = [{"id": str(i), "title": "t" * 5000, "content_html": "<div>" * 500} for i in range(3)]
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": items}
    limits = Limits(max_entries_per_document=2)
    parsed = parse_feed(
        "j", json.dumps(doc).encode(), {"Content-Type": "application/json"}, URL, limits
    )
    assert len(parsed.entries) == 2
    assert all(len(e.title) == 2048 and e.content.count("<div>") == 128 for e in parsed.entries)
    assert parsed.warning is not None
    assert "1 entries dropped (max_entries_per_document 2)" in parsed.warning
    assert "2 titles truncated (max_title_size 2048)" in parsed.warning


def test_json_nested_past_what_python_reads_is_a_parse_error() -> None:
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "x": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    with pytest.raises(ParseError, match="nested too deep"):
        parse_feed("j", body, {"Content-Type": "application/json"}, URL)


def test_the_digest_of_the_deep_html_entry_is_cut_before_sanitising() -> None:
    d = digest("deep-html", hostile.deep_html(), XML, URL, datetime(2024, 1, 15, tzinfo=UTC), {})
    [deep] = [e for e in d.new if e.title == "deep-html hostile"]
    assert deep.summary.count("<div>") <= DEFAULT_LIMITS.max_nesting
    assert deep.summary.endswith("</div>")  # the sanitiser closed what the cut left open


def test_the_feed_s_own_elements_are_bounded_too() -> None:
    categories = "".join(f"<category>c{i}</category>" for i in range(20_000))
    body = (
        f'<rss version="2.0"><channel><title>c</title>{categories}'
        "<item><guid>1</guid><title>kept</title></item></channel></rss>"
    ).encode()
    parsed = parse_feed("c", body, XML, URL)
    assert [e.title for e in parsed.entries] == ["kept"]
    assert parsed.warning is not None
    assert "elements of the feed dropped (max_elements_per_entry 10000)" in parsed.warning


def test_json_attachments_and_authors_are_bounded() -> None:
    item = {
        "id": "1",
        "title": "files",
        "content_html": "<p>x</p>",
        "attachments": [
            {"url": f"https://files.example/{i}.mp3", "mime_type": "audio/mpeg"}
            for i in range(1500)
        ],
        "authors": [{"name": "n" * 1000}] + [{"name": f"a{i}"} for i in range(1500)],
    }
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": [item]}
    ctype = {"Content-Type": "application/json"}
    limits = Limits(max_links_per_entry=5, max_author_size=64)
    parsed = parse_feed("j", json.dumps(doc).encode(), ctype, URL, limits)
    [entry] = parsed.entries
    assert len(entry.media.enclosures) == 5
    assert len(entry.authors) == 5
    assert len(entry.authors[0].name) == 64
    assert parsed.warning is not None
    assert "1 enclosure lists cut short (max_links_per_entry 5)" in parsed.warning


def test_a_quoted_greater_than_sign_does_not_end_a_tag() -> None:
    # 300 categories whose labels hold ">": none of them may count as an open element.
    categories = "".join(f'<category term="News &gt; {i}" label="a > b"/>' for i in range(300))
    body = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>q</title>'
        f"<entry><id>1</id><title>kept</title>{categories}<summary>s</summary></entry></feed>"
    ).encode()
    tally = Tally()
    assert cut_document(body, DEFAULT_LIMITS, tally) is body
    assert not tally
    [entry] = parse_feed("q", body, XML, URL).entries
    assert len(entry.categories) == 300 and entry.summary == "s"


@pytest.mark.timeout(60)  # the old pattern took longer than the age of the universe here
def test_a_tag_with_an_unclosed_quote_is_read_in_linear_time() -> None:
    # Each byte of the "b" run doubled the work of a backtracking tag scanner.
    body = b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><a ' + b"b" * 200 + b'"</entry>'
    tally = Tally()
    assert cut_document(body, DEFAULT_LIMITS, tally) is body
    assert not tally
