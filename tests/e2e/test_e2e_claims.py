"""End to end: two real poller processes share the feeds of one PostgreSQL store (cluster.py,
store/postgres_claims.py) against a farm of loopback hosts whose request logs are checked:
every feed fetched once for its due time, no host over its concurrency nor under its delay
across both pollers, and a poller killed with SIGKILL has its feeds taken over."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import free_port
from feedserver import FeedServer, RequestRecord
from test_e2e import Daemon, start_daemon, wait_for

__all__ = ["start_daemon"]
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DEADLINE = 120.0  # generous: two daemons and PostgreSQL on a loaded machine
# One poller at a time holds a host with a delay, and paces its requests on the wire: the
# servers see them host_delay apart, less only their own stamping on a loaded machine.
LATENESS = 0.05


def rss(name: str, items: int = 3) -> bytes:
    body = "".join(
        f"<item><title>{name} {i}</title><link>http://example.org/{name}/{i}</link>"
        f"<guid>{name}-{i}</guid><pubDate>Mon, 02 Mar 2026 0{i}:00:00 GMT</pubDate></item>"
        for i in range(items)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://example.org/{name}</link><description>d</description>{body}"
        "</channel></rss>"
    ).encode()


@pytest.fixture
def farm() -> Iterator[list[FeedServer]]:
    servers = [FeedServer(host) for host in HOSTS]
    try:
        yield servers
    finally:
        for s in servers:
            s.close()


def serve(farm: list[FeedServer], per_host: int, delay: float) -> dict[str, str]:
    """`per_host` feeds on each host, each answered `delay` seconds late; name → URL."""
    feeds = {}
    for h, server in enumerate(farm):
        for i in range(per_host):
            name = f"h{h}-{i:02}"
            server.serve_bytes(f"/{name}.xml", rss(name), "application/rss+xml")
            server.serve_slow(f"/{name}.xml", delay)
            feeds[name] = server.url(f"/{name}.xml")
    return feeds


def poller(
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
    feeds: dict[str, str],
    who: str,
    **settings: str | int,
) -> Daemon:
    """A daemon on the shared database, its requests signed with its own user agent."""
    port = free_port()
    body = "".join(f'[[feeds]]\nname = "{n}"\nurl = "{u}"\n\n' for n, u in feeds.items())
    config = write_config(
        body,
        name=f"{who}.toml",
        database=pg_url,
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        interval="1h",
        timeout="30s",
        user_agent=f"poller-{who}",
        **settings,
    )
    return start_daemon(config, port, "--role", "poller")


def rows(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql.encode()).fetchall()


def all_polled(pg_url: str, feeds: dict[str, str]) -> bool:
    done = rows(
        pg_url,
        "SELECT name FROM feeds WHERE last_status = 'ok' AND lease_owner IS NULL "
        "AND next_poll > now() + interval '30 minutes'",
    )
    return {name for (name,) in done} >= set(feeds)


def log_of(farm: list[FeedServer]) -> dict[str, list[RequestRecord]]:
    return {server.host: server.requests() for server in farm}


def most_at_once(requests: list[RequestRecord]) -> int:
    """The most requests a host was answering at one time."""
    events = sorted(
        [(r.monotonic, 1) for r in requests] + [(r.finished, -1) for r in requests],
        key=lambda e: (e[0], e[1]),
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def assert_hosts_limits(log: dict[str, list[RequestRecord]], most: int, delay: float) -> None:
    """Whoever sent them, each host saw at most `most` requests at once, their starts `delay`
    seconds apart (less the loopback's LATENESS)."""
    for host, requests in log.items():
        assert most_at_once(requests) <= most, host
        starts = sorted(r.monotonic for r in requests)
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert min(gaps) >= delay - LATENESS, (host, gaps)


def run_fetch(config: Path) -> subprocess.CompletedProcess[str]:
    """`aggregator fetch` on `config`, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "fetch", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=config.parent,
    )


def test_two_pollers_share_the_feeds_and_each_hosts_limits(
    farm: list[FeedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
) -> None:
    feeds = serve(farm, per_host=10, delay=0.3)
    # Each poller holds at most two feeds at once: neither can take every host's slots.
    limits = {"host_concurrency": 2, "host_delay": "1s", "max_concurrency": 2}
    a = poller(write_config, start_daemon, pg_url, feeds, "a", **limits)
    b = poller(write_config, start_daemon, pg_url, feeds, "b", **limits)
    wait_for(lambda: all_polled(pg_url, feeds), "every feed to be polled", DEADLINE)
    log = log_of(farm)
    requested = Counter(r.path for requests in log.values() for r in requests)
    # Each feed was due once (first poll; the next is an hour away): one request each.
    assert requested == Counter(f"/{name}.xml" for name in feeds)
    agents = Counter(r.headers["User-Agent"] for reqs in log.values() for r in reqs)
    assert set(agents) == {"poller-a", "poller-b"}, agents  # both did share the work
    assert_hosts_limits(log, most=2, delay=1.0)
    entries = rows(pg_url, "SELECT feed, count(*) FROM entries GROUP BY feed")
    assert dict(entries) == dict.fromkeys(feeds, 3)
    assert a.stop() == 0 and b.stop() == 0


def test_a_killed_pollers_feeds_are_polled_by_the_other_after_its_lease(
    farm: list[FeedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
) -> None:
    feeds = serve(farm, per_host=4, delay=3.0)
    limits = {"host_concurrency": 2, "host_delay": "0s", "lease": "3s", "max_concurrency": 3}
    a = poller(write_config, start_daemon, pg_url, feeds, "a", **limits)
    b = poller(write_config, start_daemon, pg_url, feeds, "b", **limits)

    def held_by_a() -> set[str]:
        got = rows(pg_url, f"SELECT name FROM feeds WHERE lease_owner LIKE '%-{a.proc.pid}-%'")
        return {name for (name,) in got}

    wait_for(lambda: bool(held_by_a()), "poller a to claim feeds", DEADLINE)
    os.kill(a.proc.pid, signal.SIGKILL)  # mid-round: its requests are still being answered
    a.proc.wait(30)
    orphans = held_by_a()  # claimed, never written: its leases run out in 3 s
    assert orphans
    wait_for(lambda: all_polled(pg_url, feeds), "poller b to poll every feed", DEADLINE)
    log = log_of(farm)
    by_b = Counter(
        r.path for reqs in log.values() for r in reqs if r.headers["User-Agent"] == "poller-b"
    )
    # The killed poller's feeds were polled again, by b, once each; nothing was half-written.
    assert {f"/{name}.xml" for name in orphans} <= set(by_b)
    assert set(by_b.values()) == {1}
    entries = rows(pg_url, "SELECT feed, count(*) FROM entries GROUP BY feed")
    assert dict(entries) == dict.fromkeys(feeds, 3)
    for host, requests in log.items():
        served = [r for r in requests if r.headers["User-Agent"] == "poller-b"]
        assert most_at_once(served) <= 2, host
    assert b.stop() == 0


def test_a_retry_after_one_poller_got_holds_for_the_other(
    farm: list[FeedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
) -> None:
    feeds = serve(farm, per_host=4, delay=0.2)
    busy = farm[0]
    busy.serve_status("/h0-00.xml", 429, {"Retry-After": "600"})  # the first due on its host
    limits = {"host_concurrency": 1, "host_delay": "1s", "max_concurrency": 1}
    # b, configured with h0's feeds alone, is answered the Retry-After; a, with every feed,
    # starts after that and must keep off h0 too.
    h0 = {n: u for n, u in feeds.items() if n.startswith("h0-")}
    b = poller(write_config, start_daemon, pg_url, h0, "b", **limits)
    wait_for(lambda: bool(log_of(farm)[busy.host]), "b to ask h0", DEADLINE)
    wait_for(
        lambda: bool(rows(pg_url, "SELECT 1 FROM hosts WHERE blocked_until > now()")),
        "the Retry-After to be recorded",
        DEADLINE,
    )
    a = poller(write_config, start_daemon, pg_url, feeds, "a", **limits)
    others = {n: u for n, u in feeds.items() if not n.startswith("h0-")}
    wait_for(lambda: all_polled(pg_url, others), "the other hosts' feeds to be polled", DEADLINE)
    log = log_of(farm)
    # The host said to wait ten minutes: no poller asked it anything more.
    assert [r.path for r in log[busy.host]] == ["/h0-00.xml"]
    ((until, ahead),) = rows(
        pg_url,
        "SELECT blocked_until, blocked_until - now() > interval '9 minutes' FROM hosts "
        f"WHERE origin = 'http://{busy.host}:{busy.port}'",
    )
    assert ahead, until
    agents = {host: {r.headers["User-Agent"] for r in reqs} for host, reqs in log.items()}
    assert agents[busy.host] == {"poller-b"}
    assert all(agents[s.host] == {"poller-a"} for s in farm[1:]), agents
    assert a.stop() == 0 and b.stop() == 0
