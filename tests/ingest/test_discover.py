"""Feed discovery in web pages, the advertised feed in a parse error, removing a feed from a
config file with its comments kept."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import hostile
import pytest
from conftest import FeedServer
from test_e2e_unattended import feed_toml, rss

from aggregator.config.edit import remove_feed
from aggregator.errors import ConfigError, ParseError
from aggregator.ingest.feedlinks import FeedLink, feed_links
from aggregator.ingest.parse import parse_feed

PAGE = b"""<!DOCTYPE html><html><head><title>Blog</title>
<base href="https://blog.example/sub/">
<link rel="stylesheet" href="/style.css">
<link rel="alternate" type="application/rss+xml" title="Posts &amp; news" href="feed.xml">
<link rel="Alternate" type="application/atom+xml; charset=utf-8" href="/atom.xml">
<link rel="alternate" type="application/rss+xml" href="feed.xml">
<link rel="alternate" type="text/html" hreflang="fr" href="/fr/">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
</head><body><a rel="alternate" type="application/feed+json" href="feed.json">JSON</a>
</body></html>"""


def test_feed_links_in_page_order_absolute_once() -> None:
    assert feed_links(PAGE, "https://blog.example/") == [
        FeedLink("https://blog.example/sub/feed.xml", "Posts & news", "application/rss+xml"),
        FeedLink("https://blog.example/atom.xml", None, "application/atom+xml"),
        FeedLink("https://blog.example/sub/feed.json", None, "application/feed+json"),
    ]
    assert feed_links(b"<html><p>no feeds here", "https://x.example/") == []
    assert feed_links(b"\xff\xfe<<<broken", "https://x.example/") == []


def test_html_page_error_names_the_advertised_feed() -> None:
    with pytest.raises(ParseError) as caught:
        parse_feed("blog", PAGE, {"Content-Type": "text/html"}, "https://blog.example/")
    assert caught.value.message == (
        "not a feed: the server sent an HTML page; the page advertises the feed "
        "https://blog.example/sub/feed.xml (and 2 more): use that as the feed's url"
    )
    with pytest.raises(ParseError, match=r"HTML page$"):
        parse_feed("x", b"<html><body>login</body></html>", {"Content-Type": "text/html"}, "x")


CONFIG = """# My feeds, hand-written.
[aggregator]
database = "data/a.db"  # keep it here

[[feeds]]
name = "one"
url = "https://one.example/feed"  # the first

# the second feed, kept for later
[[feeds]]
name = "two"
url = "https://two.example/feed"
tags = ["news"]

[[outputs]]
name = "both"
title = "Both"
feeds = ["one", "two"]  # listed by name

[[outputs]]
name = "news"
title = "News"
tags = ["news"]
"""


def test_remove_feed_keeps_comments_and_edits_output_lists(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(CONFIG)
    assert remove_feed(path, "one") == ["both"]
    text = path.read_text()
    doc = tomllib.loads(text)
    assert [f["name"] for f in doc["feeds"]] == ["two"]
    assert doc["outputs"][0]["feeds"] == ["two"]
    for comment in ("# My feeds, hand-written.", "# keep it here", "# the second feed"):
        assert comment in text, comment
    assert "one.example" not in text
    # The last listed feed of an output cannot go: the output would then merge every feed.
    with pytest.raises(ConfigError, match="merges only 'two'"):
        remove_feed(path, "two")
    assert tomllib.loads(path.read_text()) == doc  # unchanged
    with pytest.raises(ConfigError, match="no feed named 'nope'"):
        remove_feed(path, "nope")


def _utf16_slow_feed() -> bytes:
    # UTF-16 passes the cut-down scanner as it is (it reads bytes), so feedparser's e-mail
    # search on the long author runs for minutes: only the parse deadline stops it.
    text = hostile.quadratic_author(size=300_000).decode()
    return text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")


@pytest.mark.timeout(600)  # each `add` must end by itself; before the fix it never did
def test_add_gives_up_on_a_document_that_parses_past_the_deadline(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    feed_server.serve_bytes("/one.xml", rss("One", ["a"]))
    feed_server.serve_bytes("/slow.xml", _utf16_slow_feed(), "application/xml")
    page = '<html><head><link rel="alternate" type="application/rss+xml" href="/slow.xml">'
    feed_server.serve_bytes("/site/", page.encode(), "text/html")
    path = write_config(feed_toml("one", feed_server.url("one.xml")), parse_timeout="2s")
    before = path.read_text()

    def add(url: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aggregator", "add", url, "--config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=240)

    stopped = f"{feed_server.url('slow.xml')}: parsing took longer than 2 s (parse_timeout)"
    direct = add(feed_server.url("slow.xml"))
    assert direct.returncode == 1 and "no feed found" in direct.stderr
    assert stopped in direct.stderr and "not taken for a feed" in direct.stderr
    advertised = add(feed_server.url("site/"))
    assert advertised.returncode == 1, advertised.stderr
    assert "(advertised by" in advertised.stderr and stopped in advertised.stderr
    assert path.read_text() == before
