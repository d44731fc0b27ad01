"""End to end: the daemon's pages, HTTP caching, paging, status, metrics and WebSub pings."""

from __future__ import annotations

import gzip
import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import feedparser
import pytest
from conftest import DATA_DIR, FeedServer, free_port
from feedserver import guess_content_type
from hubserver import Hub, hub
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_publish_validity import check_html

__all__ = ["hub", "start_daemon"]
pytestmark = pytest.mark.e2e
ATOM = "{http://www.w3.org/2005/Atom}"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def head(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers.items()), resp.read()


def config(
    feed_server: FeedServer, write_config: Callable[..., Path], port: int, **settings: str
) -> Path:
    body = ""
    for name, filename in (
        ("russia", "section-russia.rss.xml"),
        ("world", "section-world.rss.xml"),
        ("top", "top-stories.atom.xml"),
        ("hostile", "hostile.xml"),
    ):
        # Without their <ttl> (15m), which the daemon would honour over the 5s interval.
        document = re.sub(rb"<ttl>\d+</ttl>", b"", (DATA_DIR / filename).read_bytes())
        feed_server.serve_bytes(f"/{name}.xml", document, guess_content_type(filename, document))
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n'
        body += 'tags = ["news"]\n\n' if name != "hostile" else 'interval = "20s"\n\n'
    # Cross-feed dedupe is tested elsewhere; here every stored entry is its own story.
    body += '[[outputs]]\nname = "all"\ntitle = "All <news>"\ndedupe = "off"\n\n'
    body += '[[outputs]]\nname = "news"\ntitle = "News"\ntags = ["news"]\ndedupe = "off"\n\n'
    body += '[[outputs]]\nname = "odd"\ntitle = "Odd"\nfeeds = ["hostile"]\n'
    return write_config(
        body,
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        interval="5s",
        timeout="5s",
        **settings,
    )


