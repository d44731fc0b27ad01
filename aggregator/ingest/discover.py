"""Finding the feeds of a web page: its `<link rel="alternate">` tags (pure), then the usual
feed paths of its site, fetched and checked (I/O, for `aggregator add`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from urllib.parse import urljoin

from ..errors import FeedError, ParseError
from ..ingest.feedlinks import FeedLink, feed_links
from ..ingest.fetch import Fetcher
from ..ingest.parse import looks_like_html, parse_feed
from ..ingest.workers import WorkerDied, WorkTimeout
from ..models import Fetched

# Tried in this order at the site's root when a page advertises no feed.
COMMON_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml", "/rss", "/feed.json")


@dataclass(frozen=True, slots=True)
class Discovery:
    """What `discover` found at a URL: the feeds (a feed URL finds itself) and what it tried."""

    feeds: tuple[FeedLink, ...]
    tried: tuple[str, ...] = ()
    checked: bool = True  # False: links a page advertises, not fetched yet
    problems: tuple[str, ...] = ()  # why a fetched document was not taken for a feed


async def _fetch(fetcher: Fetcher, url: str) -> Fetched | None:
    try:
        result = await fetcher.fetch("discover", url)
    except FeedError:
        return None
    return result if isinstance(result, Fetched) else None


def _parsed_title(body: bytes, headers: dict[str, str], url: str) -> str | None:
    """The feed's own title, or None when the document is not a feed (in a parse worker)."""
    try:
        return parse_feed("discover", body, headers, url).title or ""
    except ParseError:
        return None


async def _feed_title(pool: Executor, result: Fetched, problems: list[str]) -> str | None:
    """The title of the fetched document, parsed in `pool`; None when it is not a feed. The
    pages are anyone's: a parse that runs past the pool's deadline, or whose worker dies, is
    "not a feed" (said in `problems`), never a hang of `aggregator add`."""
    loop = asyncio.get_running_loop()
    headers = dict(result.headers)
    try:
        return await loop.run_in_executor(pool, _parsed_title, result.body, headers, result.url)
    except WorkTimeout as e:
        problems.append(
            f"{result.url}: parsing took longer than {e.deadline:g} s (parse_timeout); "
            "not taken for a feed"
        )
    except WorkerDied as e:
        problems.append(f"{result.url}: the parse worker failed ({e}); not taken for a feed")
    return None


async def discover(fetcher: Fetcher, url: str, pool: Executor) -> Discovery:
    """The feeds at `url`: itself if it is a feed; else the feeds its page advertises; else
    the first of COMMON_PATHS at its site that answers with a feed. Parsing runs in `pool` (a
    DeadlinePool): feedparser is CPU work, and a hostile page must not run for ever."""
    problems: list[str] = []
    first = await _fetch(fetcher, url)
    if first is None:
        return Discovery((), (url,))
    title = await _feed_title(pool, first, problems)
    if title is not None:
        return Discovery((FeedLink(first.url, title or None),))
    if looks_like_html(first.body, dict(first.headers).get("Content-Type", "")):
        links = feed_links(first.body, first.url)
        if links:
            return Discovery(tuple(links), checked=False)
    root = urljoin(first.url, "/")
    tried = [url]
    for path in COMMON_PATHS:
        candidate = urljoin(root, path.lstrip("/"))
        tried.append(candidate)
        found = await _fetch(fetcher, candidate)
        if found is not None:
            found_title = await _feed_title(pool, found, problems)
            if found_title is not None:
                link = FeedLink(found.url, found_title or None)
                return Discovery((link,), tuple(tried), problems=tuple(problems))
    return Discovery((), tuple(tried), problems=tuple(problems))


async def probe(fetcher: Fetcher, url: str, pool: Executor) -> Discovery:
    """`url` checked to be a feed: its final URL and own title as the one feed found; none
    (with the reason in `problems` when the parse was stopped) when it is not one."""
    result = await _fetch(fetcher, url)
    if result is None:
        return Discovery((), (url,))
    problems: list[str] = []
    title = await _feed_title(pool, result, problems)
    if title is None:
        return Discovery((), (url,), problems=tuple(problems))
    return Discovery((FeedLink(url, title or None),), (url,))


def describe(links: Sequence[FeedLink]) -> list[str]:
    """One line per feed, numbered from 1, for a person to choose from."""
    return [
        f"{i}. {link.url}" + (f"  ({link.title})" if link.title else "")
        for i, link in enumerate(links, 1)
    ]
