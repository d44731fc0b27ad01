"""Retention and backup on a database of realistic size: prints figures, asserts nothing.

    .venv/bin/python bench/retention.py [--feeds 20] [--entries 2500]

Builds a database in a temporary directory through the real Store (one poll per feed), then
times `prune` (per-feed cap at half), `known_entries` of a feed before and after (the tombstones
make it read two tables), `backup_database`, and `vacuum`, with file sizes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.store.backup import backup_database
from aggregator.store.sqlite import SqliteStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def entry(feed: int, n: int) -> ParsedEntry:
    return ParsedEntry(
        guid=f"f{feed}-{n}",
        guid_is_permalink=False,
        link=f"https://f{feed}.example/{n}",
        title=f"Entry {n} of feed {feed}",
        summary="A summary of a few words. " * 8,
        content="<p>" + "Some body text of an ordinary article. " * 40 + "</p>",
        author="Ann",
        categories=("news",),
        published=NOW - timedelta(minutes=n),
        updated=None,
    )


def timed(label: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = fn()
    print(f"{label:<40} {time.perf_counter() - start:8.3f} s")
    return result


def mib(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return f"{size / 1024**2:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=20)
    ap.add_argument("--entries", type=int, default=2500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = SqliteStore(path)

        def fill() -> None:
            for f in range(args.feeds):
                new = identify(f"f{f}", [entry(f, n) for n in range(args.entries)], NOW)
                store.record_poll(
                    PollRecord(
                        f"f{f}", f"https://f{f}.example/feed", NOW, "ok", NOW, new=tuple(new)
                    )
                )

        total = args.feeds * args.entries
        timed(f"fill {total} entries", fill)
        print(f"{'database size':<40} {mib(path):>10}")
        timed("known_entries(f0), no tombstones", lambda: store.known_entries("f0"))
        pruned = timed(
            "prune to half (per-feed cap)",
            lambda: store.prune(NOW, 0, args.entries // 2),
        )
        print(f"{'entries pruned':<40} {pruned:>10}")
        timed("known_entries(f0), half tombstones", lambda: store.known_entries("f0"))
        timed("prune again (nothing to do)", lambda: store.prune(NOW, 0, args.entries // 2))
        copy = Path(tmp) / "copy.db"
        timed("backup_database (with integrity_check)", lambda: backup_database(path, copy))
        print(f"{'backup size':<40} {mib(copy):>10}")
        timed("vacuum", store.vacuum)
        print(f"{'database size after vacuum':<40} {mib(path):>10}")
        store.close()


if __name__ == "__main__":
    main()
