"""End to end: the real daemon as a subprocess against the loopback feed server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import feedparser
import pytest
from conftest import DATA_DIR, FeedServer, free_port
from feedserver import guess_content_type

from aggregator.outputs.publish import SOURCE_SCHEME

pytestmark = pytest.mark.e2e
DEADLINE = 30.0


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    def __init__(self, config: Path, port: int, log: Path, args: tuple[str, ...] = ()) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "run", "--config", str(config), *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
        )

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited early:\n{self.log.read_text()}")
        try:
            return http_get(self.base + "/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if not self._log_file.closed:
                self._log_file.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start(config, port, *args): the daemon with `run` arguments `args` (--role, --listen),
    once its /healthz on `port` answers 200."""
    started: list[Daemon] = []

    def start(config: Path, port: int, *args: str) -> Daemon:
        d = Daemon(config, port, tmp_path / f"daemon-{len(started)}.log", args)
        started.append(d)
        wait_for(d.healthy, "/healthz to answer 200")
        return d

    yield start
    for d in started:
        # SIGTERM first even when a test failed: a SIGKILLed daemon leaves its parse workers
        # behind. Kill only what does not stop in time.
        try:
            d.stop()
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()


def _without_ttl(document: bytes) -> bytes:
    return re.sub(rb"<ttl>\d+</ttl>", b"", document)


def loopback_settings(port: int, **overrides: str) -> dict[str, str]:
    """[aggregator] settings of a daemon on `port` that polls every 5 seconds."""
    settings = {
        "listen": f"127.0.0.1:{port}",
        "base_url": f"http://127.0.0.1:{port}",
        "interval": "5s",
        "min_interval": "5s",
        "timeout": "5s",
    }
    return settings | overrides


def _config(feed_server: FeedServer, write_config: Callable[..., Path], port: int) -> Path:
    feeds = {
        "russia": "section-russia.rss.xml",
        "world": "section-world.rss.xml",
        "top": "top-stories.atom.xml",
    }
    body = ""
    for name, filename in feeds.items():
        # Without their <ttl> (15m), which the daemon would honour over the 5s interval.
        document = _without_ttl((DATA_DIR / filename).read_bytes())
        feed_server.serve_bytes(f"/{name}.xml", document, guess_content_type(filename, document))
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n'
        body += 'tags = ["news"]\n\n'
    feed_server.serve_status("/broken.xml", 500)
    body += f'[[feeds]]\nname = "broken"\nurl = "{feed_server.url("broken.xml")}"\n\n'
    body += '[[outputs]]\nname = "all"\ntitle = "All news"\n\n'
    body += '[[outputs]]\nname = "latam"\ntitle = "Latin America"\ntags = ["news"]\n'
    body += 'include = ["Latin America"]\n'
    return write_config(body, **loopback_settings(port))


