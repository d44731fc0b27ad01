"""A loopback news site: article pages (tests/data/articles), section feeds whose items carry
only the first sentence, robots.txt, and one page per failure mode.

It is a FaultServer, so the server side counts requests in flight and logs every arrival:
host limits are checked where they matter.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultserver import FaultServer

ARTICLES = Path(__file__).resolve().parent / "data" / "articles"

ROBOTS = b"""# Pages under /private/ are for subscribers only.
User-agent: *
Disallow: /private/

User-agent: feed-aggregator
Disallow: /private/
Allow: /
"""


@dataclass(frozen=True)
class Story:
    """One story of the site: where its page is, and what its feed item says."""

    guid: str
    path: str  # of the article page
    title: str
    first_sentence: str
    page: str = ""  # file under tests/data/articles ("" for pages served otherwise)
    charset: str = "utf-8"


STORIES = {
    "wire": Story(
        "wire-1",
        "/world/2024/03/andes-river-data/",
        "Andean ministers back a shared river-data network",
        "Environment ministers from Peru, Bolivia, Ecuador and Colombia have agreed to pool "
        "readings from more than six hundred river gauges into a single open platform.",
        "wire-story.html",
    ),
    "de": Story(
        "de-1",
        "/wirtschaft/solarpark-deponie.html",
        "Genossenschaft baut Solarpark auf stillgelegter Deponie",
        "Auf der ehemaligen Kreismülldeponie bei Oberried sollen ab dem Herbst rund elftausend "
        "Solarmodule Strom erzeugen.",
        "de-wirtschaft.html",
        "iso-8859-1",
    ),
    "ru": Story(
        "ru-1",
        "/nauka/datchiki-vozduha",
        "В Новосибирске запустили открытую сеть датчиков воздуха",
        "Студенты и преподаватели двух университетов установили на крышах школ и библиотек "
        "сто двадцать датчиков.",
        "ru-nauka.html",
    ),
    "ja": Story(
        "ja-1",
        "/it/2024/05/08/library-open-data.html",
        "地方の図書館、蔵書データを一斉公開",
        "全国の市町村立図書館のうち三百館以上が、所蔵する本の目録データを公開した。",
        "ja-tech.html",
    ),
    "fr": Story(
        "fr-1",
        "/2024/06/trains-de-nuit-alpes/",
        "Le retour des trains de nuit vers les Alpes",
        "Après dix ans d’absence, un train de nuit relie de nouveau Paris aux vallées alpines.",
        "fr-blog.html",
    ),
    "index": Story(
        "index-1",
        "/news/latest/",
        "Latest news",
        "All the latest headlines from Global Wire.",
        "index-page.html",
    ),
}


class ArticleSite(FaultServer):
    """The site's pages and feeds on one loopback host."""

    def serve_story(self, story: Story) -> None:
        body = (ARTICLES / story.page).read_bytes()
        self.serve_bytes(
            story.path, body, f"text/html; charset={story.charset}", etag=False, last_modified=False
        )

    def serve_robots(self) -> None:
        self.serve_bytes("/robots.txt", ROBOTS, "text/plain", etag=False, last_modified=False)

    def serve_feed(self, path: str, stories: list[Story], *, query: str = "") -> None:
        """An RSS feed of `stories`, each item carrying only its first sentence; `query` is
        appended to each link (tracking parameters, say)."""
        items = "".join(
            f"<item><title>{html.escape(s.title)}</title>"
            f"<link>{html.escape(self.url(s.path) + query)}</link>"
            f'<guid isPermaLink="false">{s.guid}</guid>'
            f"<pubDate>Mon, 04 Mar 2024 0{i % 10}:00:00 GMT</pubDate>"
            f"<description>{html.escape(s.first_sentence)}</description></item>"
            for i, s in enumerate(stories)
        )
        feed = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Section {path}</title><link>{self.url('/')}</link>"
            f"<description>Section feed</description>{items}</channel></rss>"
        )
        self.serve_bytes(path, feed.encode("utf-8"), "application/rss+xml")

    def article_hits(self, path: str) -> int:
        return len(self.hits_of(path))


@pytest.fixture
def article_site() -> Iterator[ArticleSite]:
    """A running ArticleSite serving every story's page and its robots.txt, closed after."""
    server = ArticleSite()
    server.serve_robots()
    for story in STORIES.values():
        server.serve_story(story)
    try:
        yield server
    finally:
        server.close()
