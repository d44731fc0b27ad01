"""Store threads over PostgreSQL when the server restarts or goes away: the broken
connections are dropped and reopened, errors say so without the password, nothing committed
is lost. The real test server, really stopped and started (tests/pgserver.py)."""

from __future__ import annotations

import asyncio

import pytest
from pgserver import PgServer

from aggregator.config.database import parse_database
from aggregator.errors import StoreError
from aggregator.store.open import open_store, store_threads
from aggregator.store.protocol import Store

pytestmark = pytest.mark.postgres


def _names(store: Store) -> list[str]:
    return [s.name for s in store.feed_states()]


def test_a_restart_is_noticed_before_the_next_statement(pg_url: str, pg_server: PgServer) -> None:
    store = open_store(parse_database(pg_url))
    try:
        store.sync_feeds([("a", "https://a.example/feed")])
        assert not store.is_broken()
        pg_server.restart()
        # Idle while the server went down: its goodbye is read without sending anything.
        assert store.is_broken()
    finally:
        store.close()


def test_store_threads_reconnect_after_a_restart_and_an_outage(
    pg_url: str, pg_server: PgServer
) -> None:
    async def scenario() -> None:
        threads = store_threads(parse_database(pg_url))
        try:
            await threads.write(lambda s: s.sync_feeds([("a", "https://a.example/feed")]))
            assert await threads.read(_names) == ["a"]
            assert await threads.read_batched(_names) == ["a"]

            pg_server.restart()
            # Every thread's connection broke while idle: each call opens a new one first.
            assert await threads.read(_names) == ["a"]
            assert await threads.read_batched(_names) == ["a"]
            await threads.write_batched(lambda s: s.check_writable())
            await threads.write(lambda s: s.sync_feeds([("b", "https://b.example/feed")]))

            with pg_server.down():
                for call in (
                    threads.write_batched(lambda s: s.check_writable()),
                    threads.write(lambda s: s.sync_feeds([("c", "https://c.example/")])),
                    threads.read(_names),
                    threads.read_batched(_names),
                ):
                    with pytest.raises(StoreError) as caught:
                        await call
                    message = str(caught.value)
                    assert pg_server.password not in message
                    assert "postgresql://127.0.0.1:" in message or "closed" in message, message
                # While it stays down, each call tries again (and fails the same way).
                with pytest.raises(StoreError, match="cannot open database postgresql://"):
                    await threads.read(_names)

            # Back: the next calls reopen their connections; what was committed is there,
            # the write refused during the outage is not.
            assert await threads.read(_names) == ["a", "b"]
            await threads.write_batched(lambda s: s.check_writable())
            await threads.write(lambda s: s.sync_feeds([("c", "https://c.example/")]))
            assert await threads.read_batched(_names) == ["a", "b", "c"]
        finally:
            await threads.aclose()

    asyncio.run(scenario())


def test_store_threads_on_postgresql_write_two_batches_at_once(pg_url: str) -> None:
    """Two writing connections (store/open.py PG_WRITERS): a write that waits for another
    to run finishes, which one writer thread could never do; each has its own connection."""
    import threading

    arrived = threading.Event()
    seen: list[Store] = []

    def first(store: Store) -> bool:
        seen.append(store)
        return arrived.wait(timeout=60)

    def second(store: Store) -> None:
        seen.append(store)
        arrived.set()

    async def scenario() -> None:
        threads = store_threads(parse_database(pg_url))
        try:
            waited, _ = await asyncio.gather(threads.write(first), threads.write(second))
            assert waited, "the second write never ran beside the first"
            assert seen[0] is not seen[1]
        finally:
            await threads.aclose()

    asyncio.run(scenario())
