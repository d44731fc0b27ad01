"""A simulated hour of polling against a farm of loopback hosts with mixed behaviours.

The real poller (poll_source with a real Fetcher, real SQLite, the real decision and host gates)
runs against FaultServers on 127.0.0.1; only the clock is simulated. The loop plays the part of
the scheduler: every TICK of simulated time it polls, concurrently, each feed whose decided next
poll has come, with `now` = the simulated time, and then jumps ahead. Nothing waits for real
time except the HTTP requests themselves. Each server logs requests at the simulated time, so
the request log can be checked against each feed's rules afterwards (`check`).

Used by tests/e2e/test_farm.py (which asserts) and bench/polling_farm.py (which prints the figures).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from faultserver import FaultServer

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.ingest.decide import PollPolicy, backoff
from aggregator.ingest.fetch import Fetcher
from aggregator.ingest.hosts import origin
from aggregator.ingest.poll import PollContext, poll_source
from aggregator.ingest.schedule import first_run
from aggregator.models import FeedState
from aggregator.runtime import make_gates
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
HOUR = timedelta(hours=1)
TICK = timedelta(seconds=5)
INTERVAL = timedelta(minutes=5)
MAX_BACKOFF = timedelta(minutes=30)
HOST_DELAY = timedelta(seconds=10)
HOSTS = 10
FEEDS_PER_HOST = 20
RETRY_SECONDS = 600  # the 429 host's Retry-After, in seconds
RETRY_DATE = T0 + timedelta(minutes=15)  # the 503 host's Retry-After, as an HTTP date

# Behaviours of ordinary hosts, assigned round-robin; hosts 8 and 9 add one 429 / one 503 feed.
KINDS = (
    "etag",  # 200 with validators, then 304s
    "plain",  # 200 without validators, byte-identical each time
    "ttl",  # <ttl>20</ttl>
    "max-age",  # Cache-Control: max-age=900
    "sy",  # sy:updatePeriod hourly, sy:updateFrequency 2 (30 minutes)
    "skip",  # skipHours 9 to 23: nothing more this hour
    "404",
    "500",
    "410",
    "301",  # moved permanently to /moved/<name>
    "302",  # moved temporarily to /temp/<name>
    "loop",  # redirect loop
    "html",  # a 200 challenge page
    "slow",  # the body trickles in
)
CONCURRENT_HOST = 7  # host_delay 0 and host_concurrency 2: the in-flight limit does the work


def rss(title: str, extra: str = "", items: int = 3) -> bytes:
    body = "".join(
        f"<item><title>{title} {i}</title><link>http://example.org/{title}/{i}</link>"
        f"<guid>{title}-{i}</guid><pubDate>Mon, 02 Mar 2026 0{i}:00:00 GMT</pubDate></item>"
        for i in range(items)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0" '
        'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        f"<title>{title}</title><link>http://example.org/{title}</link><description>d</description>"
        f"{extra}{body}</channel></rss>"
    ).encode()


@dataclass
class FarmFeed:
    name: str
    host: int
    kind: str
    path: str


@dataclass
class SimClock:
    now: datetime = T0


@dataclass
class Farm:
    servers: list[FaultServer]
    feeds: list[FarmFeed]
    config: Config
    clock: SimClock
    outcomes: Counter[str] = field(default_factory=Counter)
    states: dict[str, FeedState] = field(default_factory=dict)


def build(db: Path) -> Farm:
    clock = SimClock()
    servers = [FaultServer(clock=lambda: clock.now) for _ in range(HOSTS)]
    feeds: list[FarmFeed] = []
    toml = (
        f'[aggregator]\ndatabase = "{db}"\ninterval = "5m"\nmin_interval = "1m"\n'
        f'max_interval = "1h"\nmax_backoff = "30m"\nhost_delay = "10s"\ntimeout = "5s"\n\n'
    )
    n = 0
    for h, server in enumerate(servers):
        for i in range(FEEDS_PER_HOST):
            kind = KINDS[n % len(KINDS)]
            if h == 8 and i == 0:
                kind = "429"
            if h == 9 and i == 0:
                kind = "503"
            n += 1
            name = f"h{h}-{i:02d}-{kind}"
            path = f"/{name}.xml"
            _serve(server, kind, name, path)
            feeds.append(FarmFeed(name, h, kind, path))
            toml += f'[[feeds]]\nname = "{name}"\nurl = "{server.url(path)}"\n'
            if h == CONCURRENT_HOST:
                toml += 'host_delay = "0s"\nhost_concurrency = 2\n'
            toml += "\n"
    config = parse_config(tomllib.loads(toml))
    return Farm(servers, feeds, config, clock)


def _serve(server: FaultServer, kind: str, name: str, path: str) -> None:
    plain = rss(name)
    if kind == "etag":
        server.serve_bytes(path, plain, "application/rss+xml")
    elif kind == "plain":
        server.serve_bytes(path, plain, "application/rss+xml", etag=False, last_modified=False)
    elif kind == "ttl":
        server.serve_bytes(path, rss(name, "<ttl>20</ttl>"), "application/rss+xml", etag=False)
    elif kind == "max-age":
        headers = {"Cache-Control": "max-age=900"}
        server.serve_bytes(path, plain, "application/rss+xml", etag=False, headers=headers)
    elif kind == "sy":
        extra = (
            "<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>"
        )
        server.serve_bytes(path, rss(name, extra), "application/rss+xml")
    elif kind == "skip":
        hours = "".join(f"<hour>{h}</hour>" for h in range(9, 24))
        server.serve_bytes(path, rss(name, f"<skipHours>{hours}</skipHours>"))
    elif kind in ("404", "500", "410"):
        server.serve_status(path, int(kind))
    elif kind == "429":
        server.serve_status(path, 429, {"Retry-After": str(RETRY_SECONDS)})
    elif kind == "503":
        retry = format_datetime(RETRY_DATE, usegmt=True)
        server.serve_status(path, 503, {"Retry-After": retry})
    elif kind == "301":
        server.serve_redirect(path, f"/moved/{name}.xml", 301)
        server.serve_bytes(f"/moved/{name}.xml", plain, "application/rss+xml")
    elif kind == "302":
        server.serve_redirect(path, f"/temp/{name}.xml", 302)
        server.serve_bytes(f"/temp/{name}.xml", plain, "application/rss+xml")
    elif kind == "loop":
        server.serve_redirect(path, f"/loop/{name}.xml", 301)
        server.serve_redirect(f"/loop/{name}.xml", path, 301)
    elif kind == "html":
        page = b"<!DOCTYPE html><html><body>Checking your browser...</body></html>"
        server.serve_bytes(path, page, "text/html; charset=utf-8")
    elif kind == "slow":
        server.serve_drip(path, plain, chunks=4, pause=0.05)
    else:  # pragma: no cover
        raise ValueError(kind)


def simulate(farm: Farm, db: Path, duration: timedelta = HOUR, seed: int = 1) -> None:
    """Poll the farm for `duration` of simulated time; fills farm.outcomes and farm.states."""
    rng = random.Random(seed)

    async def main() -> None:
        store = StoreThreads(db)
        try:
            rows = [(f.name, f.url) for f in farm.config.feeds.values()]
            await store.write(lambda s: s.sync_feeds(rows))
            async with Fetcher(
                user_agent=DEFAULT_USER_AGENT, timeout=5, max_body_size=1 << 20, max_concurrency=32
            ) as fetcher:
                ctx = PollContext(
                    fetcher,
                    store,
                    None,
                    hosts=make_gates(farm.config, paced=False),
                    rng=random.Random(seed),
                )
                feeds = farm.config.feeds
                due: dict[str, datetime | None] = {
                    n: first_run(None, T0, f.policy.interval, rng) for n, f in feeds.items()
                }
                end = T0 + duration
                while farm.clock.now < end:
                    now = farm.clock.now
                    ready = [n for n, when in due.items() if when is not None and when <= now]
                    results = await asyncio.gather(
                        *(poll_source(ctx, feeds[n], now) for n in ready)
                    )
                    for n, outcome in zip(ready, results, strict=True):
                        due[n] = outcome.next_poll
                        farm.outcomes[outcome.status] += 1
                    pending = [w for w in due.values() if w is not None]
                    if not pending:
                        break
                    # Jump to the tick at or after the next due poll: polls are late, never early.
                    ticks = max(1, -(-(min(pending) - now) // TICK))
                    farm.clock.now = now + TICK * ticks
        finally:
            store.close()

    asyncio.run(main())
    store = Store(db)
    try:
        farm.states = {s.name: s for s in store.feed_states()}
    finally:
        store.close()


@dataclass
class Report:
    requests: int
    polls: Counter[str]
    violations: list[str]
    max_in_flight: dict[int, int]
    min_gap_ratio: float  # smallest (observed gap / allowed gap) over every feed's requests
    statuses: Counter[str]
    # kind → [feeds, requests, smallest gap seen, the least gap its rules allow]
    by_kind: dict[str, list[Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"simulated {HOUR} of {HOSTS * FEEDS_PER_HOST} feeds on {HOSTS} hosts: "
            f"{self.requests} requests",
            f"poll outcomes: {dict(sorted(self.polls.items()))}",
            f"feed statuses at the end: {dict(sorted(self.statuses.items()))}",
            "max requests in flight per host (server side): "
            + ", ".join(f"h{h}={n}" for h, n in sorted(self.max_in_flight.items())),
            f"smallest observed/allowed gap between two polls of one feed: "
            f"{self.min_gap_ratio:.2f}",
            "per behaviour: feeds, polls, smallest gap seen >= least gap allowed",
            *(
                f"  {kind:8} {n:3} feeds {polls:4} polls  {_short(seen):>7} >= {_short(least):>7}"
                for kind, (n, polls, seen, least) in sorted(self.by_kind.items())
            ),
            f"rule violations: {len(self.violations)}",
            *(f"  {v}" for v in self.violations[:20]),
        ]


def _short(d: timedelta | None) -> str:
    return "-" if d is None else str(d)


def allowed_gaps(feed: FarmFeed, policy: PollPolicy, count: int) -> list[timedelta]:
    """The least time the rules allow between request k and k+1 of a feed."""
    if feed.kind in ("404", "500", "loop", "html"):
        return [backoff(policy, k + 1) for k in range(count)]
    per_kind = {
        "ttl": timedelta(minutes=20),
        "max-age": timedelta(minutes=15),
        "sy": timedelta(minutes=30),
        "429": timedelta(seconds=RETRY_SECONDS),
    }
    return [per_kind.get(feed.kind, policy.interval)] * count


def check(farm: Farm) -> Report:
    """Read the servers' request logs back against each feed's rules."""
    violations: list[str] = []
    ratio = float("inf")
    by_kind: dict[str, list[Any]] = {}
    requests = sum(len(s.hits) for s in farm.servers)
    for feed in farm.feeds:
        server = farm.servers[feed.host]
        policy = farm.config.feeds[feed.name].policy
        # One poll per simulated instant: a redirect's hops arrive together and count once.
        times = sorted({h.at for h in server.hits_of(feed.path) if h.at is not None})
        if feed.kind == "301":
            paths = (feed.path, f"/moved/{feed.name}.xml")
            times = sorted({h.at for p in paths for h in server.hits_of(p) if h.at is not None})
        if feed.kind in ("410", "skip") and len(times) != 1:
            violations.append(f"{feed.name}: {len(times)} requests, expected exactly 1")
        if feed.kind == "301" and len(server.hits_of(feed.path)) != 1:
            violations.append(f"{feed.name}: old URL requested after its permanent redirect")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        allowed = allowed_gaps(feed, policy, len(gaps))
        if feed.kind == "503" and gaps:
            allowed[0] = RETRY_DATE - times[0]
        row = by_kind.setdefault(feed.kind, [0, 0, None, None])
        row[0] += 1
        row[1] += len(times)
        for gap, least in zip(gaps, allowed, strict=True):
            if row[2] is None or gap < row[2]:
                row[2], row[3] = gap, least
        for k, (gap, least) in enumerate(zip(gaps, allowed, strict=True)):
            ratio = min(ratio, gap / least)
            if gap < least:
                violations.append(f"{feed.name}: gap {k + 1} is {gap}, rules allow {least}")
    for h, server in enumerate(farm.servers):
        limit = list(farm.config.feeds.values())[h * FEEDS_PER_HOST].policy
        if server.max_in_flight > limit.host_concurrency:
            violations.append(
                f"host h{h}: {server.max_in_flight} requests in flight, limit "
                f"{limit.host_concurrency}"
            )
        by_instant: dict[datetime, set[str]] = {}
        for hit in server.hits:
            if hit.at is not None:
                by_instant.setdefault(hit.at, set()).add(hit.path.rsplit("/", 1)[-1])
        starts = sorted(by_instant)
        for a, b in itertools.pairwise(starts):
            if b - a < limit.host_delay:
                violations.append(
                    f"host h{h}: requests {b - a} apart, host_delay {limit.host_delay}"
                )
        if limit.host_delay > timedelta(0):
            for at, names in by_instant.items():
                if len(names) > 1:
                    violations.append(f"host h{h}: {len(names)} feeds polled at {at}")
        blocked = _blocked_windows(server)
        for start, until in blocked:
            during = [h for h in server.hits if h.at is not None and start < h.at < until]
            if during:
                violations.append(f"host h{h}: {len(during)} requests during its Retry-After")
    statuses = Counter(s.status for s in farm.states.values())
    return Report(
        requests=requests,
        polls=farm.outcomes,
        violations=violations,
        max_in_flight={h: s.max_in_flight for h, s in enumerate(farm.servers)},
        min_gap_ratio=ratio,
        statuses=statuses,
        by_kind=by_kind,
    )


def _blocked_windows(server: FaultServer) -> list[tuple[datetime, datetime]]:
    windows = []
    for hit in server.hits:
        if hit.at is None:
            continue
        if hit.path.endswith("-429.xml"):
            windows.append((hit.at, hit.at + timedelta(seconds=RETRY_SECONDS)))
        if hit.path.endswith("-503.xml") and hit.at < RETRY_DATE:
            windows.append((hit.at, RETRY_DATE))
    return windows


def expected_status(feed: FarmFeed) -> tuple[str, str]:
    """(status, a piece of the error or reason) that the end state must show for a feed."""
    return {
        "404": ("error", "HTTP 404"),
        "500": ("error", "HTTP 500"),
        "429": ("error", "HTTP 429"),
        "503": ("error", "HTTP 503"),
        "loop": ("error", "redirect loop"),
        "html": ("error", "HTML page"),
        "410": ("gone", "HTTP 410"),
        "301": ("redirected", "/moved/"),
        "ttl": ("", "ttl 20m"),
        "max-age": ("", "Cache-Control max-age 15m"),
        "sy": ("", "sy:updatePeriod 30m"),
        "skip": ("", "skipHours"),
    }.get(feed.kind, ("", ""))


def close(farm: Farm) -> None:
    for server in farm.servers:
        server.close()


__all__ = [
    "T0",
    "Farm",
    "FarmFeed",
    "Report",
    "build",
    "check",
    "close",
    "expected_status",
    "origin",
    "simulate",
]
