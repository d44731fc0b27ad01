"""Finding the feeds of a web page: its `<link rel="alternate">` tags (pure), then the usual
feed paths of its site, fetched and checked (I/O, for `aggregator add`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

from .errors import FeedError, ParseError
from .feedlinks import FeedLink, feed_links
from .fetch import Fetcher
from .models import Fetched
from .parse import looks_like_html, parse_feed

# Tried in this order at the site's root when a page advertises no feed.
COMMON_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml", "/rss", "/feed.json")


@dataclass(frozen=True, slots=True)
class Discovery:
    """What `discover` found at a URL: the feeds (a feed URL finds itself) and what it tried."""

    feeds: tuple[FeedLink, ...]
    tried: tuple[str, ...] = ()
    checked: bool = True  # False: links a page advertises, not fetched yet


async def _fetch(fetcher: Fetcher, url: str) -> Fetched | None:
    try:
        result = await fetcher.fetch("discover", url)
    except FeedError:
        return None
    return result if isinstance(result, Fetched) else None


def _feed_title(result: Fetched) -> str | None:
    """The feed's own title, or None when the document is not a feed."""
    try:
        return parse_feed("discover", result.body, dict(result.headers), result.url).title or ""
    except ParseError:
        return None


async def discover(fetcher: Fetcher, url: str) -> Discovery:
    """The feeds at `url`: itself if it is a feed; else the feeds its page advertises; else
    the first of COMMON_PATHS at its site that answers with a feed. Parsing runs in a thread:
    feedparser is CPU work."""
    first = await _fetch(fetcher, url)
    if first is None:
        return Discovery((), (url,))
    title = await asyncio.to_thread(_feed_title, first)
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
            found_title = await asyncio.to_thread(_feed_title, found)
            if found_title is not None:
                return Discovery((FeedLink(found.url, found_title or None),), tuple(tried))
    return Discovery((), tuple(tried))


async def probe(fetcher: Fetcher, url: str) -> FeedLink | None:
    """`url` checked to be a feed: its final URL and own title; None when it is not one."""
    result = await _fetch(fetcher, url)
    if result is None:
        return None
    title = await asyncio.to_thread(_feed_title, result)
    return None if title is None else FeedLink(url, title or None)


def describe(links: Sequence[FeedLink]) -> list[str]:
    """One line per feed, numbered from 1, for a person to choose from."""
    return [
        f"{i}. {link.url}" + (f"  ({link.title})" if link.title else "")
        for i, link in enumerate(links, 1)
    ]
