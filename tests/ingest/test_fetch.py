"""Loopback tests of aggregator.ingest.fetch: a real Fetcher against the real feed server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from feedserver import DATA_DIR, FeedServer

from aggregator import PROJECT_URL
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.errors import FetchError
from aggregator.ingest.fetch import MAX_REDIRECTS, Fetcher
from aggregator.models import Fetched, NotModified

T = TypeVar("T")
RSS20 = (DATA_DIR / "rss20.xml").read_bytes()


def run_with_fetcher(
    fn: Callable[[Fetcher], Awaitable[T]],
    *,
    timeout: float = 10.0,
    max_body_size: int = 1024 * 1024,
    max_concurrency: int = 4,
) -> T:
    """Run `fn(fetcher)` in a fresh event loop, with the session closed afterwards."""

    async def main() -> T:
        async with Fetcher(
            user_agent=DEFAULT_USER_AGENT,
            timeout=timeout,
            max_body_size=max_body_size,
            max_concurrency=max_concurrency,
        ) as fetcher:
            return await fn(fetcher)

    return asyncio.run(main())


def fetch_one(url: str, *, max_body_size: int = 1024 * 1024) -> Fetched:
    result = run_with_fetcher(lambda f: f.fetch("feed", url), max_body_size=max_body_size)
    assert isinstance(result, Fetched)
    return result


def fetch_error(url: str, *, timeout: float = 10.0, max_body_size: int = 1024 * 1024) -> FetchError:
    with pytest.raises(FetchError) as info:
        run_with_fetcher(
            lambda f: f.fetch("feed", url), timeout=timeout, max_body_size=max_body_size
        )
    assert info.value.feed == "feed"
    return info.value


def test_200_returns_body_final_url_and_validators(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")

    result = fetch_one(url)

    assert result.status == 200
    assert result.body == RSS20
    assert result.url == url
    assert result.validators.etag is not None
    assert result.validators.etag.startswith('"')
    assert result.validators.last_modified is not None
    assert result.validators.last_modified.endswith("GMT")
    assert result.headers["Content-Type"] == "application/rss+xml"


def test_user_agent_names_the_project(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")

    fetch_one(feed_server.url("/feed.xml"))

    [request] = feed_server.requests("/feed.xml")
    agent = request.headers["User-Agent"]
    assert "feed-aggregator" in agent
    assert PROJECT_URL in agent
    assert "feed" in request.headers["Accept"]


def test_conditional_get_sends_validators_back_verbatim(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")
    url = feed_server.url("/feed.xml")

    async def twice(fetcher: Fetcher) -> tuple[Fetched | NotModified, Fetched | NotModified]:
        first = await fetcher.fetch("feed", url)
        assert isinstance(first, Fetched)
        return first, await fetcher.fetch("feed", url, first.validators)

    first, second = run_with_fetcher(twice)

    assert isinstance(first, Fetched)
    assert isinstance(second, NotModified)
    assert second.url == url
    plain, conditional = feed_server.requests("/feed.xml")
    assert "If-None-Match" not in plain.headers
    assert "If-Modified-Since" not in plain.headers
    sent = {k.lower(): v for k, v in first.headers.items()}
    assert conditional.headers["If-None-Match"] == sent["etag"] == first.validators.etag
    assert conditional.headers["If-Modified-Since"] == sent["last-modified"]
    assert first.validators.last_modified == sent["last-modified"]
    assert conditional.status == 304


def test_last_modified_alone_gives_not_modified(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml", etag=False)
    url = feed_server.url("/feed.xml")
    first = fetch_one(url)
    assert first.validators.etag is None
    assert first.validators.last_modified is not None

    second = run_with_fetcher(lambda f: f.fetch("feed", url, first.validators))

    assert isinstance(second, NotModified)
    assert "If-None-Match" not in feed_server.requests("/feed.xml")[-1].headers


def test_gzip_body_is_decoded(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")

    result = fetch_one(feed_server.url("/feed.xml"))

    [request] = feed_server.requests("/feed.xml")
    assert "gzip" in request.headers["Accept-Encoding"]
    assert result.headers.get("Content-Encoding") == "gzip"
    assert result.body == RSS20


def redirect_chain(server: FeedServer, hops: int) -> str:
    """/hop0 → /hop1 → … → /feed.xml, `hops` redirects in all; returns the first URL."""
    server.serve_file("/feed.xml", "rss20.xml")
    for i in range(hops):
        target = f"/hop{i + 1}" if i + 1 < hops else "/feed.xml"
        server.serve_redirect(f"/hop{i}", target, status=301 if i % 2 else 302)
    return server.url("/hop0")


def test_redirects_are_followed_and_final_url_recorded(feed_server: FeedServer) -> None:
    start = redirect_chain(feed_server, MAX_REDIRECTS)

    result = fetch_one(start)

    assert result.url == feed_server.url("/feed.xml")
    assert result.body == RSS20
    assert len(feed_server.requests()) == MAX_REDIRECTS + 1


def test_more_than_max_redirects_is_an_error(feed_server: FeedServer) -> None:
    start = redirect_chain(feed_server, MAX_REDIRECTS + 1)

    error = fetch_error(start)

    assert "redirects" in error.message
    assert not feed_server.requests("/feed.xml")


def test_redirect_loop_is_an_error(feed_server: FeedServer) -> None:
    feed_server.serve_redirect("/a", "/b")
    feed_server.serve_redirect("/b", "/a")

    error = fetch_error(feed_server.url("/a"))

    assert "redirects" in error.message


@pytest.mark.parametrize("status", [404, 410, 500, 503])
def test_error_status_is_a_fetch_error_with_status(feed_server: FeedServer, status: int) -> None:
    feed_server.serve_status("/feed.xml", status)

    error = fetch_error(feed_server.url("/feed.xml"))

    assert error.status == status
    assert f"HTTP {status}" in error.message


def test_slow_server_times_out(feed_server: FeedServer) -> None:
    feed_server.serve_slow("/slow.xml", 30.0)

    error = fetch_error(feed_server.url("/slow.xml"), timeout=0.5)

    assert "timed out" in error.message
    assert error.status is None


def test_connection_refused(feed_server: FeedServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        # Bound but not listening: nothing accepts, so the connection is refused.
        error = fetch_error(f"http://127.0.0.1:{port}/feed.xml")

    assert "cannot connect" in error.message
    assert error.status is None


def test_body_over_the_cap_is_an_error(feed_server: FeedServer) -> None:
    limit = 256 * 1024
    feed_server.serve_huge("/huge.xml", 64 * 1024 * 1024)

    error = fetch_error(feed_server.url("/huge.xml"), max_body_size=limit)

    assert f"{limit}" in error.message
    assert "over" in error.message


def test_small_document_over_the_cap_is_an_error(feed_server: FeedServer) -> None:
    feed_server.serve_bytes("/feed.xml", RSS20 + b" " * 10, "application/rss+xml")

    error = fetch_error(feed_server.url("/feed.xml"), max_body_size=len(RSS20))

    assert "limit" in error.message


def test_body_at_the_cap_is_accepted(feed_server: FeedServer) -> None:
    feed_server.serve_file("/feed.xml", "rss20.xml")

    result = fetch_one(feed_server.url("/feed.xml"), max_body_size=len(RSS20))

    assert result.body == RSS20


def test_fetch_outside_context_is_refused() -> None:
    fetcher = Fetcher(user_agent="x", timeout=1, max_body_size=1, max_concurrency=1)

    with pytest.raises(RuntimeError):
        asyncio.run(fetcher.fetch("feed", "http://127.0.0.1:9/"))


def test_global_concurrency_limit(feed_server: FeedServer) -> None:
    delay = 0.3
    paths = [f"/slow{i}.xml" for i in range(6)]
    for path in paths:
        feed_server.serve_slow(path, delay)

    async def all_at_once(fetcher: Fetcher) -> list[Fetched | NotModified]:
        return await asyncio.gather(*(fetcher.fetch(p, feed_server.url(p)) for p in paths))

    results = run_with_fetcher(all_at_once, max_concurrency=2)

    assert all(isinstance(r, Fetched) for r in results)
    log = feed_server.requests()
    assert sorted(r.path for r in log) == sorted(paths)
    # Every request stays in flight at the server for at least `delay` after it arrives, so
    # a third request arriving within `delay` of another two would mean three at once.
    arrivals = sorted(r.monotonic for r in log)
    for start in arrivals:
        overlapping = [a for a in arrivals if start <= a < start + delay]
        assert len(overlapping) <= 2, arrivals
