"""Tracking parameters from the ClearURLs catalog: cross-feed matching and reconcile, while
stored keys and hashes stay what they were."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aggregator.ingest.identity import Known, diff, identify, reconcile
from aggregator.ingest.tracking import providers, read_catalog, strip_tracking
from aggregator.models import ParsedEntry
from aggregator.outputs.dedupe import match_key

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://n.example/a?ref=rss&id=3", "https://n.example/a?id=3"),
        ("https://n.example/a?id=3&referrer=feed", "https://n.example/a?id=3"),
        (
            "https://www.theguardian.com/world/x?CMP=share_btn_tw",
            "https://www.theguardian.com/world/x",
        ),
        ("https://wired.example/story?CMP=rss", "https://wired.example/story"),
        (
            "https://www.bbc.com/news/articles/x?at_medium=RSS&at_campaign=rss",
            "https://www.bbc.com/news/articles/x",
        ),
        ("https://n.example/a?at_medium=social&at_campaign=x", "https://n.example/a"),
        ("https://n.example/a?soc_src=social-sh&soc_trk=tw", "https://n.example/a"),
        ("https://n.example/a?utm_source=x&UTM_Medium=y&fbclid=1&gclid=2", "https://n.example/a"),
        ("https://n.example/a?mc_cid=1&mc_eid=2&_hsenc=3&yclid=4", "https://n.example/a"),
    ],
)
def test_strip_tracking_drops_what_the_catalog_names(url: str, clean: str) -> None:
    assert strip_tracking(url) == clean


@pytest.mark.parametrize(
    "url",
    [
        # Content ids that looser lists (courlan's) would take: different pages, kept apart.
        "https://n.example/article.php?uid=5",
        "https://n.example/view?cid=7",
        "https://n.example/a?source=archive&gallery=2&page=3",
        "https://n.example/search?q=ref",
        # The catalog's exceptions: GitLab's ref names a branch.
        "https://gitlab.com/group/proj/-/refs/switch?ref=main",
        "https://n.example/plain/path",
        "not a url ?ref=x",
    ],
)
def test_strip_tracking_keeps_what_names_the_page(url: str) -> None:
    assert strip_tracking(url) == url


def test_catalog_is_read_from_the_installed_package() -> None:
    data = read_catalog()
    assert "globalRules" in data["providers"]  # type: ignore[operator]
    names = [p.name for p in providers()]
    assert names[:2] == ["globalRules", "extra"]
    assert len(names) > 100


def test_match_key_ignores_every_tracking_parameter() -> None:
    a = "https://news.example/2024/story?ref=rss"
    b = "http://www.news.example/2024/story/?at_medium=RSS&at_campaign=KARANGA&soc_src=x"
    assert match_key(a) == match_key(b) == "news.example/2024/story"
    assert match_key("https://n.example/a?uid=1") != match_key("https://n.example/a?uid=2")


def _parsed(link: str) -> ParsedEntry:
    return ParsedEntry(
        guid=None,
        guid_is_permalink=False,
        link=link,
        title="T",
        summary='S <a href="https://x.example/?ref=tw&CMP=1">x</a>',
        content="",
        author="A",
        categories=(),
        published=None,
        updated=None,
    )


def test_stored_keys_and_hashes_do_not_change_on_upgrade() -> None:
    """Keys, uids and hashes of entries stored by earlier versions (values computed by them):
    were they to change, every stored entry with such a link would come back new or updated."""
    link = "https://News.example/a/1?ref=rss&utm_source=x&id=7"
    [e] = identify("f", [_parsed(link)], NOW, "link")
    assert e.key == "link:https://news.example/a/1?id=7&ref=rss"
    assert e.uid == "urn:uuid:3df0cff8-79f4-5fae-8b38-0cb02f14c6b7"
    assert e.content_hash == "d3454fee5a785f89d7a910960d108375fd1e22d8d8102e420a5907eb4325457a"
    assert e.stable_hash == "868872100781996b75e325dccf9f6c7626c21aa7d9b3f68d70b68dcb30b08444"


def test_reconcile_keeps_an_entry_whose_link_changes_only_in_tracking() -> None:
    [old] = identify("f", [_parsed("https://n.example/a?id=7&ref=rss")], NOW, "link")
    known = {old.key: Known(old.uid, old.content_hash, old.stable_hash, old.link)}
    [moved] = identify("f", [_parsed("https://n.example/a?id=7&ref=feed&CMP=x")], NOW, "link")
    assert moved.key != old.key
    [claimed] = reconcile([moved], known)
    assert (claimed.key, claimed.uid) == (old.key, old.uid)
    new, _updated = diff([claimed], known, "update", NOW)
    assert new == []
    # A different page (another id) is a new entry.
    [other] = identify("f", [_parsed("https://n.example/a?id=8&ref=rss")], NOW, "link")
    assert reconcile([other], known)[0].key == other.key
