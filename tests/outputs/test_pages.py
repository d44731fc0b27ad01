"""Pure pieces of the pages and their HTTP: sanitising, page rendering, caching decisions,
content negotiation, and WebSub pings against a loopback hub."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hubserver import Hub, hub
from test_publish_validity import check_html, items_of, meta

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.sanitize import sanitize_html, xml_safe
from aggregator.negotiate import prefers_html
from aggregator.outputs.httpcache import accepts_gzip, make_cached, not_modified, respond
from aggregator.outputs.pages import (
    OutputLink,
    SearchBox,
    render_index,
    render_output_page,
    render_status_page,
)
from aggregator.outputs.websub import HubNotifier, publish_form

__all__ = ["hub"]


@pytest.mark.parametrize(
    ("fragment", "base", "expected"),
    [
        ("<p>hi</p>", None, "<p>hi</p>"),
        ("<script>alert(1)</script>ok", None, "ok"),
        ('<img src="a.png" onerror="x()">', "https://s.example/p/q", '<img src="https://s.example/p/a.png">'),
        ('<a href="javascript:alert(1)">x</a>', None, '<a>x</a>'),
        (
            '<a href="/r">x</a>',
            "https://s.example/p",
            '<a href="https://s.example/r">x</a>',
        ),
        ('<a href="/r">x</a>', "not a url", '<a href="/r">x</a>'),
        ('<iframe src="https://e.example/"></iframe>k', None, "k"),
        ("<form action=/x><input name=a></form>f", None, "f"),
        ('<p style="color:red" onclick="x()">s</p>', None, "<p>s</p>"),
        ("<style>p{}</style>t", None, "t"),
        ("a\x0bb\x00c", None, "abc"),
        ("", "https://s.example/", ""),
    ],
)  # fmt: skip
def test_clean_html(fragment: str, base: str | None, expected: str) -> None:
    assert sanitize_html(fragment, base) == expected


def test_xml_safe_keeps_legal_whitespace() -> None:
    assert xml_safe("a\tb\nc\rd\x1fe\ufffe") == "a\tb\nc\rde"


def test_index_escapes_and_links_every_output() -> None:
    body = render_index(
        "https://agg.example",
        [OutputLink("a", "A <b>&", "desc <i>", 3), OutputLink("b", "B", None, 0)],
    )
    text = body.decode()
    check_html(body)
    assert "A &lt;b&gt;&amp;" in text and "desc &lt;i&gt;" in text
    for ext in ("html", "atom", "rss", "json", "opml"):
        assert f'href="https://agg.example/outputs/b.{ext}"' in text


def test_index_without_outputs_says_so() -> None:
    assert b"No outputs are configured." in render_index("https://agg.example", [])


def test_output_page_shows_title_source_time_and_summary() -> None:
    items = items_of("rss20.xml")
    text = render_output_page(meta(), items).decode()
    first = items[0]
    assert first.entry.title in text
    assert first.feed_title in text
    assert f'datetime="{first.entry.published.astimezone(UTC).isoformat()}"' in text
    assert "No entries yet." in render_output_page(meta(), []).decode()


def test_output_page_paging_navigation() -> None:
    text = render_output_page(meta(page=2, has_next=True), items_of("rss20.xml")).decode()
    assert 'rel="next" href="https://agg.example/outputs/valid.html?page=3"' in text
    assert 'rel="previous" href="https://agg.example/outputs/valid.html"' in text


def test_status_page_shows_every_field_escaped() -> None:
    feeds = {
        "a": {
            "url": "https://a.example/feed",
            "title": "A <feed>",
            "status": "error",
            "http_status": 500,
            "last_poll": "2024-01-15T12:00:00+00:00",
            "last_ok": None,
            "next_poll": "2024-01-15T12:30:00+00:00",
            "errors": 3,
            "last_error": "HTTP 500 <oops>",
            "warning": None,
            "entries": 0,
            "gone": False,
            "next_poll_reason": "backoff after 3 errors",  # a field this page does not know
        }
    }
    now = datetime(2024, 1, 15, 12, 12, tzinfo=UTC)
    body = render_status_page("https://agg.example", feeds, now)
    text = body.decode()
    check_html(body)
    assert "A &lt;feed&gt;" in text and "HTTP 500 &lt;oops&gt;" in text
    assert "backoff after 3 errors" in text
    assert (
        '<time datetime="2024-01-15T12:30:00+00:00" title="2024-01-15 12:30:00 UTC">'
        "in 18 min</time>" in text
    )
    assert ">12 min ago</time>" in text  # the last poll
    assert 'class="status error"' in text
    # No raw Python value anywhere on the page.
    for raw in ("None", "False", "True", "gone:"):
        assert raw not in text, raw


def test_status_page_summary_banner_and_failing_first() -> None:
    now = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)

    def feed(status: str, since: str | None = None) -> dict[str, object]:
        return {"url": "https://x.example/", "status": status, "failing_since": since}

    feeds = {
        "fine": feed("ok"),
        "newly-broken": feed("error", "2024-01-15T11:00:00+00:00"),
        "never": feed("pending"),
        "long-broken": feed("error", "2024-01-10T11:00:00+00:00"),
        "quiet": feed("not_modified"),
    }
    reload = {
        "status": "failed",
        "trigger": "file change",
        "at": "2024-01-15T11:57:00+00:00",
        "error": "invalid",
        "problems": ["feeds[3].url: 'ftp://x/' is not an http(s) URL"],
    }
    loaded = datetime(2024, 1, 15, 9, 0, tzinfo=UTC)
    text = render_status_page(
        "https://a.example", feeds, now, reload=reload, loaded=loaded
    ).decode()
    summary = text.split('id="summary">', 1)[1].split("</p>", 1)[0]
    assert ">5</span> feeds:" in summary
    assert ">1</span> ok" in summary and ">2</span> failing" in summary
    assert ">1</span> not modified" in summary and ">1</span> not polled yet" in summary
    assert "Config loaded" in summary and "3 h ago" in summary
    banner = text.split('id="reload-failed"', 1)[1].split("</div>", 1)[0]
    assert "3 min ago" in banner and "ftp://x/" in banner and "file change" in banner
    order = [n for n in feeds if f'id="feed-{n}"' in text]
    assert sorted(order, key=lambda n: text.index(f'id="feed-{n}"')) == [
        "long-broken",
        "newly-broken",
        "fine",
        "never",
        "quiet",
    ]
    assert ">5 days ago</time>" in text


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("br", False),
        ("", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    request = make_mocked_request("GET", "/", headers={"Accept-Encoding": header})
    assert accepts_gzip(request) is expected


def test_conditional_requests() -> None:
    last = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)

    def nm(**headers: str) -> bool:
        request = make_mocked_request("GET", "/", headers=headers)
        return not_modified(request, ('"v1"', '"v1-gzip"'), last)

    assert nm(**{"If-None-Match": '"v1"'})
    assert nm(**{"If-None-Match": 'W/"v1-gzip", "v0"'})
    assert nm(**{"If-None-Match": "*"})
    assert not nm(**{"If-None-Match": '"v0"'})
    # If-None-Match wins over If-Modified-Since.
    assert not nm(**{"If-None-Match": '"v0"', "If-Modified-Since": "Mon, 15 Jan 2024 12:00:00 GMT"})
    assert nm(**{"If-Modified-Since": "Mon, 15 Jan 2024 12:00:00 GMT"})
    assert not nm(**{"If-Modified-Since": "Mon, 15 Jan 2024 11:59:59 GMT"})
    assert not nm(**{"If-Modified-Since": "yesterday"})
    assert not nm()


def test_respond_compresses_once_and_tags_each_encoding() -> None:
    body = b"<p>entry</p>" * 200
    cached = make_cached(body, "text/html", None)
    assert cached.gzipped is not None and gzip.decompress(cached.gzipped) == body
    assert make_cached(body, "text/html", None).gzipped == cached.gzipped  # deterministic
    plain = respond(make_mocked_request("GET", "/"), cached, "no-cache")
    zipped = respond(
        make_mocked_request("GET", "/", headers={"Accept-Encoding": "gzip"}), cached, "no-cache"
    )
    assert plain.body == body and "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    assert "Accept-Encoding" in zipped.headers["Vary"]
    small = make_cached(b"tiny", "text/plain", None)
    assert small.gzipped is None


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html", True),
        ("text/html;q=0", False),
    ],
)
def test_status_content_negotiation(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_publish_form_names_every_topic() -> None:
    assert publish_form(["https://a/x.atom", "https://a/x.rss"]) == [
        ("hub.mode", "publish"),
        ("hub.url", "https://a/x.atom"),
        ("hub.url", "https://a/x.rss"),
    ]


def _config(hub_url: str | None) -> Config:
    data: dict[str, object] = {
        "aggregator": {"base_url": "https://agg.example", "timeout": "2s"},
        "feeds": [{"name": "f", "url": "https://f.example/feed"}],
        "outputs": [{"name": "one", "title": "One"}, {"name": "two", "title": "Two"}],
    }
    if hub_url:
        data["aggregator"]["hub"] = hub_url  # type: ignore[index]
    return parse_config(data)


def test_notifier_pings_only_changed_outputs(hub: Hub) -> None:
    config = _config(hub.url)
    etags = {"one": '"1"', "two": '"2"'}
    results: list[str] = []

    async def etag_of(name: str) -> str:
        return etags[name]

    async def scenario() -> list[list[str]]:
        notifier = HubNotifier(lambda: config, etag_of, results.append)
        await notifier.seed()
        rounds = [await notifier.check()]  # nothing changed since the seed
        etags["two"] = '"2b"'
        rounds.append(await notifier.check())
        rounds.append(await notifier.check())  # announced already
        return rounds

    assert asyncio.run(scenario()) == [[], ["two"], []]
    [ping] = hub.pings
    assert ping.mode == "publish"
    assert ping.urls == [f"https://agg.example/outputs/two.{f}" for f in ("atom", "rss", "json")]
    assert results == ["ok"]


def test_a_failing_hub_is_counted_not_raised(hub: Hub) -> None:
    hub.status = 500
    config = _config(hub.url)
    results: list[str] = []
    state = {"etag": '"a"'}

    async def etag_of(name: str) -> str:
        return state["etag"]

    async def scenario() -> list[str]:
        notifier = HubNotifier(lambda: config, etag_of, results.append)
        await notifier.seed()
        state["etag"] = '"b"'
        changed = await notifier.check()
        # An unreachable hub: a closed port on loopback.
        with socket_closed_port() as port:
            unreachable = _config(f"http://127.0.0.1:{port}/hub")
            other = HubNotifier(lambda: unreachable, etag_of, results.append)
            state["etag"] = '"c"'
            changed += await other.check()
        return changed

    assert asyncio.run(scenario()) == ["one", "two", "one", "two"]
    assert results == ["error", "error"]


def test_no_hub_no_pings() -> None:
    async def etag_of(name: str) -> str:
        return str(datetime.now(UTC) + timedelta(seconds=1))

    config = _config(None)
    notifier = HubNotifier(lambda: config, etag_of)
    assert asyncio.run(notifier.check()) == []


class socket_closed_port:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        return None


def test_web_response_is_aiohttp_response() -> None:
    cached = make_cached(b"x", "text/plain", None)
    assert isinstance(respond(make_mocked_request("HEAD", "/"), cached, "no-cache"), web.Response)


def test_index_shows_counts_and_private_links_carry_their_token() -> None:
    updated = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    body = render_index(
        "https://agg.example",
        [
            OutputLink("a", "A", None, 3, entries=42, updated=updated, failing=1),
            OutputLink("p", "P", None, 1, entries=1, query="token=s%3Dcret"),
        ],
    )
    text = body.decode()
    check_html(body)
    a = text.split('id="output-a"', 1)[1].split("</li>", 1)[0]
    assert "42 entries" in a and "3 sources" in a and "1 failing" in a
    assert '<time datetime="2024-01-15T12:00:00+00:00">2024-01-15 12:00 UTC</time>' in a
    p = text.split('id="output-p"', 1)[1].split("</li>", 1)[0]
    assert "1 entry" in p and "1 source" in p and "failing" not in p
    assert 'href="https://agg.example/outputs/p.atom?token=s%3Dcret"' in p


def test_search_box_keeps_a_private_outputs_token_and_shows_the_query() -> None:
    private = replace(meta(), link_query="token=s%3Dcret")
    box = SearchBox("C# <b>", "russia", (("russia", "Russia"), ("world", "World")))
    body = render_output_page(private, items_of("rss20.xml")[:1], box)
    text = body.decode()
    check_html(body)
    assert '<input type="hidden" name="token" value="s=cret">' in text
    assert 'value="C# &lt;b&gt;"' in text and "matching “C# &lt;b&gt;” from Russia" in text
    assert '<option value="russia" selected>Russia</option>' in text
    assert 'href="https://agg.example/outputs/valid.html?token=s%3Dcret">show all</a>' in text
