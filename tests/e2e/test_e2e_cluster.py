"""End to end, the whole cluster: PostgreSQL, two `--role poller` processes and one `--role
server`, against a farm of three loopback hosts with request logs. Round after round: every
entry stored once, each host's limits held across both pollers on arrival, a poller SIGKILLed
mid-round whose feeds the other finishes after the lease, a PostgreSQL restart mid-round that
loses nothing, and the server's output equal to the SQLite daemon's for the same feeds."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import feedparser
import psycopg
import pytest
from conftest import free_port
from feedserver import FeedServer
from pgserver import PgServer
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_e2e_claims import HOSTS, farm, run_fetch

__all__ = ["farm", "start_daemon"]  # fixtures, used by name
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PER_HOST = 3
DELAY = 0.5  # host_delay, seconds
SLACK = 0.05  # the test servers' own stamping of arrivals, on a loaded machine
DEADLINE = 120.0
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def rss(feed: int, count: int) -> bytes:
    """`count` items, each with a date no other item of any feed has."""
    items = "".join(
        f"<item><guid isPermaLink='false'>f{feed}-{i}</guid><title>Feed {feed} story {i}</title>"
        f"<link>https://f{feed}.example/{i}</link><description>Story {i} of {feed}.</description>"
        f"<pubDate>{format_datetime(T0 + timedelta(minutes=100 * i + feed))}</pubDate></item>"
        for i in reversed(range(count))
    )
    return (
        f"<?xml version='1.0'?><rss version='2.0'><channel><title>Feed {feed}</title>"
        f"<link>https://f{feed}.example/</link><description>d</description>{items}"
        "</channel></rss>"
    ).encode()


def publish(servers: list[FeedServer], count: int, slow: float = 0.0) -> dict[str, str]:
    """Every feed with `count` items (each answered `slow` seconds late); name → URL."""
    feeds = {}
    for n in range(len(HOSTS) * PER_HOST):
        server = servers[n % len(HOSTS)]
        server.serve_bytes(f"/f{n}.xml", rss(n, count), "application/rss+xml")
        if slow:
            server.serve_slow(f"/f{n}.xml", slow)
        feeds[f"f{n}"] = server.url(f"/f{n}.xml")
    return feeds


def config(write_config: Callable[..., Path], feeds: dict[str, str], name: str, **kw: Any) -> Path:
    body = "".join(f'[[feeds]]\nname = "{n}"\nurl = "{u}"\n\n' for n, u in feeds.items())
    body += '[[outputs]]\nname = "all"\ntitle = "Everything"\nlimit = 500\n'
    settings = {
        "interval": "1h",
        "timeout": "30s",
        "host_concurrency": 1,
        "host_delay": f"{DELAY}s",
        "lease": "3s",  # a killed poller's feeds are taken over 3 s after its claim
        **kw,
    }
    return write_config(body, name=name, **settings)


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def stored_once(url: str, count: int) -> bool:
    """Every feed's `count` entries stored, none twice (which would fail at once)."""
    rows = sql(url, "SELECT guid, count(*) FROM entries GROUP BY guid")
    assert all(n == 1 for _, n in rows), rows
    want = {f"f{n}-{i}" for n in range(len(HOSTS) * PER_HOST) for i in range(count)}
    return {guid for guid, _ in rows} == want


def due_now(url: str) -> None:
    """The next round: every feed due at once (as an interval passing would make them)."""
    sql(url, "UPDATE feeds SET next_poll = now() RETURNING name")


def check_politeness(servers: list[FeedServer]) -> Counter[str]:
    """Per host, one request at a time and starts host_delay apart on arrival, whichever
    poller sent them; returns the requests per user agent."""
    agents: Counter[str] = Counter()
    for server in servers:
        requests = sorted(server.requests(), key=lambda r: r.monotonic)
        for earlier, later in itertools.pairwise(requests):
            assert later.monotonic >= earlier.finished - SLACK, server.host  # one at a time
            assert later.monotonic - earlier.monotonic >= DELAY - SLACK, server.host
        agents.update(r.headers["User-Agent"] for r in requests)
    return agents


def entries(daemon: Daemon) -> list[tuple[str, str, str, str]]:
    parsed = feedparser.parse(http_get(daemon.base + "/outputs/all.atom")[2])
    return [(e.id, e.title, e.link, e.updated) for e in parsed.entries]


def test_two_pollers_and_a_server_over_postgresql(
    farm: list[FeedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
    pg_server: PgServer,
) -> None:
    feeds = publish(farm, 2)
    nodes = {}
    for who in ("a", "b"):
        port = free_port()
        # One poll at a time each: both must take part for the round to end.
        path = config(
            write_config,
            feeds,
            f"{who}.toml",
            database=pg_url,
            max_concurrency=1,
            user_agent=f"poller-{who}",
            listen=f"127.0.0.1:{port}",
        )
        nodes[who] = start_daemon(path, port, "--role", "poller")
    port = free_port()
    server = start_daemon(
        config(write_config, feeds, "server.toml", database=pg_url, listen=f"127.0.0.1:{port}"),
        port,
        "--role",
        "server",
    )
    admin = pg_server.admin_url(pg_url.rsplit("/", 1)[1])

    # Round 1: both pollers share the work; the server shows it.
    wait_for(lambda: stored_once(admin, 2), "round 1 to be stored", DEADLINE)
    agents = check_politeness(farm)
    assert set(agents) == {"poller-a", "poller-b"}, agents
    assert sum(agents.values()) == len(feeds)  # each feed fetched once for its due time
    wait_for(lambda: len(entries(server)) == 2 * len(feeds), "the server to show round 1")

    # Round 2: poller a is killed mid-poll; b polls its feeds once their leases run out.
    publish(farm, 4, slow=2.0)
    due_now(admin)
    a = nodes["a"]

    def held_by_a() -> bool:
        return bool(sql(admin, f"SELECT 1 FROM feeds WHERE lease_owner LIKE '%-{a.proc.pid}-%'"))

    wait_for(held_by_a, "poller a to hold a feed", DEADLINE)
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(30)
    wait_for(lambda: stored_once(admin, 4), "round 2 to be stored by poller b", DEADLINE)
    check_politeness(farm)

    # Round 3: PostgreSQL restarts while b polls; nothing is lost or stored twice.
    publish(farm, 6, slow=0.5)
    due_now(admin)
    wait_for(
        lambda: bool(sql(admin, "SELECT 1 FROM feeds WHERE lease_owner IS NOT NULL")),
        "poller b to claim round 3",
        DEADLINE,
    )
    pg_server.restart()
    wait_for(lambda: stored_once(admin, 6), "round 3 to be stored after the restart", DEADLINE)
    check_politeness(farm)
    wait_for(lambda: len(entries(server)) == 6 * len(feeds), "the server to show round 3")

    # The same feeds on SQLite, one daemon: the same output. (Polled once by `fetch` first: a
    # cold start spreads a daemon's first polls over the interval.)
    port = free_port()
    path = config(
        write_config,
        feeds,
        "sqlite.toml",
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        host_delay="0s",
    )
    fetched = run_fetch(path)
    assert fetched.returncode == 0, fetched.stderr
    alone = start_daemon(path, port)
    assert entries(server) == entries(alone)
    assert nodes["b"].stop() == 0 and server.stop() == 0
