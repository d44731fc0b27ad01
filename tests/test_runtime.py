"""runtime.py, the wiring the daemon and `aggregator fetch` share: real feeds on loopback, a
real SQLite file, real parse worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from feedserver import FeedServer

from aggregator.cli import main
from aggregator.config.load import load_config
from aggregator.ingest.hosts import origin
from aggregator.ingest.poll import poll_source
from aggregator.metrics import Metrics, TimedFetcher
from aggregator.runtime import open_runtime
from aggregator.store.sqlite import SqliteStore as Store


def _feeds(feed_server: FeedServer) -> str:
    feed_server.serve_file("/one.xml", "rss20.xml")
    feed_server.serve_file("/two.xml", "atom10.xml")
    return f"""
[[feeds]]
name = "one"
url = "{feed_server.url("/one.xml")}"

[[feeds]]
name = "two"
url = "{feed_server.url("/two.xml")}"

[[outputs]]
name = "all"
title = "All"
feeds = ["one", "two"]
"""


def test_a_runtime_polls_through_its_context_and_commits_at_close(
    feed_server: FeedServer, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # One loopback host stands in for two: no turns between its feeds.
    config = load_config(write_config(_feeds(feed_server), parse_workers=1, host_delay="0s"))
    written: list[int] = []
    metrics = Metrics()

    async def scenario() -> list[str]:
        async with open_runtime(config, metrics=metrics, on_write=written.append) as rt:
            # Opened: the configured feeds are rows of the store, none polled yet.
            assert sorted(rt.states) == ["one", "two"]
            assert all(s.last_poll is None for s in rt.states.values())
            assert isinstance(rt.fetcher, TimedFetcher)
            now = datetime.now(UTC)
            outcomes = await asyncio.gather(
                *(poll_source(rt.ctx, f, now) for f in config.feeds.values())
            )
            return [o.status for o in outcomes]

    assert asyncio.run(scenario()) == ["ok", "ok"]
    assert written and written == sorted(written)  # the generation after each commit
    # Every fetch was timed by the runtime's fetcher.
    count = metrics.registry.get_sample_value("aggregator_fetch_seconds_count")
    assert count == 2
    # Closed: every write reached the file; another connection reads them.
    store = Store(config.aggregator.database.path)
    try:
        assert store.count_entries("one") > 0 and store.count_entries("two") > 0
        assert {s.name: s.status for s in store.feed_states()} == {"one": "ok", "two": "ok"}
    finally:
        store.close()


def test_a_failure_inside_the_runtime_still_closes_it_in_order(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    config = load_config(write_config(_feeds(feed_server), parse_workers=1))

    async def scenario() -> None:
        async with open_runtime(config) as rt:
            f = config.feeds["one"]
            await poll_source(rt.ctx, f, datetime.now(UTC))
            raise RuntimeError("the caller's own failure")

    with pytest.raises(RuntimeError, match="the caller's own failure"):
        asyncio.run(scenario())
    # The poll before the failure is committed; the file is free for the next opener.
    store = Store(config.aggregator.database.path)
    try:
        assert store.count_entries("one") > 0
    finally:
        store.close()


def test_follow_swaps_the_context_and_leaves_polls_under_way_theirs(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    path = write_config(_feeds(feed_server), parse_workers=1)
    config = load_config(path)
    text = path.read_text().replace("[[feeds]]", '[[feeds]]\nhost_delay = "7s"', 1)
    text = text.replace("[aggregator]", '[aggregator]\nparse_timeout = "9s"')
    path.write_text(text)
    reloaded = load_config(path)

    async def scenario() -> None:
        async with open_runtime(config) as rt:
            before = rt.ctx
            assert rt.feed("one") is config.feeds["one"]
            rt.follow(reloaded, rt.states, datetime.now(UTC))
            assert rt.ctx is not before and rt.ctx.store is before.store
            assert rt.config is reloaded and rt.feed("one") is reloaded.feeds["one"]
            host = origin(reloaded.feeds["one"].url)
            assert rt.ctx.hosts.limit(host).delay == timedelta(seconds=7)
            assert before.hosts.limit(host).delay != timedelta(seconds=7)
            assert rt.pool.deadline == 9.0
            # The article queue reads the gates of the runtime's current context.
            assert rt.articles.hosts() is rt.ctx.hosts

    asyncio.run(scenario())


def test_aggregator_fetch_polls_through_the_runtime(
    feed_server: FeedServer, write_config: Callable[..., Path]
) -> None:
    path = write_config(_feeds(feed_server), parse_workers=1, host_delay="0s")
    result = CliRunner().invoke(main, ["--config", str(path), "fetch"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("polled 2 of 2 feeds in ")
    assert ": 2 ok, 0 not modified, 0 unchanged, 0 errors;" in result.stdout
    # A second run sends the validators the first stored: both feeds answer 304.
    again = CliRunner().invoke(main, ["fetch", "--config", str(path)])
    assert again.exit_code == 0, again.output
    assert ": 0 ok, 2 not modified," in again.stdout
    assert [r.status for r in feed_server.requests("/one.xml")] == [200, 304]
