"""Benchmark: the aggregator's real poller against a loopback farm of RSS feeds. Prints figures.

The farm (aiohttp.web on 127.0.0.1) runs in its own process so that serving does not compete
with the poller's event loop for the GIL. First a reference: feedparser alone on one core, on
the farm's bodies. The poller is the daemon's own machinery: StoreThreads on a temporary
database, make_parse_pool, make_fetcher (of aggregator.runtime) and poll_source for every feed
at once. Timed rounds:
cold (every feed new), warm (every feed answers 304), unchanged (200 with the same bytes and no
validators), relearn (validators back) and churn (10% of the feeds gained entries; K times).
Then outputs.py renders a 1,000-entry output from that database and serves it from the real
daemon beside a bare aiohttp handler under a load generator. It asserts nothing: a slow
machine gives small numbers, not a failure.

    .venv/bin/python bench/farm.py [--feeds 2000] [--entries 50] [--concurrency 32]
                                   [--workers 0] [--seed 1] [--churn-rounds 1] [--skip-serve]
    .venv/bin/python bench/farm.py --database postgresql://… --pollers 1,2,4 [--hosts 100]

With --database, the rounds of cluster.py instead: poller processes sharing one PostgreSQL
store beside the single SQLite process, on a farm of many loopback hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
import feedparser
from aiohttp import web
from outputs import render_figures, rss_now_mb, rss_peak_mb, serve_figures

from aggregator.config.load import parse_config
from aggregator.ingest.decide import PollPolicy
from aggregator.ingest.hosts import HostGates, HostLimit
from aggregator.ingest.parse import parse_feed
from aggregator.ingest.poll import Feed, PollContext, poll_source
from aggregator.models import PollOutcome
from aggregator.runtime import make_fetcher, make_parse_pool
from aggregator.store.threads import StoreThreads

CHURN_FRACTION = 0.10
CHURN_ENTRIES = 5
REFERENCE_SAMPLE = 100
CONTENT_TARGET = 4096  # bytes of HTML per entry, roughly
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
MB = 1024 * 1024

# --- the farm: deterministic RSS 2.0 documents ------------------------------------------------

_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three feed parser reader server "
    "cache latency protocol release kernel compiler database index query schema migration "
    "network packet router socket thread process memory garbage collector benchmark profile "
    "library framework module function variable constant pointer buffer stream pipeline"
)
WORDS = _VOCABULARY.split()
ENTITIES = ("&amp;", "&mdash;", "&#8217;", "&quot;", "caf&eacute;", "&hellip;", "&lt;tag&gt;")


def _sentence_pool(seed: int, size: int = 3000) -> list[str]:
    """Sentences reused by every entry: generating 200 MB word by word would dominate startup."""
    rng = random.Random(f"{seed}:sentences")
    pool = []
    for _ in range(size):
        words = rng.choices(WORDS, k=rng.randint(8, 22))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(ENTITIES))
        if rng.random() < 0.15:
            i = rng.randrange(len(words))
            words[i] = f"<em>{words[i]}</em>" if rng.random() < 0.5 else f"<code>{words[i]}</code>"
        text = " ".join(words)
        pool.append(text[0].upper() + text[1:] + rng.choice(".!?."))
    return pool


@dataclass(frozen=True, slots=True)
class FarmDoc:
    body: bytes
    etag: str
    last_modified: str
    modified: datetime


class Farm:
    """N feeds; feed i has `totals[i]` entries ever published and shows the newest `shown`."""

    def __init__(self, feeds: int, entries: int, seed: int) -> None:
        self.seed = seed
        self.shown = entries
        self.totals = [entries] * feeds
        self.sentences = _sentence_pool(seed)
        self.docs = [self._render(i) for i in range(feeds)]
        self.counts: Counter[str] = Counter()
        # Off for the unchanged round: no ETag or Last-Modified sent, conditional headers ignored.
        self.validators = True

    def _pub(self, feed: int, entry: int) -> datetime:
        return EPOCH + timedelta(minutes=feed, hours=entry)

    def _item(self, feed: int, entry: int) -> str:
        rng = random.Random(f"{self.seed}:{feed}:{entry}")
        host = f"blog-{feed:04d}.example"
        link = f"https://{host}/{2024 + entry // 500}/post-{entry}-{rng.randrange(10**6)}"
        title = " ".join(rng.choices(WORDS, k=rng.randint(4, 10))).capitalize()
        parts: list[str] = []
        size = 0
        paragraph = 0
        while size < CONTENT_TARGET:
            text = " ".join(rng.choices(self.sentences, k=rng.randint(2, 4)))
            paragraph += 1
            if paragraph % 2 == 0:
                anchor = " ".join(rng.choices(WORDS, k=3))
                href = f"https://site-{rng.randrange(500)}.example/a/{rng.randrange(10**5)}"
                text += f' See <a href="{href}?utm_source=rss&amp;ref={feed}">{anchor}</a>.'
            if paragraph == 2:
                # Cut at a word: a cut through "&#8217;" would leave "&#8", a control character.
                caption = " ".join(text.split()[:8])
                chunk = (
                    f'<figure><img src="https://cdn.{host}/img/{entry}.jpg" alt="{title}" '
                    f'width="640" height="360"/><figcaption>{caption}</figcaption></figure>'
                )
            elif paragraph == 4:
                items = "".join(f"<li>{s}</li>" for s in rng.choices(self.sentences, k=3))
                chunk = f"<h2>{title}</h2><ul>{items}</ul>"
            elif paragraph == 6:
                chunk = f"<blockquote><p>{text}</p></blockquote>"
            else:
                chunk = f"<p>{text}</p>"
            parts.append(chunk)
            size += len(chunk)
        html = "\n".join(parts)
        summary = escape(self.sentences[rng.randrange(len(self.sentences))])
        categories = "".join(
            f"<category>{w}</category>" for w in sorted(set(rng.choices(WORDS[-40:], k=3)))
        )
        return (
            "<item>"
            f"<title>{escape(title)}</title>"
            f"<link>{link}</link>"
            f'<guid isPermaLink="false">urn:farm:{self.seed}:{feed}:{entry}</guid>'
            f"<pubDate>{format_datetime(self._pub(feed, entry), usegmt=True)}</pubDate>"
            f"<dc:creator>Author {rng.randrange(20)}</dc:creator>"
            f"{categories}"
            f"<description>{summary}</description>"
            f"<content:encoded><![CDATA[{html}]]></content:encoded>"
            "</item>\n"
        )

    def _render(self, feed: int) -> FarmDoc:
        total = self.totals[feed]
        newest = self._pub(feed, total - 1)
        items = "".join(self._item(feed, j) for j in range(total - 1, total - 1 - self.shown, -1))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>'
            f"<title>Farm blog {feed}</title>"
            f"<link>https://blog-{feed:04d}.example/</link>"
            f"<description>Feed {feed} of the benchmark farm</description>"
            f"<lastBuildDate>{format_datetime(newest, usegmt=True)}</lastBuildDate>"
            "<ttl>30</ttl>\n"
            f"{items}</channel></rss>\n"
        ).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return FarmDoc(body, etag, format_datetime(newest, usegmt=True), newest)

    def churn(self, fraction: float, added: int) -> list[int]:
        """Publish `added` entries on a seeded `fraction` of the feeds; returns their indexes."""
        rng = random.Random(f"{self.seed}:churn:{sum(self.totals)}")
        chosen = sorted(rng.sample(range(len(self.docs)), max(1, int(len(self.docs) * fraction))))
        for i in chosen:
            self.totals[i] += added
            self.docs[i] = self._render(i)
        return chosen

    def _not_modified(self, request: web.Request, doc: FarmDoc) -> bool:
        # RFC 9110: If-None-Match wins over If-Modified-Since when both are sent.
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            return "*" in tags or doc.etag in tags
        ims = request.headers.get("If-Modified-Since")
        if ims is not None:
            try:
                return doc.modified <= parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                return False
        return False

    async def handle(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if not 0 <= n < len(self.docs):
            raise web.HTTPNotFound()
        doc = self.docs[n]
        headers = {}
        if self.validators:
            headers = {"ETag": doc.etag, "Last-Modified": doc.last_modified}
        if self.validators and self._not_modified(request, doc):
            self.counts["304"] += 1
            return web.Response(status=304, headers=headers)
        self.counts["200"] += 1
        self.counts["bytes"] += len(doc.body)
        headers["Content-Type"] = "application/rss+xml; charset=utf-8"
        return web.Response(body=doc.body, headers=headers)


async def _serve(conn: Connection, feeds: int, entries: int, seed: int) -> None:
    started = time.perf_counter()
    farm = Farm(feeds, entries, seed)
    built = time.perf_counter() - started
    app = web.Application()
    app.router.add_get(r"/feed/{n:\d+}.xml", farm.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    conn.send(("ready", port, built, sum(len(d.body) for d in farm.docs)))
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    try:
        while True:
            try:
                # The pipe is read in a thread so the loop keeps serving while we wait.
                msg = await loop.run_in_executor(None, conn.recv)
            except EOFError:
                break
            if msg[0] == "churn":
                conn.send(farm.churn(msg[1], msg[2]))
            elif msg[0] == "validators":
                farm.validators = msg[1]
                conn.send(farm.validators)
            elif msg[0] == "stats":
                now = time.process_time()
                conn.send((dict(farm.counts), now - cpu))
                farm.counts.clear()
                cpu = now
            else:
                break
    finally:
        await runner.cleanup()


def _farm_main(conn: Connection, feeds: int, entries: int, seed: int) -> None:
    asyncio.run(_serve(conn, feeds, entries, seed))


# --- the poller: the daemon's own machinery ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    name: str
    feeds: int
    seconds: float
    cpu: float
    pool_cpu: float
    stored: int
    statuses: Counter[str]
    latencies_ms: list[int]
    crashes: list[BaseException]
    rss_mb: float  # the poller process, after the round
    peak_mb: float  # the poller process, peak so far
    worker_peak_mb: float  # the largest parse worker, peak so far
    threads: dict[str, float]  # CPU seconds of the poller's threads during the round, by role


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, by role (Linux; else empty)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        role = _role(thread.name)
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _role(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("store-writer"):
        return "store writer"
    if name.startswith("store-reader"):
        return "store readers"
    return "other threads"


async def poll_round(
    ctx: PollContext, workers: int, name: str, feeds: Sequence[tuple[str, str]]
) -> Round:
    """Poll every feed at once, as the daemon does when all are due; the fetcher's semaphore
    bounds what is in flight."""
    assert ctx.parse_pool is not None
    before = await _probe_pool(ctx.parse_pool, workers)
    now = datetime.now(UTC)
    # A day ahead: the daemon started later on this database must not poll while it is measured.
    policy = PollPolicy(timedelta(days=1), jitter=False)
    cpu = time.process_time()
    threads = _thread_cpu()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(poll_source(ctx, Feed(n, u, policy), now) for n, u in feeds), return_exceptions=True
    )
    seconds = time.perf_counter() - started
    threads = {k: v - threads.get(k, 0.0) for k, v in _thread_cpu().items()}
    outcomes = [r for r in results if isinstance(r, PollOutcome)]
    after = await _probe_pool(ctx.parse_pool, workers)
    return Round(
        name=name,
        feeds=len(feeds),
        seconds=seconds,
        cpu=time.process_time() - cpu,
        pool_cpu=_pool_cpu(before, after),
        stored=sum(o.new + o.updated for o in outcomes),
        statuses=Counter(o.status for o in outcomes),
        latencies_ms=[o.elapsed_ms for o in outcomes],
        crashes=[r for r in results if isinstance(r, BaseException)],
        rss_mb=rss_now_mb(),
        threads=threads,
        peak_mb=rss_peak_mb(),
        worker_peak_mb=max((u.max_rss_kb for u in after.values()), default=0) / 1024,
    )


async def fetch_alone(ctx: PollContext, feeds: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """The round's requests again, through the daemon's Fetcher alone with each feed's stored
    validators: what a round would reach if a poll cost nothing but its fetch. Returns feeds/s
    and this process's CPU seconds per request."""
    states = await ctx.store.read(lambda s: s.feed_states())
    validators = {s.name: s.validators for s in states}

    async def one(name: str, url: str) -> None:
        # The body is dropped at once: held until the end, 2,000 of them are 460 MB.
        await ctx.fetcher.fetch(name, url, validators.get(name))

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(one(n, u) for n, u in feeds))
    seconds = time.perf_counter() - started
    return len(feeds) / seconds, (time.process_time() - cpu) / len(feeds)


