"""Stored entries in, Atom 1.0 / RSS 2.0 / JSON Feed 1.1 bytes out. Pure: no I/O, no clock.

Atom and RSS are built with feedgen. JSON Feed, which feedgen does not write, is built here.
Every date comes from stored data, so rendering the same entries twice gives the same bytes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feedgen.feed import FeedGenerator
from lxml import etree

from .. import PROJECT_URL, __version__
from ..ingest.fields import first_words, name_from_url, plain_text, safe_url
from ..ingest.sanitize import xml_safe
from ..models import OutputFormat, StoredEntry
from ..outputs.extensions import add_to_feedgen, extend_atom, extend_rss, json_extras

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
CONTENT_TYPES: dict[OutputFormat, str] = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
# Category scheme (RSS: domain) marking a category that names another feed the story was seen in.
SOURCE_SCHEME = "urn:feed-aggregator:source"
Merged = Mapping[str, Sequence[StoredEntry]]
_NONE: Merged = {}
ATOM_NS = "http://www.w3.org/2005/Atom"


@dataclass(frozen=True, slots=True)
class OutputMeta:
    """What an output says about itself."""

    name: str
    title: str
    description: str
    base_url: str  # the daemon's public URL, without a trailing slash
    hub: str | None = None  # WebSub hub advertised with rel="hub"
    page: int = 1  # RFC 5005 paging: which page this is, and whether another follows
    per_page: int | None = None  # None: the default page size, left out of page URLs
    has_next: bool = False
    embed_hosts: frozenset[str] = frozenset()  # hosts whose https iframes are kept
    # Added to every link to this output (self, paging, other formats): a private output's
    # "token=…", so that a reader following them keeps access. Never in the feed's id.
    link_query: str = ""

    def url(self, fmt: OutputFormat) -> str:
        return f"{self.base_url}/outputs/{self.name}.{fmt}"

    @property
    def home(self) -> str:
        """The output's HTML page: the channel link of every page of every format."""
        page = f"{self.base_url}/outputs/{self.name}.html"
        return f"{page}?{self.link_query}" if self.link_query else page

    def page_url(self, fmt: str, page: int) -> str:
        """The URL of page `page` of this output in format `fmt` (page 1 is the plain URL)."""
        query = []
        if page > 1:
            query.append(f"page={page}")
        if self.per_page is not None:
            query.append(f"limit={self.per_page}")
        if self.link_query:
            query.append(self.link_query)
        url = f"{self.base_url}/outputs/{self.name}.{fmt}"
        return url + ("?" + "&".join(query) if query else "")

    def paging_links(self, fmt: str) -> list[tuple[str, str]]:
        """(rel, href) pairs besides self: hub, first, previous and next (RFC 5005 section 3)."""
        links = [("hub", self.hub)] if self.hub else []
        if self.page > 1 or self.has_next:
            links.append(("first", self.page_url(fmt, 1)))
        if self.page > 1:
            links.append(("previous", self.page_url(fmt, self.page - 1)))
        if self.has_next:
            links.append(("next", self.page_url(fmt, self.page + 1)))
        return links


def entry_updated(item: StoredEntry) -> datetime:
    """When an entry last changed as a subscriber sees it: the publisher's date, or the time we
    stored an in-place update if that is later (so readers notice edits)."""
    if item.last_changed > item.first_seen:
        return max(item.entry.updated, item.last_changed)
    return item.entry.updated


def feed_updated(items: Sequence[StoredEntry]) -> datetime:
    return max((entry_updated(i) for i in items), default=EPOCH)


def entry_title(item: StoredEntry) -> str:
    """An entry's title as plain text (entities decoded). An entry without one is titled by
    the first words of its text, as feed readers do, else by its file or link, else by its
    feed's name: never a placeholder such as "(untitled)"."""
    e = item.entry
    title = plain_text(e.title)
    if title:
        return title
    files = e.media.enclosures
    return (
        first_words(e.summary)
        or first_words(e.content)
        or name_from_url(files[0].url if files else safe_url(e.link))
        or plain_text(item.feed_title)
        or e.feed
    )


def entry_html(item: StoredEntry, embed_hosts: frozenset[str] = frozenset()) -> tuple[str, str]:
    """An entry's (summary, content): sanitised HTML with absolute links, as stored.

    They were sanitised at ingest, under the `embed_hosts` of that time, and a render never
    sanitises again: on hostile HTML that cost every render of every output seconds. A change
    of policy re-sanitises the stored rows (resanitize.py), so `embed_hosts` is not needed here
    any more; it is accepted so that callers need not change."""
    return item.entry.summary, item.entry.content


def entry_link(item: StoredEntry) -> str | None:
    """An entry's link if it is http(s): rows stored before links were checked at ingest may
    hold a javascript: or data: URL, which must never reach a subscriber."""
    return safe_url(item.entry.link)


def source_home(item: StoredEntry) -> str | None:
    """The source feed's home page (its link), else the feed's URL; http(s) only."""
    return safe_url(item.feed_link) or safe_url(item.feed_url)


