"""Reading real-world OPML: nesting, missing titles, duplicates, odd encodings, broken XML."""

from __future__ import annotations

import pytest

from aggregator.outputs.opml import Subscription, parse_opml, render_opml, slugify

MESSY = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
  <head><title>My subscriptions</title></head>
  <body>
    <outline text="News">
      <outline text="World" title="World News" type="rss" xmlUrl="https://news.example/world.xml"
               htmlUrl="https://news.example/"/>
      <outline text="Europe">
        <outline type="rss" xmlUrl="https://eu.example/feed" category="politics,EU"/>
      </outline>
    </outline>
    <outline title="Tech Blog" xmlurl="feed://tech.example/rss"/>
    <outline text="World again" xmlUrl="https://news.example/world.xml"/>
    <outline text="Podcast page" htmlUrl="https://pod.example/"/>
    <outline text="Gopher" xmlUrl="gopher://old.example/feed"/>
    <outline text="Known" xmlUrl="https://known.example/feed.xml"/>
    <outline text="World News" xmlUrl="https://other.example/world.xml"/>
  </body>
</opml>
"""


def test_messy_opml_is_imported_and_every_skip_is_reported() -> None:
    result = parse_opml(
        MESSY, known_urls=["https://known.example/feed.xml"], known_names=["tech-blog"]
    )
    assert [(f.name, f.url, f.title, f.tags) for f in result.feeds] == [
        ("world-news", "https://news.example/world.xml", "World News", ("news",)),
        ("eu-example", "https://eu.example/feed", None, ("news", "europe", "politics", "eu")),
        ("tech-blog-2", "http://tech.example/rss", "Tech Blog", ()),
        ("world-news-2", "https://other.example/world.xml", "World News", ()),
    ]
    assert result.feeds[0].html_url == "https://news.example/"
    assert [(s.where, s.reason.split(" ")[0]) for s in result.skipped] == [
        ("World again", "duplicate"),
        ("Podcast page", "no"),
        ("Gopher", "'gopher://old.example/feed'"),
        ("Known", "duplicate"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        # Declared UTF-8, written in Latin-1 (an old exporter).
        '<?xml version="1.0" encoding="utf-8"?><opml><body>'
        '<outline text="Caf\xe9 cr\xe8me" xmlUrl="https://cafe.example/rss"/></body></opml>'.encode(
            "latin-1"
        ),
        # No declaration, Windows-1252.
        '<opml><body><outline text="Caf\xe9 cr\xe8me" xmlUrl="https://cafe.example/rss"/>'
        "</body></opml>".encode("cp1252"),
        # UTF-16 with a BOM and a declaration that says otherwise.
        '<?xml version="1.0" encoding="ISO-8859-1"?><opml><body>'
        '<outline text="Café crème" xmlUrl="https://cafe.example/rss"/></body></opml>'.encode(
            "utf-16"
        ),
        # A UTF-8 BOM.
        b'\xef\xbb\xbf<opml><body><outline text="Caf\xc3\xa9 cr\xc3\xa8me" '
        b'xmlUrl="https://cafe.example/rss"/></body></opml>',
    ],
    ids=["latin1-declared-utf8", "cp1252", "utf16", "utf8-bom"],
)
def test_odd_encodings(data: bytes) -> None:
    result = parse_opml(data)
    assert [(f.name, f.title) for f in result.feeds] == [("cafe-creme", "Café crème")]


def test_bare_ampersand_in_url() -> None:
    data = b'<opml><body><outline text="Q" xmlUrl="https://q.example/rss?a=1&b=2"/></body></opml>'
    assert parse_opml(data).feeds[0].url == "https://q.example/rss?a=1&b=2"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html><body>hi</body></html>", "root element is <html>"),
        (b"<opml><head/></opml>", "no <body>"),
        (b"\x00\x01 not xml at all <", "not an XML document"),
    ],
)
def test_not_opml_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_opml(data)


def test_round_trip_through_render() -> None:
    feeds = (
        Subscription("a", "https://a.example/feed", "A", "https://a.example/", ("x",)),
        Subscription("b", "https://b.example/feed"),
    )
    back = parse_opml(render_opml("t", feeds))
    assert [(f.url, f.html_url, f.tags) for f in back.feeds] == [
        (f.url, f.html_url, f.tags) for f in feeds
    ]
    assert back.skipped == ()


def test_slugify() -> None:
    assert slugify("  Ärger & Co. — News!  ") == "arger-co-news"
    assert slugify("日本") == ""
    assert len(slugify("x" * 100)) == 64
