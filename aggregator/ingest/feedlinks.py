"""The feeds an HTML page advertises (`<link rel="alternate" type=…>`). Pure.

Used by `aggregator add` to find a site's feeds, and by the parser so that the error of a
feed URL that serves a web page names the feed the page points to.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/feed+json",
        "application/rdf+xml",
        "application/json",
        "application/xml",
        "text/xml",
    }
)
MAX_SCAN = 512 * 1024  # feed links live in <head>: no need to read a huge page to its end


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A feed a page points to (or one found at a usual path)."""

    url: str
    title: str | None = None
    type: str | None = None


class _LinkParser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.links: list[FeedLink] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and values.get("href"):
            self.base = urljoin(self.base, values["href"])
        if tag not in ("link", "a"):
            return
        rels = values.get("rel", "").lower().split()
        kind = values.get("type", "").lower().split(";")[0].strip()
        href = values.get("href", "").strip()
        if "alternate" in rels and kind in FEED_TYPES and href:
            url = urljoin(self.base, href)
            if urlsplit(url).scheme in ("http", "https"):
                self.links.append(FeedLink(url, values.get("title") or None, kind))


def feed_links(page: bytes, base_url: str) -> list[FeedLink]:
    """The feeds an HTML page advertises with `<link rel="alternate" type=…>`, in page order,
    each URL once, made absolute against the page (or its `<base href>`)."""
    parser = _LinkParser(base_url)
    try:
        parser.feed(page[:MAX_SCAN].decode("utf-8", errors="replace"))
        parser.close()
    except AssertionError:  # html.parser gives up on some broken markup: keep what it found
        pass
    seen: set[str] = set()
    out = []
    for link in parser.links:
        if link.url not in seen:
            seen.add(link.url)
            out.append(link)
    return out


def advertised_hint(page: bytes, url: str) -> str:
    """The end of a "not a feed" error for an HTML page: the feed it advertises, if any."""
    links = feed_links(page, url)
    if not links:
        return ""
    also = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
    return f"; the page advertises the feed {links[0].url}{also}: use that as the feed's url"
