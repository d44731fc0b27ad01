"""Private sources against real loopback servers: basic auth, a bearer header, a cookie, a
proxy and a self-signed certificate, and credentials that never follow a redirect to another
origin (a second server on 127.0.0.2)."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from authserver import GuardedServer
from feedserver import DATA_DIR

from aggregator.config.credentials import may_send, origin_of
from aggregator.config.load import parse_config
from aggregator.config.resolved import Feed
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.errors import ConfigError, FetchError
from aggregator.ingest.fetch import Fetcher
from aggregator.models import Fetched, NotModified

RSS20 = (DATA_DIR / "rss20.xml").read_bytes()
MARK = "S3CRET-MARKER-creds-7f1c"  # in every secret; must reach only the right origin


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def origin_a() -> Iterator[GuardedServer]:
    server = GuardedServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def origin_b() -> Iterator[GuardedServer]:
    server = GuardedServer("127.0.0.2")  # another origin: another host address
    yield server
    server.close()


def feed(url: str, **keys: Any) -> Feed:
    return parse_config({"feeds": [{"name": "private", "url": url, **keys}]}).feeds["private"]


def fetch(config: Feed, url: str | None = None) -> Fetched | NotModified:
    async def main() -> Fetched | NotModified:
        async with Fetcher(
            user_agent=DEFAULT_USER_AGENT, timeout=10, max_body_size=1 << 20, max_concurrency=4
        ) as fetcher:
            return await fetcher.fetch(config.name, url or config.url, None, config.request_options)

    return asyncio.run(main())


def fetch_error(config: Feed, url: str | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(config, url)
    return info.value


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FEED_PASSWORD", "pw-" + MARK)
    secret_file = tmp_path / "cookie.secret"
    secret_file.write_text(f"session={MARK}\n", encoding="utf-8")  # as `echo` writes it
    return secret_file


def test_each_path_gets_its_own_kind_of_credential(
    origin_a: GuardedServer, secrets_env: Path
) -> None:
    for path in ("/basic.xml", "/bearer.xml", "/cookie.xml"):
        origin_a.serve_bytes(path, RSS20, "application/rss+xml")
    origin_a.guard("/basic.xml", "Authorization", basic("reader", "pw-" + MARK))
    origin_a.guard("/bearer.xml", "Authorization", f"Bearer {MARK}")
    origin_a.guard("/cookie.xml", "Cookie", f"session={MARK}")

    by_password = feed(origin_a.url("/basic.xml"), username="reader", password="env:FEED_PASSWORD")
    by_header = feed(origin_a.url("/bearer.xml"), headers={"Authorization": f"Bearer {MARK}"})
    by_cookie = feed(origin_a.url("/cookie.xml"), cookie=f"file:{secrets_env}")
    for config in (by_password, by_header, by_cookie):
        result = fetch(config)
        assert isinstance(result, Fetched) and result.body == RSS20
    # Without them, or with another path's, each path refuses.
    assert fetch_error(feed(origin_a.url("/basic.xml"))).status == 401
    assert fetch_error(by_header, origin_a.url("/cookie.xml")).status == 401


def test_user_and_password_in_the_url_become_basic_auth_and_leave_the_url(
    origin_a: GuardedServer,
) -> None:
    origin_a.serve_bytes("/basic.xml", RSS20, "application/rss+xml")
    origin_a.guard("/basic.xml", "Authorization", basic("reader", "p@ss " + MARK))
    url = origin_a.url("/basic.xml").replace("://", f"://reader:p%40ss%20{MARK}@")
    config = feed(url)
    assert config.url == origin_a.url("/basic.xml")
    assert MARK not in repr(config) and MARK not in str(config)
    assert isinstance(fetch(config), Fetched)


def test_a_redirect_to_another_origin_carries_no_credential(
    origin_a: GuardedServer, origin_b: GuardedServer, secrets_env: Path
) -> None:
    origin_b.serve_bytes("/feed.xml", RSS20, "application/rss+xml")
    origin_a.serve_redirect("/moved.xml", origin_b.url("/feed.xml"), 302)
    config = feed(
        origin_a.url("/moved.xml"),
        username="reader",
        password="env:FEED_PASSWORD",
        cookie=f"file:{secrets_env}",
        headers={"X-Api-Key": "key-" + MARK},
        user_agent="private-reader/1.0",
    )
    result = fetch(config)
    assert isinstance(result, Fetched) and result.url == origin_b.url("/feed.xml")

    [sent_a] = origin_a.requests("/moved.xml")
    assert sent_a.headers["Authorization"] == basic("reader", "pw-" + MARK)
    assert sent_a.headers["Cookie"] == f"session={MARK}"
    assert sent_a.headers["X-Api-Key"] == "key-" + MARK
    [sent_b] = origin_b.requests("/feed.xml")
    received = "\n".join(f"{k}: {v}" for k, v in sent_b.headers.items())
    assert MARK not in received
    assert not {"Authorization", "Cookie", "X-Api-Key"} & set(sent_b.headers)
    assert sent_b.headers["User-Agent"] == "private-reader/1.0"  # not a credential

    # A 401 from the other origin says why instead of looking like a wrong password.
    origin_b.guard("/feed.xml", "Authorization", basic("reader", "pw-" + MARK))
    error = fetch_error(config)
    assert error.status == 401
    assert "credentials are sent only to http://127.0.0.1:" in error.message


def test_user_and_password_in_a_location_are_neither_sent_nor_kept(
    origin_a: GuardedServer, origin_b: GuardedServer
) -> None:
    origin_b.serve_bytes("/feed.xml", RSS20, "application/rss+xml")
    target = origin_b.url("/feed.xml").replace("://", f"://someone:{MARK}@")
    origin_a.serve_redirect("/moved.xml", target, 301)
    result = fetch(feed(origin_a.url("/moved.xml")))
    assert isinstance(result, Fetched)
    assert result.url == result.permanent_url == origin_b.url("/feed.xml")
    [sent] = origin_b.requests("/feed.xml")
    assert "Authorization" not in sent.headers


def test_a_redirect_within_the_origin_keeps_the_credentials(origin_a: GuardedServer) -> None:
    origin_a.serve_bytes("/feed.xml", RSS20, "application/rss+xml")
    origin_a.guard("/feed.xml", "Authorization", f"Bearer {MARK}")
    origin_a.serve_redirect("/old.xml", "/feed.xml", 301)
    config = feed(origin_a.url("/old.xml"), headers={"Authorization": f"Bearer {MARK}"})
    result = fetch(config)
    assert isinstance(result, Fetched) and result.permanent_url == origin_a.url("/feed.xml")


def test_a_permanently_moved_feed_keeps_its_credentials_to_its_configured_origin(
    origin_a: GuardedServer, origin_b: GuardedServer
) -> None:
    # Polls of a 301 target go straight there: still not with the credentials of origin A.
    origin_b.serve_bytes("/feed.xml", RSS20, "application/rss+xml")
    config = feed(origin_a.url("/feed.xml"), headers={"Authorization": f"Bearer {MARK}"})
    assert isinstance(fetch(config, origin_b.url("/feed.xml")), Fetched)
    [sent] = origin_b.requests("/feed.xml")
    assert "Authorization" not in sent.headers


def test_origin_rule() -> None:
    own = origin_of("http://intranet.example/feed")
    assert may_send(own, "http://INTRANET.example:80/other")
    assert may_send(own, "https://intranet.example/feed")  # the upgrade of the same host
    assert not may_send(own, "http://intranet.example:8080/feed")
    assert not may_send(own, "http://evil.example/feed")
    assert not may_send(origin_of("https://intranet.example/"), "http://intranet.example/")


def test_a_proxy_with_its_own_password(origin_b: GuardedServer, monkeypatch: Any) -> None:
    # The proxy stands in for the whole route: the feed's host does not even resolve.
    origin_b.serve_bytes("/x.xml", RSS20, "application/rss+xml")
    origin_b.guard("/x.xml", "Proxy-Authorization", basic("proxyuser", MARK))
    monkeypatch.setenv("FEED_PROXY", f"http://proxyuser:{MARK}@127.0.0.2:{origin_b.port}")
    config = feed("http://feeds.invalid/x.xml", proxy="env:FEED_PROXY")
    assert isinstance(fetch(config), Fetched)
    [sent] = origin_b.requests("/x.xml")
    assert sent.headers["Host"] == "feeds.invalid"
    # A refused proxy names no password in the error.
    monkeypatch.setenv("FEED_PROXY", f"http://proxyuser:{MARK}@127.0.0.2:9")
    error = fetch_error(feed("http://feeds.invalid/x.xml", proxy="env:FEED_PROXY"))
    assert MARK not in error.message and MARK not in str(error)


def test_tls_verify_false_accepts_a_self_signed_certificate_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        DATA_DIR / "tls" / "self-signed.crt", DATA_DIR / "tls" / "self-signed.key"
    )
    server = GuardedServer("127.0.0.1", context)
    try:
        server.serve_bytes("/feed.xml", RSS20, "application/rss+xml")
        url = server.url("/feed.xml")
        assert url.startswith("https://")
        assert "certificate" in fetch_error(feed(url)).message.lower()
        insecure = feed(url, tls_verify=False)

        async def twice() -> list[Fetched | NotModified]:
            async with Fetcher(
                user_agent=DEFAULT_USER_AGENT, timeout=10, max_body_size=1 << 20, max_concurrency=2
            ) as fetcher:
                return [
                    await fetcher.fetch("private", url, None, insecure.request_options)
                    for _ in range(2)
                ]

        with caplog.at_level(logging.WARNING, "aggregator.fetch"):
            results = asyncio.run(twice())
        assert all(isinstance(r, Fetched) for r in results)
        warnings = [r for r in caplog.records if "tls_verify = false" in r.getMessage()]
        assert len(warnings) == 1 and "private" in warnings[0].getMessage()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"password": MARK}, "feeds[0]: password needs username"),
        (
            {"username": "u", "password": "env:NOT_SET_ANYWHERE_X"},
            "feeds[0].password: environment variable NOT_SET_ANYWHERE_X is not set",
        ),
        (
            {"cookie": "file:/nonexistent/secret"},
            "feeds[0].cookie: cannot read secret file /nonexistent/secret: No such file",
        ),
        ({"headers": {"X-Token": "env:NOT_SET_ANYWHERE_Y"}}, "feeds[0].headers.X-Token: environ"),
        ({"headers": {"Host": MARK}}, "feeds[0].headers: Host is set by the fetcher itself"),
        ({"headers": {"X-A": MARK + "\n"}}, "feeds[0].headers: the value of X-A contains a line"),
        ({"proxy": f"socks5://u:{MARK}@h:1080"}, "feeds[0].proxy: SOCKS proxies are not"),
        ({"proxy": f"ftp://u:{MARK}@h"}, "feeds[0].proxy: must be an http:// or https://"),
        (
            {"username": "u", "headers": {"authorization": MARK}},
            "username/password and headers.Authorization both set",
        ),
    ],
)
def test_bad_credentials_are_config_errors_that_name_the_key_and_not_the_value(
    keys: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"feeds": [{"name": "f", "url": "https://h.example/", **keys}]})
    text = "\n".join(info.value.problems)
    assert problem in text
    assert MARK not in str(info.value)