def test_daemon_polls_serves_and_stops(
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
) -> None:
    port = free_port()
    daemon = start_daemon(_config(feed_server, write_config, port), port)
    url = daemon.base + "/outputs/all.atom"

    def entries() -> list[feedparser.FeedParserDict]:
        status, _, body = http_get(url)
        assert status == 200
        return list(feedparser.parse(body).entries)

    # 2 + 2 + 1 entries in the three feeds, one story carried by all three: 3 stories once
    # every feed is in (the broken feed contributes nothing).
    def story_sources() -> set[str]:
        for e in entries():
            if "Putin" in e.title:
                return {c.term for c in e.get("tags", []) if c.scheme == SOURCE_SCHEME} | {
                    e.source.title
                }
        return set()

    wait_for(lambda: len(story_sources()) == 3, "the story to name all three sources")
    wait_for(lambda: len(entries()) == 3, "the merged output to hold 3 stories")
    status, headers, body = http_get(url)
    parsed = feedparser.parse(body)
    assert not parsed.bozo
    assert headers["Content-Type"].startswith("application/atom+xml")
    # The two stories carried by one feed each name it; the merged story names whichever of its
    # three feeds stored it first (the feeds' first polls are spread at random), and the others
    # as categories, checked above.
    assert {e.source.title for e in parsed.entries if "Putin" not in e.title} == {
        "News Example – Russia",
        "News Example – World News",
    }
    [story] = [e for e in parsed.entries if "Putin" in e.title]
    assert story.source.title in {
        "News Example – Russia",
        "News Example – World News",
        "News Example – Top stories",
    }

    # Conditional GET on the output.
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    assert http_get(url, {"If-None-Match": etag})[0] == 304
    assert http_get(url, {"If-Modified-Since": last_modified})[0] == 304

    # Every format is served with its own content type; the filtered output holds one story
    # per feed that carries it.
    for fmt, ctype in (("rss", "application/rss+xml"), ("json", "application/feed+json")):
        status, headers, body = http_get(f"{daemon.base}/outputs/latam.{fmt}")
        assert status == 200 and headers["Content-Type"].startswith(ctype)
    doc = json.loads(http_get(daemon.base + "/outputs/latam.json")[2])
    [item] = doc["items"]
    assert "Latin America" in item["title"]
    assert {s["feed"] for s in item["_aggregator"]["sources"]} == {"russia", "world", "top"}
    assert http_get(daemon.base + "/outputs/nope.atom")[0] == 404
    assert http_get(daemon.base + "/outputs/all.xml")[0] == 404

    # Status names each feed's status; the broken one is an error, the others are fine.
    # /healthz counts them (and stays 200: a failing feed is not a failing daemon).
    def feed_statuses() -> dict[str, str]:
        status = json.loads(http_get(daemon.base + "/status.json")[2])
        return {name: f["status"] for name, f in status["feeds"].items()}

    wait_for(lambda: feed_statuses()["broken"] == "error", "the broken feed to show an error")
    assert all(feed_statuses()[n] != "error" for n in ("russia", "world", "top"))
    code, _, body = http_get(daemon.base + "/healthz")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["failing"] == 1
    assert health["feeds"]["total"] == 4 and health["feeds"]["error"] == 1
    assert len(body) < 1000  # small: counts, not per-feed detail

    # The publisher edits its feed: the daemon picks it up on its next poll (interval 5s).
    edited = _without_ttl((DATA_DIR / "section-russia.rss.xml").read_bytes()).replace(
        b"Heavy rain expected in the capital", b"Heavy rain and wind expected in the capital"
    )
    feed_server.serve_bytes("/russia.xml", edited, "application/rss+xml")
    wait_for(
        lambda: any(e.title == "Heavy rain and wind expected in the capital" for e in entries()),
        "the edited entry to appear in the output",
    )
    assert len(entries()) == 3  # updated in place, not added

    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log
    assert "poll feed=broken status=error" in log


def test_bad_config_exits_2_and_names_the_key(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    path = write_config('[[feeds]]\nname = "a"\nurl = "ftp://example.org/feed"\n', intervall="5m")
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AGGREGATOR_CONFIG": ""},
    )
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "aggregator.intervall: unknown key" in result.stderr
    assert "feeds[0].url: 'ftp://example.org/feed' is not an http(s) URL" in result.stderr


def test_cli_fetch_render_and_feeds(
    feed_server: FeedServer, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = _config(feed_server, write_config, free_port())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = cli("fetch")
    assert first.returncode == 0, first.stderr
    assert "polled 4 of 4 feeds" in first.stdout
    assert "3 ok" in first.stdout and "1 errors" in first.stdout and "5 new" in first.stdout
    second = cli("fetch", "--feed", "russia")
    assert "polled 1 of 1 feeds" in second.stdout and "1 not modified" in second.stdout

    rendered = cli("render", "latam", "--format", "rss")
    assert rendered.returncode == 0
    parsed = feedparser.parse(rendered.stdout.encode())
    assert not parsed.bozo and len(parsed.entries) == 1

    table = cli("feeds").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "STATUS"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {"russia": "not_modified", "world": "ok", "top": "ok", "broken": "error"}

    assert cli("render", "nope").returncode == 2
    assert cli("fetch", "--feed", "nope").returncode == 2