@dataclass(frozen=True, slots=True)
class WorkerUsage:
    max_rss_kb: int
    cpu: float  # user + system seconds since the worker started


def _worker_probe() -> tuple[int, WorkerUsage]:
    time.sleep(0.05)  # long enough that every idle worker takes one
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return os.getpid(), WorkerUsage(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


async def _probe_pool(pool: Executor, workers: int) -> dict[int, WorkerUsage]:
    """Each parse worker's own getrusage: the pool's workers are the forkserver's children,
    so the benchmark's RUSAGE_CHILDREN never sees them."""
    loop = asyncio.get_running_loop()
    probes = await asyncio.gather(
        *(loop.run_in_executor(pool, _worker_probe) for _ in range(workers * 4))
    )
    return dict(probes)


def _pool_cpu(before: dict[int, WorkerUsage], after: dict[int, WorkerUsage]) -> float:
    return sum(u.cpu - (before[pid].cpu if pid in before else 0.0) for pid, u in after.items())


TINY = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    b"<item><title>x</title><guid>x</guid></item></channel></rss>"
)


async def _warm_pool(pool: Executor, workers: int) -> None:
    """Start every worker (and import feedparser there) before the clock starts."""
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        *(
            loop.run_in_executor(pool, parse_feed, "warmup", TINY, {}, "http://127.0.0.1/")
            for _ in range(workers * 4)
        )
    )


