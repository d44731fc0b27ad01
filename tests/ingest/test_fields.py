"""No dangerous URL reaches an output or a page: hostile URLs in every field of every input
format, dropped at ingest and again at render (rows stored by older versions), outputs parsed
back; and the plain-text fields (entity-decoded titles, titles from first words)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_publish_validity import check_html
from tests_support import DATA

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.fields import first_words, plain_text, safe_email, safe_person_url, safe_url
from aggregator.ingest.parse import parse_feed
from aggregator.ingest.poll import digest
from aggregator.ingest.sanitize import xml_safe
from aggregator.models import Enclosure, Entry, Media, Person, PollRecord
from aggregator.outputs.plan import render_output
from aggregator.store.sqlite import SqliteStore as Store

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
HOSTILE = {
    "rss": "hostile-urls.rss.xml",
    "atom": "hostile-urls.atom.xml",
    "json": "hostile-urls.json",
    "content": "hostile.xml",
}
# feedparser reports an Atom entry's id as its link when it has no alternate link: ours are
# urn:uuid ids, which no reader opens.
SAFE = re.compile(r"^(https?://\S+|mailto:[^\s@]+@\S+|urn:uuid:[0-9a-f-]{36})$")
BAD = re.compile(r"(?i)^\s*(javascript|data|vbscript|file)\s*:")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.example/x?y=1", "https://a.example/x?y=1"),
        ("  http://a.example/  ", "http://a.example/"),
        ("HTTPS://A.example/", "HTTPS://A.example/"),
        ("javascript:alert(1)", None),
        ("JavaScript:alert(1)", None),
        (" java\tscript:alert(1)", None),
        ("data:text/html,<script>", None),
        ("vbscript:msgbox(1)", None),
        ("file:///etc/passwd", None),
        ("mailto:a@b.example", None),  # not where an e-mail belongs
        ("//a.example/x", None),
        ("/relative", None),
        ("https:///nohost", None),
        ("http://[::1", None),
        ("https://a.example/with space", None),
        ("https://a.example/\ufffe", None),  # XML forbids it: lxml would refuse the output
        ("", None),
        (None, None),
    ],
)
def test_safe_url(url: str | None, expected: str | None) -> None:
    assert safe_url(url) == expected


def test_addresses_only_where_an_address_belongs() -> None:
    assert safe_email("mailto:ada@radio.example.net") == "ada@radio.example.net"
    assert safe_email("ada@radio.example.net") == "ada@radio.example.net"
    assert safe_email("javascript:alert(1)") is None
    assert safe_email("ada@localhost") is None
    assert safe_person_url("mailto:ada@radio.example.net") == "mailto:ada@radio.example.net"
    assert safe_person_url("mailto:javascript:alert(1)") is None
    assert safe_person_url("https://ada.example/") == "https://ada.example/"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Blog &#8211; InfluxData", "Blog – InfluxData"),
        ("Blog &#x2013; InfluxData", "Blog – InfluxData"),
        ("Fish &amp; chips", "Fish & chips"),
        ("AT&T and Q&A", "AT&T and Q&A"),
        ("&copy2024 stays", "&copy2024 stays"),
        ("  many \n spaces ", "many spaces"),
    ],
)
def test_plain_text(text: str, shown: str) -> None:
    assert plain_text(text) == shown


def test_first_words() -> None:
    words = "<p>" + " ".join(f"word{i}" for i in range(40)) + "</p>"
    title = first_words(words)
    assert title.endswith("…") and len(title) <= 81 and " word1" in title
    assert not title[:-1].endswith(" ")
    assert first_words("<p>Short &amp; sweet</p>") == "Short & sweet"
    assert first_words("") == ""
    cjk = "这是一个没有空格的句子" * 10
    assert first_words(cjk) == cjk[:80] + "…"


def stored(tmp_path: Path) -> Store:
    """The hostile fixtures as a poll stores them: parsed, keyed and sanitised once (a render
    does not sanitise content again)."""
    store = Store(tmp_path / "hostile.db")
    for name, filename in HOSTILE.items():
        url = f"https://feeds.example/{filename}"
        ctype = {"Content-Type": "application/feed+json"} if filename.endswith(".json") else {}
        d = digest(name, (DATA / filename).read_bytes(), ctype, url, NOW, {})
        feed, new = d.feed, d.new
        record = PollRecord(name, url, NOW, "ok", None, title=feed.title, link=feed.link, new=new)
        store.record_poll(record)
    return store


def config() -> Config:
    return parse_config(
        {
            "aggregator": {"base_url": "https://agg.example"},
            "feeds": [{"name": n, "url": f"https://feeds.example/{f}"} for n, f in HOSTILE.items()],
            "outputs": [{"name": "trap", "title": "Trap", "dedupe": "off"}],
        }
    )


def _urls_of_feedparser(result: Any) -> list[str]:
    """Every URL a reader takes from a parsed Atom or RSS document."""
    urls = [result.feed.get("link", "")]
    urls += [lk.get("href", "") for lk in result.feed.get("links", [])]
    for e in result.entries:
        urls.append(e.get("link", ""))
        urls += [lk.get("href", "") for lk in e.get("links", [])]
        urls += [a.get("href", "") for a in e.get("authors", [])]
        urls += [c.get("url", "") for c in e.get("media_content", [])]
        urls += [t.get("url", "") for t in e.get("media_thumbnail", [])]
        if "image" in e:
            urls.append(e.image.get("href", ""))
        source = e.get("source", {})
        urls += [source.get("href", ""), *(lk.get("href", "") for lk in source.get("links", []))]
    return [u for u in urls if u]


def _urls_of_json(doc: dict[str, Any]) -> list[str]:
    urls = [doc["home_page_url"], doc["feed_url"]]
    for item in doc["items"]:
        urls += [item.get(k, "") for k in ("url", "external_url", "image", "banner_image")]
        for author in item.get("authors", []):
            urls += [author.get("url", ""), author.get("avatar", "")]
        urls += [a["url"] for a in item.get("attachments", [])]
        for source in item["_aggregator"]["sources"]:
            urls += [source.get("url", ""), source.get("link", "")]
    return [u for u in urls if u]


def _urls_of_html(body: bytes) -> list[str]:
    checker = check_html(body)  # no script, handlers, javascript: or data: anywhere
    return [
        v or ""
        for _, attrs in checker.tags
        for k, v in attrs.items()
        if k in ("href", "src", "poster")
    ]


def urls_in(fmt: str, body: bytes) -> list[str]:
    if fmt == "json":
        return _urls_of_json(json.loads(body))
    if fmt == "html":
        return _urls_of_html(body)
    result = feedparser.parse(body)
    assert not result.bozo, result.get("bozo_exception")
    # Raw too: an attribute or a URL element feedparser would not report.
    text = body.decode("utf-8")
    assert not re.search(r'(?i)(href|src|url|uri)="\s*(javascript|data|vbscript|file):', text)
    assert not re.search(r"(?i)<(link|uri|url|id)>\s*(javascript|data|vbscript|file):", text)
    return _urls_of_feedparser(result)


@pytest.mark.parametrize("fmt", ["atom", "rss", "json", "html"])
def test_hostile_urls_never_reach_an_output(tmp_path: Path, fmt: str) -> None:
    store = stored(tmp_path)
    try:
        body = render_output(store, config(), "trap", fmt).body  # type: ignore[arg-type]
    finally:
        store.close()
    urls = urls_in(fmt, body)
    assert urls
    assert all(SAFE.match(u) for u in urls), [u for u in urls if not SAFE.match(u)]
    # The entries themselves are kept, with what was safe in them.
    assert "Link that runs script" in body.decode("utf-8")
    assert "https://files.trap.example/ok.mp3" in body.decode("utf-8")
    assert "https://files.trap.example/real.mp3" in body.decode("utf-8")
    assert "https://files.trap.example/fine.ogg" in body.decode("utf-8")


def test_hostile_urls_are_dropped_at_ingest() -> None:
    rss = parse_feed("rss", (DATA / HOSTILE["rss"]).read_bytes(), {}, "https://f.example/")
    assert rss.link is None
    first, second = rss.entries[0], rss.entries[1]
    assert (first.link, first.media.enclosures, first.media.image) == (None, (), "")
    assert second.link is None
    assert [f.url for f in second.media.enclosures] == ["https://files.trap.example/ok.mp3"]
    atom = parse_feed("atom", (DATA / HOSTILE["atom"]).read_bytes(), {}, "https://f.example/")
    [entry] = atom.entries
    assert entry.link is None and atom.link is None
    assert [(p.name, p.url, p.email) for p in entry.authors] == [
        ("Mallory", "", ""),
        ("Trent", "mailto:trent@trap.example", ""),
    ]
    ctype = {"Content-Type": "application/feed+json"}
    doc = parse_feed("json", (DATA / HOSTILE["json"]).read_bytes(), ctype, "https://f.example/")
    item = doc.entries[0]
    assert item.link is None and item.media.image == "" and doc.link is None
    assert [(p.name, p.url, p.avatar) for p in item.authors] == [
        ("Mallory", "", ""),
        ("Walter", "https://walter.trap.example/", "https://walter.trap.example/me.png"),
    ]


def test_rows_stored_before_the_checks_are_cleaned_at_render(tmp_path: Path) -> None:
    """An older version stored URLs as the feed gave them: render drops the bad ones."""
    store = Store(tmp_path / "old.db")
    old = Entry(
        feed="rss",
        key="guid:old",
        key_kind="guid",
        uid="urn:uuid:00000000-0000-5000-8000-000000000001",
        guid="old",
        link="javascript:alert('stored')",
        title="Stored long ago",
        summary="An old row.",
        content="",
        author="Old",
        categories=(),
        published=NOW,
        updated=NOW,
        date_known=True,
        content_hash="x",
        authors=(Person(name="Old", url="javascript:alert('who')", avatar="data:x"),),
        media=Media(
            enclosures=(Enclosure("javascript:alert('file')", "audio/mpeg", 1),),
            image="vbscript:msgbox(1)",
        ),
    )
    try:
        # Written as an older version would have: straight into the table.
        store.record_poll(PollRecord("rss", "https://feeds.example/x", NOW, "ok", None, new=(old,)))
        store.db.execute(
            "UPDATE entries SET media = ?, authors = ? WHERE key = 'guid:old'",
            [
                '{"enclosures":[{"url":"javascript:alert(1)","type":"audio/mpeg"}],"image":"data:x"}',
                '[{"name":"Old","url":"javascript:alert(2)"}]',
            ],
        )
        store.db.execute("UPDATE feeds SET link = 'javascript:alert(3)' WHERE name = 'rss'")
        store.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        cfg = config()
        for fmt in ("atom", "rss", "json", "html"):
            body = render_output(store, cfg, "trap", fmt).body  # type: ignore[arg-type]
            urls = urls_in(fmt, body)
            assert all(SAFE.match(u) for u in urls), (fmt, [u for u in urls if not SAFE.match(u)])
            assert "Stored long ago" in body.decode("utf-8")
    finally:
        store.close()


def test_plain_fields_of_the_hostile_feed(tmp_path: Path) -> None:
    store = stored(tmp_path)
    try:
        cfg = config()
        result = feedparser.parse(render_output(store, cfg, "trap", "rss").body)
        page = render_output(store, cfg, "trap", "html").body.decode("utf-8")
        doc = json.loads(render_output(store, cfg, "trap", "json").body)
    finally:
        store.close()
    titles = [e.title for e in result.entries]
    # Escaped twice by the publisher, shown once decoded, in every plain-text field.
    assert "Blog – InfluxData & friends" in titles
    assert "Blog – InfluxData &amp; friends" in page  # HTML-escaped once, as text must be
    assert "&amp;#8211;" not in page and "&#8211;" not in page
    assert "Blog – Trap Door" in {i["_aggregator"]["source"]["title"] for i in doc["items"]}
    # An untitled entry is titled by its first words; the empty <item/> and JSON item are gone.
    assert any(t.startswith("An entry without a title is named by its first words") for t in titles)
    assert "(untitled)" not in page and all(t.strip() for t in titles)
    # 4 of 5 RSS items, 1 Atom entry, 1 of 2 JSON items, 2 of hostile.xml.
    assert len(result.entries) == len(doc["items"]) == 8


@given(st.text(max_size=60), st.sampled_from(["", "http://", "https://", "javascript:", " data:"]))
def test_safe_url_lets_through_only_http_urls(tail: str, head: str) -> None:
    result = safe_url(head + tail)
    if result is not None:
        assert result.lower().startswith(("http://", "https://"))
        assert not re.search(r"[\x00-\x20\x7f]", result)
        assert xml_safe(result) == result  # lxml accepts it in an attribute
