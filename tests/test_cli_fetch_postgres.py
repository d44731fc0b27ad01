"""`aggregator fetch` on a PostgreSQL store that pollers share: it leases what it polls, leaves
to the pollers the feeds and hosts they hold, and says so. The real test server, loopback
hosts that log every request, and the command itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from faultserver import FaultServer

from aggregator.cli import main
from aggregator.ingest.hosts import HostLimit, origin
from aggregator.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LEASE = timedelta(minutes=2)
RSS = (Path(__file__).parent / "data" / "rss20.xml").read_bytes()


@pytest.fixture
def hosts() -> Iterator[tuple[FaultServer, FaultServer, FaultServer]]:
    started = (FaultServer(), FaultServer(), FaultServer())
    try:
        yield started
    finally:
        for s in started:
            s.close()


def feed(name: str, url: str, extra: str = "") -> str:
    return f'[[feeds]]\nname = "{name}"\nurl = "{url}"\n{extra}\n'


def fetch(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["fetch", *args, "--config", str(path)])


def test_fetch_leaves_what_pollers_hold_and_leases_what_it_polls(
    write_config: Callable[..., Path],
    pg_url: str,
    hosts: tuple[FaultServer, FaultServer, FaultServer],
) -> None:
    free, owned, busy = hosts
    for server in hosts:
        for name in ("a", "b"):
            server.serve_bytes(f"/{name}.xml", RSS, "application/rss+xml")
    busy.serve_status("/a.xml", 503, {"Retry-After": "600"})
    # `free` has no host_delay (leases are counted there), the others the default 1s.
    nodelay = 'host_delay = "0s"\nhost_concurrency = 2\n'
    body = (
        feed("free-a", free.url("/a.xml"), nodelay)
        + feed("free-b", free.url("/b.xml"), nodelay)
        + feed("owned-a", owned.url("/a.xml"))
        + feed("owned-b", owned.url("/b.xml"))
        + feed("busy-a", busy.url("/a.xml"))
        + feed("busy-b", busy.url("/b.xml"))
    )
    path = write_config(body, database=pg_url)
    assert fetch(path, "--feed", "free-a").exit_code == 0  # creates the rows, polls one
    free.hits.clear()

    # Two pollers hold a feed each: free-a (its host has no delay: the lease is counted)
    # and owned-a (its host has a delay: the host is the poller's meanwhile).
    pg = PostgresStore(pg_url)
    try:
        stored = [r["name"] for r in pg.conn.execute(b"SELECT name FROM feeds").fetchall()]
        for node, name, rule in (
            ("poller-1", "free-a", HostLimit(2)),
            ("poller-2", "owned-a", HostLimit(1, timedelta(seconds=1))),
        ):
            pg.conn.execute(b"UPDATE feeds SET next_poll = NULL WHERE name = %s", [name])
            skip = [n for n in stored if n != name]
            (claim,) = pg.claim_due(node, skip, 1, LEASE, {}, rule).claims
            assert claim.name == name

        done = fetch(path, "--max-wait", "5s")
        assert done.exit_code == 0, done.output
        leases = {
            r["name"]: r["lease_owner"]
            for r in pg.conn.execute(b"SELECT name, lease_owner FROM feeds").fetchall()
        }
        blocked = pg.host_rows()[origin(busy.base_url)]["blocked_until"]
        clock = pg.db_clock()
    finally:
        pg.close()

    # Nothing of what the pollers hold was requested: not the leased feed, not the owned host.
    assert [h.path for h in free.hits] == ["/b.xml"]
    assert owned.hits == []
    err = done.stderr
    assert "free-a: not polled, left to the pollers: leased by poller-1" in err
    assert "owned-a: not polled, left to the pollers: leased by poller-2" in err
    assert (
        f"owned-b: not polled, left to the pollers: its host {origin(owned.base_url)} "
        "is polled by poller-2 now"
    ) in err
    assert "polled 2 of 6 feeds" in done.stdout  # free-b, and busy-a answered 503
    assert "3 left to the pollers that hold them" in done.stdout
    # The pollers' leases stand; the fetch's own ended with its writes or were handed back.
    assert leases == {
        "free-a": "poller-1",
        "free-b": None,
        "owned-a": "poller-2",
        "owned-b": None,
        "busy-a": None,
        "busy-b": None,
    }
    # The Retry-After busy-a was answered holds for every poller; busy-b waits for it
    # longer than --max-wait, so it is not polled, and says so.
    assert blocked is not None and blocked > clock + timedelta(minutes=9)
    assert [h.path for h in busy.hits] == ["/a.xml"]
    assert "busy-b: not polled: Retry-After of" in err
    assert "busy-a: error" in err


def test_fetch_on_a_free_store_polls_everything_and_holds_no_lease(
    write_config: Callable[..., Path],
    pg_url: str,
    hosts: tuple[FaultServer, FaultServer, FaultServer],
) -> None:
    server = hosts[0]
    for name in ("a", "b", "c"):
        server.serve_bytes(f"/{name}.xml", RSS, "application/rss+xml")
    body = "".join(feed(n, server.url(f"/{n}.xml"), 'host_delay = "0.2s"\n') for n in "abc")
    path = write_config(body, database=pg_url)
    done = fetch(path)
    assert done.exit_code == 0, done.output
    assert "polled 3 of 3 feeds" in done.stdout and "left to the pollers" not in done.output
    assert sorted(h.path for h in server.hits) == ["/a.xml", "/b.xml", "/c.xml"]
    pg = PostgresStore(pg_url)
    try:
        rows = pg.conn.execute(b"SELECT lease_owner, last_status FROM feeds").fetchall()
        host = pg.host_rows()[origin(server.base_url)]
    finally:
        pg.close()
    assert {(r["lease_owner"], r["last_status"]) for r in rows} == {(None, "ok")}
    assert host["owner"] is None  # the host was the fetch's while it polled, and let go


def test_a_retry_after_within_the_wait_is_waited_out_under_a_new_lease(
    write_config: Callable[..., Path], pg_url: str
) -> None:
    # x is answered Retry-After: y, of the same host, is deferred (its write ends its
    # lease), leased again once the block has passed, and polled then.
    server = FaultServer(clock=lambda: datetime.now(UTC))
    try:
        server.serve_status("/x.xml", 503, {"Retry-After": "2"})
        server.serve_bytes("/y.xml", RSS, "application/rss+xml")
        body = feed("x", server.url("/x.xml")) + feed("y", server.url("/y.xml"))
        path = write_config(body, database=pg_url)
        done = fetch(path, "--max-wait", "1m")
        hits = list(server.hits)
    finally:
        server.close()
    assert done.exit_code == 0, done.output
    assert "polled 2 of 2 feeds" in done.stdout and "left to the pollers" not in done.output
    assert [h.path for h in hits] == ["/x.xml", "/y.xml"]
    x, y = (h.at for h in hits)
    assert x is not None and y is not None
    assert y - x >= timedelta(seconds=1)  # the header's whole seconds, from x's answer
    pg = PostgresStore(pg_url)
    try:
        rows = pg.conn.execute(b"SELECT name, lease_owner, last_status FROM feeds").fetchall()
    finally:
        pg.close()
    assert sorted((r["name"], r["lease_owner"], r["last_status"]) for r in rows) == [
        ("x", None, "error"),
        ("y", None, "ok"),
    ]
