"""The article queue: fetches the pages of entries whose feed wants full content. I/O.

Pages are fetched through the feeds' own Fetcher (its User-Agent, timeout, body cap and
redirects) and under the same per-host gates, but only in turns no feed poll wants: an
article takes a host's start slot only when it is free right now (`HostGates.try_reserve`),
never books one, and at most `article_concurrency` pages are fetched at once. So a feed poll
waits behind at most one page of its host, never behind a backlog, and a first poll of
hundreds of new entries is spread at the host's pace. robots.txt is read once per host a day;
a 429/503's Retry-After blocks the host for feeds and pages alike. Extraction runs in the
parse workers, with a deadline. What is queued, cached and stored is in store/articles.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..config.resolved import Config, Feed
from ..errors import FetchError
from ..ingest.decide import retry_after
from ..ingest.extract import extract_article, headers_content_type, is_html
from ..ingest.fetch import Fetcher
from ..ingest.hosts import HostGates, origin
from ..ingest.robots import RobotsCache, Rules, rules_from
from ..ingest.workers import WorkTimeout
from ..models import Fetched, PollRecord
from ..store.articles import RETRY_DELAYS
from ..store.protocol import Article, Due, Store
from ..store.threads import StoreThreads

ACCEPT_HTML = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
# Seconds one page's extraction may take, on top of the parse workers' parse_timeout (which
# kills the worker): this bound holds for any executor.
EXTRACT_DEADLINE = 30.0
TICK = 0.2  # seconds between looks at a queue whose hosts were all busy
IDLE_WAIT = 60.0  # longest sleep with nothing due (a new poll wakes the queue sooner)
BATCH = 200  # due entries read at a time
MAX_CRAWL_DELAY = timedelta(minutes=10)  # the longest robots.txt Crawl-delay honoured
ELSEWHERE_WAIT = timedelta(seconds=2)  # a host another poller has is asked for again then
# Statuses that say nothing lasting about the page: tried again later, a few times.
_LASTING = frozenset({401, 403, 410, 451})

log = logging.getLogger("aggregator.articles")


def _transient(status: int | None) -> bool:
    """Whether a failed fetch may succeed later: no answer at all, or an HTTP error other
    than the lasting ones. (A 200 whose body is over the cap is lasting.)"""
    return status is None or (status >= 400 and status not in _LASTING)


class SharedHosts(Protocol):
    """Hosts shared with other pollers (PostgreSQL, page_hosts.py): `take` one before each
    request (when it may start, or None: another poller has it), `done` after."""

    async def take(self, host: str) -> datetime | None: ...

    async def done(self, host: str) -> None: ...


class ArticleQueue:
    """Works through the pending articles of every feed, politely; one per daemon (or CLI run).

    `hosts` and `config` are callables so that a reload's new gates and settings apply at
    once; `on_write` hears the store generation after each change of an entry's content.
    """

    def __init__(
        self,
        store: StoreThreads,
        fetcher: Fetcher,
        pool: Executor | None,
        config: Callable[[], Config],
        hosts: Callable[[], HostGates],
        on_write: Callable[[int], None] = lambda generation: None,
        *,
        on_result: Callable[[str], None] = lambda result: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_delays: tuple[timedelta, ...] = RETRY_DELAYS,
        deadline: float = EXTRACT_DEADLINE,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.pool = pool
        self.config = config
        self.hosts = hosts
        self.on_write = on_write
        self.on_result = on_result
        self.clock = clock
        self.retry_delays = retry_delays
        self.deadline = deadline
        self.robots = RobotsCache()
        self._queue: list[Due] = []
        self._busy: set[str] = set()  # links being fetched, hosts whose robots.txt is
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # A host's robots.txt Crawl-delay: the next page of it may not start before this.
        self._crawl_next: dict[str, datetime] = {}
        # When each queued page's hold runs out (take_articles): then it is due for anyone.
        self._until: dict[str, datetime] = {}
        # A poller sharing its store with others takes a page's host first (ClaimLoop sets
        # it); hosts another poller had at the last try are left alone until then.
        self.shared: SharedHosts | None = None
        self._elsewhere: dict[str, datetime] = {}

    # --- what polls call ---------------------------------------------------------------------

    def wanted(self, feed: str) -> bool:
        """Whether `feed` wants full content now (asked in every poll's write, on the writer
        thread, of the config of the moment: a reload applies at once)."""
        found = self._feed(feed)
        return found is not None and found.full_content

    def private(self, feed: str) -> bool:
        """Whether `feed` fetches its pages with credentials (a cookie, basic auth, headers):
        they are cached apart (see store/articles.py)."""
        found = self._feed(feed)
        options = found.request_options if found is not None else None
        return self.wanted(feed) and options is not None and bool(options.credentials)

    def mark(self, store: Store, rec: PollRecord) -> int | None:
        """Part of a poll's write (on the writer thread): queue its new entries' pages."""
        return store.queue_articles(rec, self.wanted, self.private)

    def wake(self) -> None:
        """A poll queued pages: look at the queue now rather than after the idle wait."""
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, until_idle: bool = False) -> None:
        """Fetch due pages until cancelled; with `until_idle`, return once nothing due is
        left (entries waiting for a later retry stay pending)."""
        try:
            while True:
                now = self.clock()
                # Cleared before looking, so that a poll's wake-up while we look is kept.
                self._wake.clear()
                if not self._queue:
                    batch = await self._due(now)
                    self._queue = [d for d in batch if d.link not in self._busy]
                started = await self._start_due(now)
                if not self._queue and not self._tasks and until_idle:
                    return
                await self._wait(started, until_idle)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)

    async def _due(self, now: datetime) -> list[Due]:
        """Take the due pages for this poller (on PostgreSQL, for `lease`: other pollers
        sharing the store leave them meanwhile); a page still queued when that runs out is
        left to them (see _start_due)."""
        hold = self.config().aggregator.lease
        taken = await self.store.write(lambda s: s.take_articles(now, hold, BATCH))
        self._until = {due.link: now + hold for due in taken}
        return taken

    async def _defer(self, link: str, when: datetime) -> None:
        await self.store.write_batched(lambda s: s.defer_articles(link, when))

    async def _wait(self, started: bool, until_idle: bool) -> None:
        if self._queue and not started:
            timeout = TICK  # hosts busy: their turns come soon
        elif self._queue:
            timeout = 0.0
        elif self._tasks:
            timeout = IDLE_WAIT
        else:
            nxt = await self.store.read(lambda s: s.next_article_due())
            wait = (nxt - self.clock()).total_seconds() if nxt is not None else IDLE_WAIT
            timeout = min(max(wait, TICK), IDLE_WAIT)
            if until_idle:
                timeout = 0.0
        woken = asyncio.ensure_future(self._wake.wait())
        waiters: set[asyncio.Future[Any]] = {woken, *self._tasks}
        await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
        woken.cancel()

    async def _start_due(self, now: datetime) -> bool:
        """Start what may start now; True when something did (or was settled)."""
        config = self.config()
        gates = self.hosts()
        user_agent = config.aggregator.user_agent
        progressed = False
        for due in list(self._queue):
            if len(self._tasks) >= config.aggregator.article_concurrency:
                break
            if self._until.get(due.link, now) < now:
                self._queue.remove(due)  # held too long: another poller may take it now
                continue
            host = origin(due.url)
            blocked = gates.blocked_until(host, now)
            if blocked is not None:
                self._queue.remove(due)
                await self._defer(due.link, blocked)
                progressed = True
                continue
            if self._elsewhere.get(host, now) > now:
                continue  # another poller's host: its pages wait here for their turn
            rules = self.robots.get(host, now) if config.aggregator.respect_robots else None
            if config.aggregator.respect_robots and rules is None:
                if host not in self._busy and gates.try_reserve(host, now):
                    self._spawn(self._read_robots(host), host)
                    progressed = True
                continue
            if rules is not None and rules.unreachable:
                self._queue.remove(due)
                await self._defer(due.link, rules.expires)
                continue
            if rules is not None and not rules.allows(user_agent, due.url):
                self._queue.remove(due)
                refused = Article(due.url, error=f"robots.txt of {host} disallows this page")
                await self._record(due, refused)
                progressed = True
                continue
            crawl_next = self._crawl_next.get(host)
            if (crawl_next is not None and crawl_next > now) or not gates.try_reserve(host, now):
                continue
            delay = rules.crawl_delay(user_agent) if rules is not None else None
            if delay is not None:
                # Crawl-delay asks crawlers, which we are for pages (not for feeds), to space
                # their requests; a day-long delay is capped, or a page would never come.
                self._crawl_next[host] = now + min(delay, MAX_CRAWL_DELAY)
            self._queue.remove(due)
            self._spawn(self._fetch(due, host, gates), due.link)
            progressed = True
        return progressed

    def _spawn(self, coro: Coroutine[Any, Any, None], busy: str) -> None:
        self._busy.add(busy)
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._busy.discard(busy)
            if not t.cancelled() and t.exception() is not None:
                log.error("article task failed", exc_info=t.exception())

        task.add_done_callback(done)

    # --- one host's robots.txt, one page -----------------------------------------------------

    async def _take(self, host: str) -> bool:
        """Whether `host` may get a request from here now: always, but where other pollers
        share it; then once it is taken for this poller, at the start that gives."""
        if self.shared is None:
            return True
        start = await self.shared.take(host)
        if start is None:
            self._elsewhere[host] = self.clock() + ELSEWHERE_WAIT
            return False
        wait = (start - self.clock()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    async def _give_back(self, host: str) -> None:
        if self.shared is not None:
            await self.shared.done(host)

    async def _read_robots(self, host: str) -> None:
        if not await self._take(host):
            return  # read when the host is free for this poller
        gates = self.hosts()
        status: int | None = 200
        body = b""
        try:
            async with gates.slot(host):
                sent = await gates.pace(host)
                try:
                    got = await self.fetcher.fetch(
                        "robots.txt",
                        f"{host}/robots.txt",
                        accept="text/plain, */*;q=0.5",
                        sent=sent,
                    )
                    body = got.body if isinstance(got, Fetched) else b""
                except FetchError as e:
                    status = e.status
        finally:
            await self._give_back(host)
        rules: Rules = rules_from(status, body, self.clock())
        self.robots.put(host, rules)
        if rules.unreachable:
            log.warning("robots.txt of %s could not be read: its pages wait", host)

    def _feed(self, name: str) -> Feed | None:
        return self.config().feeds.get(name)

    async def _fetch(self, due: Due, host: str, gates: HostGates) -> None:
        now = self.clock()
        feed = self._feed(due.feed)
        # The feed's own request options: its user_agent and proxy, and its credentials where
        # they may go (only to the feed's own origin: a paywalled site's cookie, say).
        options = feed.request_options if feed is not None else None
        if not await self._take(host):
            self._queue.insert(0, due)  # tried again when the host is free for this poller
            return
        try:
            async with gates.slot(host):
                sent = await gates.pace(host)
                try:
                    got = await self.fetcher.fetch(
                        due.feed, due.url, None, options, accept=ACCEPT_HTML, sent=sent
                    )
                except FetchError as e:
                    retry = retry_after(e.retry_after, now)
                    if retry is not None:
                        gates.block(host, retry)  # the host's word holds for its feeds too
                    error = e.message
                    article = Article(due.url, error=error, transient=_transient(e.status))
                    if retry is not None:
                        article = Article(due.url, error=error, transient=True, retry_at=retry)
                    await self._record(due, article)
                    return
        finally:
            await self._give_back(host)
        assert isinstance(got, Fetched)  # no validators were sent
        await self._record(due, await self._extract(due, got))

    async def _extract(self, due: Due, got: Fetched) -> Article:
        content_type = headers_content_type(got.headers)
        if not is_html(content_type, got.body):
            kind = content_type.split(";")[0].strip() or "unknown"
            return Article(got.url, error=f"not an HTML page ({kind})")
        config = self.config()
        feed = self._feed(due.feed)
        job = functools.partial(
            extract_article,
            got.body,
            content_type,
            got.url,
            title=due.title,
            selector=feed.content_selector if feed is not None else None,
            remove=feed.remove_selectors if feed is not None else (),
            embed_hosts=frozenset(config.aggregator.embed_hosts),
        )
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(loop.run_in_executor(self.pool, job), self.deadline)
        except TimeoutError:
            return Article(got.url, error=f"extraction took longer than {self.deadline:g}s")
        except WorkTimeout as e:
            # The parse workers' own deadline (parse_timeout): the worker was killed, as for
            # a feed whose parse ran too long.
            error = f"extraction took longer than {e.deadline:g}s (parse_timeout); stopped"
            return Article(got.url, error=error)
        except Exception as e:  # a crashed worker (BrokenProcessPool) is this page's failure
            return Article(got.url, error=f"extraction failed: {type(e).__name__}: {e}")
        if not found.found:
            return Article(got.url, error=found.reason)
        return Article(got.url, found.html, found.text_length, found.method)

    async def _record(self, due: Due, article: Article) -> None:
        now = self.clock()
        generation = await self.store.write_batched(
            lambda s: s.record_article(due.link, article, now, self.retry_delays)
        )
        if generation is not None:
            self.on_write(generation)
        self.on_result(
            "extracted" if article.error is None else "retry" if article.transient else "failed"
        )
        if article.error is None:
            log.info(
                "article feed=%s url=%s status=extracted method=%s chars=%d",
                due.feed,
                article.url,
                article.method,
                article.text_length,
            )
        else:
            log.warning(
                "article feed=%s url=%s status=%s error=%r",
                due.feed,
                due.url,
                "retry" if article.transient else "failed",
                article.error,
            )
