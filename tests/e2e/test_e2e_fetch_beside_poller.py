"""End to end: `aggregator fetch` run beside a real poller process on one PostgreSQL store, against
a farm of loopback hosts whose request logs are checked: the two processes together keep each
host's concurrency and delay on arrival, and the fetch leaves to the poller what it holds."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from feedserver import FeedServer
from test_e2e import Daemon, start_daemon, wait_for
from test_e2e_claims import (
    DEADLINE,
    assert_hosts_limits,
    farm,
    log_of,
    poller,
    rows,
    run_fetch,
    serve,
)

__all__ = ["farm", "start_daemon"]  # the fixtures, shared with test_e2e_claims
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def all_done(pg_url: str, feeds: dict[str, str]) -> bool:
    """Every feed polled and no lease left. (The fetch polls, due or not, what the poller
    does not hold when it starts, so a feed may have been polled twice, one after the
    other: its last status is then "not modified".)"""
    done = rows(
        pg_url,
        "SELECT name FROM feeds WHERE last_status IN ('ok', 'not_modified') "
        "AND lease_owner IS NULL",
    )
    return {name for (name,) in done} >= set(feeds)


def test_fetch_beside_a_poller_keeps_every_hosts_limits(
    farm: list[FeedServer],
    write_config: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    pg_url: str,
) -> None:
    # A slow poller (one poll at a time, each answered a second late) holds a feed, and so
    # its host, all the while the fetch runs.
    feeds = serve(farm, per_host=6, delay=1.0)
    limits = {"host_concurrency": 2, "host_delay": "1s"}
    a = poller(write_config, start_daemon, pg_url, feeds, "a", max_concurrency=1, **limits)
    # The fetch starts while the poller holds feeds (and so their hosts).
    wait_for(
        lambda: bool(rows(pg_url, "SELECT name FROM feeds WHERE lease_owner IS NOT NULL")),
        "the poller to claim feeds",
        DEADLINE,
    )
    body = "".join(f'[[feeds]]\nname = "{n}"\nurl = "{u}"\n\n' for n, u in feeds.items())
    config = write_config(
        body,
        name="fetch.toml",
        database=pg_url,
        timeout="30s",
        user_agent="fetch",
        max_concurrency=2,
        **limits,
    )
    done = run_fetch(config)
    assert done.returncode == 0, done.stderr
    assert "left to the pollers that hold them" in done.stdout, done.stdout
    wait_for(lambda: all_done(pg_url, feeds), "every feed to be polled", DEADLINE)
    log = log_of(farm)
    agents = Counter(r.headers["User-Agent"] for reqs in log.values() for r in reqs)
    assert set(agents) == {"poller-a", "fetch"}, agents
    # Whoever sent them, a host saw its requests host_delay apart, at most two at once.
    assert_hosts_limits(log, most=2, delay=1.0)
    # No feed was polled by both at once: every feed's requests came one after the other.
    for requests in log.values():
        by_feed = sorted(requests, key=lambda r: (r.path, r.monotonic))
        for one, two in itertools.pairwise(by_feed):
            assert one.path != two.path or one.finished <= two.monotonic, one.path
    entries = rows(pg_url, "SELECT feed, count(*) FROM entries GROUP BY feed")
    assert dict(entries) == dict.fromkeys(feeds, 3)
    assert a.stop() == 0