def _generator(
    meta: OutputMeta, items: Sequence[StoredEntry], fmt: OutputFormat, merged: Merged
) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(meta.url("atom"))
    fg.title(xml_safe(meta.title))
    fg.subtitle(xml_safe(meta.description))  # RSS <description> as well
    fg.link(href=meta.page_url(fmt, meta.page), rel="self")
    for rel, href in meta.paging_links(fmt):
        fg.link(href=href, rel=rel)
    # Last: feedgen takes the RSS <channel><link> from the last link given, and it must be
    # the output's page on every page, not "?page=2".
    fg.link(href=meta.home, rel="alternate", type="text/html")
    # Atom wants an author on the feed when entries may lack one.
    fg.author({"name": xml_safe(meta.title)})
    fg.generator("feed-aggregator", __version__, PROJECT_URL)
    fg.updated(feed_updated(items))
    for item in items:
        e = item.entry
        fe = fg.add_entry(order="append")
        fe.id(e.uid)
        fe.guid(e.uid, permalink=False)
        title = xml_safe(entry_title(item))
        summary, content = entry_html(item, meta.embed_hosts)
        fe.title(title)
        if link := entry_link(item):
            fe.link(href=link, rel="alternate")
        fe.published(e.published)
        fe.updated(entry_updated(item))
        if summary:
            fe.summary(summary, type="html")
        fe.content(content or summary or title, type="CDATA" if fmt == "rss" else "html")
        add_to_feedgen(fe, item, fmt)
        for term in e.categories:
            fe.category(term=xml_safe(term))
        # Atom's source (id, title, updated, links) is written whole by extend_atom.
        if fmt == "rss" and (feed_url := safe_url(item.feed_url)):
            fe.source(url=feed_url, title=xml_safe(plain_text(item.feed_title)))
        # The copies merged into this story name their feeds as categories of our own scheme,
        # which every reader tolerates and which keeps both formats valid.
        for other in merged.get(e.uid, ()):
            if fmt == "atom":
                fe.category(
                    term=other.entry.feed, scheme=SOURCE_SCHEME, label=xml_safe(other.feed_title)
                )
            else:  # feedgen writes an RSS category's label, if given at all, in place of its term
                fe.category(term=other.entry.feed, scheme=SOURCE_SCHEME)
    return fg


def render_atom(meta: OutputMeta, items: Sequence[StoredEntry], merged: Merged = _NONE) -> bytes:
    """Atom 1.0, newest first as given, each entry naming its source feed in atom:source and
    the feeds of merged duplicates as categories with the scheme `SOURCE_SCHEME`."""
    root, _ = _generator(meta, items, "atom", merged)._create_atom()
    extend_atom(root, items, entry_updated)
    result: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return result


def render_rss(meta: OutputMeta, items: Sequence[StoredEntry], merged: Merged = _NONE) -> bytes:
    """RSS 2.0 with content:encoded, each item naming its source feed in <source> and the
    feeds of merged duplicates as categories with domain `SOURCE_SCHEME`."""
    fg = _generator(meta, items, "rss", merged)
    # feedgen writes only the self atom:link into RSS; hub and paging links are added here.
    root, _ = fg._create_rss()
    channel = root.find("channel")
    after = channel.find(f"{{{ATOM_NS}}}link")
    for rel, href in reversed(meta.paging_links("rss")):
        link = etree.Element(f"{{{ATOM_NS}}}link", href=href, rel=rel)
        after.addnext(link)
    extend_rss(channel, items, xml_safe(meta.title))
    result: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return result


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _source_json(item: StoredEntry) -> dict[str, Any]:
    e = item.entry
    obj: dict[str, Any] = {"feed": e.feed, "title": plain_text(item.feed_title)}
    if feed_url := safe_url(item.feed_url):
        obj["url"] = feed_url
    if link := entry_link(item):
        obj["link"] = link
    obj["first_seen"] = _rfc3339(item.first_seen)
    return obj


_BRIEF = ("feed", "title", "url")  # what `_aggregator.source` has always carried


def render_json(meta: OutputMeta, items: Sequence[StoredEntry], merged: Merged = _NONE) -> bytes:
    """JSON Feed 1.1; provenance goes in an `_aggregator` extension object on each item:
    `source` (the copy shown) and `sources` (every feed the story was seen in)."""
    out_items: list[dict[str, Any]] = []
    for item in items:
        e = item.entry
        title = entry_title(item)
        summary, content = entry_html(item, meta.embed_hosts)
        obj: dict[str, Any] = {"id": e.uid, "title": title}
        if link := entry_link(item):
            obj["url"] = link
        obj["content_html"] = content or summary or html.escape(title)
        if summary:
            obj["summary"] = summary
        obj["date_published"] = _rfc3339(e.published)
        obj["date_modified"] = _rfc3339(entry_updated(item))
        obj.update(json_extras(item))
        if e.categories:
            obj["tags"] = list(e.categories)
        obj["_aggregator"] = {
            "source": {k: v for k, v in _source_json(item).items() if k in _BRIEF},
            "sources": [_source_json(i) for i in (item, *merged.get(e.uid, ()))],
        }
        out_items.append(obj)
    doc = {
        "version": JSON_FEED_VERSION,
        "title": meta.title,
        "home_page_url": meta.home,
        "feed_url": meta.page_url("json", meta.page),
        "description": meta.description,
        "authors": [{"name": meta.title}],
    }
    if meta.has_next:
        doc["next_url"] = meta.page_url("json", meta.page + 1)
    if meta.hub:
        doc["hubs"] = [{"type": "WebSub", "url": meta.hub}]
    doc["items"] = out_items
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


RENDERERS = {"atom": render_atom, "rss": render_rss, "json": render_json}


def render(
    fmt: OutputFormat, meta: OutputMeta, items: Sequence[StoredEntry], merged: Merged = _NONE
) -> bytes:
    """Render entries (already selected, newest first) in one format; `merged` maps an entry's
    uid to the duplicates from other feeds that it stands for."""
    return RENDERERS[fmt](meta, items, merged)
