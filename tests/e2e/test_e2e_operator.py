"""End to end: the operator's day with the real daemon: health probes, adding and removing
feeds while it runs, and what a misconfigured feed says."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FeedServer, free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_e2e_unattended import cli, feed_toml, rss, settings, titles

__all__ = ["start_daemon"]
pytestmark = pytest.mark.e2e
StartDaemon = Callable[[Path, int], Daemon]


def test_health_command_exits_0_when_healthy_and_1_without_a_daemon(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["a"]))
    feed_server.serve_status("/broken.xml", 500)
    body = feed_toml("one", feed_server.url("one.xml"))
    body += feed_toml("broken", feed_server.url("broken.xml"))
    path = write_config(body, **settings(port))
    down = cli(path, "health")
    assert down.returncode == 1 and "unhealthy: no answer from" in down.stderr

    daemon = start_daemon(path, port)

    def failing() -> int:
        doc = json.loads(http_get(daemon.base + "/healthz")[2])
        return int(doc["failing"])

    wait_for(lambda: failing() == 1, "the broken feed counted as failing")
    up = cli(path, "health")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "healthy: 2 feeds, 1 failing"
    assert daemon.stop() == 0
    assert cli(path, "health").returncode == 1


def _site(feed_server: FeedServer, path: str, links: list[str]) -> None:
    heads = "".join(
        f'<link rel="alternate" type="application/rss+xml" title="Feed {i}" href="{href}">'
        for i, href in enumerate(links, 1)
    )
    page = f"<!DOCTYPE html><html><head><title>Site</title>{heads}</head><body>hi</body></html>"
    feed_server.serve_bytes(path, page.encode(), "text/html; charset=utf-8")


def test_add_and_remove_feeds_while_the_daemon_runs(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["one-a"]))
    feed_server.serve_bytes("/news/rss.xml", rss("Blog news", ["news-a", "news-b"]))
    feed_server.serve_bytes("/other.xml", rss("Other", ["other-a"]))
    _site(feed_server, "/blog/", ["/news/rss.xml"])
    _site(feed_server, "/two-feeds/", ["/news/rss.xml", "/other.xml"])
    body = "# hand-written: keep me\n" + feed_toml("one", feed_server.url("one.xml"))
    body += '[[outputs]]\nname = "all"\ntitle = "All"\n\n'
    # An hour between polls: only the prompt first poll of an added feed can show it in time.
    path = write_config(body, **settings(port, interval="1h"))
    assert cli(path, "fetch").returncode == 0  # so the cold start has nothing to spread
    daemon = start_daemon(path, port)
    wait_for(lambda: titles(daemon, "all") == ["one-a"], "feed one in the output")

    # A web page: its advertised feed is found, appended (comments kept) and polled at once.
    added = cli(path, "add", feed_server.url("blog/"), "--tags", "blog, tech")
    assert added.returncode == 0, added.stderr
    assert f"added feed 'blog-news': {feed_server.url('news/rss.xml')}" in added.stdout
    assert f"pid {daemon.proc.pid}" in added.stdout
    text = path.read_text()
    assert "# hand-written: keep me" in text and 'tags = ["blog", "tech"]' in text
    wait_for(
        lambda: sorted(titles(daemon, "all")) == ["news-a", "news-b", "one-a"],
        "the added feed's entries",
        deadline=20,
    )

    # The same feed again is refused; a page with two feeds lists them without a terminal.
    again = cli(path, "add", feed_server.url("news/rss.xml"))
    assert again.returncode == 2 and "already configured as feed 'blog-news'" in again.stderr
    several = cli(path, "add", feed_server.url("two-feeds/"))
    assert several.returncode == 2 and "--pick N" in several.stderr
    assert f"2. {feed_server.url('other.xml')}  (Feed 2)" in several.stdout
    picked = cli(path, "add", feed_server.url("two-feeds/"), "--pick", "2", "--name", "other")
    assert picked.returncode == 0, picked.stderr
    wait_for(lambda: "other-a" in titles(daemon, "all"), "the picked feed's entry")

    # Nothing to find: the error says what was tried.
    feed_server.serve_bytes("/empty/", b"<html><body>no feeds</body></html>", "text/html")
    nothing = cli(path, "add", feed_server.url("empty/"))
    assert nothing.returncode == 1 and "no feed found" in nothing.stderr
    assert feed_server.url("rss.xml") in nothing.stderr

    # Removal: the table goes, the daemon stops polling it, its entries stay until pruned.
    removed = cli(path, "remove", "blog-news")
    assert removed.returncode == 0, removed.stderr
    assert "entries stay in the database until the prune" in removed.stdout
    assert "blog-news" not in path.read_text() and "# hand-written: keep me" in path.read_text()
    wait_for(lambda: "1 removed" in daemon.log.read_text(), "the reload that removes the feed")
    assert cli(path, "remove", "blog-news").returncode == 2
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text()


def test_fetch_waits_for_host_turns_and_counts_what_it_could_not_poll(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    body = ""
    for i in range(4):
        feed_server.serve_bytes(f"/f{i}.xml", rss(f"F{i}", [f"f{i}-a"]))
        body += feed_toml(f"f{i}", feed_server.url(f"f{i}.xml"))
    feed_server.serve_status("/broken.xml", 500)
    body += feed_toml("broken", feed_server.url("broken.xml"))
    # Five feeds of one host, a second apart: fetch waits its turns instead of skipping.
    path = write_config(body, host_delay="1s", log_format="json")
    done = cli(path, "fetch")
    assert done.returncode == 0, done.stderr
    assert "polled 5 of 5 feeds" in done.stdout and "4 ok" in done.stdout, done.stdout
    assert "1 errors" in done.stdout and "not polled" not in done.stdout
    # JSON logs: the failed poll's fields are keys; no progress bar between the lines.
    [line] = [x for x in done.stderr.splitlines() if x.startswith("{")]
    record = json.loads(line)
    assert (record["message"], record["feed"], record["status"]) == ("poll", "broken", "error")
    assert "polling" not in done.stderr

    # Ten seconds apart, within a two-second deadline: one poll, and the rest is counted.
    slow = write_config(body, name="slow.toml", host_delay="10s")
    short = cli(slow, "fetch", "--max-wait", "2s")
    assert short.returncode == 0, short.stderr
    host = feed_server.base_url
    assert "polled 1 of 5 feeds" in short.stdout, short.stdout
    assert f"4 not polled before --max-wait (4 waiting for host_delay of {host})" in short.stdout
    assert short.stderr.count(": not polled: host_delay of") == 4
    assert cli(slow, "fetch", "--max-wait", "soon").returncode == 2


def test_fetch_log_lines_do_not_overwrite_the_progress_bar(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    # stderr on a pseudo-terminal, as in an operator's shell: the bar is drawn there.
    feed_server.serve_status("/broken.xml", 500)
    feed_server.serve_bytes("/one.xml", rss("One", ["a"]))
    body = feed_toml("broken", feed_server.url("broken.xml"))
    body += feed_toml("one", feed_server.url("one.xml"))
    path = write_config(body, host_delay="0s")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "fetch", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=secondary,
            cwd=path.parent,
            env={**os.environ, "COLUMNS": "100"},
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0 and b"polled 2 of 2 feeds" in out
    # The bar's line is erased before the log line, and the bar is drawn again after it.
    logged = re.search(
        r"\r\x1b\[2K\d{4}-\d\d-\d\d [\d:,]+ WARNING aggregator.poll: poll feed=broken "
        r"status=error[^\n]*\n",
        terminal,
    )
    assert logged is not None, repr(terminal)
    assert "polling" in terminal[logged.end() :], repr(terminal)


def test_fetch_waits_out_a_hosts_retry_after(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    feed_server.serve_status("/busy.xml", 503, headers={"Retry-After": "2"})
    body = feed_toml("busy", feed_server.url("busy.xml"))
    for i in range(2):
        feed_server.serve_bytes(f"/f{i}.xml", rss(f"F{i}", [f"f{i}-a"]))
        body += feed_toml(f"f{i}", feed_server.url(f"f{i}.xml"))
    path = write_config(body, host_delay="0s")
    done = cli(path, "fetch")
    assert done.returncode == 0, done.stderr
    assert "polled 3 of 3 feeds" in done.stdout and "2 ok" in done.stdout, done.stdout
    assert "busy: error: HTTP 503" in done.stderr
    # The host asked for two seconds: its other feeds were fetched after them, not skipped.
    [busy] = feed_server.requests("/busy.xml")
    for i in range(2):
        [later] = feed_server.requests(f"/f{i}.xml")
        assert later.time >= busy.time + 2, (busy.time, later.time)
