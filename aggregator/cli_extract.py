"""`aggregator extract`: one article page fetched and extracted as full_content would. I/O.

The same Fetcher (User-Agent, timeout, body cap, redirects), the same robots.txt rules when
`respect_robots` is on, and the same extraction, run in this process: an operator tries a
selector here before writing it into the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .config.resolved import Config
from .errors import FetchError
from .ingest.articles import ACCEPT_HTML
from .ingest.extract import Extraction, extract_article, headers_content_type
from .ingest.hosts import origin
from .ingest.robots import rules_from
from .models import Fetched
from .runtime import make_fetcher


@dataclass(frozen=True, slots=True)
class Tried:
    url: str  # final, after redirects
    size: int  # bytes of the page
    extraction: Extraction


async def try_extract(
    config: Config, url: str, selector: str | None, remove: tuple[str, ...]
) -> Tried:
    """Fetch `url` and extract it; FetchError when it cannot be had (or robots.txt says no)."""
    s = config.aggregator
    async with make_fetcher(config) as fetcher:
        if s.respect_robots:
            host = origin(url)
            try:
                got = await fetcher.fetch("robots.txt", f"{host}/robots.txt")
                body = got.body if isinstance(got, Fetched) else b""
                rules = rules_from(200, body, datetime.now(UTC))
            except FetchError as e:
                rules = rules_from(e.status, b"", datetime.now(UTC))
            if rules.unreachable:
                raise FetchError("extract", f"robots.txt of {host} cannot be read (respect_robots)")
            if not rules.allows(s.user_agent, url):
                raise FetchError(
                    "extract", f"robots.txt of {host} disallows this page (respect_robots)"
                )
        page = await fetcher.fetch("extract", url, accept=ACCEPT_HTML)
    assert isinstance(page, Fetched)  # no validators were sent
    found = extract_article(
        page.body,
        headers_content_type(page.headers),
        page.url,
        selector=selector,
        remove=remove,
        embed_hosts=frozenset(s.embed_hosts),
    )
    return Tried(page.url, len(page.body), found)
