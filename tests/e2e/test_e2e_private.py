"""End to end: private sources and private outputs through the real daemon.

A secret marker is configured in every secret field (by env:, file: and literally); it must
reach only the origins it belongs to, and never the daemon's log, any of its HTTP answers, the
CLI's `feeds` and `export-opml`, or the database's feed table.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import feedparser
import pytest
from authserver import GuardedServer
from conftest import DATA_DIR, free_port
from hubserver import Hub, hub
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_e2e_unattended import cli

__all__ = ["hub", "start_daemon"]
pytestmark = pytest.mark.e2e
MARK = "S3CRET-MARKER-e2e-5d2e"  # in every source secret: never shown anywhere
TOKEN = "output-token-" + "a1" * 10  # a private output's token: shown only to its holders
ADMIN = "admin-token-" + "b2" * 10
RSS = (DATA_DIR / "section-russia.rss.xml").read_bytes()
WORLD = (DATA_DIR / "section-world.rss.xml").read_bytes()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def origins() -> Iterator[tuple[GuardedServer, GuardedServer]]:
    a, b = GuardedServer("127.0.0.1"), GuardedServer("127.0.0.2")
    yield a, b
    a.close()
    b.close()


def sources_config(a: GuardedServer, b: GuardedServer, tmp_path: Path) -> str:
    """Feeds demanding basic auth, a bearer header and a cookie on A; one redirected from A
    to B with every credential; one through a proxy (B) with a password; one failing."""
    for path in ("/basic.xml", "/bearer.xml", "/cookie.xml", "/userinfo.xml"):
        a.serve_bytes(path, RSS, "application/rss+xml")
    a.guard("/basic.xml", "Authorization", basic("reader", "pw-" + MARK))
    a.guard("/userinfo.xml", "Authorization", basic("url-user", "url-" + MARK))
    a.guard("/bearer.xml", "Authorization", f"Bearer {MARK}")
    a.guard("/cookie.xml", "Cookie", f"session={MARK}")
    b.serve_bytes("/feed.xml", WORLD, "application/rss+xml")
    a.serve_redirect("/moved.xml", b.url("/feed.xml"), 302)
    b.serve_bytes("/proxied.xml", WORLD, "application/rss+xml")
    b.guard("/proxied.xml", "Proxy-Authorization", basic("proxyuser", "proxy-" + MARK))
    (tmp_path / "cookie.secret").write_text(f"session={MARK}\n", encoding="utf-8")
    userinfo_url = a.url("/userinfo.xml").replace("://", f"://url-user:url-{MARK}@")
    return f"""
[[feeds]]
name = "basic"
url = "{a.url("/basic.xml")}"
username = "reader"
password = "env:E2E_FEED_PASSWORD"

[[feeds]]
name = "bearer"
url = "{a.url("/bearer.xml")}"
headers = {{ Authorization = "Bearer {MARK}" }}

[[feeds]]
name = "cookie"
url = "{a.url("/cookie.xml")}"
cookie = "file:{tmp_path / "cookie.secret"}"

[[feeds]]
name = "userinfo"
url = "{userinfo_url}"

[[feeds]]
name = "moved"
url = "{a.url("/moved.xml")}"
username = "env:E2E_USER"
password = "env:E2E_FEED_PASSWORD"
cookie = "session={MARK}"
headers = {{ X-Api-Key = "env:E2E_API_KEY" }}

[[feeds]]
name = "proxied"
url = "http://feeds.invalid/proxied.xml"
proxy = "env:E2E_PROXY"

[[feeds]]
name = "refused"
url = "http://feeds.invalid/refused.xml"
proxy = "http://proxyuser:refused-{MARK}@127.0.0.1:9"
headers = {{ X-Api-Key = "refused-{MARK}" }}

[[outputs]]
name = "all"
title = "Everything"

