"""Tests for the loopback feed server (tests/feedserver.py) and the fixtures in tests/data/."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.client import HTTPResponse
from pathlib import Path
from typing import NamedTuple

import feedparser
import pytest
from feedserver import DATA_DIR, FeedServer, feed_server

__all__ = ["feed_server"]  # the fixture, imported so pytest finds it here


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    follow_redirects: bool = True,
    timeout: float = 5.0,
) -> Reply:
    """GET ``url`` with urllib; non-2xx answers are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = (
        urllib.request.build_opener()
        if follow_redirects
        else urllib.request.build_opener(_NoRedirect())
    )
    try:
        response: HTTPResponse = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())
    with response:
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.headers.items()},
            response.read(),
        )


# --------------------------------------------------------------------------- basic serving


def test_serves_file_with_validators(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    reply = fetch(feed_server.url("feed.xml"))
    assert reply.status == 200
    assert reply.body == (DATA_DIR / "rss20.xml").read_bytes()
    assert reply.headers["content-type"] == "application/rss+xml"
    assert re.fullmatch(r'"[0-9a-f]{32}"', reply.headers["etag"])
    modified = parsedate_to_datetime(reply.headers["last-modified"])
    assert abs((datetime.now(UTC) - modified).total_seconds()) < 5
    assert reply.headers["last-modified"].endswith(" GMT")
    assert "content-encoding" not in reply.headers


def test_base_url_and_url(feed_server: FeedServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", feed_server.base_url)
    assert feed_server.url("/a/b") == feed_server.base_url + "/a/b"
    assert feed_server.url("a/b") == feed_server.base_url + "/a/b"


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("atom10.xml", "application/atom+xml"),
        ("atom03.xml", "application/atom+xml"),
        ("rss091.xml", "application/rss+xml"),
        ("rss10.rdf", "application/rdf+xml"),
        ("jsonfeed11.json", "application/feed+json"),
        ("not-a-feed.html", "text/html; charset=utf-8"),
    ],
)
def test_content_type_guessing(feed_server: FeedServer, filename: str, content_type: str) -> None:
    feed_server.serve_file("/f", filename)
    assert fetch(feed_server.url("/f")).headers["content-type"] == content_type


def test_explicit_content_type_and_extra_headers(feed_server: FeedServer) -> None:
    feed_server.serve_file(
        "/f", "rss20.xml", "text/xml; charset=utf-8", headers={"Cache-Control": "max-age=60"}
    )
    reply = fetch(feed_server.url("/f"))
    assert reply.headers["content-type"] == "text/xml; charset=utf-8"
    assert reply.headers["cache-control"] == "max-age=60"


