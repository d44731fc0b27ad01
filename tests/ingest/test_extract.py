"""Main-text extraction on the article pages of tests/data/articles, and its pure helpers:
robots.txt rules, the host gates' turn for background requests, the config keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from articlesite import ARTICLES, ROBOTS

from aggregator.config.load import parse_config
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.errors import ConfigError
from aggregator.ingest.extract import decode, extract_article, is_html, normalised_text
from aggregator.ingest.hosts import HostGates, HostLimit
from aggregator.ingest.robots import RobotsCache, rules_from

URL = "https://news.example/section/2024/story/"
NOW = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)

# A page as a scraper sees it: one paragraph per line, the icon names of the sprite sheet
# first, then the date, the headline twice, the deck and the story.
ICON_LINE = (
    "icon bookmark-bicon bookmarkicon cameraicon checkicon chevron downicon chevron lefticon "
    "closeicon downloadicon editicon fbicon fileicon filtericon mailicon searchicon shareicon "
    "sign inicon sign upicon tagicon tgicon trashicon twicon vkicon yticon"
)
SCRAPED = [
    ICON_LINE,
    "4 Mar, 2024 10:12",
    "Harbour ferries resume after three-day storm",
    "Operators say timetables will be back to normal by the weekend",
    "Harbour ferries resume after three-day storm",
    "Ferries between the islands and the mainland sailed again on Monday morning, after a "
    "storm that kept every boat in port for three days.",
    "The port authority said waves of up to six metres had been recorded at the harbour "
    "mouth on Saturday, the highest in more than a decade.",
    "“We would rather lose a weekend of trade than a ship,” the harbour master told "
    "reporters as the first crossing left at seven.",
    "Operators expect queues at the terminals until Wednesday and have added two extra "
    "crossings each day to clear the backlog of vehicles.",
]


def page(file: str) -> bytes:
    return (ARTICLES / file).read_bytes()


@pytest.mark.parametrize(
    ("file", "title", "kept", "dropped"),
    [
        (
            "wire-story.html",
            "Andean ministers back a shared river-data network",
            ["pool readings from more than six hundred", "neighbouring Brazil and Chile"],
            ["bookmarkicon", "cookies", "Related stories", "reader42", "Global Wire", "14 Mar"],
        ),
        (
            "ru-nauka.html",
            "В Новосибирске запустили открытую сеть датчиков воздуха",
            ["сто двадцать датчиков", "маршрутов общественного транспорта"],
            ["Читайте также", "ВКонтакте", "Все права защищены", "Поиск по сайту"],
        ),
        (
            "ja-tech.html",
            "地方の図書館、蔵書データを一斉公開",
            ["三百館以上", "百館ほど増える見込み"],
            ["関連記事", "ランキング", "はてブ", "Copyright"],
        ),
        (
            "de-wirtschaft.html",
            "Genossenschaft baut Solarpark auf stillgelegter Deponie",
            ["Bürgerenergiegenossenschaft", "<li>Fläche: 4,5 Hektar</li>", "Schafe weiden"],
            ["Newsletter", "Meistgelesen", "Datenschutzerklärung", "Impressum"],
        ),
    ],
)
def test_the_story_is_kept_and_the_chrome_dropped(
    file: str, title: str, kept: list[str], dropped: list[str]
) -> None:
    got = extract_article(page(file), "text/html", URL, title=title)
    assert got.found and got.method == "trafilatura", got.reason
    for text in kept:
        assert text in got.html
    for text in dropped:
        assert text not in got.html, text
    assert title not in got.html  # the headline is the entry's title already
    assert 0 < got.text_length < got.page_text_length


def test_a_scraped_page_keeps_the_story_once_without_its_icon_line() -> None:
    body = "".join(f"<p>{line}</p>\n" for line in SCRAPED)
    html = f"<html><body><div class='content'>{body}</div></body></html>"
    got = extract_article(html.encode(), "text/html; charset=utf-8", URL, title=SCRAPED[2] + " ")
    text = normalised_text(got.html)
    assert "icon" not in text and "4 Mar, 2024" not in text
    assert SCRAPED[2] not in text  # the headline, twice on the page, is the title
    assert text.startswith(SCRAPED[3])  # the deck leads the story
    for line in SCRAPED[5:]:
        assert line in text


def test_lists_tables_images_and_links_survive_with_absolute_urls() -> None:
    got = extract_article(page("fr-blog.html"), "text/html", "https://carnets.example/x/")
    assert "<ul><li>Réserver au moins trois semaines" in got.html
    assert "<th>Gare</th>" in got.html and "<td>Chambéry</td>" in got.html
    # <base href> wins over the page URL for relative links, as in a browser.
    assert '<img src="https://carnets.example/2024/06/images/couchette.jpg"' in got.html
    assert '<a href="https://carnets.example/horaires/">' in got.html


def test_the_result_is_sanitised_with_the_feed_policy() -> None:
    story = "".join(
        f"<p>Paragraph {i} of a story long enough to be an article, with words.</p>"
        for i in range(8)
    )
    html = (
        "<html><body><article>"
        '<p onclick="steal()">Clicked <a href="javascript:alert(1)">here</a> first.</p>'
        f'{story}<iframe src="https://ads.example/frame"></iframe>'
        '<img src="x.png" onerror="steal()"></article></body></html>'
    )
    got = extract_article(html.encode(), "text/html", URL, selector="article")
    assert got.method == "selector"
    for bad in ("onclick", "javascript:", "<iframe", "onerror", "steal"):
        assert bad not in got.html
    assert '<img src="https://news.example/section/2024/story/x.png">' in got.html


def test_selector_and_remove_selectors_override_the_heuristics() -> None:
    body = page("fr-blog.html")
    got = extract_article(
        body, "text/html", URL, selector=".entry-wrapper", remove=["#comments", ".post-footer"]
    )
    assert got.method == "selector"
    assert "Publié le 12 juin 2024 par Camille" in got.html
    assert "Merci pour ce récit" not in got.html and "Articles similaires" not in got.html
    # A selector that matches nothing falls back to the heuristics.
    fallback = extract_article(body, "text/html", URL, selector="#no-such-element")
    assert fallback.method == "trafilatura" and "train de nuit" in fallback.html


def test_readability_takes_over_when_trafilatura_finds_nothing() -> None:
    # A theme that wraps the story in an element named like page chrome: trafilatura throws
    # the element away, readability scores its text.
    words = " ".join(f"Sentence number {i} of the only story on this old page." for i in range(40))
    html = f"<html><body><div class='footer'>{words}</div></body></html>"
    got = extract_article(html.encode(), "text/html", URL)
    assert got.found and got.method == "readability"
    assert "Sentence number 39" in got.html


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"%PDF-1.7", "application/pdf", "not an HTML page (application/pdf)"),
        (b'{"a": 1}', "application/json; charset=utf-8", "not an HTML page (application/json)"),
        (b"", "text/html", "empty page"),
        (page("index-page.html"), "text/html", "no article text found on the page"),
        (b"<html><body><nav><a href='/'>Home</a></nav></body></html>", "", "no article text"),
    ],
)
def test_pages_without_a_story_say_why(body: bytes, content_type: str, reason: str) -> None:
    got = extract_article(body, content_type, URL)
    assert not got.found and got.html == "" and reason in got.reason


def test_charsets_come_from_the_header_then_the_page() -> None:
    latin = "Grüße aus Köln".encode("iso-8859-1")
    assert decode(latin, "text/html; charset=ISO-8859-1") == "Grüße aus Köln"
    meta = b'<meta charset="windows-1251">' + "Привет".encode("cp1251")
    assert decode(meta, "text/html").endswith("Привет")
    assert decode("café".encode(), "text/html") == "café"
    assert decode(b"caf\xe9", "text/html") == "café"  # not UTF-8: Windows-1252
    assert is_html("", b"<!DOCTYPE html><html>") and not is_html("", b"%PDF")


def test_robots_rules_as_the_rfc_reads_them() -> None:
    rules = rules_from(200, ROBOTS, NOW)
    assert not rules.allows(DEFAULT_USER_AGENT, "http://h.example/private/a")
    assert rules.allows(DEFAULT_USER_AGENT, "http://h.example/world/a")
    assert rules.crawl_delay(DEFAULT_USER_AGENT) is None
    slow = rules_from(200, b"User-agent: *\nCrawl-delay: 5\n", NOW)
    assert slow.crawl_delay(DEFAULT_USER_AGENT) == timedelta(seconds=5)
    assert rules_from(404, b"", NOW).allows(DEFAULT_USER_AGENT, "http://h.example/private/a")
    unreachable = rules_from(503, b"", NOW)
    assert unreachable.unreachable and not unreachable.allows(DEFAULT_USER_AGENT, "http://h/")
    assert not rules_from(None, b"", NOW).allows(DEFAULT_USER_AGENT, "http://h/")
    cache = RobotsCache()
    cache.put("http://h.example", rules)
    assert cache.get("http://h.example", NOW + timedelta(hours=23)) is rules
    assert cache.get("http://h.example", NOW + timedelta(hours=25)) is None  # read again
    assert cache.get("http://other.example", NOW) is None


def test_background_requests_take_only_free_turns() -> None:
    host = "http://h.example"
    gates = HostGates(default=HostLimit(1, timedelta(seconds=2)))
    assert gates.try_reserve(host, NOW)
    assert not gates.try_reserve(host, NOW + timedelta(seconds=1))  # host_delay not over
    # A feed books the next turn; a background request never takes it from it.
    turn = gates.reserve(host, NOW + timedelta(seconds=1), "feed")
    assert turn == NOW + timedelta(seconds=2)
    assert not gates.try_reserve(host, NOW + timedelta(seconds=2))
    assert gates.reserve(host, NOW + timedelta(seconds=2), "feed") is None
    assert not gates.try_reserve(host, NOW + timedelta(seconds=3))
    assert gates.try_reserve(host, NOW + timedelta(seconds=4))
    gates.block(host, NOW + timedelta(minutes=5))  # a Retry-After
    assert not gates.try_reserve(host, NOW + timedelta(minutes=1))


def test_full_content_config_keys() -> None:
    feeds = [
        {"name": "a", "url": "http://a.example/feed"},
        {"name": "b", "url": "http://b.example/feed", "full_content": True},
        {"name": "c", "url": "http://c.example/feed", "full_content": False},
    ]
    off = parse_config({"feeds": feeds})
    assert [f.full_content for f in off.feeds.values()] == [False, True, False]
    assert off.aggregator.respect_robots and off.aggregator.article_concurrency == 2
    on = parse_config({"aggregator": {"full_content": True}, "feeds": feeds})
    assert [f.full_content for f in on.feeds.values()] == [True, True, False]
    with pytest.raises(ConfigError) as e:
        parse_config(
            {
                "feeds": [
                    {
                        "name": "a",
                        "url": "http://a.example/",
                        "content_selector": "div[",
                        "remove_selectors": [".share", "##x"],
                    }
                ]
            }
        )
    assert e.value.problems[0].startswith("feeds[0].content_selector: 'div[' is not a CSS")
    assert e.value.problems[1].startswith("feeds[0].remove_selectors[1]: '##x' is not a CSS")
