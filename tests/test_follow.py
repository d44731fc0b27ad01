"""Following the store generation: a commit by another process (a poller) reaches a server's
render cache without that server writing anything, over a real SQLite file and a real HTTP
server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from test_server_cache import _config, _database
from tests_support import REPO

from aggregator.jobs import follow_generation
from aggregator.metrics import Metrics
from aggregator.server import OutputServer
from aggregator.store.threads import StoreThreads

WAIT = 120.0  # a deadline against hanging, never a measure

# Another process commits a poll of feed "a" with a new entry, as a poller does.
POLLER = """
import sys
from datetime import timedelta
from test_server_cache import T0, _entry, _store_entries
from aggregator.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
print(_store_entries(store, "a", [_entry("a", 99, T0 + timedelta(hours=1))]))
store.close()
"""


def _commit_elsewhere(db: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", POLLER, str(db)],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
        env={"PYTHONPATH": f"{REPO / 'tests'}:{REPO / 'tests' / 'store'}:{REPO}"},
    )
    return int(out.stdout.strip())


def test_a_commit_in_another_process_reaches_the_served_output(tmp_path: Path) -> None:
    asyncio.run(_follows(tmp_path))


async def _follows(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    _database(db, {"a": 3})
    config = _config(db, {"all": ("a",)}, ("a",))
    store = StoreThreads(db)
    generation = 0
    stop = asyncio.Event()

    def on_change(value: int) -> None:
        nonlocal generation
        generation = max(generation, value)

    async def sleep(seconds: float) -> bool:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    server = OutputServer(store, lambda: config, lambda: generation, lambda: True, Metrics())
    follower = asyncio.ensure_future(follow_generation(store, on_change, sleep))
    try:
        async with TestServer(server.app()) as http, aiohttp.ClientSession() as session:
            url = str(http.make_url("/outputs/all.json"))
            async with session.get(url) as resp:
                before = await resp.json()
            assert [i["title"] for i in before["items"]] == [f"a entry {n}" for n in range(3)]
            committed = await asyncio.to_thread(_commit_elsewhere, db)

            async def served_titles() -> list[str]:
                async with session.get(url) as resp:
                    return [i["title"] for i in (await resp.json())["items"]]

            async def until_new() -> None:
                while "a entry 99" not in await served_titles():
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(until_new(), WAIT)
            assert generation == committed
    finally:
        stop.set()
        await asyncio.wait_for(follower, WAIT)
        await store.aclose()
