"""Identity: canonical URLs, the key ladder, dates, content hashes and uids."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests_support import DATA

from aggregator.ingest.identity import (
    canonical_url,
    clean_text,
    content_hash,
    identify,
    key_ladder,
    plausible_date,
    stable_hash,
    uid_for,
    with_first_seen_date,
)
from aggregator.ingest.parse import parse_feed
from aggregator.models import Entry, ParsedEntry

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
STORY_PUBLISHED = datetime(2023, 9, 29, 18, 28, tzinfo=UTC)


def entry(**fields: Any) -> ParsedEntry:
    base: dict[str, Any] = {
        "guid": "g-1",
        "guid_is_permalink": False,
        "link": "https://example.com/post",
        "title": "Title",
        "summary": "Summary",
        "content": "<p>Content</p>",
        "author": "Author",
        "categories": ("a",),
        "published": datetime(2023, 10, 1, 9, 0, tzinfo=UTC),
        "updated": datetime(2023, 10, 1, 10, 0, tzinfo=UTC),
    }
    base.update(fields)
    return ParsedEntry(**base)


def identify_file(name: str, content_type: str) -> list[Entry]:
    parsed = parse_feed(
        name,
        (DATA / name).read_bytes(),
        {"Content-Type": content_type},
        f"https://feeds.example/{name}",
    )
    return identify(name, parsed.entries, NOW)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/Path", "http://example.com/Path"),
        ("https://EXAMPLE.com/A/b/", "https://example.com/A/b/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
        ("https://example.com/a#comments", "https://example.com/a"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
        ("https://example.com/a?UTM_Campaign=x&id=3", "https://example.com/a?id=3"),
        ("https://example.com/a?fbclid=IwAR0&gclid=Cj0&id=1", "https://example.com/a?id=1"),
        ("https://example.com/a?mc_cid=1&mc_eid=2&p=2", "https://example.com/a?p=2"),
        ("https://example.com/a?b=2&a=1&c=3", "https://example.com/a?a=1&b=2&c=3"),
        ("https://example.com/a?x=2&x=1", "https://example.com/a?x=1&x=2"),
        ("https://example.com/a?b=&a=1", "https://example.com/a?a=1&b="),
        ("https://example.com/a?flag", "https://example.com/a?flag="),
        ("https://example.com/a?", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("http://[2001:DB8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        ("http://[::1]:80/", "http://[::1]/"),
        ("http://user:pw@Example.com/", "http://user:pw@example.com/"),
        ("not a url", "not a url"),
        ("/relative/path?utm_source=x", "/relative/path?utm_source=x"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("http://example.com:notaport/", "http://example.com:notaport/"),
        ("", ""),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


_segment = st.text(alphabet="abcXYZ019-._~%", min_size=0, max_size=8)
_param = st.sampled_from(["a", "b", "id", "utm_source", "fbclid", "Page", "q"])
_value = st.text(alphabet="abc019 &=+%/?#é", max_size=6)


@st.composite
def http_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(
        st.sampled_from(["example.com", "Example.ORG", "news.example", "[::1]", "10.0.0.1"])
    )
    port = draw(st.sampled_from(["", ":80", ":443", ":8080"]))
    path = "/".join(draw(st.lists(_segment, max_size=4)))
    params = draw(st.lists(st.tuples(_param, _value), max_size=5))
    query = "&".join(f"{k}={v}" for k, v in params)
    fragment = draw(st.sampled_from(["", "#top", "#"]))
    return f"{scheme}://{host}{port}/{path}" + (f"?{query}" if query else "") + fragment


@given(http_urls())
def test_canonical_url_is_idempotent(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once


@given(http_urls())
def test_canonical_url_drops_tracking_and_fragment(url: str) -> None:
    once = canonical_url(url)
    assert "#" not in once
    assert "utm_source=" not in once
    assert "fbclid=" not in once


@pytest.mark.parametrize(
    ("fields", "expected_kinds"),
    [
        ({}, ["guid", "link", "hash"]),
        ({"guid": None}, ["link", "hash"]),
        ({"guid": "   "}, ["link", "hash"]),
        ({"link": None}, ["guid", "hash"]),
        ({"guid": None, "link": ""}, ["hash"]),
    ],
)
def test_key_ladder_rungs(fields: dict[str, Any], expected_kinds: list[str]) -> None:
    assert [kind for kind, _ in key_ladder(entry(**fields))] == expected_kinds


def test_key_ladder_values() -> None:
    rungs = dict(key_ladder(entry(guid="  g-7 ", link="HTTPS://Example.com/p?utm_source=x")))
    assert rungs["guid"] == "g-7"
    assert rungs["link"] == "https://example.com/p"
    assert len(rungs["hash"]) == 32
    # The hash rung depends on title and date only.
    same = dict(key_ladder(entry(guid=None, link=None, summary="other")))["hash"]
    assert same == rungs["hash"]
    assert dict(key_ladder(entry(title="Other")))["hash"] != rungs["hash"]
    assert dict(key_ladder(entry(published=NOW)))["hash"] != rungs["hash"]


def test_identify_uses_the_best_rung() -> None:
    [by_guid, by_link, by_hash] = identify(
        "f",
        [
            entry(guid="g-1"),
            entry(guid=None, link="https://example.com/b?utm_medium=x"),
            entry(guid=None, link=None, title="Only a title"),
        ],
        NOW,
    )
    assert (by_guid.key_kind, by_guid.key) == ("guid", "guid:g-1")
    assert (by_link.key_kind, by_link.key) == ("link", "link:https://example.com/b")
    assert by_hash.key_kind == "hash"
    assert by_hash.key.startswith("hash:")


def test_duplicates_within_a_document_take_the_next_rung() -> None:
    entries = identify_file("dup-guids.xml", "application/rss+xml")
    assert [(e.key_kind, e.key) for e in entries] == [
        ("guid", "guid:article"),
        ("link", "link:https://copypaste.example.com/2023/10/library-hours"),
        ("link", "link:https://copypaste.example.com/2023/10/half-marathon-closures"),
    ]
    assert [e.guid for e in entries] == ["article", "article", None]
    assert len({e.uid for e in entries}) == 3


def test_duplicate_guid_and_link_falls_to_hash_and_exact_repeats_are_dropped() -> None:
    first = entry(guid="same", link="https://example.com/same", title="One")
    second = entry(guid="same", link="https://example.com/same", title="Two")
    repeat = entry(guid="same", link="https://example.com/same", title="One")
    third = entry(guid="same", link="https://example.com/same", title="Three")
    out = identify("f", [first, second, repeat, third], NOW)
    assert [(e.key_kind, e.title) for e in out] == [
        ("guid", "One"),
        ("link", "Two"),
        ("hash", "Three"),
    ]
    # Same guid, link, title and date as an earlier entry: every rung is taken, so it is dropped.
    edited = entry(guid="same", link="https://example.com/same", title="Three", summary="x")
    assert len(identify("f", [first, second, third, edited], NOW)) == 3


def test_undated_entries_fall_back_to_now() -> None:
    [e] = identify("f", [entry(published=None, updated=None)], NOW)
    assert (e.published, e.updated, e.date_known) == (NOW, NOW, False)


def test_only_updated_is_used_as_published() -> None:
    when = datetime(2023, 9, 12, 8, 0, tzinfo=UTC)
    [e] = identify("f", [entry(published=None, updated=when)], NOW)
    assert (e.published, e.updated, e.date_known) == (when, when, True)


def test_updated_is_never_before_published() -> None:
    published = datetime(2023, 10, 2, tzinfo=UTC)
    [e] = identify("f", [entry(published=published, updated=published - timedelta(days=1))], NOW)
    assert (e.published, e.updated) == (published, published)


def test_future_and_bad_dates() -> None:
    future, garbled, epoch = identify_file("future-and-bad-dates.xml", "application/rss+xml")
    assert (future.published, future.updated, future.date_known) == (NOW, NOW, True)
    assert (garbled.published, garbled.date_known) == (NOW, False)
    assert (epoch.published, epoch.date_known) == (NOW, False)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (None, None),
        (datetime(1970, 1, 1, tzinfo=UTC), None),
        (datetime(1994, 12, 31, 23, 59, 59, tzinfo=UTC), None),
        (datetime(1995, 1, 1, tzinfo=UTC), datetime(1995, 1, 1, tzinfo=UTC)),
        (datetime(2023, 10, 1, tzinfo=UTC), datetime(2023, 10, 1, tzinfo=UTC)),
        (NOW, NOW),
        (NOW + timedelta(seconds=1), NOW),
        (datetime(2099, 1, 1, tzinfo=UTC), NOW),
    ],
)
def test_plausible_date(when: datetime | None, expected: datetime | None) -> None:
    assert plausible_date(when, NOW) == expected


def test_with_first_seen_date() -> None:
    first_seen = datetime(2023, 12, 1, tzinfo=UTC)
    [undated, dated] = identify("f", [entry(guid="u", published=None, updated=None), entry()], NOW)
    kept = with_first_seen_date(undated, first_seen)
    assert (kept.published, kept.updated) == (first_seen, first_seen)
    assert with_first_seen_date(dated, first_seen) is dated


def test_identify_cleans_text_fields() -> None:
    [e] = identify(
        "f",
        [entry(title="Bad\x0bchar\x00", summary="s\x1f", author="a\x7f", categories=("c\x08",))],
        NOW,
    )
    assert (e.title, e.summary, e.author, e.categories) == ("Badchar", "s", "a", ("c",))
    assert clean_text("tab\tnewline\ncr\r") == "tab\tnewline\ncr\r"


def test_content_hash_ignores_dates() -> None:
    base = content_hash(entry())
    assert content_hash(entry(published=None, updated=None)) == base
    assert content_hash(entry(published=NOW, updated=NOW)) == base
    assert content_hash(entry(guid="other-guid", categories=("x", "y"))) == base


@pytest.mark.parametrize(
    "field",
    [
        {"title": "Another title"},
        {"summary": "Another summary"},
        {"content": "<p>Another content</p>"},
        {"link": "https://example.com/other"},
        {"author": "Someone else"},
        {"link": None},
    ],
)
def test_content_hash_changes_with_what_readers_see(field: dict[str, Any]) -> None:
    assert content_hash(entry(**field)) != content_hash(entry())


def test_content_hash_ignores_tracking_params() -> None:
    plain = content_hash(entry(link="https://example.com/post"))
    tracked = entry(link="https://EXAMPLE.com/post?utm_source=rss&fbclid=1#top")
    assert content_hash(tracked) == plain


def test_content_hash_does_not_confuse_fields() -> None:
    # The separator keeps "ab" + "" apart from "a" + "b".
    assert content_hash(entry(title="ab", summary="")) != content_hash(
        entry(title="a", summary="b")
    )


def test_uid_for_is_stable_and_distinct() -> None:
    uid = uid_for("feed-a", "guid:1")
    assert uid == uid_for("feed-a", "guid:1")
    assert uid == "urn:uuid:" + str(uid.removeprefix("urn:uuid:"))
    assert len(uid.removeprefix("urn:uuid:")) == 36
    others = {
        uid_for("feed-b", "guid:1"),
        uid_for("feed-a", "guid:2"),
        uid_for("feed-a", "link:guid:1"),
        uid_for("feed-a\nguid:1", ""),
    }
    assert uid not in others
    assert len(others) == 4


@given(st.text(max_size=20), st.text(max_size=20))
def test_uid_for_is_deterministic(feed: str, key: str) -> None:
    assert uid_for(feed, key) == uid_for(feed, key)
    assert uid_for(feed, key).startswith("urn:uuid:")


def test_identify_uid_matches_uid_for() -> None:
    [e] = identify("news", [entry(guid="abc")], NOW)
    assert e.uid == uid_for("news", "guid:abc")
    assert e.feed == "news"


# --- The shared example: one story carried by three section feeds ---------------------------


def _story(name: str, content_type: str) -> Entry:
    entries = identify_file(name, content_type)
    [story] = [e for e in entries if e.title.startswith("Russia wants")]
    return story


def test_shared_example_canonical_links() -> None:
    russia = _story("section-russia.rss.xml", "application/rss+xml")
    world = _story("section-world.rss.xml", "application/rss+xml")
    top = _story("top-stories.atom.xml", "application/atom+xml")
    # Tracking parameters and the host's case are gone; scheme and trailing slash are kept, so
    # russia/world and top-stories still differ (cross-feed matching is dedupe's job).
    assert russia.link == "https://news.example/russia/583812-putin-latin-america-strong/"
    assert world.link == russia.link
    assert top.link == "http://news.example/russia/583812-putin-latin-america-strong"
    assert top.link != russia.link
    assert russia.link.removeprefix("https://").rstrip("/") == top.link.removeprefix("http://")


def test_shared_example_keys() -> None:
    russia = _story("section-russia.rss.xml", "application/rss+xml")
    world = _story("section-world.rss.xml", "application/rss+xml")
    top = _story("top-stories.atom.xml", "application/atom+xml")
    assert russia.key == "guid:583812"
    assert world.key == "guid:https://news.example/russia/583812-putin-latin-america-strong/"
    assert top.key == "guid:tag:news.example,2023:583812"
    assert len({russia.uid, world.uid, top.uid}) == 3


def test_shared_example_published_instant() -> None:
    stories = [
        _story("section-russia.rss.xml", "application/rss+xml"),
        _story("section-world.rss.xml", "application/rss+xml"),
        _story("top-stories.atom.xml", "application/atom+xml"),
    ]
    for story in stories:
        assert story.published == STORY_PUBLISHED
        assert story.published.utcoffset() == timedelta(0)
        assert story.published.isoformat().replace("+00:00", "Z") == "2023-09-29T18:28:00Z"
        assert story.date_known


def test_identify_is_deterministic_over_fixture() -> None:
    first = identify_file("rss20.xml", "application/rss+xml")
    second = identify_file("rss20.xml", "application/rss+xml")
    assert [dataclasses.astuple(e) for e in first] == [dataclasses.astuple(e) for e in second]


def test_stored_stable_hash_is_reused_only_for_the_same_content() -> None:
    from aggregator.ingest.identity import Known

    e = entry(guid="g1", summary='<a href="https://x.example/a?utm_source=rss">x</a>')
    [fresh] = identify("f", [e], NOW)
    assert fresh.stable_hash == stable_hash(e)
    same = {fresh.key: Known(fresh.uid, fresh.content_hash, "stored-stable", fresh.link)}
    [again] = identify("f", [e], NOW, known=same)
    assert again.stable_hash == "stored-stable"  # not computed again
    edited = dataclasses.replace(e, summary="Another text.")
    [changed] = identify("f", [edited], NOW, known=same)
    assert changed.stable_hash == stable_hash(edited)
    legacy = {fresh.key: Known(fresh.uid, fresh.content_hash, None, fresh.link)}
    [old_row] = identify("f", [e], NOW, known=legacy)
    assert old_row.stable_hash == stable_hash(e)