def test_head_request(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    reply = fetch(feed_server.url("/feed.xml"), method="HEAD")
    assert reply.status == 200
    assert reply.body == b""
    assert "etag" in reply.headers


def test_unknown_path_is_404(feed_server: FeedServer) -> None:
    assert fetch(feed_server.url("/nothing-here")).status == 404
    feed_server.serve_file("/gone", "rss20.xml")
    feed_server.remove("/gone")
    assert fetch(feed_server.url("/gone")).status == 404


def test_query_string_is_ignored_for_routing(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    assert fetch(feed_server.url("/feed.xml?page=2")).status == 200
    (record,) = feed_server.requests("/feed.xml")
    assert record.query_string == "page=2"


# --------------------------------------------------------------------------- conditional GET


def test_if_none_match_gives_304(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    first = fetch(feed_server.url("/feed.xml"))
    etag = first.headers["etag"]

    second = fetch(feed_server.url("/feed.xml"), {"If-None-Match": etag})
    assert second.status == 304
    assert second.body == b""
    assert second.headers["etag"] == etag

    weak = fetch(feed_server.url("/feed.xml"), {"If-None-Match": f'"other", W/{etag}'})
    assert weak.status == 304

    other = fetch(feed_server.url("/feed.xml"), {"If-None-Match": '"something-else"'})
    assert other.status == 200
    assert other.body == first.body


def test_if_none_match_takes_precedence_over_if_modified_since(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    first = fetch(feed_server.url("/feed.xml"))
    reply = fetch(
        feed_server.url("/feed.xml"),
        {"If-None-Match": '"stale"', "If-Modified-Since": first.headers["last-modified"]},
    )
    assert reply.status == 200


def test_if_modified_since_gives_304(feed_server: FeedServer) -> None:
    modified = datetime(2023, 10, 11, 9, 12, tzinfo=UTC)
    feed_server.serve_file("/feed.xml", "rss20.xml", last_modified=modified)
    first = fetch(feed_server.url("/feed.xml"))
    assert first.headers["last-modified"] == "Wed, 11 Oct 2023 09:12:00 GMT"

    same = fetch(
        feed_server.url("/feed.xml"), {"If-Modified-Since": first.headers["last-modified"]}
    )
    assert same.status == 304
    assert same.body == b""
    assert same.headers["last-modified"] == first.headers["last-modified"]

    later = format_datetime(modified + timedelta(days=1), usegmt=True)
    assert fetch(feed_server.url("/feed.xml"), {"If-Modified-Since": later}).status == 304

    earlier = format_datetime(modified - timedelta(seconds=1), usegmt=True)
    reply = fetch(feed_server.url("/feed.xml"), {"If-Modified-Since": earlier})
    assert reply.status == 200
    assert reply.body == first.body

    garbage = fetch(feed_server.url("/feed.xml"), {"If-Modified-Since": "yesterday"})
    assert garbage.status == 200


def test_editing_a_feed_changes_validators(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    first = fetch(feed_server.url("/feed.xml"))
    # Edited within the same second: Last-Modified must still move forward.
    feed_server.serve_file("/feed.xml", "rss20-edited.xml")
    second = fetch(
        feed_server.url("/feed.xml"),
        {"If-None-Match": first.headers["etag"]},
    )
    assert second.status == 200
    assert second.body == (DATA_DIR / "rss20-edited.xml").read_bytes()
    assert second.headers["etag"] != first.headers["etag"]
    assert parsedate_to_datetime(second.headers["last-modified"]) > parsedate_to_datetime(
        first.headers["last-modified"]
    )
    ims = fetch(feed_server.url("/feed.xml"), {"If-Modified-Since": first.headers["last-modified"]})
    assert ims.status == 200


def test_validators_can_be_disabled_or_fixed(feed_server: FeedServer) -> None:
    feed_server.serve_bytes("/plain", b"<rss/>", etag=False, last_modified=False)
    reply = fetch(feed_server.url("/plain"))
    assert reply.status == 200
    assert "etag" not in reply.headers
    assert "last-modified" not in reply.headers
    assert reply.headers["content-type"] == "application/xml"
    # Without validators, conditional headers are ignored.
    assert fetch(feed_server.url("/plain"), {"If-None-Match": "*"}).status == 200

    feed_server.serve_bytes("/weak", b"<rss/>", etag='W/"v1"')
    assert fetch(feed_server.url("/weak")).headers["etag"] == 'W/"v1"'
    assert fetch(feed_server.url("/weak"), {"If-None-Match": '"v1"'}).status == 304


# --------------------------------------------------------------------------- statuses, redirects


@pytest.mark.parametrize("status", [403, 404, 410, 500, 503])
def test_serve_status(feed_server: FeedServer, status: int) -> None:
    feed_server.serve_status("/broken", status, body=b"nope")
    reply = fetch(feed_server.url("/broken"))
    assert reply.status == status
    assert reply.body == b"nope"


def test_serve_status_with_headers(feed_server: FeedServer) -> None:
    feed_server.serve_status("/busy", 429, {"Retry-After": "120"})
    reply = fetch(feed_server.url("/busy"))
    assert reply.status == 429
    assert reply.headers["retry-after"] == "120"
    assert reply.body == b""


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect(feed_server: FeedServer, status: int) -> None:
    feed_server.serve_file("/new.xml", "atom10.xml")
    feed_server.serve_redirect("/old.xml", "/new.xml", status)

    reply = fetch(feed_server.url("/old.xml"), follow_redirects=False)
    assert reply.status == status
    assert reply.headers["location"] == feed_server.url("/new.xml")

    feed_server.reset_log()
    followed = fetch(feed_server.url("/old.xml"))
    assert followed.status == 200
    assert followed.body == (DATA_DIR / "atom10.xml").read_bytes()
    assert [(r.path, r.status) for r in feed_server.requests()] == [
        ("/old.xml", status),
        ("/new.xml", 200),
    ]


# --------------------------------------------------------------------------- gzip


def test_gzip_when_asked(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    original = (DATA_DIR / "rss20.xml").read_bytes()

    reply = fetch(feed_server.url("/feed.xml"), {"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.headers["content-encoding"] == "gzip"
    assert gzip.decompress(reply.body) == original
    assert len(reply.body) < len(original)

    # gzip wins even when deflate is listed first; q=0 refuses it.
    assert fetch(feed_server.url("/feed.xml"), {"Accept-Encoding": "deflate, gzip"}).headers[
        "content-encoding"
    ] == ("gzip")
    refused = fetch(feed_server.url("/feed.xml"), {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    assert refused.body == original


# --------------------------------------------------------------------------- request log


def test_request_log(feed_server: FeedServer) -> None:
    feed_server.serve_file("/a.xml", "rss20.xml")
    before = time.time()
    fetch(feed_server.url("/a.xml"), {"User-Agent": "feedserver-test/1.0"})
    fetch(feed_server.url("/a.xml"), {"If-None-Match": '"x"'})
    fetch(feed_server.url("/missing"))

    log = feed_server.requests()
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/a.xml", 200),
        ("GET", "/a.xml", 200),
        ("GET", "/missing", 404),
    ]
    assert log[0].headers["User-Agent"] == "feedserver-test/1.0"
    assert log[0].headers["user-agent"] == "feedserver-test/1.0"  # case-insensitive
    assert log[1].headers.get("IF-NONE-MATCH") == '"x"'
    assert before <= log[0].time <= log[1].time <= time.time()
    assert log[0].monotonic <= log[1].monotonic
    assert len(feed_server.requests("/a.xml")) == 2
    assert len(feed_server.requests("a.xml")) == 2
    assert feed_server.requests("/missing")[0].status == 404

    feed_server.reset_log()
    assert feed_server.requests() == []


# --------------------------------------------------------------------------- huge and slow


def test_huge_is_streamed_chunked(feed_server: FeedServer) -> None:
    size = 3 * 1024 * 1024 + 17
    feed_server.serve_huge("/huge.xml", size)
    reply = fetch(feed_server.url("/huge.xml"))
    assert reply.status == 200
    assert reply.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in reply.headers
    assert len(reply.body) == size
    assert reply.body.startswith(b"<?xml")
    assert reply.body.endswith(b"</rss>\n")


def test_huge_is_well_formed_xml(feed_server: FeedServer) -> None:
    feed_server.serve_huge("/huge.xml", 200_000)
    body = fetch(feed_server.url("/huge.xml")).body
    parsed = feedparser.parse(body)
    assert not parsed.bozo
    assert len(parsed.entries) > 100


def test_huge_client_may_hang_up(feed_server: FeedServer) -> None:
    feed_server.serve_huge("/huge.xml", 500 * 1024 * 1024)
    request = urllib.request.Request(feed_server.url("/huge.xml"))
    with urllib.request.urlopen(request, timeout=5) as response:
        assert len(response.read(256 * 1024)) == 256 * 1024
    # The server survives the client going away mid-stream.
    feed_server.serve_file("/ok.xml", "rss20.xml")
    assert fetch(feed_server.url("/ok.xml")).status == 200


def test_slow_path_times_out_the_client(feed_server: FeedServer) -> None:
    feed_server.serve_file("/slow.xml", "rss20.xml")
    feed_server.serve_slow("/slow.xml", 0.6)
    started = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        fetch(feed_server.url("/slow.xml"), timeout=0.2)
    assert time.monotonic() - started < 0.5

    started = time.monotonic()
    reply = fetch(feed_server.url("/slow.xml"), timeout=5)
    assert time.monotonic() - started >= 0.6
    assert reply.status == 200
    assert reply.body == (DATA_DIR / "rss20.xml").read_bytes()


def test_slow_unconfigured_path_serves_a_feed(feed_server: FeedServer) -> None:
    feed_server.serve_slow("/slow", 0.05)
    reply = fetch(feed_server.url("/slow"))
    assert reply.status == 200
    assert len(feedparser.parse(reply.body).entries) == 1


# --------------------------------------------------------------------------- lifecycle


def test_close_is_fast_even_with_a_pending_slow_request() -> None:
    server = FeedServer()
    server.serve_slow("/slow", 30)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            fetch(server.url("/slow"), timeout=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.2)  # let the request reach the sleeping handler
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 1.0
    thread.join(5)
    assert not thread.is_alive()
    server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url("/slow"), timeout=1)


def test_context_manager_and_parallel_servers() -> None:
    with FeedServer() as one, FeedServer() as two:
        assert one.base_url != two.base_url
        one.serve_bytes("/x", b"one")
        two.serve_bytes("/x", b"two")
        assert fetch(one.url("/x")).body == b"one"
        assert fetch(two.url("/x")).body == b"two"


def test_configure_from_many_threads(feed_server: FeedServer) -> None:
    def worker(n: int) -> None:
        for i in range(20):
            feed_server.serve_bytes(f"/t{n}", f"<rss>{n}-{i}</rss>".encode())
            assert fetch(feed_server.url(f"/t{n}")).body == f"<rss>{n}-{i}</rss>".encode()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(feed_server.requests()) == 80


# --------------------------------------------------------------------------- fixture table


class FixtureRow(NamedTuple):
    filename: str
    entries: int
    bozo: bool | None  # None for JSON Feed (n/a)


def _readme_rows() -> list[FixtureRow]:
    rows: list[FixtureRow] = []
    for line in (DATA_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|[^|]*\|\s*(\d+)\s*\|\s*(true|false|n/a)\s*\|", line)
        if match:
            bozo = {"true": True, "false": False, "n/a": None}[match.group(3)]
            rows.append(FixtureRow(match.group(1), int(match.group(2)), bozo))
    return rows


README_ROWS = _readme_rows()


def test_readme_lists_every_fixture() -> None:
    listed = {row.filename for row in README_ROWS}
    present = {p.name for p in DATA_DIR.iterdir() if p.is_file() and p.name != "README.md"}
    # world/: feeds in other languages and scripts, listed with their folder.
    present |= {f"world/{p.name}" for p in (DATA_DIR / "world").iterdir()}
    assert listed == present


@pytest.mark.parametrize("row", README_ROWS, ids=[row.filename for row in README_ROWS])
def test_fixture_matches_readme(row: FixtureRow) -> None:
    path: Path = DATA_DIR / row.filename
    if row.filename.endswith(".json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["version"].startswith("https://jsonfeed.org/version/1")
        assert len(document["items"]) == row.entries
        return
    parsed = feedparser.parse(str(path))
    assert len(parsed.entries) == row.entries
    assert bool(parsed.bozo) is row.bozo
    # Untitled entries are there on purpose (hostile-urls.rss.xml): the titled must differ.
    titles = [entry.get("title") for entry in parsed.entries if entry.get("title")]
    assert len(set(titles)) == len(titles), "entry titles must be distinct"


@pytest.fixture
def served_fixtures(feed_server: FeedServer) -> Iterator[FeedServer]:
    for row in README_ROWS:
        feed_server.serve_file("/" + row.filename, row.filename)
    yield feed_server


def test_fixtures_parse_the_same_over_http(served_fixtures: FeedServer) -> None:
    for row in README_ROWS:
        if row.filename.endswith(".json"):
            continue
        body = fetch(served_fixtures.url(row.filename)).body
        assert len(feedparser.parse(body).entries) == row.entries, row.filename