# --- the reference: feedparser alone, one core --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    feeds: int
    entries: int
    bare: float  # seconds in feedparser.parse
    full: float  # seconds in the aggregator's parse_feed
    peak_mb: float

    @property
    def rate(self) -> float:
        return self.entries / self.bare


async def _fetch_sample(port: int, ids: Sequence[int]) -> list[bytes]:
    async with aiohttp.ClientSession() as session:
        bodies = []
        for i in ids:
            async with session.get(f"http://127.0.0.1:{port}/feed/{i}.xml") as resp:
                bodies.append(await resp.read())
        return bodies


def _reference_main(conn: Connection, port: int, ids: Sequence[int]) -> None:
    """feedparser.parse alone, then the aggregator's parse_feed, on the farm's own bodies (as
    the cold round gets them), in a process of its own so the poller's peak RSS stays its own."""
    bodies = asyncio.run(_fetch_sample(port, ids))
    headers = {"content-type": "application/rss+xml; charset=utf-8"}
    count = 0
    started = time.perf_counter()
    for body in bodies:
        count += len(feedparser.parse(body, response_headers=dict(headers)).entries)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    for i, body in zip(ids, bodies, strict=True):
        parse_feed(f"feed-{i}", body, headers, f"http://127.0.0.1:{port}/feed/{i}.xml")
    full = time.perf_counter() - started
    conn.send(Reference(len(ids), count, bare, full, rss_peak_mb()))


