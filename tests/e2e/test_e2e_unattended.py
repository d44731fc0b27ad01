"""End to end, months unattended: hot reload, the database lock, prune, OPML, backup, logs.

Every test runs the real daemon as a subprocess against the loopback feed server.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import feedparser
import pytest
from conftest import FeedServer, free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for

__all__ = ["start_daemon"]  # the fixture, shared with test_e2e
pytestmark = pytest.mark.e2e
StartDaemon = Callable[[Path, int], Daemon]


def rss(title: str, items: list[str]) -> bytes:
    """An RSS 2.0 document; items are given newest first and dated a day apart."""
    body = "".join(
        f"<item><title>{item}</title><guid>{item}</guid>"
        f"<link>http://127.0.0.1/{item}</link>"
        f"<pubDate>{28 - i:02d} Oct 2026 08:00:00 GMT</pubDate>"
        f"<description>About {item}.</description></item>"
        for i, item in enumerate(items)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>http://127.0.0.1/</link><description>{title}</description>{body}"
        "</channel></rss>"
    ).encode()


def feed_toml(name: str, url: str, extra: str = "") -> str:
    return f'[[feeds]]\nname = "{name}"\nurl = "{url}"\n{extra}\n'


def settings(port: int, **more: str) -> dict[str, str]:
    return {
        "listen": f"127.0.0.1:{port}",
        "base_url": f"http://127.0.0.1:{port}",
        "interval": "5s",
        "timeout": "5s",
        **more,
    }


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def titles(daemon: Daemon, output: str) -> list[str]:
    status, _, body = http_get(f"{daemon.base}/outputs/{output}.atom")
    assert status == 200, status
    return [e.title for e in feedparser.parse(body).entries]


def get_json(url: str) -> dict[str, object]:
    status, _, body = http_get(url)
    assert status in (200, 503), status
    doc: dict[str, object] = json.loads(body)
    return doc


def reload_of(daemon: Daemon, endpoint: str = "/healthz") -> dict[str, object]:
    value = get_json(daemon.base + endpoint)["reload"]
    return value if isinstance(value, dict) else {}


def test_reload_by_sighup_and_by_editing_the_file(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["one-a", "one-b"]))
    feed_server.serve_bytes("/two.xml", rss("Two", ["two-a"]))
    one = feed_toml("one", feed_server.url("one.xml"))
    two = feed_toml("two", feed_server.url("two.xml"))
    all_out = '[[outputs]]\nname = "all"\ntitle = "All"\n\n'
    second = '[[outputs]]\nname = "second"\ntitle = "Second"\nfeeds = ["two"]\n\n'
    path = write_config(one + all_out, **settings(port))
    daemon = start_daemon(path, port)
    wait_for(lambda: len(titles(daemon, "all")) == 2, "feed one in the output")
    assert reload_of(daemon) == {}  # no reload yet: null

    # 1. A valid change, applied by `aggregator reload` (SIGHUP): a feed and an output added.
    path.write_text(path.read_text().replace(all_out, two + all_out + second))
    done = cli(path, "reload")
    assert done.returncode == 0, done.stderr
    assert f"pid {daemon.proc.pid}" in done.stdout
    wait_for(lambda: "reload (SIGHUP) applied" in daemon.log.read_text(), "the SIGHUP reload")
    wait_for(lambda: titles(daemon, "second") == ["two-a"], "the new feed in the new output")
    assert sorted(titles(daemon, "all")) == ["one-a", "one-b", "two-a"]
    assert reload_of(daemon, "/status")["status"] == "ok"

    # 2. An invalid change: `aggregator reload` refuses to signal and names the key; a plain
    #    SIGHUP makes the daemon log the exact error and keep its config.
    valid = path.read_text()
    path.write_text(valid.replace(feed_server.url("two.xml"), "ftp://example.org/two"))
    refused = cli(path, "reload")
    assert refused.returncode == 2
    assert "feeds[1].url: 'ftp://example.org/two' is not an http(s) URL" in refused.stderr
    os.kill(daemon.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload (SIGHUP) failed" in daemon.log.read_text(), "the failed reload")
    health = get_json(daemon.base + "/healthz")
    assert http_get(daemon.base + "/healthz")[0] == 200  # still healthy, on the old config
    failed = health["reload"]
    assert isinstance(failed, dict) and failed["status"] == "failed"
    assert "feeds[1].url: 'ftp://example.org/two' is not an http(s) URL" in failed["problems"]
    assert reload_of(daemon, "/status")["status"] == "failed"
    assert titles(daemon, "second") == ["two-a"]
    assert "feeds[1].url: 'ftp://example.org/two' is not an http(s) URL" in daemon.log.read_text()

    # 3. A valid edit of the file, no signal: feed two and its output removed.
    path.write_text(valid.replace(two, "").replace(second, ""))
    wait_for(
        lambda: "reload (file change) applied" in daemon.log.read_text(), "the file-change reload"
    )
    wait_for(lambda: reload_of(daemon)["status"] == "ok", "the reload to show as ok")
    status = get_json(daemon.base + "/status")
    assert list(status["feeds"]) == ["one"]  # type: ignore[call-overload]
    assert http_get(daemon.base + "/outputs/second.atom")[0] == 404
    # Its entries are kept until pruned (the all output merges every configured feed: one).
    assert sorted(titles(daemon, "all")) == ["one-a", "one-b"]

    # 4. An invalid edit of the file: not even TOML.
    path.write_text(valid.replace("[[outputs]]", "[[outputs]"))
    wait_for(lambda: reload_of(daemon).get("status") == "failed", "the failed file reload")
    failed = reload_of(daemon)
    assert failed["trigger"] == "file change"
    assert "not valid TOML" in str(failed["error"])
    assert sorted(titles(daemon, "all")) == ["one-a", "one-b"]
    assert "reload (file change) failed" in daemon.log.read_text()

    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text()


def test_a_second_daemon_on_the_same_database_is_refused(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    feed_server.serve_bytes("/one.xml", rss("One", ["one-a"]))
    port = free_port()
    path = write_config(feed_toml("one", feed_server.url("one.xml")), **settings(port))
    daemon = start_daemon(path, port)
    other = write_config(
        feed_toml("one", feed_server.url("one.xml")), name="other.toml", **settings(free_port())
    )
    second = subprocess.run(
        [sys.executable, "-m", "aggregator", "run", "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert f"another daemon (pid {daemon.proc.pid}) is already running" in second.stderr
    assert "aggregator.db.lock" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.healthy()
    assert daemon.stop() == 0
    # Once the first has stopped, the database is free again.
    again = start_daemon(other, int(settings_port(other)))
    assert again.stop() == 0


def settings_port(config: Path) -> str:
    line = next(x for x in config.read_text().splitlines() if x.startswith("listen"))
    return line.rsplit(":", 1)[1].strip('"')


def test_prune_with_an_entry_still_upstream(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["newer", "older"]))
    body = feed_toml("one", feed_server.url("one.xml"))
    body += '[[outputs]]\nname = "all"\ntitle = "All"\n'
    path = write_config(body, **settings(port), max_entries_per_feed=1)
    daemon = start_daemon(path, port)
    wait_for(lambda: titles(daemon, "all") == ["newer", "older"], "both entries")

    pruned = cli(path, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned 1 entries" in pruned.stdout
    wait_for(lambda: titles(daemon, "all") == ["newer"], "the output to lose the pruned entry")

    # The publisher adds an entry and still carries the pruned one: only the added one is new.
    feed_server.serve_bytes("/one.xml", rss("One", ["newest", "newer", "older"]))
    wait_for(lambda: "newest" in titles(daemon, "all"), "the added entry")
    assert titles(daemon, "all") == ["newest", "newer"]
    log = daemon.log.read_text()
    assert "poll feed=one status=ok new=1 updated=0" in log
    # More polls of the same document change nothing.
    feed_server.serve_bytes("/one.xml", rss("One", ["newest", "newer", "older"]) + b"\n")
    wait_for(
        lambda: daemon.log.read_text().count("poll feed=one status=ok new=0 updated=0") >= 1,
        "a poll of the re-served document",
    )
    assert titles(daemon, "all") == ["newest", "newer"]

    vacuumed = cli(path, "prune", "--vacuum")  # beside the running daemon
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert "vacuumed" in vacuumed.stdout
    assert daemon.healthy()
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text()


MESSY_OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.1">
<head><title>Exported</title></head>
<body>
  <outline text="Nouvelles">
    <outline text="Caf\xe9 du monde" type="rss" xmlUrl="{two}"/>
    <outline text="Encore">
      <outline type="rss" xmlUrl="{three}&amp;x=1"/>
    </outline>
  </outline>
  <outline text="Already there" xmlUrl="{one}"/>
  <outline text="Dup" xmlUrl="{two}"/>
  <outline text="Just a web page" htmlUrl="http://127.0.0.1/"/>
</body>
</opml>
"""