[[outputs]]
name = "private"
title = "Private"
token = "{TOKEN}"
"""


def test_source_secrets_reach_only_their_origin_and_are_shown_nowhere(
    origins: tuple[GuardedServer, GuardedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = origins
    monkeypatch.setenv("E2E_FEED_PASSWORD", "pw-" + MARK)
    monkeypatch.setenv("E2E_USER", "reader")
    monkeypatch.setenv("E2E_API_KEY", "key-" + MARK)
    monkeypatch.setenv("E2E_PROXY", f"http://proxyuser:proxy-{MARK}@127.0.0.2:{b.port}")
    port = free_port()
    config = write_config(
        sources_config(a, b, tmp_path),
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        timeout="5s",
        interval="5s",
        host_delay="0s",
        log_level="debug",
        admin_token=ADMIN,
    )
    daemon = start_daemon(config, port)
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def statuses() -> dict[str, str]:
        doc = json.loads(http_get(daemon.base + "/status.json", admin)[2])
        return {name: feed["status"] for name, feed in doc["feeds"].items()}

    good = ("basic", "bearer", "cookie", "userinfo", "moved", "proxied")
    wait_for(lambda: all(statuses()[n] == "ok" for n in good), "every private feed to be ok")
    wait_for(lambda: statuses()["refused"] == "error", "the refused proxy to be an error")

    # The redirected feed's credentials went to A only; B got none of them.
    assert a.requests("/moved.xml")[0].headers["X-Api-Key"] == "key-" + MARK
    for record in b.requests("/feed.xml"):
        assert MARK not in json.dumps(dict(record.headers))
        assert not {"Authorization", "Cookie", "X-Api-Key"} & set(record.headers)
    assert {r.status for r in a.requests("/basic.xml")} == {200}

    # Every answer of the daemon, with and without the tokens.
    answers = []
    for path in (
        "/",
        "/?token=" + TOKEN,
        "/healthz",
        "/status",
        "/status.json",
        "/metrics",
        *(f"/outputs/all.{fmt}" for fmt in ("atom", "rss", "json", "html", "opml")),
        *(f"/outputs/private.{fmt}?token={TOKEN}" for fmt in ("atom", "rss", "json", "html")),
        f"/outputs/private.opml?token={TOKEN}",
        "/outputs/private.atom",
    ):
        for headers in ({}, admin, {"Accept": "text/html"}, {"Accept": "text/html", **admin}):
            status, got, body = http_get(daemon.base + path, headers)
            answers.append(f"{path} {status}\n{json.dumps(got)}\n{body.decode('utf-8', 'replace')}")
    everything = "\n".join(answers)
    assert "/outputs/all.atom 200" in everything and "/status.json 200" in everything
    assert MARK not in everything
    assert ADMIN not in everything  # the admin token is never echoed

    # The CLI's views of the same config and database.
    for args in (("feeds",), ("export-opml",), ("check-config",)):
        result = cli(config, *args)
        assert result.returncode == 0, result.stderr
        assert MARK not in result.stdout + result.stderr
    assert "url-user" not in cli(config, "export-opml").stdout
    # Without the daemon's environment, the commands that need no secret still work.
    monkeypatch.delenv("E2E_FEED_PASSWORD")
    assert cli(config, "feeds").returncode == 0
    strict = cli(config, "check-config")
    assert strict.returncode == 2
    assert "feeds[0].password: environment variable E2E_FEED_PASSWORD is not set" in strict.stderr

    # The database's feed table.
    with sqlite3.connect(tmp_path / "data" / "aggregator.db") as db:
        rows = db.execute("SELECT * FROM feeds").fetchall()
    assert len(rows) == 7 and MARK not in json.dumps(rows)

    assert daemon.stop() == 0
    log = daemon.log.read_text(encoding="utf-8")
    assert "poll feed=refused status=error" in log  # the log does talk about the feeds
    assert MARK not in log


def outputs_config(server: GuardedServer, token: str) -> str:
    server.serve_bytes("/russia.xml", re.sub(rb"<ttl>\d+</ttl>", b"", RSS), "application/rss+xml")
    return f"""
[[feeds]]
name = "russia"
url = "{server.url("/russia.xml")}"

[[outputs]]
name = "open"
title = "Open"

