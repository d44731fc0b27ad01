"""Hostile feeds (tests/hostile.py) through ingest and render: the time each takes. Prints only.

    .venv/bin/python bench/hostile.py [--digest-limit SECONDS] [--author-size BYTES]

Each hostile document is digested (parse, identify, sanitise: the work of a parse worker) in a
process of its own, stopped after --digest-limit seconds; what it produced is stored in a fresh
database, then one output over all of them is rendered in every format. The render times are
what a subscriber waits for after a store change when nothing is cached.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile

from aggregator.config.load import parse_config
from aggregator.ingest.poll import digest
from aggregator.models import PollRecord
from aggregator.outputs.plan import PlanCache, render_output
from aggregator.store.sqlite import SqliteStore

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
HEADERS = {"Content-Type": "application/xml"}


def _document(name: str, author_size: int) -> bytes:
    if name == "quadratic-author":
        return hostile.quadratic_author(size=author_size)
    return hostile.HOSTILE[name]()


def _digest_child(conn: Connection, name: str, author_size: int) -> None:
    body = _document(name, author_size)
    started = time.perf_counter()
    d = digest(name, body, HEADERS, f"http://127.0.0.1/{name}", NOW, {})
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send((d, elapsed, peak, len(body)))


def timed_digest(name: str, limit: float, author_size: int) -> tuple[Any, float, float, int] | None:
    """The digest of one hostile document, or None when it ran past `limit` seconds."""
    ctx = multiprocessing.get_context("forkserver")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_digest_child, args=(child, name, author_size))
    proc.start()
    child.close()
    try:
        if parent.poll(limit):
            result: tuple[Any, float, float, int] = parent.recv()
            return result
        return None
    finally:
        proc.kill()
        proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digest-limit", type=float, default=120.0)
    parser.add_argument("--author-size", type=int, default=60_000)
    args = parser.parse_args()
    names = list(hostile.HOSTILE)
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "hostile.db"
        store = SqliteStore(database)
        limit = args.digest_limit
        print(f"digest (parse, identify, sanitise) of each hostile document, limit {limit:.0f} s")
        for name in names:
            found = timed_digest(name, args.digest_limit, args.author_size)
            if found is None:
                print(f"  {name:<17} over {args.digest_limit:.0f} s: stopped, nothing stored")
                continue
            d, elapsed, peak, size = found
            store.sync_feeds([(name, f"http://127.0.0.1/{name}")])
            store.record_poll(
                PollRecord(
                    name,
                    f"http://127.0.0.1/{name}",
                    NOW,
                    "ok",
                    None,
                    title=d.feed.title or None,
                    warning=d.feed.warning,
                    new=d.new,
                )
            )
            warning = (d.feed.warning or "")[:90]
            print(
                f"  {name:<17} {size / 1e6:5.1f} MB  {elapsed:7.2f} s  {len(d.new):>6} entries"
                f"  worker peak RSS {peak:4.0f} MB  {warning}"
            )
        config = parse_config(
            {
                "aggregator": {"database": str(database)},
                "feeds": [{"name": n, "url": f"http://127.0.0.1/{n}"} for n in names],
                "outputs": [{"name": n, "title": n, "limit": 100, "feeds": [n]} for n in names],
            }
        )
        print("render of each feed's output, milliseconds (the first format plans the output)")
        print(f"  {'output':<17} {'atom':>9} {'rss':>9} {'json':>9} {'html':>9}")
        for name in names:
            times = []
            plans = PlanCache()  # as the server's: the formats share the first one's plan
            for fmt in ("atom", "rss", "json", "html"):
                started = time.perf_counter()
                render_output(store, config, name, fmt, plans=plans)
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {name:<17} " + " ".join(f"{t:9.1f}" for t in times))
        store.close()


if __name__ == "__main__":
    main()
