"""The render cache over HTTP on loopback: after a store change the previous body is served while
the output re-renders, and a slow output's render never holds up another output's."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from test_sqlite import ok

import aggregator.rendercache
from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import identify
from aggregator.metrics import Metrics
from aggregator.models import ParsedEntry
from aggregator.outputs.plan import Rendered, render_output
from aggregator.server import OutputServer
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
WAIT = 180.0  # a deadline against hanging, never a measure


def _entry(feed: str, n: int, when: datetime) -> ParsedEntry:
    return ParsedEntry(
        guid=f"{feed}-{n}",
        guid_is_permalink=False,
        link=f"https://{feed}.example/{n}",
        title=f"{feed} entry {n}",
        summary=f"<p>{feed} story {n}: " + "words of the story " * 40 + "</p>",
        content="",
        author="",
        categories=(),
        published=when,
        updated=None,
    )


def _store_entries(store: Store, feed: str, items: list[ParsedEntry]) -> int:
    return store.record_poll(ok(feed, new=tuple(identify(feed, items, T0))))


def _database(db: Path, entries: dict[str, int]) -> None:
    """A store with `entries[feed]` entries in each feed."""
    store = Store(db)
    try:
        store.sync_feeds([(f, f"https://{f}.example/f") for f in entries])
        for feed, count in entries.items():
            items = [_entry(feed, n, T0 - timedelta(minutes=n)) for n in range(count)]
            _store_entries(store, feed, items)
    finally:
        store.close()


def _config(db: Path, outputs: dict[str, tuple[str, ...]], feeds: tuple[str, ...]) -> Config:
    return parse_config(
        {
            "aggregator": {"database": str(db)},
            "feeds": [{"name": f, "url": f"https://{f}.example/f"} for f in feeds],
            "outputs": [
                {"name": o, "title": o.title(), "feeds": list(sources)}
                for o, sources in outputs.items()
            ],
        }
    )


class Gate:
    """Wraps the real render_output: a render the test picks (`holds`) waits on the test's
    `release`, so "a render is in progress" is a state the test sets up, not a race it wins."""

    def __init__(self, holds: Callable[[Config, str], bool]) -> None:
        self.real = render_output
        self.holds = holds
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, store: Store, config: Config, name: str, *a: Any, **kw: Any) -> Rendered:
        if self.holds(config, name):
            self.started.set()
            assert self.release.wait(WAIT), "the test never released the render"
        return self.real(store, config, name, *a, **kw)


def test_a_slow_render_serves_the_previous_body_and_delays_no_other_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "x.db"
    _database(db, {"big": 20, "small": 1})
    config = _config(db, {"big": ("big",), "small": ("small",)}, ("big", "small"))
    armed = threading.Event()  # the first render of "big" goes through; the re-render waits
    gate = Gate(lambda _config, name: name == "big" and armed.is_set())
    monkeypatch.setattr(aggregator.rendercache, "render_output", gate)
    asyncio.run(_slow_render(db, config, gate, armed))


async def _slow_render(db: Path, config: Config, gate: Gate, armed: threading.Event) -> None:
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

            try:
                before = await get("big")  # nothing cached yet: this one waits for its render
                armed.set()
                later = T0 + timedelta(hours=1)
                for feed in ("big", "small"):
                    fresh = [_entry(feed, 10**6, later)]
                    generation[0] = await threads.write(
                        lambda s, f=feed, e=fresh: _store_entries(s, f, e)  # type: ignore[misc]
                    )
                # The big output is being rendered again (held by the gate until released):
                # its subscribers get the body of before at once.
                assert await get("big") == before
                assert await asyncio.to_thread(gate.started.wait, WAIT)
                assert (
                    metrics.registry.get_sample_value("aggregator_output_stale_served_total") == 1
                )
                # The small output, never rendered, renders while the big one's is held.
                assert b"small entry 1000000" in await get("small")
                assert await get("big") == before, "the big output's render was let through"
            finally:
                gate.release.set()
            # The big output catches up on its own.
            end = time.monotonic() + WAIT
            while b"big entry 1000000" not in await get("big"):
                assert time.monotonic() < end, "the big output never re-rendered"
                await asyncio.sleep(0.05)
    finally:
        await threads.aclose()


def test_no_body_is_compressed_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gzip of a big body takes most of a second: the render cache's, the search's, the status
    pages' and the index's must all be compressed off the loop thread."""
    db = tmp_path / "x.db"
    _database(db, {"a": 30})
    config = _config(db, {"o": ("a",)}, ("a",))
    compressed_on: list[int] = []
    real = gzip.compress

    def compress(data: bytes, *a: Any, **kw: Any) -> bytes:
        compressed_on.append(threading.get_ident())
        return real(data, *a, **kw)

    monkeypatch.setattr(gzip, "compress", compress)
    asyncio.run(_compressions(db, config, compressed_on))


async def _compressions(db: Path, config: Config, compressed_on: list[int]) -> None:
    loop_thread = threading.get_ident()
    threads = StoreThreads(db)
    generation = [await threads.read(lambda s: s.generation())]
    server = OutputServer(threads, lambda: config, lambda: generation[0], lambda: True, Metrics())
    timeout = aiohttp.ClientTimeout(total=WAIT)
    html = {"Accept": "text/html"}
    try:
        async with TestServer(server.app()) as site, aiohttp.ClientSession(timeout=timeout) as http:
            for path, headers in [
                ("/outputs/o.atom", {}),
                ("/outputs/o.html?q=story", {}),
                ("/status", html),
                ("/status.json", {}),
                ("/", {}),
            ]:
                compressed_on.clear()
                async with http.get(site.make_url(path), headers=headers) as resp:
                    assert resp.status == 200, path
                    assert resp.headers.get("Content-Encoding") == "gzip", path
                assert compressed_on, f"{path}: nothing was compressed"
                assert loop_thread not in compressed_on, f"{path} was compressed on the loop"
    finally:
        await threads.aclose()


def test_a_request_after_a_reload_never_gets_a_render_of_the_old_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "x.db"
    _database(db, {"a": 2, "b": 2})
    old = _config(db, {"o": ("a",)}, ("a", "b"))
    new = _config(db, {"o": ("b",)}, ("a", "b"))  # the reload moves the output to feed b
    gate = Gate(lambda config, _name: config is old)
    monkeypatch.setattr(aggregator.rendercache, "render_output", gate)
    asyncio.run(_reload_during_render(db, old, new, gate))


async def _reload_during_render(db: Path, old: Config, new: Config, gate: Gate) -> None:
    threads = StoreThreads(db)
    generation = await threads.read(lambda s: s.generation())
    current = [old]
    server = OutputServer(threads, lambda: current[0], lambda: generation, lambda: True, Metrics())
    try:
        before = asyncio.ensure_future(server.rendered("o", "atom"))
        assert await asyncio.to_thread(gate.started.wait, WAIT)  # rendering under the old config
        current[0] = new  # the reload
        after = asyncio.ensure_future(server.rendered("o", "atom"))
        # One turn of the loop: `after` has asked for the output and waits for a render. Only
        # now may the old config's render finish, so `after` cannot simply come too late for it.
        await asyncio.sleep(0)
        gate.release.set()
        rendered = await asyncio.wait_for(after, WAIT)
        assert b"b entry 0" in rendered.body
        assert b"a entry 0" not in rendered.body, "a render of the old config was served"
        assert b"a entry 0" in (await asyncio.wait_for(before, WAIT)).body
    finally:
        gate.release.set()
        await threads.aclose()
