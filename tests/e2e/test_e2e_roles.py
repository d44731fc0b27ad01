"""End to end: `aggregator run --role poller` and `--role server` as separate processes on one
SQLite database, each on its own `--listen` port."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import feedparser
import pytest
from conftest import DATA_DIR, FeedServer, free_port
from test_e2e import Daemon, http_get, loopback_settings, start_daemon, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["start_daemon"]  # a fixture, used by name


def _config(feed_server: FeedServer, write_config: Callable[..., Path], base_port: int) -> Path:
    feed_server.serve_file("/world.xml", DATA_DIR / "section-world.rss.xml")
    body = f'[[feeds]]\nname = "world"\nurl = "{feed_server.url("world.xml")}"\n\n'
    body += '[[outputs]]\nname = "all"\ntitle = "All news"\n'
    return write_config(body, **loopback_settings(base_port))


def test_a_poller_and_a_server_share_one_sqlite_database(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
) -> None:
    config = _config(feed_server, write_config, free_port())
    server_port, poller_port = free_port(), free_port()
    # The server first: it finds an empty store and must follow what the poller writes later.
    server = start_daemon(
        config, server_port, "--role", "server", "--listen", f"127.0.0.1:{server_port}"
    )
    status, _, body = http_get(server.base + "/outputs/all.atom")
    assert status == 200 and feedparser.parse(body).entries == []
    poller = start_daemon(
        config, poller_port, "--role", "poller", "--listen", f"127.0.0.1:{poller_port}"
    )

    def served() -> int:
        return len(feedparser.parse(http_get(server.base + "/outputs/all.atom")[2]).entries)

    wait_for(lambda: served() > 0, "the server to show the poller's entries")
    # The poller serves health and metrics only; the server serves everything.
    assert http_get(poller.base + "/outputs/all.atom")[0] == 404
    assert http_get(poller.base + "/metrics")[0] == 200
    assert http_get(server.base + "/status.json")[0] == 200
    roles = {json.loads(http_get(d.base + "/healthz")[2])["role"] for d in (server, poller)}
    assert roles == {"server", "poller"}
    # The server's board follows the stored states: the feed is not pending there for long.
    wait_for(
        lambda: json.loads(http_get(server.base + "/healthz")[2])["feeds"]["pending"] == 0,
        "the server's /healthz to see the poll",
    )


def test_a_second_poller_on_one_sqlite_file_is_refused(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    port = free_port()
    config = _config(feed_server, write_config, port)
    start_daemon(config, port)
    other = free_port()
    second = Daemon(
        config,
        other,
        tmp_path / "second.log",
        ("--role", "poller", "--listen", f"127.0.0.1:{other}"),
    )
    assert second.proc.wait(timeout=60) == 1
    second.stop()
    assert "already running on this database" in second.log.read_text()


def test_listen_must_be_host_and_port(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config("")
    bad = Daemon(config, 1, tmp_path / "bad.log", ("--listen", "8080"))
    assert bad.proc.wait(timeout=60) == 2
    bad.stop()
    assert "is not HOST:PORT" in bad.log.read_text()
