"""Article pages on pollers sharing a PostgreSQL store: a host's limits hold for its pages
and its feed polls together, across pollers (page_hosts.py, store/postgres_pages.py), on the
real test server and a loopback news site that counts requests in flight."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from articlesite import STORIES, ArticleSite, article_site  # noqa: F401 (the fixture)
from test_cluster import rows, until

from aggregator.cluster import ClaimLoop
from aggregator.config.load import load_config
from aggregator.runtime import open_runtime
from aggregator.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

DELAY = 0.3  # the site's host_delay, seconds
SLACK = 0.05  # a loaded machine's jitter between a request's start and its arrival


def test_a_host_taken_for_pages_is_one_pollers_until_handed_back(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        hold, host = timedelta(seconds=30), "http://pages.example"
        start = store.take_for_pages("a", host, timedelta(seconds=1), hold)
        assert start is not None
        assert store.take_for_pages("b", host, timedelta(seconds=1), hold) is None
        assert store.take_for_pages("a", host, timedelta(seconds=1), hold) is not None
        store.let_go("a")  # its claims' release leaves a host taken for pages
        assert store.take_for_pages("b", host, timedelta(seconds=1), hold) is None
        store.end_pages("a", host)
        store.let_go("a")
        taken = store.take_for_pages("b", host, timedelta(seconds=1), hold)
        # The next poller's first request comes a host_delay after the last one's release,
        # and its hold lasts from then.
        assert taken is not None and taken >= start + timedelta(seconds=1)
        row = store.conn.execute(
            "SELECT owner, owner_until, pages_until FROM hosts WHERE origin = %s", [host]
        ).fetchone()
        assert row is not None and row["owner"] == "b"
        assert row["owner_until"] >= taken + hold and row["pages_until"] >= taken + hold
    finally:
        store.close()


def test_a_host_with_another_pollers_polls_under_way_is_not_taken(pg_url: str) -> None:
    """A host without a host_delay is nobody's while its feeds are polled: a live lease of
    another poller on one of its feeds keeps it from being taken for pages."""
    store = PostgresStore(pg_url)
    try:
        host = "http://pages.example"
        store.sync_feeds([("f", f"{host}/feed.xml")])
        store.conn.execute(
            "UPDATE feeds SET origin = %s, lease_owner = 'b', "
            "lease_until = clock_timestamp() + interval '1 minute'",
            [host],
        )
        hold = timedelta(seconds=30)
        assert store.take_for_pages("a", host, timedelta(0), hold) is None
        assert store.take_for_pages("b", host, timedelta(0), hold) is not None
    finally:
        store.close()


def test_pages_wait_while_another_poller_polls_their_host(
    write_config: Callable[..., Path],
    pg_url: str,
    article_site: ArticleSite,  # noqa: F811
) -> None:
    """Poller a polls the site's feeds (its section feed queues three pages, its slow feed
    holds the host's one slot for seconds); poller b's article queue finds the pages due
    meanwhile. The site never sees two requests at once, nor two starts under host_delay."""
    stories = [STORIES[k] for k in ("wire", "de", "ru")]
    article_site.serve_feed("/feeds/section.rss", stories)
    article_site.serve_feed("/feeds/slow.rss", [STORIES["fr"]])
    article_site.serve_slow("/feeds/slow.rss", 4.0)
    body = (
        f'[[feeds]]\nname = "section"\nurl = "{article_site.url("/feeds/section.rss")}"\n'
        "full_content = true\n\n"
        f'[[feeds]]\nname = "slow"\nurl = "{article_site.url("/feeds/slow.rss")}"\n\n'
    )
    cfg = load_config(
        write_config(body, database=pg_url, host_delay=f"{DELAY}s", host_concurrency=1, lease="10s")
    )
    paths = [s.path for s in stories]

    async def run() -> None:
        async with open_runtime(cfg) as one, open_runtime(cfg) as other:
            a, b = ClaimLoop(), ClaimLoop()
            a.start(one, "a")  # a's own article queue is not run: its pages stay due
            await until(lambda: article_site.in_flight == 1 and a.held == 1, "the slow poll")
            await until(
                lambda: rows(pg_url, "SELECT count(*) FROM entry_articles") == [(3,)],
                "the section's pages to be queued",
            )
            b.start(other, "b")
            pages = asyncio.ensure_future(other.articles.run())
            try:
                await until(
                    lambda: all(article_site.article_hits(p) == 1 for p in paths),
                    "every page of the section",
                )
            finally:
                pages.cancel()
                await asyncio.gather(pages, return_exceptions=True)
                await a.stop()
                await b.stop()

    asyncio.run(run())
    assert article_site.max_in_flight == 1
    arrivals = sorted(r.monotonic for r in article_site.requests())
    assert all(later - first >= DELAY - SLACK for first, later in itertools.pairwise(arrivals))
    assert len(article_site.hits_of("/feeds/slow.rss")) == 1
