"""This process as a node: its row refreshed by the job (with the hash of the config it runs,
changed by a reload) and deleted at the stop; /status (JSON and HTML) lists the live nodes and
warns when their configs differ. A real SQLite file, a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from test_server_cache import _config, _database

from aggregator.config.fingerprint import SHOWN, config_hash
from aggregator.config.resolved import Config
from aggregator.metrics import Metrics
from aggregator.models import NodeRecord
from aggregator.nodes import NODE_LIVE, ThisNode, nodes_view, refresh_node
from aggregator.server import OutputServer
from aggregator.store.sqlite import SqliteStore
from aggregator.store.threads import StoreThreads

WAIT = 120.0  # a deadline against hanging, never a measure
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _record(node_id: str, digest: str, seen: datetime = NOW) -> NodeRecord:
    return NodeRecord(node_id, "server", "web-1", 10, "0.0.0.0:8080", digest, NOW, seen)


def test_the_view_warns_only_when_live_nodes_run_different_configs() -> None:
    same = [_record("a", "1" * 64), _record("b", "1" * 64)]
    shown, warning = nodes_view(same, NOW + timedelta(seconds=4), this="b")
    assert warning is None
    assert [(n["id"], n["this"], n["seconds_since_seen"]) for n in shown] == [
        ("a", False, 4),
        ("b", True, 4),
    ]
    assert shown[0]["config_hash"] == "1" * SHOWN
    _, warning = nodes_view([*same, _record("c", "2" * 64)], NOW)
    assert warning == (
        f"the live nodes run 2 different configs ({'1' * SHOWN}: a, b; {'2' * SHOWN}: c)"
    )


def test_the_job_records_the_node_follows_a_reload_and_forgets_it_at_the_stop(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    _database(db, {"a": 1})
    first = _config(db, {"all": ("a",)}, ("a",))
    reloaded = _config(db, {"all": ("a",), "more": ("a",)}, ("a",))
    asyncio.run(_job(db, first, reloaded))


async def _job(db: Path, first: Config, reloaded: Config) -> None:
    store = StoreThreads(db)
    current = first
    beats = asyncio.Queue[None]()
    stop = asyncio.Event()

    async def sleep(seconds: float) -> bool:
        beats.put_nowait(None)
        await asyncio.sleep(0.01)  # the test's turn between refreshes, not 10 seconds
        return stop.is_set()

    node = ThisNode("poller", "127.0.0.1:9000", NOW)
    job = asyncio.ensure_future(refresh_node(store, node, lambda: current, sleep))
    try:
        await asyncio.wait_for(beats.get(), WAIT)
        (row,) = await store.read(lambda s: s.nodes(NOW - timedelta(days=1)))
        assert (row.node_id, row.role, row.listen, row.started) == (
            node.node_id,
            "poller",
            "127.0.0.1:9000",
            NOW,
        )
        assert row.config_hash == config_hash(first)
        current = reloaded

        async def until_reloaded() -> None:
            while True:
                await beats.get()
                rows = await store.read(lambda s: s.nodes(NOW - timedelta(days=1)))
                if rows[0].config_hash == config_hash(reloaded):
                    return

        await asyncio.wait_for(until_reloaded(), WAIT)
        assert config_hash(reloaded) != config_hash(first)
        stop.set()
        await asyncio.wait_for(job, WAIT)
        assert await store.read(lambda s: s.nodes(NOW - timedelta(days=1))) == []
    finally:
        job.cancel()
        await store.aclose()


def test_status_lists_the_live_nodes_and_warns_when_configs_differ(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    _database(db, {"a": 1})
    now = datetime.now(UTC)
    seen = now - timedelta(seconds=3)
    writer = SqliteStore(db)
    try:
        writer.record_node(replace(_record("me", "1" * 64, seen), role="all"))
        writer.record_node(_record("other", "2" * 64, seen))
        # Silent for longer than NODE_LIVE: not live any more, not shown.
        writer.record_node(_record("gone", "3" * 64, now - NODE_LIVE - timedelta(seconds=5)))
    finally:
        writer.close()
    asyncio.run(_status(db))


async def _status(db: Path) -> None:
    config = _config(db, {"all": ("a",)}, ("a",))
    store = StoreThreads(db)
    server = OutputServer(store, lambda: config, lambda: 1, lambda: True, Metrics(), node_id="me")
    try:
        async with TestServer(server.app()) as http, aiohttp.ClientSession() as session:
            async with session.get(http.make_url("/status.json")) as resp:
                doc = await resp.json()
            assert [(n["id"], n["role"], n["this"]) for n in doc["nodes"]] == [
                ("me", "all", True),
                ("other", "server", False),
            ]
            assert doc["nodes_warning"].startswith("the live nodes run 2 different configs")
            async with session.get(
                http.make_url("/status"), headers={"Accept": "text/html"}
            ) as resp:
                page = await resp.text()
            assert 'id="nodes-differ"' in page and "run different configs" in page
            assert 'id="node-me" class="this"' in page and 'id="node-other"' in page
            assert "node-gone" not in page
            assert f"<code>{'2' * SHOWN}</code>" in page
    finally:
        await store.aclose()
