"""A write batch's state-only leased writes made in one go (store/postgres_ahead.py), on the real
test server: the rows and leases after it, and the long way for the writes it could not make."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from test_postgres_claims import FREE, LEASE, stores

from aggregator.errors import LeaseLost
from aggregator.ingest.feedstate import next_state
from aggregator.models import FeedState, PollRecord
from aggregator.store.postgres import PostgresStore
from aggregator.store.postgres_claims import Claim
from aggregator.store.protocol import AheadWrite
from aggregator.store.threads import StoreThreads

pytestmark = pytest.mark.postgres

__all__ = ["stores"]  # the fixture, shared with test_postgres_claims


class CountingStore(PostgresStore):
    """The real store, counting the writes its calls found made ahead."""

    hits = 0

    def done_ahead(self, expected: FeedState | None, state: FeedState, lease: str) -> int | None:
        generation = super().done_ahead(expected, state, lease)
        CountingStore.hits += generation is not None
        return generation


def claimed(store: PostgresStore, owner: str, n: int) -> list[Claim]:
    store.sync_feeds([(f"f{i}", f"http://127.0.0.{2 + i}:8001/feed.xml") for i in range(n)])
    return list(store.claim_due(owner, [], n, LEASE, {}, FREE).claims)


def not_modified(c: Claim, store: PostgresStore) -> PollRecord:
    now = store.db_clock().replace(microsecond=0)
    return PollRecord(
        c.name, c.state.url, now, "not_modified", now + timedelta(hours=1), http_status=304
    )


def row(store: PostgresStore, name: str) -> dict[str, object]:
    found = store.conn.execute(
        b"SELECT last_status, lease_owner, title FROM feeds WHERE name = %s", [name]
    ).fetchone()
    assert found is not None
    return dict(found)


def test_writes_made_ahead_are_found_by_their_calls_and_the_others_go_the_long_way(
    stores: Callable[[], PostgresStore],
) -> None:
    a, other = stores(), stores()
    ok, changed, lost = claimed(a, "a", 3)
    # Since the claim, another process wrote one row, and another poller took one lease.
    other.conn.execute(b"UPDATE feeds SET title = 'Elsewhere' WHERE name = %s", [changed.name])
    other.conn.execute(b"UPDATE feeds SET lease_owner = 'b' WHERE name = %s", [lost.name])
    items = [AheadWrite(c.state, not_modified(c, a), "a") for c in (ok, changed, lost)]
    states = [next_state(item.old, item.rec) for item in items]
    generation = a.generation()
    with a.atomic():
        a.write_ahead(items)
        # Made: the call finds it done, once (a second call writes for itself).
        assert a.done_ahead(ok.state, states[0], "a") == generation
        assert a.done_ahead(ok.state, states[0], "a") is None
        # Not made: the call's own way tells which is which, as without the bulk write.
        assert a.done_ahead(changed.state, states[1], "a") is None
        assert a.save_poll_if(changed.state, states[1], lease="a") is None
        assert a.done_ahead(lost.state, states[2], "a") is None
        with pytest.raises(LeaseLost):
            a.save_poll_if(lost.state, states[2], lease="a")
        a.forget_ahead()
    assert row(a, ok.name) == {"last_status": "not_modified", "lease_owner": None, "title": None}
    assert row(a, changed.name) == {"last_status": None, "lease_owner": "a", "title": "Elsewhere"}
    assert row(a, lost.name) == {"last_status": None, "lease_owner": "b", "title": None}


def test_a_write_is_found_made_only_for_the_very_state_and_lease_it_made(
    stores: Callable[[], PostgresStore],
) -> None:
    a = stores()
    (c,) = claimed(a, "a", 1)
    item = AheadWrite(c.state, not_modified(c, a), "a")
    state = next_state(item.old, item.rec)
    with a.atomic():
        a.write_ahead([item])
        failed = replace(item.rec, status="error", error="boom")
        other_state = next_state(item.old, failed)
        assert a.done_ahead(c.state, other_state, "a") is None
        assert a.done_ahead(c.state, state, "b") is None
        assert a.done_ahead(c.state, state, "a") is not None
        a.forget_ahead()


def test_a_batch_of_polls_writes_its_states_in_one_go(pg_url: str) -> None:
    setup = PostgresStore(pg_url)
    try:
        claims = claimed(setup, "a", 5)
        recs = [not_modified(c, setup) for c in claims]
    finally:
        setup.close()
    threads = StoreThreads(pg_url, opener=lambda: CountingStore(pg_url))
    CountingStore.hits = 0

    async def polls() -> list[tuple[int, FeedState]]:
        def write(c: Claim, rec: PollRecord) -> Callable[[PostgresStore], tuple[int, FeedState]]:
            def run(store: PostgresStore) -> tuple[int, FeedState]:
                state = next_state(c.state, rec)
                generation = store.save_poll_if(c.state, state, lease="a")
                assert generation is not None
                return generation, state

            return run

        calls = [
            threads.write_batched(write(c, rec), AheadWrite(c.state, rec, "a"))  # type: ignore[arg-type]
            for c, rec in zip(claims, recs, strict=True)
        ]
        return await asyncio.gather(*calls)

    try:
        written = asyncio.run(polls())
        states = {state.name: state for _, state in written}
        check = PostgresStore(pg_url)
        try:
            for c in claims:
                assert row(check, c.name)["lease_owner"] is None
                assert check.poll_state(c.name) == states[c.name]
        finally:
            check.close()
    finally:
        threads.close()
    assert CountingStore.hits == len(claims)  # each call found its write made
