"""Render cost of one output page per format, and how much of it sanitising takes. Prints only.

    .venv/bin/python bench/render.py [ENTRIES]

Entries come from the fixture feeds in tests/data (repeated under distinct ids), so the
content is realistic HTML. A render happens once per store change per page; every other
request is served from the cache, so this is the cost a change adds, not a per-request cost.
"""

from __future__ import annotations

import gzip
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from aggregator.ingest.identity import identify
from aggregator.ingest.parse import parse_feed
from aggregator.models import StoredEntry
from aggregator.outputs.pages import render_output_page
from aggregator.outputs.publish import OutputMeta, entry_html, render

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FILES = ("rss20.xml", "atom10.xml", "section-world.rss.xml", "hostile.xml", "jsonfeed11.json")


def items(count: int) -> list[StoredEntry]:
    base: list[StoredEntry] = []
    for name in FILES:
        url = f"https://feeds.example/{name}"
        ctype = "application/feed+json" if name.endswith(".json") else "application/xml"
        parsed = parse_feed(name, (DATA / name).read_bytes(), {"Content-Type": ctype}, url)
        for e in identify(name.split(".")[0], parsed.entries, NOW):
            base.append(StoredEntry(e, NOW, NOW, parsed.title, url, parsed.link))
    out = []
    for i in range(count):
        item = base[i % len(base)]
        out.append(replace(item, entry=replace(item.entry, uid=f"{item.entry.uid}-{i}")))
    return out


def best_of(fn: object, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times) * 1000, statistics.median(times) * 1000  # type: ignore[return-value]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    entries = items(count)
    meta = OutputMeta(name="bench", title="Bench", description="Bench", base_url="http://b")
    print(f"{count} entries; best / median of 5, milliseconds")
    for fmt in ("atom", "rss", "json", "html"):
        if fmt == "html":
            body = render_output_page(meta, entries)
            best, median = best_of(lambda: render_output_page(meta, entries))
        else:
            body = render(fmt, meta, entries)  # type: ignore[arg-type]
            best, median = best_of(lambda f=fmt: render(f, meta, entries))  # type: ignore[misc]
        ratio = len(gzip.compress(body, mtime=0)) / len(body)
        print(
            f"  {fmt:5} render {best:7.2f} / {median:7.2f}  {len(body):>8} bytes  gzip {ratio:.0%}"
        )
    best, median = best_of(lambda: [entry_html(i) for i in entries])
    print(f"  sanitising alone (per render) {best:7.2f} / {median:7.2f}")
    body = render("atom", meta, entries)
    best, median = best_of(lambda: gzip.compress(body, compresslevel=6, mtime=0))
    print(f"  gzip of the atom body (once per render) {best:7.2f} / {median:7.2f}")


if __name__ == "__main__":
    main()
