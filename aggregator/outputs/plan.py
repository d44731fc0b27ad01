"""One output, from the store to bytes: sources → filters → dedupe → limit → page → render
one format (a feed, its HTML page or its sources' OPML).

Blocking (SQLite reads and feedgen): the daemon runs it on a reader thread. `plan_output` is the
selection alone, with what was dropped and why, for `aggregator preview`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from ..config.resolved import Config, Output
from ..ingest.identity import is_empty
from ..models import StoredEntry
from ..outputs.dedupe import Story, group
from ..outputs.filters import apply
from ..outputs.opml import Subscription, render_opml
from ..outputs.pages import SearchBox, render_output_page
from ..outputs.publish import EPOCH, OutputMeta, entry_updated, render
from ..outputs.tokens import token_query
from ..store.protocol import Store
from ..store.search import within

# Everything an output is served as: the three feed formats, its HTML page, its sources' OPML.
ServedFormat = Literal["atom", "rss", "json", "html", "opml"]
SERVED_FORMATS: tuple[ServedFormat, ...] = get_args(ServedFormat)
HTML_PAGE_SIZE = 100  # stories per HTML page when the request names no ?limit=
MAX_PAGE_SIZE = 10_000  # the largest ?limit= (an output's `limit` is at most this too)
# Filters and dedupe read past the limit: enough stories to fill it after merging, and the
# copies a near-duplicate may have in older entries within the window (at most as many again).
READ_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered output in one format, with the validators it is served under."""

    body: bytes
    etag: str
    last_modified: datetime
    generation: int
    entries: int
    total: int = 0  # stories in the whole output, all pages
    pages: int = 1  # pages of this size the output has (1 when it is empty)


class PageNotFound(LookupError):
    """A page past the end of an output (page 1 always exists, empty or not)."""


def page_size(output: Output, fmt: ServedFormat) -> int:
    """Stories per page when the request names none: the output's `page_size`, else its whole
    `limit` for the feed formats (the document a subscriber subscribes to holds the output as
    configured); the HTML page shows at most HTML_PAGE_SIZE."""
    size = min(output.page_size or output.limit, output.limit)
    return min(size, HTML_PAGE_SIZE) if fmt == "html" else size


