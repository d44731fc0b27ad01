"""One output, from the store to bytes: select its sources' entries, apply its rules and limit,
render one format (a feed, its HTML page or its sources' OPML), one page at a time.
Blocking (SQLite reads and feedgen): the daemon runs it on a reader thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

from .config import Config
from .filters import select
from .models import OutputFormat
from .opml import Subscription, render_opml
from .pages import render_output_page
from .publish import EPOCH, OutputMeta, entry_updated, render
from .store import Store

# Everything an output is served as: the three feed formats, its HTML page, its sources' OPML.
ServedFormat = Literal["atom", "rss", "json", "html", "opml"]
SERVED_FORMATS: tuple[ServedFormat, ...] = get_args(ServedFormat)
FEED_FORMATS: tuple[OutputFormat, ...] = ("atom", "rss", "json")
DEFAULT_PAGE_SIZE = 100  # entries per page when the request names no ?limit=
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered output in one format, with the validators it is served under."""

    body: bytes
    etag: str
    last_modified: datetime
    generation: int
    entries: int


def render_output(
    store: Store,
    config: Config,
    name: str,
    fmt: ServedFormat,
    page: int = 1,
    per_page: int | None = None,
) -> Rendered:
    """Select an output's entries from the store, apply its rules and limit, and render them.

    The selection (at most the output's `limit` entries) is served in pages of `per_page`
    entries (DEFAULT_PAGE_SIZE when None); page 1 is the newest. A page past the end is empty.
    Blocking (SQLite and feedgen): the daemon calls it on a reader thread.
    """
    output = config.output(name)
    generation = store.generation()
    sources = config.sources_of(output)
    if fmt == "opml":
        return _rendered(_render_sources(config, name), EPOCH, generation, len(sources))
    items = select(store.iter_entries([f.name for f in sources]), output.rules, output.limit)
    # A title set in the config names the source in place of the one the feed gives itself.
    titles = {f.name: f.title for f in sources if f.title}
    if titles:
        items = [
            replace(i, feed_title=titles[i.entry.feed]) if i.entry.feed in titles else i
            for i in items
        ]
    size = per_page or DEFAULT_PAGE_SIZE
    start = (page - 1) * size
    shown = items[start : start + size]
    meta = OutputMeta(
        name=output.name,
        title=output.title,
        description=output.description or output.title,
        base_url=config.aggregator.base_url,
        hub=config.aggregator.hub,
        page=page,
        per_page=per_page,
        has_next=len(items) > start + size,
    )
    body = render_output_page(meta, shown) if fmt == "html" else render(fmt, meta, shown)
    last = max((max(entry_updated(i), i.last_changed) for i in shown), default=EPOCH)
    return _rendered(body, last, generation, len(shown))


def _rendered(body: bytes, last: datetime, generation: int, entries: int) -> Rendered:
    return Rendered(
        body=body,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=last.replace(microsecond=0),
        generation=generation,
        entries=entries,
    )


def _render_sources(config: Config, name: str) -> bytes:
    """The OPML of an output's sources, so a subscriber can follow them directly."""
    output = config.output(name)
    feeds = [
        Subscription(name=f.name, url=f.url, title=f.title, tags=f.tags)
        for f in config.sources_of(output)
    ]
    return render_opml(f"{output.title}: sources", feeds)