[[outputs]]
name = "secret"
title = "Secret"
token = "{token}"
"""


def test_private_outputs_answer_only_to_their_token_and_rotate_on_reload(
    origins: tuple[GuardedServer, GuardedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
    hub: Hub,
) -> None:
    server = origins[0]
    port = free_port()
    settings = dict(
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        timeout="5s",
        interval="5s",
        admin_token=ADMIN,
        hub=hub.url,
    )
    config = write_config(outputs_config(server, TOKEN), **settings)
    daemon = start_daemon(config, port)
    base = daemon.base
    url = base + "/outputs/secret.atom"

    def entries(fmt: str = "atom", **headers: str) -> int:
        return len(feedparser.parse(http_get(f"{base}/outputs/secret.{fmt}", headers)[2]).entries)

    wait_for(lambda: entries(Authorization=f"Bearer {TOKEN}") == 2, "the private output")

    # Without the token (or with a wrong one) it does not exist, exactly like a missing one.
    missing = http_get(base + "/outputs/nothing.atom")
    for fmt in ("atom", "rss", "json", "html", "opml"):
        for query, headers in (
            ("", {}),
            ("?token=wrong" + TOKEN, {}),
            ("", {"Authorization": f"Bearer {TOKEN}x"}),
            ("", {"Authorization": basic("reader", ADMIN)}),  # not the admin's either
        ):
            status, _, body = http_get(f"{base}/outputs/secret.{fmt}{query}", headers)
            assert status == 404
            assert body == missing[2].replace(b"nothing", b"secret")

    # With it, each way, every format; links carry it; no shared cache may keep it.
    ways: list[tuple[str, dict[str, str]]] = [
        (f"?token={TOKEN}", {}),
        ("", {"Authorization": f"Bearer {TOKEN}"}),
        ("", {"Authorization": basic("any-name", TOKEN)}),
    ]
    for query, headers in ways:
        for fmt in ("atom", "rss", "json", "html", "opml"):
            status, got, _ = http_get(f"{base}/outputs/secret.{fmt}{query}", headers)
            assert status == 200, (fmt, query, headers)
            assert got["Cache-Control"].startswith("private, max-age=")
            assert got["Referrer-Policy"] == "no-referrer"
    status, got, body = http_get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert got["Link"] == f'<{url}?token={TOKEN}>; rel="self"'  # and no hub
    feed = feedparser.parse(body).feed
    assert {lk.rel: lk.href for lk in feed.links}["self"] == f"{url}?token={TOKEN}"
    assert feed.id == url  # the id stays the same whatever the token
    paged = http_get(f"{base}/outputs/secret.json?limit=1&token={TOKEN}")[2]
    doc = json.loads(paged)
    assert doc["feed_url"].endswith(f"limit=1&token={TOKEN}")
    assert doc["next_url"].endswith(f"page=2&limit=1&token={TOKEN}")
    assert http_get(doc["next_url"])[0] == 200
    page = http_get(f"{base}/outputs/secret.html?token={TOKEN}")[2].decode()
    alternates = re.findall(r'<link rel="alternate" [^>]*href="([^"]+)"', page)
    assert len(alternates) == 3 and all(f"token={TOKEN}" in h for h in alternates)
    assert f"secret.opml?token={TOKEN}" in page

    # 304s keep working with the token, and only with it.
    etag = got["ETag"]
    assert http_get(url, {"Authorization": f"Bearer {TOKEN}", "If-None-Match": etag})[0] == 304
    assert http_get(f"{url}?token={TOKEN}", {"If-None-Match": etag})[0] == 304
    assert http_get(url, {"If-None-Match": etag})[0] == 404

    # The index, /status and /metrics.
    index = http_get(base + "/")[2].decode()
    assert "/outputs/open.html" in index and "secret" not in index
    with_token = http_get(f"{base}/?token={TOKEN}")[2].decode()
    assert f"/outputs/secret.html?token={TOKEN}" in with_token
    for path in ("/status", "/status.json", "/metrics"):
        status, got, _ = http_get(base + path)
        assert status == 401 and got["WWW-Authenticate"].startswith("Basic")
        assert http_get(base + path, {"Authorization": basic("", TOKEN)})[0] == 401
    status_doc = json.loads(http_get(base + "/status.json", {"Authorization": basic("", ADMIN)})[2])
    assert set(status_doc["outputs"]) == {"open", "secret"}
    assert TOKEN not in json.dumps(status_doc)
    assert json.loads(http_get(base + "/healthz")[2]) == {"status": "ok"}
    detail = json.loads(http_get(f"{base}/healthz?token={ADMIN}")[2])
    # The detail is counts (per-feed detail is in /status): for the admin only.
    assert detail["status"] == "ok" and detail["feeds"]["total"] == 1

    # WebSub: the public output is announced, the private one never.
    server.serve_bytes("/russia.xml", WORLD, "application/rss+xml")
    wait_for(lambda: any("/outputs/open." in u for p in hub.pings for u in p.urls), "a ping")
    assert not any("secret" in u or TOKEN in u for p in hub.pings for u in p.urls)

    # Rotation: a reloaded config with a new token revokes the old one at once.
    new_token = "rotated-token-" + "c3" * 10
    config.write_text(config.read_text().replace(TOKEN, new_token), encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: http_get(f"{url}?token={TOKEN}")[0] == 404, "the old token to be revoked")
    status, got, body = http_get(f"{url}?token={new_token}")
    assert status == 200 and f"token={new_token}" in got["Link"]
    assert TOKEN not in body.decode() and f"token={new_token}" in body.decode()
    assert http_get(url, {"If-None-Match": etag, "Authorization": f"Bearer {TOKEN}"})[0] == 404

    assert daemon.stop() == 0
    log = daemon.log.read_text(encoding="utf-8")
    assert TOKEN not in log and new_token not in log and ADMIN not in log