def reference(port: int, feeds: int) -> Reference:
    ids = list(range(0, feeds, max(1, feeds // REFERENCE_SAMPLE)))[:REFERENCE_SAMPLE]
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_reference_main, args=(theirs, port, ids), name="reference")
    proc.start()
    theirs.close()
    try:
        result: Reference = ours.recv()
    finally:
        proc.join()
    return result


# --- report -----------------------------------------------------------------------------------


def _rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 and n else "-"


ROUND_HEADER = (
    f"{'round':<10} {'feeds':>6} {'seconds':>8} {'feeds/s':>8} {'entries':>8} {'entries/s':>9} "
    f"{'x ref':>6} {'cpu s':>7} {'pool s':>7} {'p50 ms':>6} {'p95 ms':>6}  statuses"
)


def _print_round(r: Round, farm_stats: tuple[dict[str, int], float], ref: Reference) -> None:
    statuses = " ".join(f"{k}={v}" for k, v in sorted(r.statuses.items()))
    if r.crashes:
        statuses += f" CRASHED={len(r.crashes)}"
    lat = sorted(r.latencies_ms) or [0]
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
    x_ref = f"{r.stored / r.seconds / ref.rate:.2f}" if r.stored and r.seconds else "-"
    print(
        f"{r.name:<10} {r.feeds:>6} {r.seconds:>8.2f} {_rate(r.feeds, r.seconds):>8} "
        f"{r.stored:>8} {_rate(r.stored, r.seconds):>9} {x_ref:>6} {r.cpu:>7.1f} "
        f"{r.pool_cpu:>7.1f} {p50:>6.0f} {p95:>6.0f}  {statuses}"
    )
    counts, farm_cpu = farm_stats
    print(
        f"{'':<10} farm: 200={counts.get('200', 0)} 304={counts.get('304', 0)} "
        f"sent={counts.get('bytes', 0) / MB:.1f} MB, farm cpu {farm_cpu:.1f}s; "
        f"poller RSS {r.rss_mb:.0f} MB now, {r.peak_mb:.0f} MB peak; "
        f"largest worker {r.worker_peak_mb:.0f} MB peak"
    )
    split = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(r.threads.items()) if v >= 0.05)
    print(f"{'':<10} poller CPU by thread: {split or '-'}")
    for crash in r.crashes[:1]:
        print("  first crash:", file=sys.stderr)
        traceback.print_exception(crash, file=sys.stderr)


def _ask(conn: Connection, *msg: Any) -> Any:
    conn.send(msg)
    return conn.recv()


def _stats(conn: Connection) -> tuple[dict[str, int], float]:
    result: tuple[dict[str, int], float] = _ask(conn, "stats")
    return result


@dataclass(frozen=True, slots=True)
class Polled:
    rounds: dict[str, Round]
    churns: list[Round]
    worker_peaks_mb: list[float]


async def bench(
    args: argparse.Namespace,
    conn: Connection,
    database: Path,
    feeds: Sequence[tuple[str, str]],
    ref: Reference,
) -> Polled:
    """The poll rounds on one database: cold, warm, unchanged, relearn, churn × K."""
    workers = args.workers or os.cpu_count() or 1
    config = parse_config(
        {"aggregator": {"database": str(database), "max_concurrency": args.concurrency}}
    )
    store = StoreThreads(database)
    pool = make_parse_pool(args.workers)
    rounds: dict[str, Round] = {}
    churns: list[Round] = []
    try:
        started = time.perf_counter()
        await _warm_pool(pool, workers)
        print(f"parse pool: {workers} workers started in {time.perf_counter() - started:.1f}s")
        await store.write(lambda s: s.sync_feeds(feeds))
        async with make_fetcher(config) as fetcher:
            # The farm is one origin standing in for thousands of feeds' hosts: the per-host
            # limits (one request at a time, a second apart, by default) would make this a
            # benchmark of politeness, which bench/polling_farm.py measures. Here only
            # max_concurrency bounds the requests in flight, as with feeds on many hosts.
            gates = HostGates(default=HostLimit(concurrency=args.concurrency))
            ctx = PollContext(
                fetcher, store, pool, hosts=gates, work=asyncio.Semaphore(args.concurrency)
            )
            _stats(conn)  # reset the farm's counters
            print()
            print(ROUND_HEADER)

            async def timed(name: str) -> Round:
                r = await poll_round(ctx, workers, name, feeds)
                _print_round(r, _stats(conn), ref)
                return r

            async def alone() -> None:
                rate, cpu = await fetch_alone(ctx, feeds)
                _stats(conn)  # these requests are not the next round's
                print(
                    f"{'':<10} the same requests through the Fetcher alone: {rate:,.0f} feeds/s, "
                    f"{cpu * 1e6:.0f} us of CPU a request"
                )

            rounds["cold"] = await timed("cold")
            rounds["warm"] = await timed("warm")
            await alone()
            _ask(conn, "validators", False)
            rounds["unchanged"] = await timed("unchanged")
            await alone()
            # The unchanged round left every feed without validators (the farm sent none);
            # this round learns them back, so that churn sees 304s from unchanged feeds.
            _ask(conn, "validators", True)
            rounds["relearn"] = await timed("relearn")
            for k in range(args.churn_rounds):
                _ask(conn, "churn", CHURN_FRACTION, CHURN_ENTRIES)
                _stats(conn)
                name = "churn" if args.churn_rounds == 1 else f"churn {k + 1}"
                churns.append(await timed(name))
        total = await store.read(lambda s: s.count_entries())
        print(f"{'':<10} entries in the database after all rounds: {total}")
        peaks = [u.max_rss_kb / 1024 for u in (await _probe_pool(pool, workers)).values()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        await store.aclose()
    return Polled(rounds, churns, peaks)


def _print_reference(ref: Reference) -> None:
    print(
        f"reference, one core, {ref.feeds} feeds, {ref.entries} entries of the same bodies "
        f"(own process, peak RSS {ref.peak_mb:.0f} MB):"
    )
    print(f"  feedparser.parse alone     {ref.rate:>9,.0f} entries/s")
    print(f"  aggregator parse_feed      {ref.entries / ref.full:>9,.0f} entries/s")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _print_targets(
    args: argparse.Namespace,
    polled: Polled,
    ref: Reference,
    serving: dict[str, float] | None,
    poller_peak_mb: float,
) -> None:
    workers = args.workers or os.cpu_count() or 1
    cold, warm, unchanged = (polled.rounds[k] for k in ("cold", "warm", "unchanged"))
    cold_x = cold.stored / cold.seconds / ref.rate if cold.stored else 0.0
    warm_rate = warm.feeds / warm.seconds
    unchanged_rate = unchanged.feeds / unchanged.seconds
    print()
    print("targets of issue 7, beside this run's figures (printed, never asserted):")
    print(
        f"  cold entries/s / feedparser reference  {cold_x:>8.2f}x   target >= 3x   "
        f"{_met(cold_x >= 3)}  ({workers} parse workers)"
    )
    print(
        f"  warm round feeds/s (all 304)           {warm_rate:>9,.0f}   target >= 5,000  "
        f"{_met(warm_rate >= 5000)}"
    )
    print(
        f"  unchanged round feeds/s (200, same)    {unchanged_rate:>9,.0f}   target >= 2,000  "
        f"{_met(unchanged_rate >= 2000)}"
    )
    if serving is None:
        print("  serving a cached output, ours/bare     skipped (--skip-serve)")
    else:
        for kind in ("200", "304"):
            if kind in serving:
                print(
                    f"  serving cached {kind}s, ours/bare req/s  {serving[kind]:>8.0%}    "
                    f"target >= 50%    {_met(serving[kind] >= 0.5)}"
                )
    note = "" if args.feeds == 10_000 else f"; this run ingested {args.feeds} feeds, not 10,000"
    print(
        f"  poller peak RSS through the cold round {cold.peak_mb:>7.0f} MB  target <= 300 MB "
        f"ingesting 10,000 feeds cold  {_met(cold.peak_mb <= 300)}{note}"
    )
    print(
        f"  poller peak RSS through every round    {poller_peak_mb:>7.0f} MB  "
        f"(largest parse worker {max(polled.worker_peaks_mb, default=0):.0f} MB)"
    )
    if polled.churns:
        series = ", ".join(f"{r.rss_mb:.0f}" for r in polled.churns)
        growth = polled.churns[-1].rss_mb - polled.churns[0].rss_mb
        print(
            f"  poller RSS after each churn round (MB): {series}  "
            f"(last - first {growth:+.0f} MB; flat means no leak)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    import cluster  # here: it imports this module's farm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=2000, help="feeds in the farm (2000)")
    parser.add_argument("--entries", type=int, default=50, help="entries per feed (50)")
    parser.add_argument("--concurrency", type=int, default=32, help="fetches in flight (32)")
    parser.add_argument("--workers", type=int, default=0, help="parse workers, 0 = cores (0)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the farm's content (1)")
    parser.add_argument(
        "--churn-rounds", type=int, default=1, help="churn rounds, RSS printed after each (1)"
    )
    parser.add_argument("--skip-serve", action="store_true", help="skip the serving figures")
    parser.add_argument(
        "--serve-seconds", type=float, default=5.0, help="length of one serving measurement (5)"
    )
    parser.add_argument(
        "--serve-connections", type=int, default=32, help="load generator connections (32)"
    )
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk if on PATH, else our own aiohttp client (auto)",
    )
    parser.add_argument(
        "--database",
        help="a postgresql:// URL (or temp, a throwaway server): run cluster.py's rounds, "
        "pollers sharing that store beside the single SQLite process, instead",
    )
    cluster.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.database:
        cluster.run(args)
        return
    if (
        min(args.feeds, args.entries, args.concurrency, args.churn_rounds) < 1
        or args.workers < 0
        or not 0 < args.serve_seconds <= 60
        or not 1 <= args.serve_connections <= 1024
    ):
        parser.error(
            "--feeds, --entries, --concurrency and --churn-rounds must be at least 1, "
            "--workers >= 0, --serve-seconds in (0, 60], --serve-connections in [1, 1024]"
        )
    if args.load_generator == "wrk" and shutil.which("wrk") is None:
        parser.error("--load-generator wrk: wrk is not on PATH")

    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )
    print(
        f"params:  feeds={args.feeds} entries={args.entries} concurrency={args.concurrency} "
        f"workers={args.workers or os.cpu_count()} seed={args.seed} "
        f"churn={CHURN_FRACTION:.0%} of feeds +{CHURN_ENTRIES} entries, "
        f"{args.churn_rounds} round(s)"
    )
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    farm = ctx.Process(
        target=_farm_main, args=(theirs, args.feeds, args.entries, args.seed), name="feed-farm"
    )
    farm.start()
    theirs.close()
    try:
        msg: Any = ours.recv()
        _, port, built, size = msg
        print(
            f"farm:    pid {farm.pid}, http://127.0.0.1:{port}/, built in {built:.1f}s, "
            f"{size / MB:.1f} MB of RSS ({size / args.feeds / 1024:.0f} KB a feed)"
        )
        print()
        ref = reference(port, args.feeds)
        _print_reference(ref)
        print()
        feeds = [
            (f"feed-{i:05d}", f"http://127.0.0.1:{port}/feed/{i}.xml") for i in range(args.feeds)
        ]
        with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as tmp:
            database = Path(tmp) / "bench.db"
            polled = asyncio.run(bench(args, ours, database, feeds, ref))
            poller_peak_mb = rss_peak_mb()
            db_mb = database.stat().st_size / MB if database.exists() else 0.0
            render_figures(database, feeds)
            serving = None
            if not args.skip_serve:
                try:
                    serving = serve_figures(
                        Path(tmp),
                        database,
                        feeds,
                        args.load_generator,
                        args.serve_connections,
                        args.serve_seconds,
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    print(f"  serving FAILED: {e}")
    finally:
        ours.close()  # EOF tells the farm to stop
        farm.join(timeout=10)
        if farm.is_alive():
            farm.terminate()
            farm.join()
    print()
    print("peak RSS, ru_maxrss in MB:")
    print(
        f"  poller process, through the poll rounds    {poller_peak_mb:>7.1f} MB "
        f"(database {db_mb:.1f} MB)"
    )
    print(f"  poller process, after rendering            {rss_peak_mb():>7.1f} MB")
    if polled.worker_peaks_mb:
        print(
            f"  parse workers ({len(polled.worker_peaks_mb)} seen, own getrusage)      "
            f"{max(polled.worker_peaks_mb):>7.1f} MB max, "
            f"{sum(polled.worker_peaks_mb):.1f} MB summed"
        )
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"  largest reaped child (RUSAGE_CHILDREN)     {children_mb:>7.1f} MB "
        "(the farm, which holds every body, unless the daemon was larger)"
    )
    _print_targets(args, polled, ref, serving, poller_peak_mb)


if __name__ == "__main__":
    main()