def test_pages_caching_paging_status_metrics_and_websub(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
    hub: Hub,
) -> None:
    port = free_port()
    daemon = start_daemon(config(feed_server, write_config, port, hub=hub.url), port)
    base = daemon.base

    def count(name: str) -> int:
        return len(feedparser.parse(http_get(f"{base}/outputs/{name}.atom")[2]).entries)

    # 2 + 2 + 1 news entries and 2 hostile ones.
    wait_for(lambda: count("all") == 7 and count("news") == 5, "every entry in the outputs")

    # The index is HTML and links every output's page, feeds and OPML.
    status, headers, body = http_get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    links = {a.get("href") for t, a in check_html(body).tags if t == "a"}
    for name in ("all", "news"):
        for ext in ("html", "atom", "rss", "json", "opml"):
            assert f"{base}/outputs/{name}.{ext}" in links
    assert f"{base}/status" in links
    assert "All &lt;news&gt;" in body.decode()

    # The output page: entries with title, source and time; autodiscovery; nothing executable.
    status, headers, page = http_get(f"{base}/outputs/all.html")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    checker = check_html(page)
    assert [t for t, _ in checker.tags].count("article") == 7
    assert {a["type"] for t, a in checker.tags if t == "link" and a.get("rel") == "alternate"} == {
        "application/atom+xml",
        "application/rss+xml",
        "application/feed+json",
    }
    assert "News Example – Russia" in page.decode() and "<time datetime=" in page.decode()

    # OPML of the sources.
    status, headers, opml = http_get(f"{base}/outputs/news.opml")
    assert status == 200 and "opml" in headers["Content-Type"]
    outlines = ET.fromstring(opml).findall("./body/outline")
    assert sorted(o.get("xmlUrl") or "" for o in outlines) == sorted(
        feed_server.url(f"{n}.xml") for n in ("russia", "world", "top")
    )

    # Caching on every output and page: ETag, 304, gzip, HEAD, Cache-Control from the interval.
    for path in ("/", "/outputs/all.atom", "/outputs/all.rss", "/outputs/all.json",
                 "/outputs/all.html", "/outputs/all.opml", "/status.json"):  # fmt: skip
        status, headers, body = http_get(base + path)
        assert status == 200, path
        etag = headers["ETag"]
        assert http_get(base + path, {"If-None-Match": etag})[0] == 304, path
        if "Last-Modified" in headers and path.startswith("/outputs/"):
            assert http_get(base + path, {"If-Modified-Since": headers["Last-Modified"]})[0] == 304
        hstatus, hheaders, hbody = head(base + path)
        assert hstatus == 200 and hbody == b"" and hheaders["ETag"] == etag, path
        _, gheaders, gbody = http_get(base + path, {"Accept-Encoding": "gzip"})
        if len(body) >= 512:
            assert gheaders.get("Content-Encoding") == "gzip", path
            assert gzip.decompress(gbody) == body, path
            assert gheaders["ETag"] != etag  # each encoding has its own validator
            assert http_get(base + path, {"If-None-Match": gheaders["ETag"]})[0] == 304
    _, headers, _ = http_get(f"{base}/outputs/news.atom")
    assert headers["Cache-Control"] == "public, max-age=5"
    _, headers, _ = http_get(f"{base}/outputs/all.rss")
    assert headers["Cache-Control"] == "public, max-age=5"  # shortest of 5s and 20s
    _, headers, _ = http_get(f"{base}/outputs/odd.json")
    assert headers["Cache-Control"] == "public, max-age=20"

    # Paging (RFC 5005): follow `next` links through pages of 3.
    seen: list[str] = []
    url: str | None = f"{base}/outputs/all.atom?limit=3"
    pages = 0
    while url:
        status, _, body = http_get(url)
        assert status == 200
        root = ET.fromstring(body)
        seen += [e.findtext(f"{ATOM}id") or "" for e in root.findall(f"{ATOM}entry")]
        rels = {lk.get("rel"): lk.get("href") for lk in root.findall(f"{ATOM}link")}
        assert rels["self"] == url
        url = rels.get("next")
        pages += 1
    assert pages == 3 and len(seen) == 7 and len(set(seen)) == 7
    doc = json.loads(http_get(f"{base}/outputs/all.json?limit=5")[2])
    assert len(doc["items"]) == 5 and doc["next_url"].endswith("/outputs/all.json?page=2&limit=5")
    assert http_get(f"{base}/outputs/all.atom?limit=0")[0] == 400
    assert http_get(f"{base}/outputs/all.atom?page=x")[0] == 400

    # Status: HTML for a browser, JSON for everyone else, always JSON at /status.json.
    status, headers, body = http_get(base + "/status", {"Accept": BROWSER})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    check_html(body)
    assert b'id="feed-russia"' in body and b"Feed status" in body
    assert json.loads(http_get(base + "/status")[2])["feeds"]["russia"]["status"] in (
        "ok",
        "not_modified",
        "unchanged",
    )
    status_doc = json.loads(http_get(base + "/status.json", {"Accept": BROWSER})[2])
    assert status_doc["database"]["kind"] == "sqlite"
    assert set(status_doc) == {
        "database",
        "summary",
        "config_loaded",
        "feeds",
        "outputs",
        "reload",
        "nodes",
        "nodes_warning",
    }

    # WebSub: advertised, and pinged with every format of the outputs that changed.
    _, headers, body = http_get(f"{base}/outputs/all.atom")
    assert f'<{hub.url}>; rel="hub"' in headers["Link"]
    assert any(
        lk.get("rel") == "hub" and lk.get("href") == hub.url
        for lk in ET.fromstring(body).findall(f"{ATOM}link")
    )
    wait_for(lambda: len(hub.pings) >= 1, "a WebSub ping")
    pinged = {u for p in hub.pings for u in p.urls}
    assert all(
        p.mode == "publish" and p.user_agent.startswith("feed-aggregator/") for p in hub.pings
    )
    assert {
        f"{base}/outputs/{n}.{f}" for n in ("all", "news") for f in ("atom", "rss", "json")
    } <= pinged
    before = len(hub.pings)
    edited = (
        (DATA_DIR / "section-russia.rss.xml")
        .read_bytes()
        .replace(
            b"Heavy rain expected in the capital", b"Heavy rain and hail expected in the capital"
        )
    )
    feed_server.serve_bytes("/russia.xml", edited, "application/rss+xml")
    wait_for(lambda: len(hub.pings) > before, "a ping after the publisher's edit")

    # Metrics in Prometheus text format.
    status, headers, body = http_get(base + "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for needle in (
        'aggregator_polls_total{status="ok"}',
        "aggregator_fetch_seconds_bucket",
        "aggregator_fetch_seconds_count",
        'aggregator_entries_stored_total{kind="new"} 7.0',
        'aggregator_feed_last_success_timestamp_seconds{feed="russia"}',
        'aggregator_renders_total{format="html"}',
        "aggregator_output_cache_hits_total",
        'aggregator_websub_pings_total{result="ok"}',
    ):
        assert needle in text, needle

    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log and "websub ping hub=" in log
