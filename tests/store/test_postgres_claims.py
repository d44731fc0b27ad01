"""Claims and leases of pollers sharing one PostgreSQL store (store/postgres_claims.py), on the
real test server: several connections, on several threads, racing for the same due feeds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from aggregator.errors import LeaseLost
from aggregator.ingest.hosts import HostLimit
from aggregator.store.postgres import PostgresStore
from aggregator.store.postgres_claims import Claim

pytestmark = pytest.mark.postgres

HOSTS = ("http://127.0.0.2:8001", "http://127.0.0.3:8001", "http://127.0.0.4:8001")
FREE = HostLimit(concurrency=64)
LEASE = timedelta(minutes=2)


@pytest.fixture
def stores(pg_url: str) -> Iterator[Callable[[], PostgresStore]]:
    """Opens connections to one fresh database; all closed after the test."""
    opened: list[PostgresStore] = []

    def open_one() -> PostgresStore:
        opened.append(PostgresStore(pg_url))
        return opened[-1]

    try:
        yield open_one
    finally:
        for s in opened:
            s.close()


def feeds(store: PostgresStore, per_host: int) -> list[str]:
    pairs = [
        (f"h{h}-{i:02}", f"{host}/feed/{i}.xml")
        for h, host in enumerate(HOSTS)
        for i in range(per_host)
    ]
    store.sync_feeds(pairs)
    return [name for name, _ in pairs]


def claim(
    store: PostgresStore,
    owner: str,
    names: list[str],
    limit: int = 100,
    default: HostLimit = FREE,
    lease: timedelta = LEASE,
) -> tuple[Claim, ...]:
    return store.claim_due(owner, others(store, names), limit, lease, {}, default).claims


def others(store: PostgresStore, names: list[str]) -> list[str]:
    """The stored feeds not in `names`: those a poller configured with `names` skips."""
    stored = store.conn.execute(b"SELECT name FROM feeds").fetchall()
    return sorted({r["name"] for r in stored} - set(names))


def polled(store: PostgresStore, c: Claim, owner: str) -> int | None:
    """Write a poll of a claimed feed as the poller does: due again in an hour."""
    now = store.db_clock()
    state = replace(c.state, last_poll=now.replace(microsecond=0), last_status="not_modified")
    state = replace(state, next_poll=(now + timedelta(hours=1)).replace(microsecond=0))
    return store.save_poll_if(c.state, state, lease=owner)


def test_racing_claimers_never_take_one_feed_twice(
    stores: Callable[[], PostgresStore],
) -> None:
    names = feeds(stores(), per_host=40)
    claimers = [stores() for _ in range(4)]
    got: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def run(i: int) -> None:
        start.wait()
        while True:
            claims = claim(claimers[i], f"node-{i}", names, limit=7)
            if not claims:
                return
            got[i].extend(c.name for c in claims)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    taken = Counter(name for names_of in got for name in names_of)
    assert sorted(taken) == sorted(names)
    assert set(taken.values()) == {1}
    assert sum(bool(g) for g in got) >= 2  # the race really was shared


def test_host_concurrency_holds_across_claimers(stores: Callable[[], PostgresStore]) -> None:
    names = feeds(stores(), per_host=6)
    rule = HostLimit(concurrency=2)
    a, b = stores(), stores()
    first = claim(a, "a", names, limit=3, default=rule) + claim(b, "b", names, default=rule)
    per_host = Counter(c.name.split("-")[0] for c in first)
    assert per_host == {"h0": 2, "h1": 2, "h2": 2}
    # Without a delay a host is nobody's own: both claimers took some of its slots.
    assert len(first) == 6 and {c.origin for c in first[3:]} & {c.origin for c in first[:3]}
    # Every host's slots are full: nothing more, from either claimer, until a poll ends one.
    assert claim(a, "a", names, default=rule) == ()
    assert claim(b, "b", names, default=rule) == ()
    done = first[0]
    assert polled(a, done, "a") is not None
    (more,) = claim(b, "b", names, default=rule)
    assert more.origin == done.origin


def test_a_host_with_a_delay_is_one_claimers_until_its_last_lease_ends(
    stores: Callable[[], PostgresStore],
) -> None:
    names = feeds(stores(), per_host=6)
    rule = HostLimit(concurrency=2, delay=timedelta(seconds=2))
    a, b = stores(), stores()
    mine = claim(a, "a", names, default=rule)
    assert Counter(c.name.split("-")[0] for c in mine) == {"h0": 2, "h1": 2, "h2": 2}
    for host in HOSTS:
        starts = sorted(c.start for c in mine if c.origin == host)
        assert starts[1] - starts[0] >= rule.delay
    # The hosts are a's while it holds feeds of them: b gets none, even after one poll ends.
    assert claim(b, "b", names, default=rule) == ()
    h0 = [c for c in mine if c.origin == HOSTS[0]]
    assert polled(a, h0[0], "a") is not None
    assert claim(b, "b", names, default=rule) == ()
    # a's last lease there ends: h0 stays a's, idle, until a's next claim gives it up (a
    # claim that takes none of it: a poller whose config no longer has those feeds)...
    assert polled(a, h0[1], "a") is not None
    assert claim(b, "b", names, default=rule) == ()
    assert claim(a, "a", [n for n in names if not n.startswith("h0")], default=rule) == ()
    let_go = a.db_clock()
    # ... and then b's first start there comes host_delay after that (after every request a
    # could have sent), whatever a's starts were.
    (taken,) = claim(b, "b", names, default=rule, limit=1)
    assert taken.origin == HOSTS[0]
    assert taken.start >= let_go + rule.delay - timedelta(milliseconds=50)
    assert a.host_rows()[HOSTS[0]]["owner"] == "b"
    # A release of b's claim not started lets the host go too.
    assert b.release("b", [taken.name]) == 1
    assert a.host_rows()[HOSTS[0]]["owner"] is None


def test_a_host_under_retry_after_gives_no_start_before_it(
    stores: Callable[[], PostgresStore],
) -> None:
    store = stores()
    names = feeds(store, per_host=2)
    until = store.db_clock() + timedelta(hours=1)
    store.block_host(HOSTS[1], until)
    store.block_host(HOSTS[1], until - timedelta(minutes=5))  # an earlier end changes nothing
    claimed = stores().claim_due("b", others(store, names), 100, LEASE, {}, FREE)
    assert sorted(c.name for c in claimed.claims) == ["h0-00", "h0-01", "h2-00", "h2-01"]
    # Every poller learns of the block with its claims, for the polls it claimed before.
    assert claimed.blocked == {HOSTS[1]: until}
    # A block that ends within the claim's reach is handed out as the start itself.
    soon = store.db_clock() + timedelta(seconds=3)
    store.block_host(HOSTS[2], soon)
    store.sync_feeds([("late", f"{HOSTS[2]}/late.xml")])
    (late,) = claim(store, "a", ["late"])
    assert late.start >= soon


def test_an_expired_lease_is_taken_over_and_the_old_write_refused(
    stores: Callable[[], PostgresStore],
) -> None:
    a, b = stores(), stores()
    feeds(a, per_host=1)
    (mine,) = claim(a, "a", ["h0-00"], lease=timedelta(seconds=1))
    assert claim(b, "b", ["h0-00"]) == ()
    deadline = time.monotonic() + 30
    while not (theirs := claim(b, "b", ["h0-00"])):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
    assert a.renew("a", ["h0-00"], LEASE) == []  # no longer a's to renew
    assert b.renew("b", ["h0-00"], LEASE) == ["h0-00"]
    with pytest.raises(LeaseLost, match="lease lost"):
        polled(a, mine, "a")
    assert polled(b, theirs[0], "b") is not None
    row = b.conn.execute(b"SELECT lease_owner, lease_until FROM feeds WHERE name = 'h0-00'")
    assert row.fetchone() == {"lease_owner": None, "lease_until": None}
    # Written once, by the poller that held the lease: the feed is due in an hour, not now.
    assert claim(a, "a", ["h0-00"]) == ()
    with pytest.raises(LeaseLost):  # a stale retry of a's write is still refused
        polled(a, mine, "a")


def test_only_due_configured_live_feeds_are_claimed(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    names = feeds(store, per_host=2)
    (gone,) = claim(store, "a", ["h0-00"])
    store.save_poll_if(gone.state, replace(gone.state, gone=True), lease="a")
    claims = claim(store, "a", names[:4])  # h0-00 gone; the h2 feeds not configured here
    assert sorted(c.name for c in claims) == ["h0-01", "h1-00", "h1-01"]
    assert claim(store, "a", names[:4]) == ()  # leased now


def test_release_hands_unstarted_claims_back(stores: Callable[[], PostgresStore]) -> None:
    a, b = stores(), stores()
    names = feeds(a, per_host=1)
    taken = claim(a, "a", names)
    assert a.release("a", [c.name for c in taken]) == 3
    assert b.release("b", names) == 0  # not b's
    assert sorted(c.name for c in claim(b, "b", names)) == sorted(names)


def test_a_moved_feed_is_counted_on_its_new_host(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    feeds(store, per_host=1)
    (c,) = claim(store, "a", ["h0-00"])
    moved = replace(c.state, redirect_url=f"{HOSTS[1]}/moved.xml", redirect_count=1)
    assert store.save_poll_if(c.state, moved, lease="a") is not None
    row = store.conn.execute(b"SELECT origin FROM feeds WHERE name = 'h0-00'").fetchone()
    assert row == {"origin": HOSTS[1]}
    # h1 allows one at a time: its own feed and the moved one now share that slot.
    one = HostLimit(concurrency=1)
    claims = claim(store, "a", ["h0-00", "h1-00"], default=one)
    assert len(claims) == 1


def test_a_renewal_does_not_wait_for_the_pollers_own_write_of_a_feed(
    stores: Callable[[], PostgresStore],
) -> None:
    a, writer = stores(), stores()
    feeds(a, per_host=2)
    mine = claim(a, "a", ["h0-00", "h0-01"])
    before = {r["name"]: r["lease_until"] for r in a.conn.execute(b"SELECT * FROM feeds")}
    # The poller's writer holds one feed's row (its poll's write, not yet committed): the
    # renewal, on another connection, extends the other lease and still counts that one.
    with writer.conn.transaction():
        writer.conn.execute(b"SELECT * FROM feeds WHERE name = 'h0-00' FOR UPDATE")
        a.conn.execute(b"SET statement_timeout = '5s'")  # a wait would fail the test
        assert a.renew("a", [c.name for c in mine], LEASE * 2) == ["h0-00", "h0-01"]
    after = {r["name"]: r["lease_until"] for r in a.conn.execute(b"SELECT * FROM feeds")}
    assert after["h0-01"] > before["h0-01"] and after["h0-00"] == before["h0-00"]


def test_a_stopping_poller_gives_up_its_idle_hosts(stores: Callable[[], PostgresStore]) -> None:
    rule = HostLimit(concurrency=2, delay=timedelta(seconds=1))
    a, b = stores(), stores()
    names = feeds(a, per_host=1)
    mine = claim(a, "a", names, default=rule)
    assert {r["owner"] for r in a.host_rows().values()} == {"a"}
    for c in mine[1:]:
        assert polled(a, c, "a") is not None
    a.let_go("a")  # what ClaimLoop.stop does last
    owners = {host: r["owner"] for host, r in b.host_rows().items()}
    # The host a still holds a lease on stays a's; the others are free for b.
    assert owners == {mine[0].origin: "a", **{c.origin: None for c in mine[1:]}}


def test_a_leased_write_over_a_row_written_since_is_refused_and_nothing_changes(
    stores: Callable[[], PostgresStore],
) -> None:
    a, other = stores(), stores()
    feeds(a, per_host=1)
    (mine,) = claim(a, "a", ["h0-00"])
    # Another process (`aggregator fetch` of an older version, say) wrote the row meanwhile.
    other.save_poll(replace(mine.state, title="Written elsewhere"))
    assert polled(a, mine, "a") is None  # the poll started from a state the row no longer has
    row = a.conn.execute(b"SELECT title, lease_owner FROM feeds WHERE name = 'h0-00'").fetchone()
    assert row == {"title": "Written elsewhere", "lease_owner": "a"}
    # From the row as it is now, the write goes through, ends the lease, and keeps the
    # generation (no entries).
    current = a.poll_state("h0-00")
    assert current is not None
    now = a.db_clock().replace(microsecond=0)
    written = a.save_poll_if(current, replace(current, last_poll=now), lease="a")
    assert written == a.generation()
    row = a.conn.execute(b"SELECT title, lease_owner FROM feeds WHERE name = 'h0-00'").fetchone()
    assert row == {"title": "Written elsewhere", "lease_owner": None}


def test_letting_a_host_go_never_waits_for_its_row(stores: Callable[[], PostgresStore]) -> None:
    rule = HostLimit(concurrency=1, delay=timedelta(seconds=1))
    a, other = stores(), stores()
    names = feeds(a, per_host=1)
    mine = claim(a, "a", names[:1], default=rule)
    assert polled(a, mine[0], "a") is not None  # a holds no lease on h0 any more
    # Another session holds h0's row (a fetch claiming, a Retry-After being recorded): a
    # claim holding rows of its own must not wait for it, and lets h0 go the next time.
    with other.conn.transaction():
        other.conn.execute(b"SELECT * FROM hosts WHERE origin = %s FOR UPDATE", [HOSTS[0]])
        a.conn.execute(b"SET statement_timeout = '5s'")  # a wait would fail the test
        a.let_go("a")
        assert a.host_rows()[HOSTS[0]]["owner"] == "a"
    a.let_go("a")
    assert a.host_rows()[HOSTS[0]]["owner"] is None
