"""One output, from the store to bytes: select its sources' entries, apply its rules and limit,
render one format. Blocking (SQLite reads and feedgen): the daemon runs it on a reader thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from .config import Config
from .filters import select
from .models import OutputFormat
from .publish import EPOCH, OutputMeta, entry_updated, render
from .store import Store


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered output in one format, with the validators it is served under."""

    body: bytes
    etag: str
    last_modified: datetime
    generation: int
    entries: int


def render_output(store: Store, config: Config, name: str, fmt: OutputFormat) -> Rendered:
    """Select an output's entries from the store, apply its rules and limit, and render them.

    Blocking (SQLite and feedgen): the daemon calls it on a reader thread.
    """
    output = config.output(name)
    generation = store.generation()
    sources = config.sources_of(output)
    items = select(store.iter_entries([f.name for f in sources]), output.rules, output.limit)
    # A title set in the config names the source in place of the one the feed gives itself.
    titles = {f.name: f.title for f in sources if f.title}
    if titles:
        items = [
            replace(i, feed_title=titles[i.entry.feed]) if i.entry.feed in titles else i
            for i in items
        ]
    meta = OutputMeta(
        name=output.name,
        title=output.title,
        description=output.description or output.title,
        base_url=config.aggregator.base_url,
    )
    body = render(fmt, meta, items)
    last = max((max(entry_updated(i), i.last_changed) for i in items), default=EPOCH)
    return Rendered(
        body=body,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=last.replace(microsecond=0),
        generation=generation,
        entries=len(items),
    )