def test_import_opml_into_a_running_daemon_and_export(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    for name in ("one", "two", "three"):
        feed_server.serve_bytes(f"/{name}.xml", rss(name.title(), [f"{name}-a"]))
    body = "# My own feeds, hand-written; keep this comment.\n"
    body += feed_toml("one", feed_server.url("one.xml"), "# one is my favourite\n")
    body += '[[outputs]]\nname = "all"\ntitle = "All"  # every feed\n'
    path = write_config(body, **settings(port))
    daemon = start_daemon(path, port)
    wait_for(lambda: titles(daemon, "all") == ["one-a"], "feed one")

    opml = path.parent / "subs.opml"
    # Declared UTF-8, written in Latin-1, as some exporters do.
    opml.write_bytes(
        MESSY_OPML.format(
            one=feed_server.url("one.xml"),
            two=feed_server.url("two.xml"),
            three=feed_server.url("three.xml") + "?y=2",
        ).encode("latin-1")
    )
    before = path.read_text()
    printed = cli(path, "import-opml", str(opml), "--print")
    assert printed.returncode == 0, printed.stderr
    assert path.read_text() == before
    assert (
        'name = "cafe-du-monde"' in printed.stdout and 'title = "Café du monde"' in printed.stdout
    )

    imported = cli(path, "import-opml", str(opml))
    assert imported.returncode == 0, imported.stderr
    assert "added 2 feeds" in imported.stdout and "skipped 3 outlines" in imported.stdout
    skipped = [line for line in imported.stderr.splitlines() if line.startswith("skipped: ")]
    assert skipped == [
        f"skipped: Already there: duplicate URL {feed_server.url('one.xml')}",
        f"skipped: Dup: duplicate URL {feed_server.url('two.xml')}",
        "skipped: Just a web page: no xmlUrl (not a feed)",
    ]
    text = path.read_text()
    assert text.startswith(before.rstrip("\n"))  # comments and all, untouched
    assert 'tags = ["nouvelles", "encore"]' in text
    assert cli(path, "check-config").returncode == 0

    # The running daemon sees the edited file and polls the imported feeds.
    wait_for(
        lambda: sorted(titles(daemon, "all")) == ["one-a", "three-a", "two-a"],
        "the imported feeds in the output",
    )
    exported = cli(path, "export-opml")
    assert exported.returncode == 0, exported.stderr
    urls = {o.get("xmlUrl") for o in _outlines(exported.stdout)}
    assert urls == {
        feed_server.url("one.xml"),
        feed_server.url("two.xml"),
        feed_server.url("three.xml") + "?y=2&x=1",
    }
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text()


def _outlines(document: str) -> list[dict[str, str]]:
    from xml.etree import ElementTree as ET

    return [dict(o.attrib) for o in ET.fromstring(document.encode()).iter("outline")]


def test_backup_while_the_daemon_writes(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    names = [f"f{i}" for i in range(4)]
    body = ""
    for name in names:
        feed_server.serve_bytes(f"/{name}.xml", rss(name, [f"{name}-0-{j}" for j in range(200)]))
        body += feed_toml(name, feed_server.url(f"{name}.xml"))
    path = write_config(body, **settings(port))
    daemon = start_daemon(path, port)

    def stored() -> int:
        feeds = get_json(daemon.base + "/status")["feeds"]
        assert isinstance(feeds, dict)
        return sum(int(f["entries"]) for f in feeds.values())

    wait_for(lambda: stored() == 800, "the first polls")
    for round_ in range(1, 4):
        # New documents: the daemon writes 200 new entries per feed at its next polls, while
        # the backups below are taken.
        for name in names:
            items = [f"{name}-{round_}-{j}" for j in range(200)]
            feed_server.serve_bytes(f"/{name}.xml", rss(name, items))
        copy = path.parent / "backups" / f"round-{round_}.db"
        done = cli(path, "backup", str(copy))
        assert done.returncode == 0, done.stderr
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            count = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            # A snapshot between whole polls: every feed has all of a round or none of it.
            per_feed = conn.execute("SELECT count(*) FROM entries GROUP BY feed").fetchall()
        conn.close()
        assert count >= 800 and all(n % 200 == 0 for (n,) in per_feed)
        wait_for(lambda r=round_: stored() == 800 * (r + 1), "this round's polls")
    dated = cli(path, "backup", str(path.parent / "backups") + "/")
    assert dated.returncode == 0 and "aggregator-" in dated.stdout
    assert cli(path, "backup", str(copy)).returncode == 2  # never overwrites
    assert daemon.stop() == 0


def test_json_logs_and_poll_summary(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["one-a"]))
    feed_server.serve_status("/broken.xml", 500)
    feed_server.serve_slow("/slow.xml", 30)  # times out: another expected error
    body = feed_toml("one", feed_server.url("one.xml"))
    body += feed_toml("broken", feed_server.url("broken.xml"))
    body += feed_toml("slow", feed_server.url("slow.xml"))
    path = write_config(body, **settings(port, log_format="json", summary_interval="5s"))
    daemon = start_daemon(path, port)

    def lines() -> list[dict[str, object]]:
        return [json.loads(x) for x in daemon.log.read_text().splitlines() if x.strip()]

    wait_for(lambda: any(d["message"] == "summary" for d in lines()), "a summary line")
    wait_for(
        lambda: any(d.get("feed") == "slow" and d.get("status") == "error" for d in lines()),
        "the timeout",
    )
    # One host: "one" and "broken" may wait behind the slow feed for their turns.
    wait_for(
        lambda: {"one", "broken"} <= {d.get("feed") for d in lines() if d["message"] == "poll"},
        "the polls of feeds one and broken",
    )
    assert daemon.stop() == 0
    records = lines()  # every line is one JSON object
    # The fields are keys of their own, not text inside the message.
    summary = next(d for d in records if d["message"] == "summary")
    assert summary["logger"] == "aggregator.daemon" and summary["level"] == "info"
    assert summary["feeds"] == 3 and isinstance(summary["error"], int)
    polls = [d for d in records if d["message"] == "poll"]
    assert {d["feed"] for d in polls} == {"one", "broken", "slow"}
    one = next(d for d in polls if d["feed"] == "one")
    assert one["status"] == "ok" and one["new"] == 1 and isinstance(one["ms"], int)
    assert "error" not in one  # only the fields that have a value
    errors = [d for d in polls if d["status"] == "error"]
    assert {d["level"] for d in errors} == {"warning"}
    broken = next(d for d in errors if d["feed"] == "broken")
    assert (
        broken["error"] == "HTTP 500 Internal Server Error" and broken["error_kind"] == "http_5xx"
    )
    assert not any("exception" in d or "Traceback" in str(d["message"]) for d in records)


def test_daily_prune_runs_when_due_after_a_restart(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["newer", "older", "oldest"]))
    body = feed_toml("one", feed_server.url("one.xml"))
    path = write_config(body, **settings(port), max_entries_per_feed=2)
    assert cli(path, "fetch").returncode == 0
    database = path.parent / "data" / "aggregator.db"
    # The last prune was two days ago: the daemon prunes as soon as it starts.
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_prune', ?)",
            ["2000-01-01T00:00:00+00:00"],
        )
    conn.close()
    daemon = start_daemon(path, port)
    wait_for(lambda: "prune: 1 entries deleted" in daemon.log.read_text(), "the daily prune")
    feeds = get_json(daemon.base + "/status")["feeds"]
    assert isinstance(feeds, dict) and feeds["one"]["entries"] == 2
    assert daemon.stop() == 0
    with sqlite3.connect(database) as conn:
        (last,) = conn.execute("SELECT value FROM meta WHERE key = 'last_prune'").fetchone()
    conn.close()
    assert last > "2000-01-01"