@dataclass(frozen=True, slots=True)
class Plan:
    """What an output contains and why the rest is not there."""

    stories: tuple[Story, ...]
    dropped: tuple[tuple[StoredEntry, str], ...] = field(default=())
    beyond_limit: tuple[Story, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Narrow:
    """A reader's search within an output's page: FTS5 text (see search.to_fts) and/or one
    of the output's sources."""

    query: str | None = None
    source: str | None = None
    text: str = ""  # what the reader typed, shown back in the search box


def _read(store: Store, output: Output, narrow: Narrow | None = None) -> list[StoredEntry]:
    sources = [f.name for f in output.sources]
    query = output.query
    if narrow is not None:
        if narrow.source is not None:
            sources = [s for s in sources if s == narrow.source]
        if narrow.query is not None:
            query = within(query, narrow.query)
    want = output.limit * READ_FACTOR
    window = output.dedupe.window if output.dedupe.mode == "near" else timedelta(0)
    out: list[StoredEntry] = []
    oldest: datetime | None = None
    for item in store.iter_entries(sources, query=query):
        if len(out) >= 2 * want:
            break  # bounded work per render, however busy the window is
        if len(out) >= want:
            if oldest is None:
                oldest = out[-1].entry.published - window
            if item.entry.published < oldest:
                break
        out.append(item)
    return out


def plan_output(
    store: Store, config: Config, name: str, now: datetime, narrow: Narrow | None = None
) -> Plan:
    """Select an output's stories: read its sources (narrowed by its query), apply its filters,
    merge duplicates across feeds, keep the newest `limit` stories."""
    output = config.outputs[name]
    sources = output.sources
    # Empty entries stored before they were refused at ingest are never shown either.
    items = [i for i in _read(store, output, narrow) if not is_empty(i.entry)]
    # A title set in the config names the source in place of the one the feed gives itself.
    titles = {f.name: f.title for f in sources if f.title}
    if titles:
        items = [
            replace(i, feed_title=titles[i.entry.feed]) if i.entry.feed in titles else i
            for i in items
        ]
    dropped: list[tuple[StoredEntry, str]] = []
    flt = output.filter
    languages = store.feed_languages([f.name for f in sources]) if flt.checks else {}
    kept = apply(flt, items, now, languages, dropped)
    order = {name: i for i, name in enumerate(config.feeds)}
    stories = group(kept, output.dedupe, order)
    return Plan(tuple(stories[: output.limit]), tuple(dropped), tuple(stories[output.limit :]))


class PlanCache:
    """The plans of outputs at a store generation, shared by their formats and pages:
    selecting and deduplicating is most of a render, and a change would otherwise be planned
    once per format and page. Owned by whoever renders again and again (the server); reader
    threads share it, each step one atomic dict operation."""

    def __init__(self, kept: int = 64) -> None:
        self.kept = kept
        self._plans: dict[tuple[str, str, int], tuple[Config, Plan]] = {}

    def get(self, store: Store, config: Config, name: str, generation: int) -> Plan | None:
        """The plan made of this database, config object and generation, if it is kept."""
        found = self._plans.get((str(store.path), name, generation))
        if found is None or found[0] is not config:  # a reload may change rules and sources
            if len(self._plans) >= self.kept:
                self._plans.clear()
            return None
        return found[1]

    def put(self, store: Store, config: Config, name: str, generation: int, plan: Plan) -> None:
        self._plans[(str(store.path), name, generation)] = (config, plan)


def render_output(
    store: Store,
    config: Config,
    name: str,
    fmt: ServedFormat,
    page: int = 1,
    per_page: int | None = None,
    now: datetime | None = None,
    whole: bool = False,
    narrow: Narrow | None = None,
    plans: PlanCache | None = None,
) -> Rendered:
    """Select an output's stories from the store (see `plan_output`) and render one page.

    The selection (at most the output's `limit` stories) is served in pages of `per_page`
    stories (`page_size(output, fmt)` when None); page 1 is the newest. A page past the end
    raises PageNotFound. `whole` renders every story in one document, without paging links
    (`aggregator render`). `now` only matters to `max_age` rules; it defaults to the current
    time. `narrow` (HTML only) is a reader's search: planned afresh, never cached. With
    `plans`, the plan of this generation is taken from it, or made and kept there.
    """
    output = config.outputs[name]
    generation = store.generation()
    if fmt == "opml":
        return _rendered(_render_sources(output), EPOCH, generation, len(output.sources))
    cache = plans if now is None and narrow is None else None
    plan = None if cache is None else cache.get(store, config, name, generation)
    if plan is None:
        plan = plan_output(store, config, name, now or datetime.now(UTC), narrow)
        if cache is not None:
            cache.put(store, config, name, generation, plan)
    size = max(len(plan.stories), 1) if whole else per_page or page_size(output, fmt)
    pages = max(1, -(-len(plan.stories) // size))
    if page > pages:
        raise PageNotFound(f"output {name!r} has {pages} page(s) of {size} stories")
    start = (page - 1) * size
    shown = plan.stories[start : start + size]
    items = [s.item for s in shown]
    merged = {s.item.entry.uid: s.merged for s in shown if s.merged}
    meta = OutputMeta(
        name=output.name,
        title=output.title,
        description=output.description or output.title,
        base_url=config.aggregator.base_url,
        # A private output is never announced to a hub: the hub would fetch it with the token
        # and hand it to any subscriber (see websub.py).
        hub=config.aggregator.hub if output.token is None else None,
        link_query=token_query(output),
        embed_hosts=frozenset(config.aggregator.embed_hosts),
        page=page,
        per_page=per_page,
        has_next=len(plan.stories) > start + size,
    )
    if fmt == "html":
        body = render_output_page(meta, items, _search_box(output, narrow))
    else:
        body = render(fmt, meta, items, merged)
    last = max(
        (max(entry_updated(i), i.last_changed) for s in shown for i in s.sources),
        default=EPOCH,
    )
    rendered = _rendered(body, last, generation, len(items), pages)
    return replace(rendered, total=len(plan.stories))


def _search_box(output: Output, narrow: Narrow | None) -> SearchBox:
    return SearchBox(
        query=narrow.text if narrow is not None else "",
        source=(narrow.source if narrow is not None else None) or "",
        sources=tuple((f.name, f.title or f.name) for f in output.sources),
    )


def _rendered(
    body: bytes, last: datetime, generation: int, entries: int, pages: int = 1
) -> Rendered:
    return Rendered(
        body=body,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=last.replace(microsecond=0),
        generation=generation,
        entries=entries,
        pages=pages,
    )


def _render_sources(output: Output) -> bytes:
    """The OPML of an output's sources, so a subscriber can follow them directly."""
    feeds = [
        Subscription(name=f.name, url=f.url, title=f.title, tags=f.tags) for f in output.sources
    ]
    return render_opml(f"{output.title}: sources", feeds)
