"""End to end, as a subscriber's reader sees the daemon: a merged podcast output plays in every
format (enclosures, authors, the channel link, parsed back by feedparser over HTTP), the
document subscribed to holds the output's `limit`, paging and its 404, `aggregator render`
and the OPML's validators."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import pytest
from conftest import FeedServer, free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_publish_validity import check_html

__all__ = ["start_daemon"]
pytestmark = pytest.mark.e2e
MANY = 150  # more than the 100 a page used to hold


def many_items() -> bytes:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = "".join(
        f"<item><title>Bulletin {n}</title><link>https://many.example/{n}</link>"
        f"<guid>https://many.example/{n}</guid><description>Bulletin number {n} of the day."
        f"</description><pubDate>{format_datetime(start + timedelta(hours=n), usegmt=True)}"
        "</pubDate></item>"
        for n in range(MANY)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Many</title>'
        f"<link>https://many.example/</link><description>d</description>{items}</channel></rss>"
    ).encode()


def config(feed_server: FeedServer, write_config: Callable[..., Path], port: int) -> Path:
    body = ""
    for name, filename in (("radio", "podcast.rss.xml"), ("sounds", "podcast.atom.xml")):
        feed_server.serve_file(f"/{name}.xml", filename)
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n'
        body += 'tags = ["pod"]\n\n'
    feed_server.serve_bytes("/many.xml", many_items(), "application/rss+xml")
    body += f'[[feeds]]\nname = "many"\nurl = "{feed_server.url("many.xml")}"\n\n'
    body += '[[outputs]]\nname = "pods"\ntitle = "Pods"\ntags = ["pod"]\n\n'
    body += '[[outputs]]\nname = "big"\ntitle = "Big"\nfeeds = ["many"]\nlimit = 500\n\n'
    body += '[[outputs]]\nname = "paged"\ntitle = "Paged"\nfeeds = ["many"]\nlimit = 500\n'
    body += "page_size = 40\n"
    return write_config(
        body,
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        interval="5s",
        timeout="5s",
    )


def parse(url: str) -> feedparser.FeedParserDict:
    status, _, body = http_get(url)
    assert status == 200, url
    result = feedparser.parse(body)
    assert not result.bozo, (url, result.get("bozo_exception"))
    return result


def test_a_subscriber_gets_the_whole_story(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
) -> None:
    port = free_port()
    path = config(feed_server, write_config, port)
    daemon = start_daemon(path, port)
    base = daemon.base
    # 3 + 3 episodes, one of them carried by both podcasts: 5 stories.
    wait_for(lambda: len(parse(f"{base}/outputs/pods.atom").entries) == 5, "the podcasts")
    wait_for(lambda: len(parse(f"{base}/outputs/big.rss").entries) == MANY, "every bulletin")

    home = f"{base}/outputs/pods.html"
    files = {}
    for fmt in ("atom", "rss"):
        result = parse(f"{base}/outputs/pods.{fmt}")
        assert result.feed.link == home
        files[fmt] = {
            e.title: [lk.href for lk in e.links if lk.rel == "enclosure"] for e in result.entries
        }
        # Episode 12 is one story, whichever podcast's copy was seen first.
        [ep12] = [e for e in result.entries if "nsr-12.mp3" in e.enclosures[0].href]
        assert ep12.enclosures[0].type == "audio/mpeg"
        assert ep12.enclosures[0].length == "48213094"
        assert {a.get("name") for a in ep12.authors} & {"Ada Brook", "Mira Quay"}
        ep11 = next(e for e in result.entries if e.title.startswith("Episode 11"))
        assert ep11.authors[0].get("name") == "Ada Brook"
        if fmt == "rss":
            assert ep11.itunes_duration == "00:41:15" and ep11.itunes_episode == "11"
            assert ep11.media_thumbnail[0]["url"].endswith("nsr-11-thumb.jpg")
            foghorns = next(e for e in result.entries if e.title.startswith("Field"))
            assert foghorns.author_detail.get("email") == "tom@sounds.example.org"
    # Atom carries every file; RSS its first as <enclosure> (and all of them as media:content).
    assert len(files["atom"]["Episode 11: Night buses"]) == 3
    assert len(files["rss"]["Episode 11: Night buses"]) == 1
    assert len(files["atom"]["Field recording: foghorns at dawn"]) == 2
    doc = json.loads(http_get(f"{base}/outputs/pods.json")[2])
    assert doc["home_page_url"] == home
    foghorns = next(i for i in doc["items"] if i["title"].startswith("Field"))
    assert [a["url"] for a in foghorns["attachments"]] == files["atom"][foghorns["title"]]
    assert [a["name"] for a in foghorns["authors"]] == ["Mira Quay", "Tom Pier"]
    [merged] = [i for i in doc["items"] if len(i["_aggregator"]["sources"]) > 1]
    assert {s["feed"] for s in merged["_aggregator"]["sources"]} == {"radio", "sounds"}
    page = check_html(http_get(home)[2])
    assert sum(1 for tag, _ in page.tags if tag == "audio") >= 4
    assert sum(1 for tag, _ in page.tags if tag == "video") == 3

    # The subscribed document holds the output's limit (500 > 150): everything, no next.
    big = parse(f"{base}/outputs/big.atom")
    assert len(big.entries) == MANY
    assert "next" not in {lk.rel for lk in big.feed.links}
    # page_size pages it; every page's channel link is the output's page; past the end 404.
    first = parse(f"{base}/outputs/paged.rss")
    assert len(first.entries) == 40
    rels = {lk.rel: lk.href for lk in first.feed.links}
    assert rels["next"] == f"{base}/outputs/paged.rss?page=2"
    last = parse(f"{base}/outputs/paged.rss?page=4")
    assert len(last.entries) == MANY - 3 * 40
    assert last.feed.link == f"{base}/outputs/paged.html"
    assert "next" not in {lk.rel for lk in last.feed.links}
    assert http_get(f"{base}/outputs/paged.rss?page=5")[0] == 404
    assert http_get(f"{base}/outputs/big.json?page=2")[0] == 404
    assert http_get(f"{base}/outputs/big.json?limit=100&page=2")[0] == 200
    assert len(parse(f"{base}/outputs/big.atom?limit=100&page=2").entries) == 50
    # The HTML page pages as it likes: 100 at a time.
    html_page = check_html(http_get(f"{base}/outputs/big.html")[2])
    assert sum(1 for tag, _ in html_page.tags if tag == "article") == 100

    # OPML carries an ETag and a Last-Modified, and both answer 304.
    status, headers, _ = http_get(f"{base}/outputs/pods.opml")
    assert status == 200 and headers["ETag"] and headers["Last-Modified"]
    assert http_get(f"{base}/outputs/pods.opml", {"If-None-Match": headers["ETag"]})[0] == 304
    since = {"If-Modified-Since": headers["Last-Modified"]}
    assert http_get(f"{base}/outputs/pods.opml", since)[0] == 304

    assert daemon.stop() == 0

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator", *args, "--config", str(path)],
            capture_output=True,
            timeout=60,
        )

    whole = cli("render", "paged", "--format", "rss")
    assert whole.returncode == 0, whole.stderr
    assert len(feedparser.parse(whole.stdout).entries) == MANY  # the whole output
    second = cli("render", "paged", "--format", "atom", "--page", "2")
    assert second.returncode == 0
    assert len(feedparser.parse(second.stdout).entries) == 40
    past = cli("render", "paged", "--page", "5")
    assert past.returncode == 2 and b"page" in past.stderr
