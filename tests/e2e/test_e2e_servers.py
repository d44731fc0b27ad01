"""End to end: one poller and two `--role server` processes over one database (SQLite, then
PostgreSQL). Both servers give the same ETag for the same content, so a conditional GET made
with one server's ETag gets its 304 from the other; /status lists the three nodes and warns
once one of them runs a different config (after its reload), and a node that stops leaves
the list. A daemon of role `all` follows commits made beside it too."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser
import pytest
from conftest import DATA_DIR, FeedServer, free_port
from test_e2e import Daemon, _without_ttl, http_get, loopback_settings, start_daemon, wait_for
from test_e2e_unattended import cli, feed_toml, rss, titles

pytestmark = pytest.mark.e2e
__all__ = ["start_daemon"]  # a fixture, used by name
DEADLINE = 90.0  # node rows are refreshed every 10 s: generous, against hanging only
FEEDS = {
    "russia": "section-russia.rss.xml",
    "world": "section-world.rss.xml",
    "top": "top-stories.atom.xml",
    "pod": "podcast.rss.xml",
}


def _body(feed_server: FeedServer) -> str:
    body = ""
    for name, filename in FEEDS.items():
        document = _without_ttl((DATA_DIR / filename).read_bytes())
        feed_server.serve_bytes(f"/{name}.xml", document, "application/xml")
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n\n'
    body += '[[outputs]]\nname = "all"\ntitle = "All news"\n\n'
    body += '[[outputs]]\nname = "near"\ntitle = "Near"\nfeeds = ["russia", "world"]\n'
    body += 'dedupe = "near"\nlimit = 5\n'
    return body


def _status(d: Daemon) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(http_get(d.base + "/status.json")[2])
    return doc


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_servers_give_equal_etags_and_list_the_nodes(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    public = f"http://127.0.0.1:{free_port()}"  # the load balancer's address: one base_url
    settings = loopback_settings(free_port(), base_url=public)
    if database == "postgresql":
        settings["database"] = request.getfixturevalue("pg_url")
    body = _body(feed_server)
    config = write_config(body, **settings)
    # Server b has a file of its own, the same content in other words: the same config hash.
    other = write_config("# server b\n" + body, "b.toml", **settings | {"interval": "5s"})
    poller_port, a_port, b_port = free_port(), free_port(), free_port()
    poller = start_daemon(config, poller_port, "--listen", f"127.0.0.1:{poller_port}")
    a = start_daemon(config, a_port, "--role", "server", "--listen", f"127.0.0.1:{a_port}")
    b = start_daemon(other, b_port, "--role", "server", "--listen", f"127.0.0.1:{b_port}")

    def entries(d: Daemon) -> int:
        return len(feedparser.parse(http_get(d.base + "/outputs/all.atom")[2]).entries)

    def settled() -> bool:
        # Every feed polled (none pending) and both servers showing what the poller shows.
        pending = json.loads(http_get(poller.base + "/healthz")[2])["feeds"]["pending"]
        total = entries(poller)
        return pending == 0 and total > 0 and entries(a) == total and entries(b) == total

    wait_for(settled, "both servers to show every feed's entries", DEADLINE)
    for output in ("all", "near"):
        for fmt in ("atom", "rss", "json", "html", "opml"):
            url = f"/outputs/{output}.{fmt}"
            for encoding in ("identity", "gzip"):
                plain = {"Accept-Encoding": encoding}
                status_a, headers_a, body_a = http_get(a.base + url, plain)
                status_b, headers_b, body_b = http_get(b.base + url, plain)
                assert (status_a, status_b) == (200, 200), url
                assert headers_a["ETag"] == headers_b["ETag"], (url, encoding)
                if fmt != "opml":  # an OPML dates from when its server loaded the config
                    assert headers_a["Last-Modified"] == headers_b["Last-Modified"], url
                assert body_a == body_b, url
                # A reader that got a's copy asks b (the load balancer's next pick): 304.
                asked = {**plain, "If-None-Match": headers_a["ETag"]}
                status, headers, again = http_get(b.base + url, asked)
                assert (status, again) == (304, b""), (url, encoding)
                assert headers["ETag"] == headers_a["ETag"]

    # The nodes: all three live, each marked on its own /status, one config among them.
    def nodes(d: Daemon) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _status(d)["nodes"]
        return found

    wait_for(lambda: len(nodes(a)) == 3, "the three nodes in the nodes table", DEADLINE)
    doc = _status(a)
    assert sorted(n["role"] for n in doc["nodes"]) == ["all", "server", "server"]
    assert {n["listen"] for n in doc["nodes"]} == {
        f"127.0.0.1:{port}" for port in (poller_port, a_port, b_port)
    }
    mine = [n for n in doc["nodes"] if n["this"]]
    assert len(mine) == 1 and mine[0]["listen"] == f"127.0.0.1:{a_port}"
    assert len({n["config_hash"] for n in doc["nodes"]}) == 1
    assert doc["nodes_warning"] is None
    # b's file changes (a real difference) and b reloads: a's /status warns, naming b.
    other.write_text(other.read_text().replace("limit = 5\n", "limit = 6\n"))
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _status(a)["nodes_warning"] is not None, "the config warning", DEADLINE)
    warning = _status(a)["nodes_warning"]
    (b_node,) = [n for n in nodes(a) if n["listen"] == f"127.0.0.1:{b_port}"]
    assert b_node["id"] in warning and "2 different configs" in warning
    _, _, page = http_get(a.base + "/status", {"Accept": "text/html"})
    assert b'id="nodes-differ"' in page
    # A node that stops deletes its row: it leaves the list at once.
    assert b.stop() == 0
    assert [n["listen"] for n in nodes(a) if n["listen"] == f"127.0.0.1:{b_port}"] == []
    assert _status(a)["nodes_warning"] is None


def test_the_daemon_of_role_all_follows_commits_made_beside_it(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
) -> None:
    """Role `all` serves too, so it follows the store like a server: an `aggregator fetch`
    run beside it (or, on PostgreSQL, another poller) commits entries the daemon's own next
    poll is an hour away from, and its outputs show them."""
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["first"]))
    body = feed_toml("one", feed_server.url("one.xml"))
    body += '[[outputs]]\nname = "all"\ntitle = "All"\n'
    config = write_config(body, **loopback_settings(port, interval="1h"))
    # Polled once before the daemon starts: its own next poll is then an hour away.
    assert cli(config, "fetch").returncode == 0
    daemon = start_daemon(config, port)
    assert titles(daemon, "all") == ["first"]
    feed_server.serve_bytes("/one.xml", rss("One", ["second", "first"]))
    fetched = cli(config, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    wait_for(
        lambda: titles(daemon, "all") == ["second", "first"],
        "the daemon's output to show what the fetch stored",
        DEADLINE,
    )
