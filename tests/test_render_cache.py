"""The render cache over HTTP on loopback: after a store change the previous body is served while
the output re-renders, and a slow output's render never holds up another output's."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from test_store import ok

from aggregator.config import Config, FeedConfig, OutputConfig, Settings
from aggregator.identity import identify
from aggregator.models import ParsedEntry
from aggregator.server import Metrics, OutputServer
from aggregator.store import Store, StoreThreads

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
BIG = 8000  # entries; planning the big output (near-dedupe over them) takes seconds
WAIT = 180.0
_WORDS = [f"w{i}" for i in range(3000)]


def _entry(feed: str, n: int, rng: random.Random, when: datetime) -> ParsedEntry:
    text = " ".join(rng.choice(_WORDS) for _ in range(120))
    return ParsedEntry(
        guid=f"{feed}-{n}",
        guid_is_permalink=False,
        link=f"https://{feed}.example/{n}",
        title=f"{feed} entry {n}",
        summary=f"<p>{text}</p>",
        content="",
        author="",
        categories=(),
        published=when,
        updated=None,
    )


def _store_entries(store: Store, feed: str, items: list[ParsedEntry]) -> int:
    return store.record_poll(ok(feed, new=tuple(identify(feed, items, T0))))


def test_a_slow_render_serves_the_previous_body_and_delays_no_other_output(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    rng = random.Random(7)
    store = Store(db)
    try:
        store.sync_feeds([("big", "https://big.example/f"), ("small", "https://small.example/f")])
        _store_entries(
            store, "big", [_entry("big", n, rng, T0 - timedelta(minutes=n)) for n in range(BIG)]
        )
        _store_entries(store, "small", [_entry("small", 0, rng, T0)])
    finally:
        store.close()
    config = Config(
        aggregator=Settings(database=db),
        feeds=(
            FeedConfig(name="big", url="https://big.example/f"),
            FeedConfig(name="small", url="https://small.example/f"),
        ),
        outputs=(
            OutputConfig(name="big", title="Big", feeds=("big",), limit=2000),
            OutputConfig(name="small", title="Small", feeds=("small",)),
        ),
    )
    asyncio.run(_scenario(db, config, rng))


async def _scenario(db: Path, config: Config, rng: random.Random) -> None:
    threads = StoreThreads(db)
    generation = [await threads.read(lambda s: s.generation())]
    metrics = Metrics()
    server = OutputServer(threads, lambda: config, lambda: generation[0], lambda: True, metrics)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    try:
        async with TestServer(server.app()) as site, aiohttp.ClientSession(timeout=timeout) as http:

            async def get(output: str) -> bytes:
                async with http.get(site.make_url(f"/outputs/{output}.atom")) as resp:
                    assert resp.status == 200
                    return await resp.read()

            before = await get("big")  # nothing cached yet: this one waits for its render
            later = T0 + timedelta(hours=1)
            for feed in ("big", "small"):
                fresh = [_entry(feed, 10**6, rng, later)]
                generation[0] = await threads.write(
                    lambda s, f=feed, e=fresh: _store_entries(s, f, e)  # type: ignore[misc]
                )
            # The big output is being planned again, for seconds; its subscribers get the body
            # of before at once.
            assert await get("big") == before
            assert metrics.registry.get_sample_value("aggregator_output_stale_served_total") == 1
            # The small output, never rendered, renders at once: not behind the big one.
            assert b"small entry 1000000" in await get("small")
            assert await get("big") == before, "the small render should not wait for the big"
            # The big output catches up on its own.
            end = time.monotonic() + WAIT
            while b"big entry 1000000" not in await get("big"):
                assert time.monotonic() < end, "the big output never re-rendered"
                await asyncio.sleep(0.1)
    finally:
        await threads.aclose()
