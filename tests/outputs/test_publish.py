"""Rendering outputs: Atom, RSS and JSON Feed parse back, are deterministic and name sources."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import feedparser
import pytest
from tests_support import DATA

from aggregator.ingest.identity import identify
from aggregator.ingest.parse import parse_feed
from aggregator.models import OutputFormat, ParsedEntry, StoredEntry
from aggregator.outputs.publish import (
    CONTENT_TYPES,
    EPOCH,
    JSON_FEED_VERSION,
    OutputMeta,
    entry_updated,
    feed_updated,
    render,
)

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FIRST_SEEN = datetime(2024, 1, 10, 8, 0, tzinfo=UTC)
META = OutputMeta(
    name="mixed", title="Mixed output", description="Several feeds", base_url="https://agg.example"
)
FORMATS: list[OutputFormat] = ["atom", "rss", "json"]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)


def stored_from(name: str, content_type: str) -> list[StoredEntry]:
    url = f"https://feeds.example/{name}"
    parsed = parse_feed(name, (DATA / name).read_bytes(), {"Content-Type": content_type}, url)
    return [
        StoredEntry(
            entry=e,
            first_seen=FIRST_SEEN,
            last_changed=FIRST_SEEN,
            feed_title=parsed.title,
            feed_url=url,
            feed_link=parsed.link,
        )
        for e in identify(name.split(".")[0], parsed.entries, NOW)
    ]


def fixture_items() -> list[StoredEntry]:
    items = (
        stored_from("rss20.xml", "application/rss+xml")
        + stored_from("atom10.xml", "application/atom+xml")
        + stored_from("jsonfeed11.json", "application/feed+json")
    )
    # Newest first, as the store hands them over.
    return sorted(items, key=lambda i: (i.entry.published, i.entry.uid), reverse=True)


def one_item(title: str, summary: str = "", content: str = "") -> StoredEntry:
    parsed = ParsedEntry(
        guid="one",
        guid_is_permalink=False,
        link="https://one.example/post",
        title=title,
        summary=summary,
        content=content,
        author="",
        categories=(),
        published=datetime(2023, 10, 1, 9, 0, tzinfo=UTC),
        updated=None,
    )
    [entry] = identify("one", [parsed], NOW)
    return StoredEntry(entry, FIRST_SEEN, FIRST_SEEN, "One", "https://one.example/feed", None)


def parse_back(body: bytes) -> Any:
    result = feedparser.parse(body)
    assert not result.bozo, result.get("bozo_exception")
    return result


def test_fixture_items_are_varied() -> None:
    items = fixture_items()
    assert len(items) == 10
    assert len({i.entry.feed for i in items}) == 3
    assert any(not i.entry.date_known for i in items)


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_xml_outputs_parse_back(fmt: OutputFormat) -> None:
    items = fixture_items()
    result = parse_back(render(fmt, META, items))
    assert result.version == ("atom10" if fmt == "atom" else "rss20")
    assert result.feed.title == "Mixed output"
    assert [e.id for e in result.entries] == [i.entry.uid for i in items]
    assert [e.title for e in result.entries] == [i.entry.title for i in items]
    assert [e.link for e in result.entries] == [i.entry.link for i in items]


def test_atom_entries_name_their_source() -> None:
    items = fixture_items()
    result = parse_back(render("atom", META, items))
    for parsed, item in zip(result.entries, items, strict=True):
        assert parsed.source.title == item.feed_title
        assert parsed.source.link == (item.feed_link or item.feed_url)


def test_rss_items_name_their_source() -> None:
    items = fixture_items()
    body = render("rss", META, items).decode("utf-8")
    sources = re.findall(r'<source url="([^"]+)">([^<]*)</source>', body)
    assert sources == [(i.feed_url, i.feed_title.replace("&", "&amp;")) for i in items]
    guids = re.findall(r'<guid isPermaLink="false">([^<]+)</guid>', body)
    assert guids == [i.entry.uid for i in items]


def test_json_feed_output() -> None:
    items = fixture_items()
    doc = json.loads(render("json", META, items))
    assert doc["version"] == JSON_FEED_VERSION == "https://jsonfeed.org/version/1.1"
    assert doc["title"] == "Mixed output"
    assert doc["feed_url"] == META.url("json")
    # The output's own page, not the daemon's front page.
    assert doc["home_page_url"] == "https://agg.example/outputs/mixed.html"
    assert [o["id"] for o in doc["items"]] == [i.entry.uid for i in items]
    for obj, item in zip(doc["items"], items, strict=True):
        assert obj["title"] == item.entry.title
        assert obj["url"] == item.entry.link
        assert RFC3339_Z.match(obj["date_published"]), obj["date_published"]
        assert RFC3339_Z.match(obj["date_modified"]), obj["date_modified"]
        published = datetime.fromisoformat(obj["date_published"])
        assert published == item.entry.published
        assert obj["_aggregator"]["source"] == {
            "feed": item.entry.feed,
            "title": item.feed_title,
            "url": item.feed_url,
        }
        assert obj["content_html"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_rendering_is_deterministic(fmt: OutputFormat) -> None:
    first = render(fmt, META, fixture_items())
    second = render(fmt, META, fixture_items())
    assert first == second
    assert str(NOW.year + 1) not in first.decode("utf-8")


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_output(fmt: OutputFormat) -> None:
    body = render(fmt, META, [])
    if fmt == "json":
        doc = json.loads(body)
        assert doc["items"] == []
        assert doc["version"] == JSON_FEED_VERSION
        return
    result = parse_back(body)
    assert result.entries == []
    assert result.feed.title == "Mixed output"
    text = body.decode("utf-8")
    if fmt == "atom":
        assert "<updated>1970-01-01T00:00:00+00:00</updated>" in text
    else:
        assert "<lastBuildDate>Thu, 01 Jan 1970 00:00:00 +0000</lastBuildDate>" in text
    assert feed_updated([]) == EPOCH


@pytest.mark.parametrize("fmt", FORMATS)
def test_control_character_in_title(fmt: OutputFormat) -> None:
    item = one_item("Bell\x07 and\x0b tab", summary="s")
    assert item.entry.title == "Bell and tab"
    body = render(fmt, META, [item])
    if fmt == "json":
        assert json.loads(body)["items"][0]["title"] == "Bell and tab"
    else:
        assert parse_back(body).entries[0].title == "Bell and tab"


@pytest.mark.parametrize(
    ("summary", "content", "expected"),
    [
        ("<p>Fish &amp; chips  <b>today</b></p>", "", "Fish & chips today"),
        ("", "<div>Only\ncontent</div>", "Only content"),
        ("x" * 100, "", "x" * 80 + "…"),
        # Nothing to read: named by its link, never "(untitled)".
        ("", "", "post"),
        (
            "",
            "<p>Nine words make the title of this untitled entry here, then more words "
            "follow that the title leaves out</p>",
            "Nine words make the title of this untitled entry here, then more words follow…",
        ),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_title_is_derived(
    fmt: OutputFormat, summary: str, content: str, expected: str
) -> None:
    body = render(fmt, META, [one_item("", summary=summary, content=content)])
    if fmt == "json":
        assert json.loads(body)["items"][0]["title"] == expected
    else:
        assert parse_back(body).entries[0].title == expected


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_self_link(fmt: OutputFormat) -> None:
    result = parse_back(render(fmt, META, fixture_items()[:2]))
    self_links = [link.href for link in result.feed.links if link.rel == "self"]
    assert self_links == [META.url(fmt)]
    assert META.url(fmt) == f"https://agg.example/outputs/mixed.{fmt}"


def test_json_self_link() -> None:
    doc = json.loads(render("json", META, []))
    assert doc["feed_url"] == META.url("json") == "https://agg.example/outputs/mixed.json"


def test_rss_dates_are_rfc822() -> None:
    items = fixture_items()
    body = render("rss", META, items).decode("utf-8")
    dates = re.findall(r"<pubDate>([^<]+)</pubDate>", body)
    assert len(dates) == len(items)
    assert all(RFC822.match(d) for d in dates), dates
    assert dates == [format_datetime(i.entry.published) for i in items]
    assert "Wed, 11 Oct 2023 09:00:00 +0000" in dates
    [build] = re.findall(r"<lastBuildDate>([^<]+)</lastBuildDate>", body)
    assert RFC822.match(build)


def test_atom_dates_are_rfc3339() -> None:
    items = fixture_items()
    body = render("atom", META, items).decode("utf-8")
    published = re.findall(r"<published>([^<]+)</published>", body)
    # The feed's own, then one per entry (each entry's atom:source has its own as well).
    updated = re.findall(r"<updated>([^<]+)</updated>", re.sub(r"<source>.*?</source>", "", body))
    assert len(published) == len(items)
    assert len(updated) == len(items) + 1
    assert all(RFC3339.match(d) for d in published + updated), published + updated
    assert [datetime.fromisoformat(d) for d in published] == [i.entry.published for i in items]
    assert datetime.fromisoformat(updated[0]) == feed_updated(items)


def test_entry_updated_reflects_in_place_edits() -> None:
    item = one_item("Title", summary="s")
    assert entry_updated(item) == item.entry.updated
    edited = StoredEntry(
        item.entry, FIRST_SEEN, FIRST_SEEN + timedelta(days=1), "One", "https://one.example/f", None
    )
    assert entry_updated(edited) == FIRST_SEEN + timedelta(days=1)
    doc = json.loads(render("json", META, [edited]))
    assert doc["items"][0]["date_modified"] == "2024-01-11T08:00:00Z"


def test_hostile_titles_stay_text() -> None:
    items = stored_from("hostile.xml", "application/rss+xml")
    for fmt in ("atom", "rss"):
        result = parse_back(render(fmt, META, items))  # type: ignore[arg-type]
        assert result.entries[1].title == "Entities <script>alert(5)</script> in the title"


def test_content_types() -> None:
    assert set(CONTENT_TYPES) == set(FORMATS)
    assert CONTENT_TYPES["json"].startswith("application/feed+json")


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_a_private_outputs_channel_link_keeps_its_token(fmt: OutputFormat) -> None:
    private = replace(META, link_query="token=s3cret-s3cret-s3cret", page=2, has_next=True)
    result = parse_back(render(fmt, private, fixture_items()[:2]))
    assert result.feed.link == "https://agg.example/outputs/mixed.html?token=s3cret-s3cret-s3cret"
