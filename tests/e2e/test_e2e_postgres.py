"""End to end on PostgreSQL: the real daemon (`run`, role all) on the real test server polling
a loopback feed server; its outputs match the same daemon's on SQLite, and a PostgreSQL
restart or outage mid-run costs no committed entry and shows in /healthz and the log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import psycopg
import pytest
from conftest import FeedServer, free_port
from pgserver import PgServer
from test_e2e import Daemon, http_get, loopback_settings, start_daemon, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
__all__ = ["start_daemon"]  # a fixture, used by name
# Generous: the heartbeat is every 10 s and the machine is loaded.
OUTAGE_DEADLINE = 120.0
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


DESKS = ("north", "south", "east")


def _rss(name: str, count: int) -> bytes:
    """A feed of `count` items, the newest first, each with its own guid and a date no other
    item has (so that both daemons order their outputs by it alone, not by when they polled)."""
    offset = timedelta(seconds=10 * DESKS.index(name))
    items = "".join(
        f"<item><guid isPermaLink='false'>{name}-{i}</guid><title>{name} story {i}</title>"
        f"<link>https://{name}.example/{i}</link>"
        f"<description>Story number {i} of the {name} desk.</description>"
        f"<pubDate>{format_datetime(T0 + offset + timedelta(minutes=i))}</pubDate></item>"
        for i in reversed(range(count))
    )
    return (
        f"<?xml version='1.0'?><rss version='2.0'><channel><title>{name} desk</title>"
        f"<link>https://{name}.example/</link><description>{name}</description>"
        f"{items}</channel></rss>"
    ).encode()


def _serve(feed_server: FeedServer, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        feed_server.serve_bytes(f"/{name}.xml", _rss(name, count), "application/rss+xml")


def _config(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    port: int,
    name: str,
    **settings: str,
) -> Path:
    body = ""
    for feed in DESKS:
        body += f'[[feeds]]\nname = "{feed}"\nurl = "{feed_server.url(feed + ".xml")}"\n\n'
    body += '[[outputs]]\nname = "all"\ntitle = "All desks"\nlimit = 500\n'
    # host_delay 0: the three feeds share the loopback origin and need not queue.
    return write_config(body, name=name, host_delay="0s", **loopback_settings(port, **settings))


def _stored(admin_url: str) -> dict[str, int]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute("SELECT guid, count(*) FROM entries GROUP BY guid").fetchall()
    return {guid: n for guid, n in rows}


def _expected(counts: dict[str, int]) -> set[str]:
    return {f"{name}-{i}" for name, count in counts.items() for i in range(count)}


def _health(daemon: Daemon) -> tuple[int, dict[str, object]]:
    status, _, body = http_get(daemon.base + "/healthz")
    return status, json.loads(body)


def _health_command(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "health", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _entries(daemon: Daemon) -> list[tuple[str, str, str, str, str]]:
    parsed = feedparser.parse(http_get(daemon.base + "/outputs/all.atom")[2])
    return [(e.id, e.title, e.link, e.updated, e.summary) for e in parsed.entries]


def test_the_atom_output_on_postgresql_equals_the_one_on_sqlite(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
) -> None:
    counts = {"north": 12, "south": 7, "east": 3}
    _serve(feed_server, counts)
    pg_port, sqlite_port = free_port(), free_port()
    on_pg = start_daemon(
        _config(feed_server, write_config, pg_port, "pg.toml", database=pg_url), pg_port
    )
    on_sqlite = start_daemon(
        _config(feed_server, write_config, sqlite_port, "sqlite.toml"), sqlite_port
    )
    wanted = sum(counts.values())
    for daemon in (on_pg, on_sqlite):
        wait_for(lambda d=daemon: len(_entries(d)) == wanted, "every entry in the output", 90)
    assert _entries(on_pg) == _entries(on_sqlite)
    assert _health(on_pg)[1]["database"] == {
        "kind": "postgresql",
        "name": pg_url.replace(pg_url.split("//")[1].split("@")[0] + "@", ""),
    }

    # The other formats: the same bytes but for the daemons' own addresses, and in JSON Feed
    # when each daemon first stored each entry.
    def body(daemon: Daemon, port: int, fmt: str) -> bytes:
        return http_get(f"{daemon.base}/outputs/all.{fmt}")[2].replace(str(port).encode(), b"P")

    assert body(on_pg, pg_port, "rss") == body(on_sqlite, sqlite_port, "rss")
    docs = [json.loads(body(d, p, "json")) for d, p in ((on_pg, pg_port), (on_sqlite, sqlite_port))]
    for doc in docs:
        for item in doc["items"]:
            for source in item["_aggregator"]["sources"]:
                assert source.pop("first_seen")
    assert docs[0] == docs[1]


def test_a_postgresql_restart_and_outage_lose_no_entry(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
    pg_server: PgServer,
) -> None:
    counts = {"north": 5, "south": 5, "east": 5}
    _serve(feed_server, counts)
    port = free_port()
    config = _config(feed_server, write_config, port, "pg.toml", database=pg_url)
    daemon = start_daemon(config, port)
    admin = pg_server.admin_url(pg_url.rsplit("/", 1)[1])

    def all_stored() -> bool:
        stored = _stored(admin)
        assert all(n == 1 for n in stored.values()), stored  # never one twice
        return set(stored) == _expected(counts)

    wait_for(all_stored, "the first polls to be stored", 90)

    # A restart while the daemon runs: its idle connections are reopened, polls go on.
    pg_server.restart()
    counts = {"north": 8, "south": 6, "east": 5}
    _serve(feed_server, counts)
    wait_for(all_stored, "the polls after a restart to be stored", 90)

    # An outage: the daemon keeps running and says so; the feeds grow meanwhile.
    with pg_server.down():
        counts = {"north": 10, "south": 9, "east": 7}
        _serve(feed_server, counts)

        def reported() -> bool:
            status, doc = _health(daemon)
            return status == 503 and any("database" in str(p) for p in doc["problems"])  # type: ignore[attr-defined]

        wait_for(reported, "/healthz to report the outage", OUTAGE_DEADLINE)
        doc = _health(daemon)[1]
        assert pg_server.password not in json.dumps(doc)
        assert daemon.proc.poll() is None
        probe = _health_command(config)
        assert probe.returncode == 1 and probe.stderr.startswith("unhealthy: ")
        assert "postgresql://127.0.0.1:" in probe.stderr
        assert pg_server.password not in probe.stderr

    # Back: /healthz recovers and every entry served meanwhile is stored, once.
    wait_for(lambda: _health(daemon)[0] == 200, "/healthz to recover", OUTAGE_DEADLINE)
    wait_for(all_stored, "the polls after the outage to be stored", OUTAGE_DEADLINE)
    assert _health_command(config).returncode == 0
    assert len(_entries(daemon)) == sum(counts.values())
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "the database cannot be written" in log and "can be written again" in log
    assert pg_server.password not in log


def test_a_poller_and_a_server_ride_out_an_outage(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
    pg_server: PgServer,
) -> None:
    counts = {"north": 4, "south": 3, "east": 2}
    _serve(feed_server, counts)
    config = _config(feed_server, write_config, free_port(), "pg.toml", database=pg_url)
    nodes = {}
    for role in ("poller", "server"):
        port = free_port()
        nodes[role] = start_daemon(config, port, "--role", role, "--listen", f"127.0.0.1:{port}")
    server = nodes["server"]
    wanted = sum(counts.values())
    wait_for(lambda: len(_entries(server)) == wanted, "the server to show the first polls", 90)

    with pg_server.down():
        _serve(feed_server, {"north": 6, "south": 5, "east": 4})
        for role, node in nodes.items():
            wait_for(lambda n=node: _health(n)[0] == 503, f"the {role}'s /healthz", OUTAGE_DEADLINE)
        # The server still answers from its render cache what it had.
        assert len(_entries(server)) == wanted
        assert all(node.proc.poll() is None for node in nodes.values())

    counts = {"north": 6, "south": 5, "east": 4}
    for role, node in nodes.items():
        wait_for(lambda n=node: _health(n)[0] == 200, f"the {role} to recover", OUTAGE_DEADLINE)
    wanted = sum(counts.values())
    wait_for(lambda: len(_entries(server)) == wanted, "the server to show the later polls", 90)
    stored = _stored(pg_server.admin_url(pg_url.rsplit("/", 1)[1]))
    assert set(stored) == _expected(counts) and set(stored.values()) == {1}
    for node in nodes.values():
        assert node.stop() == 0
        log = node.log.read_text()
        assert pg_server.password not in log
        # One line per event: libpq's two-line errors are joined.
        assert "\n\tIs the server running" not in log and "; Is the server running" in log
