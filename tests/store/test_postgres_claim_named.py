"""A one-off `aggregator fetch` beside pollers (PostgresClaims.claim_named), on the real test
server: it leases the feeds it names unless a poller holds them or their host."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest
from test_postgres_claims import FREE, HOSTS, LEASE, claim, feeds, others, polled, stores

from aggregator.ingest.hosts import HostLimit
from aggregator.store.postgres import PostgresStore

__all__ = ["stores"]  # the fixture, shared with test_postgres_claims
pytestmark = pytest.mark.postgres

DELAYED = HostLimit(concurrency=2, delay=timedelta(seconds=2))
HOUR = timedelta(hours=1)


def lease_of(store: PostgresStore, name: str) -> str | None:
    row = store.conn.execute(b"SELECT lease_owner FROM feeds WHERE name = %s", [name]).fetchone()
    assert row is not None
    owner: str | None = row["lease_owner"]
    return owner


def test_a_feed_a_poller_leased_is_left_to_it_and_the_free_ones_are_leased(
    stores: Callable[[], PostgresStore],
) -> None:
    poller, fetch = stores(), stores()
    names = feeds(poller, per_host=2)
    (theirs,) = claim(poller, "poller-1", ["h0-00"])
    got = fetch.claim_named("fetch-1", names, LEASE, {}, FREE, HOUR)
    assert sorted(c.name for c in got.claims) == sorted(set(names) - {"h0-00"})
    assert got.held == {"h0-00": "leased by poller-1"}
    assert lease_of(poller, "h0-00") == "poller-1"
    assert all(lease_of(poller, c.name) == "fetch-1" for c in got.claims)
    # Leased, not only claimed: no poller takes them (they are all due).
    assert claim(poller, "poller-2", names) == ()
    # The fetch's write ends its lease, as a poller's does; a lease not its own is refused.
    mine = next(c for c in got.claims if c.name == "h0-01")
    assert polled(fetch, mine, "fetch-1") is not None
    assert lease_of(fetch, "h0-01") is None
    assert polled(poller, theirs, "poller-1") is not None
    # What it did not poll it hands back: the pollers may take it at once.
    assert fetch.release("fetch-1", names) == len(got.claims) - 1
    assert sorted(c.name for c in claim(poller, "poller-2", names)) == sorted(
        set(names) - {"h0-00", "h0-01"}
    )


def test_a_host_a_poller_owns_is_skipped_and_a_free_one_becomes_the_fetchs(
    stores: Callable[[], PostgresStore],
) -> None:
    poller, fetch = stores(), stores()
    names = feeds(poller, per_host=3)
    # The poller holds a feed of h0 (a host with a delay): h0 is its until that lease ends.
    (theirs,) = poller.claim_due(
        "poller-1", others(poller, ["h0-00"]), 1, LEASE, {}, DELAYED
    ).claims
    assert poller.host_rows()[HOSTS[0]]["owner"] == "poller-1"
    got = fetch.claim_named("fetch-1", names, LEASE, {}, DELAYED, HOUR)
    assert sorted(got.held) == ["h0-00", "h0-01", "h0-02"]
    assert got.held["h0-01"] == f"its host {HOSTS[0]} is polled by poller-1 now"
    assert {c.origin for c in got.claims} == {HOSTS[1], HOSTS[2]}
    # Every feed of h1 and h2, one host_delay apart from now, and the hosts the fetch's.
    for host in HOSTS[1:]:
        starts = sorted(c.start for c in got.claims if c.origin == host)
        assert len(starts) == 3 and all(
            b - a == DELAYED.delay for a, b in itertools.pairwise(starts)
        )
        assert starts[0] >= got.clock
        assert fetch.host_rows()[host]["owner"] == "fetch-1"
    assert got.slots == {HOSTS[1]: 2, HOSTS[2]: 2}
    # So the poller gets nothing of them, not even a due feed the fetch did not name.
    poller.sync_feeds([("h1-extra", f"{HOSTS[1]}/extra.xml")])
    assert claim(poller, "poller-1", ["h1-extra"], default=DELAYED) == ()
    # The poller's last lease on h0 ends, and its next claim gives h0 up: h0 is free again,
    # from host_delay after that.
    assert polled(poller, theirs, "poller-1") is not None
    assert claim(poller, "poller-1", ["h1-extra"], default=DELAYED) == ()
    let_go = poller.db_clock()
    again = fetch.claim_named("fetch-1", ["h0-01"], LEASE, {}, DELAYED, HOUR)
    (h0,) = again.claims
    assert h0.start >= let_go + DELAYED.delay - timedelta(milliseconds=50)


def test_a_host_without_a_delay_gives_the_fetch_only_the_slots_pollers_leave(
    stores: Callable[[], PostgresStore],
) -> None:
    poller, fetch = stores(), stores()
    names = feeds(poller, per_host=3)
    rule = HostLimit(concurrency=2)  # no delay: no owner, leases are counted
    mine = claim(poller, "poller-1", ["h0-00", "h1-00", "h1-01"], default=rule)
    assert len(mine) == 3
    got = fetch.claim_named("fetch-1", names, LEASE, {}, rule, HOUR)
    assert got.slots == {HOSTS[0]: 1, HOSTS[2]: 2}
    assert sorted(c.name for c in got.claims) == ["h0-01", "h0-02", "h2-00", "h2-01", "h2-02"]
    assert sorted(got.held) == ["h0-00", "h1-00", "h1-01", "h1-02"]
    assert "host_concurrency" in got.held["h1-02"]


def test_a_turn_past_the_wait_is_not_leased(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    names = feeds(store, per_host=3)
    got = store.claim_named("fetch-1", names[:3], LEASE, {}, DELAYED, timedelta(seconds=3))
    assert [c.name for c in got.claims] == ["h0-00", "h0-01"]
    assert list(got.late) == ["h0-02"]
    assert got.late["h0-02"].at >= got.clock + 2 * DELAYED.delay
    assert lease_of(store, "h0-02") is None
    # A host's Retry-After: its feeds start after it, or are late if it ends past the wait.
    until = store.db_clock() + HOUR
    store.block_host(HOSTS[1], until)
    blocked = store.claim_named("fetch-1", names[3:6], LEASE, {}, DELAYED, timedelta(minutes=5))
    assert blocked.claims == () and sorted(blocked.late) == ["h1-00", "h1-01", "h1-02"]
    assert blocked.blocked == {HOSTS[1]: until}
