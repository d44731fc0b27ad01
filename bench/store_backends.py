"""The same store operations on SQLite and on PostgreSQL, side by side: prints figures, asserts
nothing.

    .venv/bin/python bench/store_backends.py [--feeds 200] [--entries 50] [--database URL]

Without --database, PostgreSQL is a temporary server of the tests' own (tests/pgserver.py: it
needs Debian's postgresql binaries). Each store gets the same polls through its public
operations, on one connection as a store thread has it: cold polls (every entry new), warm
polls (a 304: the feed's state alone), reading every entry newest first, a search, and a prune
to half. Fsync is off on the temporary server, so its writes are cheaper than on a real one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from retention import NOW, entry  # the same entries as the retention bench

from aggregator.ingest.identity import identify
from aggregator.models import PollRecord
from aggregator.store.postgres import PostgresStore
from aggregator.store.sqlite import SqliteStore


def timed(label: str, count: int, unit: str, fn: Callable[[], Any]) -> tuple[str, str]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return label, f"{seconds:8.2f} s  {count / seconds:10,.0f} {unit}/s"


def run(store: Any, feeds: int, entries: int) -> list[tuple[str, str]]:
    names = [f"feed{i:04d}" for i in range(feeds)]
    store.sync_feeds([(n, f"https://{n}.example/feed.xml") for n in names])
    polls = [
        PollRecord(
            name,
            f"https://{name}.example/feed.xml",
            NOW,
            "ok",
            NOW + timedelta(hours=1),
            title=name,
            new=tuple(identify(name, [entry(i, n) for n in range(entries)], NOW)),
        )
        for i, name in enumerate(names)
    ]
    warm = [
        PollRecord(p.feed, p.url, NOW + timedelta(hours=1), "not_modified", None, http_status=304)
        for p in polls
    ]
    total = feeds * entries
    return [
        timed("cold polls", feeds, "polls", lambda: [store.record_poll(p) for p in polls]),
        timed("warm polls (304)", feeds, "polls", lambda: [store.record_poll(p) for p in warm]),
        timed(
            "iter_entries, all", total, "entries", lambda: sum(1 for _ in store.iter_entries(names))
        ),
        timed(
            "search x20", 20, "searches", lambda: [store.search('"body"', 50) for _ in range(20)]
        ),
        timed("known_entries", feeds, "feeds", lambda: [store.known_entries(n) for n in names]),
        timed("prune to half", total // 2, "entries", lambda: store.prune(NOW, 0, entries // 2)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--database", help="a postgresql:// URL (default: a temporary server)")
    args = parser.parse_args()

    server = None
    url = args.database
    if url is None:
        from pgserver import PgServer, pg_unavailable

        if (reason := pg_unavailable()) is not None:
            sys.exit(f"no PostgreSQL to bench: {reason}")
        server = PgServer()
        server.start()
        url = server.url(server.database())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteStore(Path(tmp) / "bench.db")
            pg = PostgresStore(url)
            try:
                figures = {"SQLite": run(sqlite, args.feeds, args.entries)}
                figures["PostgreSQL"] = run(pg, args.feeds, args.entries)
            finally:
                sqlite.close()
                pg.close()
    finally:
        if server is not None:
            server.stop()
    print(f"{args.feeds} feeds x {args.entries} entries, one connection each")
    for kind, rows in figures.items():
        print(f"\n{kind}")
        for label, figure in rows:
            print(f"  {label:<20} {figure}")


if __name__ == "__main__":
    main()
