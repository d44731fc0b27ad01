"""CPU a parse worker spends per document: parse, key, hash and sanitise (poll.digest) over the
fixture feeds, podcasts included. Prints only.

    .venv/bin/python bench/ingest.py [ROUNDS]

Every fixture is digested as new (nothing known), which is the most a poll can cost: each entry
is keyed, hashed and sanitised. Run it on two versions to see what a change adds.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from aggregator.ingest.poll import digest

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FILES = (
    "rss20.xml",
    "atom10.xml",
    "section-world.rss.xml",
    "hostile.xml",
    "jsonfeed11.json",
    "podcast.rss.xml",
    "podcast.atom.xml",
)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    docs = []
    for name in FILES:
        path = DATA / name
        if not path.exists():  # an older version without the podcast fixtures
            continue
        ctype = "application/feed+json" if name.endswith(".json") else "application/xml"
        docs.append((name, path.read_bytes(), {"Content-Type": ctype}))
    entries = 0
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        entries = 0
        for name, body, headers in docs:
            entries += len(digest(name, body, headers, f"https://f.example/{name}", NOW, {}).new)
        times.append(time.perf_counter() - started)
    per_doc = [t / len(docs) * 1e6 for t in times]
    print(f"{len(docs)} documents, {entries} entries, {rounds} rounds")
    print(
        f"  per document: best {min(per_doc):.0f} us, median {statistics.median(per_doc):.0f} us;"
        f" per entry: median {statistics.median(times) / entries * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
