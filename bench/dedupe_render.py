"""What cross-feed dedupe costs a render: render_output in each dedupe mode, printed.

A store of FEEDS x PER generated news items (bench/dedupe_quality.py's generator, half of them
with page chrome and boilerplate, dates spread over ten days), one output over every feed.
"cold" is the first render in the process (fingerprints computed), "warm" the second (cached).
Not a timed test: run it by hand after changing dedupe.py or output.py.

    .venv/bin/python bench/dedupe_render.py [FEEDS] [PER] [LIMIT]    # default 20 300 100
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dedupe_quality import KINDS, make_story, render_copy

from aggregator.config.load import parse_config
from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.outputs import dedupe
from aggregator.outputs.plan import render_output
from aggregator.store.sqlite import SqliteStore

NOW = datetime(2024, 5, 10, tzinfo=UTC)


def build(store: SqliteStore, feeds: list[str], per: int, rnd: random.Random) -> None:
    kinds = sorted(KINDS)
    for f in feeds:
        items = []
        for n in range(per):
            headline, content = render_copy(
                rnd, make_story(rnd, kinds[n % len(kinds)]), variant=rnd.random() < 0.5
            )
            when = NOW - timedelta(minutes=rnd.randint(0, 60 * 24 * 10))
            link = f"https://{f}.example/{n}"
            items.append(
                ParsedEntry(f"{f}-{n}", False, link, headline, "", content, "", (), when, None)
            )
        entries = tuple(identify(f, items, NOW))
        store.record_poll(PollRecord(f, f"https://{f}.example/feed", NOW, "ok", None, new=entries))


def main() -> None:
    defaults = [20, 300, 100]
    given = [int(a) for a in sys.argv[1:4]]
    n_feeds, per, limit = given + defaults[len(given) :]
    feeds = [f"f{i}" for i in range(n_feeds)]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db.sqlite"
        store = SqliteStore(db)
        try:
            build(store, feeds, per, random.Random(1))
            print(f"{n_feeds} feeds x {per} entries, output limit {limit}, atom")
            for mode in ("off", "exact", "near"):
                config = parse_config(
                    {
                        "aggregator": {"database": str(db)},
                        "feeds": [{"name": f, "url": f"https://{f}.example/feed"} for f in feeds],
                        "outputs": [{"name": "o", "title": "O", "dedupe": mode, "limit": limit}],
                    }
                )
                dedupe.fingerprint_text.cache_clear()
                dedupe._BY_ENTRY.clear()
                times = []
                for _ in range(2):
                    started = time.perf_counter()
                    r = render_output(store, config, "o", "atom", now=NOW)
                    times.append((time.perf_counter() - started) * 1000)
                print(
                    f"  {mode:<5} {r.entries:>5} stories  cold {times[0]:>6.0f} ms"
                    f"  warm {times[1]:>6.0f} ms"
                )
        finally:
            store.close()


if __name__ == "__main__":
    main()
