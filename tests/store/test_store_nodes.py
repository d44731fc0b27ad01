"""The nodes table on both stores (record, refresh, list the live ones, forget), and the
prune lock that keeps nodes sharing a PostgreSQL store from pruning at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_sqlite import entries, ok, parsed

from aggregator.models import NodeRecord
from aggregator.store.nodes import FORGET_AFTER
from aggregator.store.postgres import PostgresStore

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def node(node_id: str, **changes: Any) -> NodeRecord:
    base = NodeRecord(
        node_id=node_id,
        role="server",
        host="web-1",
        pid=4242,
        listen="0.0.0.0:8080",
        config_hash="c0ffee",
        started=T0,
        last_seen=T0,
    )
    return replace(base, **changes)


def test_a_node_is_recorded_refreshed_and_forgotten(store: Any) -> None:
    assert store.nodes(T0 - timedelta(hours=1)) == []
    store.record_node(node("a"))
    store.record_node(node("b", role="poller", pid=7, started=T0 + timedelta(seconds=1)))
    assert [n.node_id for n in store.nodes(T0)] == ["a", "b"]  # oldest first
    assert store.nodes(T0)[1] == node("b", role="poller", pid=7, started=T0 + timedelta(seconds=1))
    # A refresh moves last_seen and may carry a new config hash (a reload); nothing else moves.
    later = T0 + timedelta(seconds=10)
    store.record_node(node("a", last_seen=later, config_hash="beef"))
    (a,) = store.nodes(later)
    assert (a.node_id, a.config_hash, a.started, a.last_seen) == ("a", "beef", T0, later)
    store.forget_node("a")
    assert [n.node_id for n in store.nodes(T0)] == ["b"]


def test_nodes_silent_for_a_day_are_deleted_at_the_next_refresh(store: Any) -> None:
    store.record_node(node("old"))
    store.record_node(node("recent", last_seen=T0 + FORGET_AFTER / 2))
    store.record_node(node("me", last_seen=T0 + FORGET_AFTER + timedelta(seconds=1)))
    assert {n.node_id for n in store.nodes(T0 - timedelta(days=30))} == {"recent", "me"}


@pytest.mark.postgres
def test_one_node_prunes_at_a_time_the_other_skips(pg_url: str) -> None:
    """Two connections, as two nodes: while one's prune transaction is open (it holds the
    prune lock until its commit), the other's prune does nothing and says so (None)."""
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        first.record_poll(ok("a", new=entries("a", *(parsed(n) for n in range(3)))))
        with first.atomic():
            assert first.prune(T0, retention_days=0, max_per_feed=1) == 2
            # The first node's transaction is still open: its lock holds.
            assert second.prune(T0, retention_days=0, max_per_feed=1) is None
            assert second.count_entries() == 3  # its deletes are not committed yet either
        assert second.count_entries() == 1
        # Committed: the lock is free again, and the second node prunes (nothing left to do).
        assert second.prune(T0, retention_days=0, max_per_feed=1) == 0
        assert second.last_prune() == T0
    finally:
        first.close()
        second.close()
