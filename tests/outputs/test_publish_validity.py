"""Every fixture feed × every output format renders a valid document.

Valid means: well-formed (no XML-illegal characters), the required elements of the format,
RFC 3339 (Atom, JSON Feed) and RFC 822 (RSS) dates, unique ids that stay the same across
renders, a self link, and a round trip through feedparser with bozo false (JSON Feed, which
feedparser does not read, round-trips through our own parser). HTML pages are checked for
balanced tags, autodiscovery links and the absence of anything executable.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree as ET

import feedparser
import pytest
from tests_support import DATA

from aggregator.ingest.parse import parse_feed
from aggregator.ingest.poll import digest
from aggregator.models import StoredEntry
from aggregator.outputs.pages import render_output_page
from aggregator.outputs.publish import JSON_FEED_VERSION, OutputMeta, render

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FIRST_SEEN = datetime(2024, 1, 10, 8, 0, tzinfo=UTC)
ATOM = "{http://www.w3.org/2005/Atom}"
HUB = "https://hub.example/"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} ([+-]\d{4}|GMT)$"
)
# Every file that is a feed (not-a-feed.html is the one that is not, by design).
FEEDS = sorted(
    p.name
    for p in DATA.iterdir()
    if p.is_file() and p.suffix in (".xml", ".rdf", ".json") and p.name != "not-a-feed.html"
)
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def items_of(name: str) -> list[StoredEntry]:
    """A fixture's entries as the poll stores them: parsed, keyed and sanitised once (a render
    does not sanitise again)."""
    url = f"https://feeds.example/{name}"
    ctype = "application/feed+json" if name.endswith(".json") else "application/xml"
    body = (DATA / name).read_bytes()
    d = digest(name.split(".")[0].replace("_", "-"), body, {"Content-Type": ctype}, url, NOW, {})
    parsed, entries = d.feed, d.new
    items = [
        StoredEntry(e, FIRST_SEEN, FIRST_SEEN, parsed.title or name, url, parsed.link)
        for e in entries
    ]
    return sorted(items, key=lambda i: (i.entry.published, i.entry.uid), reverse=True)


def meta(page: int = 1, has_next: bool = False, hub: str | None = None) -> OutputMeta:
    return OutputMeta(
        name="valid",
        title="Validity <&> check",
        description="Every fixture",
        base_url="https://agg.example",
        hub=hub,
        page=page,
        has_next=has_next,
    )


def test_every_fixture_is_covered() -> None:
    assert len(FEEDS) >= 15
    assert "hostile.xml" in FEEDS and "jsonfeed10.json" in FEEDS


def _round_trip(body: bytes) -> Any:
    result = feedparser.parse(body)
    assert not result.bozo, result.get("bozo_exception")
    return result


@pytest.mark.parametrize("name", FEEDS)
def test_atom_is_valid(name: str) -> None:
    items = items_of(name)
    body = render("atom", meta(), items)
    assert not XML_ILLEGAL.search(body.decode("utf-8"))
    root = ET.fromstring(body)
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated"):
        assert root.find(f"{ATOM}{required}") is not None, required
    assert RFC3339.match(root.findtext(f"{ATOM}updated") or "")
    selfs = [lk.get("href") for lk in root.findall(f"{ATOM}link") if lk.get("rel") == "self"]
    assert selfs == ["https://agg.example/outputs/valid.atom"]
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == len(items)
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert all(ids) and len(set(ids)) == len(ids)
    for e in entries:
        assert (e.findtext(f"{ATOM}title") or "").strip()
        assert RFC3339.match(e.findtext(f"{ATOM}updated") or "")
        published = e.findtext(f"{ATOM}published")
        assert published is None or RFC3339.match(published)
    parsed = _round_trip(body)
    assert [e.id for e in parsed.entries] == ids
    assert parsed.feed.title == "Validity <&> check"


@pytest.mark.parametrize("name", FEEDS)
def test_rss_is_valid(name: str) -> None:
    items = items_of(name)
    body = render("rss", meta(), items)
    assert not XML_ILLEGAL.search(body.decode("utf-8"))
    root = ET.fromstring(body)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    for required in ("title", "link", "description"):
        assert (channel.findtext(required) or "").strip(), required
    selfs = [lk.get("href") for lk in channel.findall(f"{ATOM}link") if lk.get("rel") == "self"]
    assert selfs == ["https://agg.example/outputs/valid.rss"]
    guids = []
    for item in channel.findall("item"):
        assert (item.findtext("title") or item.findtext("description") or "").strip()
        guids.append(item.findtext("guid"))
        date = item.findtext("pubDate") or ""
        assert RFC822.match(date), date
        parsedate_to_datetime(date)
    assert len(guids) == len(items) and all(guids) and len(set(guids)) == len(guids)
    parsed = _round_trip(body)
    assert [e.id for e in parsed.entries] == guids


@pytest.mark.parametrize("name", FEEDS)
def test_json_feed_is_valid(name: str) -> None:
    items = items_of(name)
    body = render("json", meta(), items)
    doc = json.loads(body)
    assert doc["version"] == JSON_FEED_VERSION
    assert doc["title"] and doc["feed_url"] == "https://agg.example/outputs/valid.json"
    ids = [item["id"] for item in doc["items"]]
    assert len(ids) == len(items) and len(set(ids)) == len(ids)
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item
        for key in ("date_published", "date_modified"):
            assert RFC3339.match(item[key]), item[key]
    # Round trip through the parser the daemon uses for JSON Feed.
    back = parse_feed("back", body, {"Content-Type": "application/feed+json"}, doc["feed_url"])
    assert [e.guid for e in back.entries] == ids
    assert [e.title for e in back.entries] == [item["title"] for item in doc["items"]]


@pytest.mark.parametrize("name", FEEDS)
@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_ids_are_stable_across_renders(name: str, fmt: str) -> None:
    first = render(fmt, meta(), items_of(name))  # type: ignore[arg-type]
    second = render(fmt, meta(), items_of(name))  # type: ignore[arg-type]
    assert first == second


class _Checker(HTMLParser):
    """Collects what the checks need and verifies that tags are balanced."""

    VOID = frozenset(
        [
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        ]
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(body: bytes) -> _Checker:
    """Parse a page; fail on unbalanced tags or anything that could run script."""
    checker = _Checker()
    checker.feed(body.decode("utf-8"))
    checker.close()
    assert not checker.problems, checker.problems
    assert checker.stack == [], checker.stack
    for tag, attrs in checker.tags:
        if tag == "form":
            # The page's own search box: a GET to the page itself, nothing from a feed.
            assert attrs.get("method") == "get" and attrs.get("class") == "search", attrs
            assert (attrs.get("action") or "").endswith(".html"), attrs
            continue
        assert tag not in ("script", "iframe", "form", "object", "embed"), tag
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)
            assert key != "style", tag
            assert not (value or "").strip().lower().startswith(("javascript:", "data:")), value
    return checker


@pytest.mark.parametrize("name", FEEDS)
def test_html_page_is_valid_and_safe(name: str) -> None:
    items = items_of(name)
    body = render_output_page(meta(), items)
    assert body.startswith(b"<!DOCTYPE html>")
    checker = check_html(body)
    alternates = {
        attrs["type"]: attrs["href"]
        for tag, attrs in checker.tags
        if tag == "link" and attrs.get("rel") == "alternate"
    }
    assert alternates == {
        "application/atom+xml": "https://agg.example/outputs/valid.atom",
        "application/rss+xml": "https://agg.example/outputs/valid.rss",
        "application/feed+json": "https://agg.example/outputs/valid.json",
    }
    articles = [attrs for tag, attrs in checker.tags if tag == "article"]
    assert len(articles) == len(items)
    # Relative links in content were resolved: every href/src in entries is absolute.
    for tag, attrs in checker.tags:
        for key in ("href", "src"):
            if tag in ("a", "img") and attrs.get(key):
                assert re.match(r"^(https?:|mailto:)", attrs[key] or ""), (tag, attrs)


@pytest.mark.parametrize("fmt", ["atom", "rss", "json", "html"])
def test_hub_and_paging_links(fmt: str) -> None:
    items = items_of("rss20.xml")
    m = meta(page=2, has_next=True, hub=HUB)
    body = render_output_page(m, items) if fmt == "html" else render(fmt, m, items)  # type: ignore[arg-type]
    expected = {
        "self": f"https://agg.example/outputs/valid.{fmt}?page=2",
        "hub": HUB,
        "first": f"https://agg.example/outputs/valid.{fmt}",
        "previous": f"https://agg.example/outputs/valid.{fmt}",
        "next": f"https://agg.example/outputs/valid.{fmt}?page=3",
    }
    if fmt == "json":
        doc = json.loads(body)
        assert doc["feed_url"] == expected["self"]
        assert doc["next_url"] == expected["next"]
        assert doc["hubs"] == [{"type": "WebSub", "url": HUB}]
        return
    if fmt == "html":
        checker = check_html(body)
        links = {a.get("rel"): a.get("href") for t, a in checker.tags if t == "link"}
        del expected["self"]
    else:
        root = ET.fromstring(body)
        scope = root if fmt == "atom" else root.find("channel")
        assert scope is not None
        links = {lk.get("rel"): lk.get("href") for lk in scope.findall(f"{ATOM}link")}
        _round_trip(body)
    for rel, href in expected.items():
        assert links.get(rel) == href, (rel, links)


def test_last_page_has_no_next_link() -> None:
    body = render("atom", meta(page=3), items_of("rss20.xml"))
    rels = {lk.get("rel") for lk in ET.fromstring(body).findall(f"{ATOM}link")}
    assert "next" not in rels and {"first", "previous", "self"} <= rels


def html_fields(fmt: str, body: bytes) -> list[str]:
    """The HTML fragments a reader would display, taken raw from the document (not through
    feedparser, which would sanitise them again and hide a problem)."""
    if fmt == "json":
        return [
            str(item[k])
            for item in json.loads(body)["items"]
            for k in ("content_html", "summary")
            if k in item
        ]
    if fmt == "html":
        return [body.decode("utf-8")]
    root = ET.fromstring(body)
    if fmt == "atom":
        return [e.text or "" for e in root.iter() if e.tag in (f"{ATOM}content", f"{ATOM}summary")]
    content = "{http://purl.org/rss/1.0/modules/content/}encoded"
    return [e.text or "" for e in root.iter() if e.tag in ("description", content)]


@pytest.mark.parametrize("fmt", ["atom", "rss", "json", "html"])
def test_hostile_content_is_neutralised(fmt: str) -> None:
    items = items_of("hostile.xml")
    m = meta()
    body = render_output_page(m, items) if fmt == "html" else render(fmt, m, items)  # type: ignore[arg-type]
    fields = html_fields(fmt, body)
    assert fields
    for fragment in fields:
        check_html(fragment.encode("utf-8"))  # no script, iframe, form, on*, style, javascript:
        assert not XML_ILLEGAL.search(fragment)
    shown = " ".join(fields)
    expected = "A harmless-looking summary." if fmt == "html" else "must survive sanitising."
    assert expected in shown
    # The title is text: a "<script>" in it is shown, escaped, never run.
    if fmt == "html":
        assert "Entities &lt;script&gt;alert(5)&lt;/script&gt; in the title" in shown


# --- enclosures, media, authors and sources (issue 12) ---------------------------------------
ITUNES = "{http://www.itunes.com/dtds/podcast-1.0.dtd}"
MEDIA = "{http://search.yahoo.com/mrss/}"
DC = "{http://purl.org/dc/elements/1.1/}"
# The extension namespaces an output may use, each under its usual prefix, declared on the root.
PREFIXES = {
    "itunes": ITUNES[1:-1],
    "media": MEDIA[1:-1],
    "dc": DC[1:-1],
    "content": "http://purl.org/rss/1.0/modules/content/",
    "atom": ATOM[1:-1],
}
CLOCK = re.compile(r"^\d{2,}:[0-5]\d:[0-5]\d$")
MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
HTTP = re.compile(r"^https?://[^\s]+$")
EMAIL = re.compile(r"^[^@\s()<>]+@[^@\s()<>]+\.[a-z]{2,}$", re.IGNORECASE)
MEDIA_FIXTURES = ["podcast.rss.xml", "podcast.atom.xml"]


def _declared_namespaces(body: bytes) -> dict[str, str]:
    """Prefix → URI of every namespace declaration in the document, failing on a prefix
    declared twice with different URIs or an auto-generated one (ns0)."""
    from lxml import etree

    root = etree.fromstring(body)
    seen: dict[str, str] = {}
    for el in root.iter():
        for prefix, uri in (el.nsmap or {}).items():
            if prefix is None:
                continue
            assert not re.match(r"^ns\d+$", prefix), f"generated prefix {prefix}"
            assert seen.get(prefix, uri) == uri, prefix
            seen[prefix] = uri
            if el is not root:
                assert root.nsmap.get(prefix) == uri, f"{prefix} declared below the root"
    return seen


def check_rss_extensions(body: bytes) -> None:
    """Namespaces, required attributes and value formats of the RSS extension elements."""
    for prefix, uri in _declared_namespaces(body).items():
        assert PREFIXES.get(prefix) == uri, (prefix, uri)
    channel = ET.fromstring(body).find("channel")
    assert channel is not None
    assert channel.findtext("link") == "https://agg.example/outputs/valid.html"
    for item in channel.findall("item"):
        enclosures = item.findall("enclosure")
        assert len(enclosures) <= 1  # RSS 2.0 allows one
        for enc in enclosures:
            assert HTTP.match(enc.get("url") or ""), enc.attrib
            assert (enc.get("length") or "").isdigit(), enc.attrib
            assert MIME.match(enc.get("type") or ""), enc.attrib
        contents = item.findall(f"{MEDIA}content")
        if enclosures:
            # Every file again as media:content, the first being the enclosure.
            assert contents and contents[0].get("url") == enclosures[0].get("url")
        for c in contents:
            assert HTTP.match(c.get("url") or ""), c.attrib
            assert c.get("fileSize") is None or (c.get("fileSize") or "").isdigit()
            assert c.get("duration") is None or (c.get("duration") or "").isdigit()
            assert c.get("medium") in (None, "image", "audio", "video", "document")
        for thumb in item.findall(f"{MEDIA}thumbnail"):
            assert HTTP.match(thumb.get("url") or "")
        for author in item.findall("author"):
            # An e-mail address, optionally followed by the name in parentheses.
            assert EMAIL.match((author.text or "").split(" (", 1)[0]), author.text
        for creator in item.findall(f"{DC}creator"):
            assert (creator.text or "").strip()
        duration = item.findtext(f"{ITUNES}duration")
        assert duration is None or CLOCK.match(duration), duration
        assert item.findtext(f"{ITUNES}explicit") in (None, "true", "false")
        for tag in ("episode", "season"):
            value = item.findtext(f"{ITUNES}{tag}")
            assert value is None or (value.isdigit() and int(value) > 0), (tag, value)
        assert item.findtext(f"{ITUNES}episodeType") in (None, "full", "trailer", "bonus")
        image = item.find(f"{ITUNES}image")
        assert image is None or HTTP.match(image.get("href") or "")
    if channel.find(f"item/{ITUNES}duration") is not None:
        assert channel.findtext(f"{ITUNES}explicit") in ("true", "false")
        assert (channel.findtext(f"{ITUNES}author") or "").strip()


def check_atom_extensions(body: bytes) -> None:
    """atom:source complete, enclosure links with href and type, authors with a name."""
    for prefix, uri in _declared_namespaces(body).items():
        assert PREFIXES.get(prefix) == uri, (prefix, uri)
    root = ET.fromstring(body)
    alternates = [
        lk.get("href") for lk in root.findall(f"{ATOM}link") if lk.get("rel") == "alternate"
    ]
    assert alternates == ["https://agg.example/outputs/valid.html"]
    for e in root.findall(f"{ATOM}entry"):
        sources = e.findall(f"{ATOM}source")
        assert len(sources) == 1
        source = sources[0]
        assert (source.findtext(f"{ATOM}id") or "").strip()
        assert (source.findtext(f"{ATOM}title") or "").strip()
        assert RFC3339.match(source.findtext(f"{ATOM}updated") or "")
        assert source.findall(f"{ATOM}link"), "the source's link"
        for link in [*e.findall(f"{ATOM}link"), *source.findall(f"{ATOM}link")]:
            assert HTTP.match(link.get("href") or ""), link.attrib
            if link.get("rel") == "enclosure":
                assert link.get("type") is None or MIME.match(link.get("type") or "")
                assert link.get("length") is None or (link.get("length") or "").isdigit()
        for author in e.findall(f"{ATOM}author"):
            assert (author.findtext(f"{ATOM}name") or "").strip()
            email = author.findtext(f"{ATOM}email")
            assert email is None or EMAIL.match(email), email
            uri = author.findtext(f"{ATOM}uri")
            assert uri is None or HTTP.match(uri), uri
        for thumb in e.findall(f"{MEDIA}thumbnail"):
            assert HTTP.match(thumb.get("url") or "")


def check_json_extensions(doc: dict[str, Any]) -> None:
    """JSON Feed 1.1 attachments, authors and image as the spec defines them."""
    assert doc["home_page_url"] == "https://agg.example/outputs/valid.html"
    for item in doc["items"]:
        for att in item.get("attachments", []):
            assert HTTP.match(att["url"]) and MIME.match(att["mime_type"]), att
            assert set(att) <= {"url", "mime_type", "size_in_bytes", "duration_in_seconds"}
            for key in ("size_in_bytes", "duration_in_seconds"):
                assert key not in att or (isinstance(att[key], int) and att[key] >= 0)
        for author in item.get("authors", []):
            assert set(author) <= {"name", "url", "avatar"} and author.get("name"), author
            assert "url" not in author or re.match(r"^(https?://|mailto:)", author["url"])
            assert "avatar" not in author or HTTP.match(author["avatar"])
        assert "image" not in item or HTTP.match(item["image"])
        assert "url" not in item or HTTP.match(item["url"])


@pytest.mark.parametrize("name", FEEDS)
def test_extension_elements_are_valid(name: str) -> None:
    items = items_of(name)
    check_rss_extensions(render("rss", meta(), items))
    check_atom_extensions(render("atom", meta(), items))
    check_json_extensions(json.loads(render("json", meta(), items)))


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_every_page_links_the_html_page_as_channel_link(fmt: str) -> None:
    m = meta(page=2, has_next=True)
    parsed = _round_trip(render(fmt, m, items_of("rss20.xml")))  # type: ignore[arg-type]
    assert parsed.feed.link == "https://agg.example/outputs/valid.html"
    rels = {lk.rel: lk.href for lk in parsed.feed.links}
    assert rels["next"] == f"https://agg.example/outputs/valid.{fmt}?page=3"
    assert rels["first"] == f"https://agg.example/outputs/valid.{fmt}"
