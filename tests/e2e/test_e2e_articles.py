"""End to end: full content through the real daemon and the real CLI, against the loopback
news site of articlesite.py (its pages, its robots.txt, its section feeds)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from articlesite import STORIES, ArticleSite
from conftest import free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for

__all__ = ["start_daemon"]
pytestmark = pytest.mark.e2e
SETTLE = 60.0


@pytest.fixture
def site() -> Iterator[ArticleSite]:
    server = ArticleSite()
    server.serve_robots()
    for story in STORIES.values():
        server.serve_story(story)
    server.serve_bytes(
        "/private/members-only/", b"<html><body><p>Members</p></body></html>", "text/html"
    )
    try:
        yield server
    finally:
        server.close()


def _config(site: ArticleSite, write_config: Callable[..., Path], port: int) -> Path:
    stories = [STORIES[k] for k in ("wire", "de", "ru", "fr", "index")]
    site.serve_feed("/feeds/world.rss", stories)
    site.serve_feed("/feeds/top.rss", [STORIES["wire"]], query="?utm_source=top")
    body = f"""
[[feeds]]
name = "world"
url = "{site.url("/feeds/world.rss")}"
full_content = true

[[feeds]]
name = "top"
url = "{site.url("/feeds/top.rss")}"
full_content = true

[[outputs]]
name = "all"
title = "All"
dedupe = "off"
"""
    # A short interval: first polls are spread over a tenth of it.
    return write_config(
        body, listen=f"127.0.0.1:{port}", host_delay="0.2s", parse_workers=1, interval="20s"
    )


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_daemon_stores_serves_and_shows_article_text(
    site: ArticleSite,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
) -> None:
    port = free_port()
    config = _config(site, write_config, port)
    daemon = start_daemon(config, port)

    def articles() -> dict[str, dict[str, int]]:
        doc = json.loads(http_get(daemon.base + "/status.json")[2])
        return {name: f.get("articles", {}) for name, f in doc["feeds"].items()}

    wait_for(
        lambda: (
            articles().get("world", {}).get("pending") == 0
            and articles().get("top", {}).get("pending") == 0
            and sum(articles()["world"].values()) == 5
        ),
        "every article to be settled",
        SETTLE,
    )
    assert articles() == {
        "world": {"extracted": 4, "failed": 1, "pending": 0},
        "top": {"extracted": 1, "failed": 0, "pending": 0},
    }
    # The story in both feeds was fetched once; robots.txt once for the host.
    assert site.article_hits(STORIES["wire"].path) == 1
    assert site.article_hits("/robots.txt") == 1

    status, _, body = http_get(daemon.base + "/outputs/all.json")
    assert status == 200
    items = json.loads(body)["items"]
    wire = [i for i in items if i["title"] == STORIES["wire"].title]
    assert len(wire) == 2
    for item in wire:
        assert "Hydrologists welcomed the move" in item["content_html"]
        assert "bookmarkicon" not in item["content_html"]
        assert item["summary"] == STORIES["wire"].first_sentence
    _, _, atom = http_get(daemon.base + "/outputs/all.atom")
    assert b"Natursch\xc3\xbctzer begr\xc3\xbc\xc3\x9fen" in atom
    _, _, page = http_get(daemon.base + "/outputs/all.html")
    assert "пятьдесят станций" in page.decode()
    _, _, html_status = http_get(daemon.base + "/status", {"Accept": "text/html"})
    assert "articles" in html_status.decode() and "extracted" in html_status.decode()

    metrics = http_get(daemon.base + "/metrics")[2].decode()
    assert 'aggregator_articles_total{result="extracted"} 4.0' in metrics
    assert 'aggregator_articles_total{result="failed"} 1.0' in metrics

    table = cli(config, "feeds").stdout
    assert "world: articles 4 extracted, 1 failed, 0 pending" in table
    assert "top: articles 1 extracted, 0 failed, 0 pending" in table
    assert daemon.stop() == 0


def test_cli_fetch_extracts_and_extract_tunes_selectors(
    site: ArticleSite, write_config: Callable[..., Path]
) -> None:
    config = _config(site, write_config, free_port())
    fetched = cli(config, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert "world: articles 4 extracted, 1 failed, 0 pending" in cli(config, "feeds").stdout

    url = site.url(STORIES["fr"].path)
    plain = cli(config, "extract", url)
    assert plain.returncode == 0, plain.stderr
    assert "train de nuit relie de nouveau Paris" in plain.stdout
    assert "Publié le 12 juin" not in plain.stdout
    assert "characters of text by trafilatura, of the page's" in plain.stderr
    tuned = cli(config, "extract", url, "--selector", ".entry-wrapper", "--remove", "#comments")
    assert tuned.returncode == 0, tuned.stderr
    assert "Publié le 12 juin 2024 par Camille" in tuned.stdout
    assert "Merci pour ce récit" not in tuned.stdout
    assert "by selector" in tuned.stderr

    refused = cli(config, "extract", site.url("/private/members-only/"))
    assert refused.returncode == 1 and "robots.txt" in refused.stderr
    assert site.article_hits("/private/members-only/") == 0
    nothing = cli(config, "extract", site.url(STORIES["index"].path))
    assert nothing.returncode == 1 and "no article text found" in nothing.stderr
    bad = cli(config, "extract", url, "--selector", "div[")
    assert bad.returncode == 2 and "is not a CSS selector" in bad.stderr
