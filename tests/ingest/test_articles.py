"""Full content: polls of section feeds that carry one sentence, then the article queue
fetching their pages from a loopback site, with a real Fetcher, host gates and SQLite.

Asserts what is stored, what the outputs carry, and on the server side what was requested:
host limits held, robots.txt honoured, no page fetched twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from articlesite import STORIES, ArticleSite, Story

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.articles import ArticleQueue
from aggregator.ingest.fetch import Fetcher
from aggregator.ingest.poll import PollContext, poll_source
from aggregator.ingest.workers import DeadlinePool
from aggregator.models import PollOutcome
from aggregator.outputs.plan import render_output
from aggregator.runtime import make_gates
from aggregator.store import articles as article_store
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

T = TypeVar("T")
QUICK = (timedelta(seconds=0.2), timedelta(seconds=0.2), timedelta(seconds=0.2))
SETTLE = 90.0  # seconds: a generous bound on a loaded machine, never a measurement


@pytest.fixture
def site() -> Iterator[ArticleSite]:
    server = ArticleSite()
    server.serve_robots()
    for story in STORIES.values():
        server.serve_story(story)
    try:
        yield server
    finally:
        server.close()


def make_config(tmp_path: Path, feeds: list[dict[str, Any]], **settings: Any) -> Config:
    values: dict[str, Any] = {
        "database": str(tmp_path / "db.sqlite"),
        "min_interval": "5s",
        "host_delay": "0.2s",
        "timeout": "2s",
        "full_content": True,
    }
    values.update(settings)
    outputs = [{"name": "all", "title": "All", "dedupe": "off"}]
    return parse_config({"aggregator": values, "feeds": feeds, "outputs": outputs})


@dataclass
class Harness:
    config: Config
    ctx: PollContext
    queue: ArticleQueue
    store: StoreThreads

    async def poll(self, name: str) -> PollOutcome:
        feed = self.config.feeds[name]
        while True:
            now = datetime.now(UTC)
            outcome = await poll_source(self.ctx, feed, now)
            if outcome.status != "deferred" or outcome.next_poll is None:
                return outcome
            await asyncio.sleep(max(0.0, (outcome.next_poll - now).total_seconds()))

    async def settle(self) -> dict[str, dict[str, int]]:
        """Run the queue until no entry is pending (retries included)."""
        end = time.monotonic() + SETTLE
        while True:
            await self.queue.run(until_idle=True)
            counts = await self.store.read(article_store.counts)
            if not any(c["pending"] for c in counts.values()):
                return counts
            assert time.monotonic() < end, f"articles still pending: {counts}"
            await asyncio.sleep(0.05)


def run(
    config: Config,
    script: Callable[[Harness], Awaitable[T]],
    deadline: float = 30.0,
    parse_pool: Executor | None = None,
) -> T:
    async def main() -> T:
        store = StoreThreads(config.aggregator.database.path)
        pool = parse_pool or ThreadPoolExecutor(2)
        try:
            rows = [(f.name, f.url) for f in config.feeds.values()]
            await store.write(lambda s: s.sync_feeds(rows))
            s = config.aggregator
            async with Fetcher(
                user_agent=s.user_agent,
                timeout=s.timeout.total_seconds(),
                max_body_size=s.max_body_size,
                max_concurrency=s.max_concurrency,
            ) as fetcher:
                gates = make_gates(config)
                queue = ArticleQueue(
                    store,
                    fetcher,
                    pool,
                    lambda: config,
                    lambda: gates,
                    retry_delays=QUICK,
                    deadline=deadline,
                )
                ctx = PollContext(
                    fetcher,
                    store,
                    pool,
                    hosts=gates,
                    articles=queue,
                )
                return await script(Harness(config, ctx, queue, store))
        finally:
            pool.shutdown()
            await store.aclose()

    return asyncio.run(main())


def stored(config: Config) -> dict[str, dict[str, Any]]:
    """Every stored entry by guid, with its extraction state."""
    store = Store(config.aggregator.database.path)
    try:
        out = {}
        for item in store.iter_entries(list(config.feeds)):
            e = item.entry
            state = article_store.entry_state(store, e.feed, e.key) or {}
            out[f"{e.feed}/{e.guid}"] = {"summary": e.summary, "content": e.content, **state}
        return out
    finally:
        store.close()


def rendered(config: Config, fmt: str) -> bytes:
    store = Store(config.aggregator.database.path)
    try:
        return render_output(store, config, "all", fmt).body  # type: ignore[arg-type]
    finally:
        store.close()


def story_paths(stories: list[Story]) -> list[str]:
    return [s.path for s in stories]


def test_new_entries_get_their_article_text_politely(site: ArticleSite, tmp_path: Path) -> None:
    stories = [STORIES[k] for k in ("wire", "de", "ru", "ja", "fr", "index")]
    site.serve_feed("/feeds/world.rss", stories)
    config = make_config(
        tmp_path, [{"name": "world", "url": site.url("/feeds/world.rss")}], host_delay="0.5s"
    )

    async def script(h: Harness) -> dict[str, dict[str, int]]:
        outcome = await h.poll("world")
        assert outcome.status == "ok" and outcome.new == 6
        return await h.settle()

    counts = run(config, script)
    assert counts == {"world": {"extracted": 5, "failed": 1, "pending": 0}}
    entries = stored(config)

    wire = entries["world/wire-1"]
    assert wire["status"] == "extracted" and wire["method"] == "trafilatura"
    assert wire["source"] == site.url(STORIES["wire"].path)
    # The feed's sentence stays the summary; the page's story becomes the content.
    assert wire["summary"] == STORIES["wire"].first_sentence
    content = wire["content"]
    assert "Hydrologists welcomed the move" in content
    assert "neighbouring Brazil and Chile" in content
    for chrome in ("bookmarkicon", "cookies", "Related stories", "reader42", "rights reserved"):
        assert chrome not in content, chrome
    assert "Share on Facebook" not in content and "Sport" not in content
    # The headline once (it is the entry's title), the lead and the photo kept.
    assert "shared river-data network" not in content
    assert "four countries will report to one open platform" in content
    assert f'src="{site.url("/world/2024/media/2024/03/river-gauge.jpg")}"' in content
    assert f'href="{site.url("/topics/lima")}"' in content

    de = entries["world/de-1"]["content"]
    assert "Bürgerenergiegenossenschaft" in de and "<li>Leistung: 4,9 Megawatt</li>" in de
    assert "Newsletter" not in de and "Meistgelesen" not in de
    ru = entries["world/ru-1"]["content"]
    assert "<blockquote>" in ru and "пятьдесят станций" in ru and "Читайте также" not in ru
    ja = entries["world/ja-1"]["content"]
    assert "共通の変換ツール" in ja and "関連記事" not in ja and "ツイート" not in ja
    fr = entries["world/fr-1"]["content"]
    assert "<table>" in fr and "<th>Gare</th>" in fr and "<li>Les vélos" in fr
    # Relative links resolved against the page's <base href>.
    assert 'src="https://carnets.example/2024/06/images/couchette.jpg"' in fr
    assert 'href="https://carnets.example/horaires/"' in fr
    assert "Articles similaires" not in fr and "Merci pour ce récit" not in fr

    index = entries["world/index-1"]
    assert index["status"] == "failed" and "no article text" in index["error"]
    assert index["content"] == "" and index["summary"] == STORIES["index"].first_sentence

    # Host limits held, on the server's side: one request at a time, robots.txt read once,
    # each page once, and the starts spaced by host_delay (less the jitter of a loaded
    # machine between reserving a start and the request's arrival).
    assert site.max_in_flight == 1
    assert site.article_hits("/robots.txt") == 1
    for path in story_paths(stories):
        assert site.article_hits(path) == 1, path
    arrivals = [r.monotonic for r in site.requests()]
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(arrivals))
    agents = {h.headers.get("User-Agent") for h in site.hits}
    assert agents == {config.aggregator.user_agent}
    page_accept = {h.headers.get("Accept") for h in site.hits_of(STORIES["wire"].path)}
    assert page_accept == {"text/html, application/xhtml+xml;q=0.9, */*;q=0.5"}

    # Outputs carry the page's text as content and the feed's sentence as summary.
    atom = rendered(config, "atom").decode()
    assert "Hydrologists welcomed the move" in atom and "bookmarkicon" not in atom
    feed_json = json.loads(rendered(config, "json"))
    item = next(i for i in feed_json["items"] if i["title"] == STORIES["wire"].title)
    assert "Hydrologists welcomed the move" in item["content_html"]
    assert item["summary"] == STORIES["wire"].first_sentence
    rss = rendered(config, "rss").decode()
    assert "content:encoded" in rss and "pool readings from more than six hundred" in rss
    page = rendered(config, "html").decode()
    assert "Hydrologists welcomed the move" in page


def test_second_poll_fetches_no_article_again(site: ArticleSite, tmp_path: Path) -> None:
    first = [STORIES["wire"], STORIES["de"]]
    site.serve_feed("/feeds/world.rss", first)
    config = make_config(tmp_path, [{"name": "world", "url": site.url("/feeds/world.rss")}])

    async def script(h: Harness) -> None:
        await h.poll("world")
        await h.settle()
        # The feed changes: the German story is edited (same link), the Russian one is new.
        edited = Story(**{**STORIES["de"].__dict__, "title": STORIES["de"].title + " (update)"})
        site.serve_feed("/feeds/world.rss", [STORIES["wire"], edited, STORIES["ru"]])
        outcome = await h.poll("world")
        assert (outcome.new, outcome.updated) == (1, 1)
        await h.settle()
        assert (await h.poll("world")).status in ("not_modified", "unchanged")
        await h.settle()

    run(config, script)
    for story in (STORIES["wire"], STORIES["de"], STORIES["ru"]):
        assert site.article_hits(story.path) == 1, story.path
    entries = stored(config)
    # The edit wrote the feed's text back; the cached page's text was put back, unfetched.
    assert "Naturschützer begrüßen" in entries["world/de-1"]["content"]
    assert entries["world/de-1"]["status"] == "extracted"
    assert "пятьдесят станций" in entries["world/ru-1"]["content"]


def test_the_same_story_in_three_feeds_is_fetched_once(site: ArticleSite, tmp_path: Path) -> None:
    wire = STORIES["wire"]
    site.serve_feed("/feeds/russia.rss", [wire], query="?utm_source=rss&utm_medium=russia")
    site.serve_feed("/feeds/world.rss", [wire], query="?utm_campaign=world")
    site.serve_feed("/feeds/top.rss", [wire], query="?fbclid=abc123")
    config = make_config(
        tmp_path,
        [
            {"name": "russia", "url": site.url("/feeds/russia.rss")},
            {"name": "world", "url": site.url("/feeds/world.rss")},
            {"name": "top", "url": site.url("/feeds/top.rss")},
        ],
    )

    async def script(h: Harness) -> dict[str, dict[str, int]]:
        for name in ("russia", "world", "top"):
            await h.poll(name)
        return await h.settle()

    counts = run(config, script)
    assert site.article_hits(wire.path) == 1
    assert all(counts[n] == {"extracted": 1, "failed": 0, "pending": 0} for n in counts)
    assert len(counts) == 3
    for name in ("russia", "world", "top"):
        assert "Hydrologists welcomed" in stored(config)[f"{name}/wire-1"]["content"]


def test_a_page_fetched_with_a_feeds_cookie_is_not_shared_with_other_feeds(
    site: ArticleSite, tmp_path: Path
) -> None:
    """What a paywall's cookie unlocks stays with the feed that holds it: a public feed
    linking the same story gets the page as anyone would, in a fetch of its own."""
    wire = STORIES["wire"]
    site.serve_feed("/feeds/paid.rss", [wire])
    site.serve_feed("/feeds/free.rss", [wire], query="?utm_source=free")
    paid = {"name": "paid", "url": site.url("/feeds/paid.rss"), "cookie": "session=member-42"}
    config = make_config(tmp_path, [paid, {"name": "free", "url": site.url("/feeds/free.rss")}])

    async def script(h: Harness) -> dict[str, dict[str, int]]:
        for name in ("paid", "free", "paid"):
            await h.poll(name)
        return await h.settle()

    counts = run(config, script)
    hits = site.hits_of(wire.path)
    assert sorted(h.headers.get("Cookie", "") for h in hits) == ["", "session=member-42"]
    assert counts["paid"]["extracted"] == counts["free"]["extracted"] == 1


def test_failures_are_recorded_per_entry_and_retried_then_left(
    site: ArticleSite, tmp_path: Path
) -> None:
    def story(guid: str, path: str) -> Story:
        return Story(guid, path, f"Story {guid}", f"The first sentence of story {guid} only.")

    missing = story("missing", "/world/missing/")
    limited = story("limited", "/world/limited/")
    pdf = story("pdf", "/world/report.pdf")
    huge = story("huge", "/world/huge/")
    slow = story("slow", "/world/slow/")
    private = story("private", "/private/members-only/")
    short = Story(
        "short",
        "/world/short/",
        "Short page",
        "This feed carries the whole story, a long paragraph about the harbour, the ferries "
        "and the storm that closed them for three days, with every detail a reader needs, "
        "and more words than the page itself will ever show to anyone.",
    )
    site.serve_status(missing.path, 404)
    site.serve_status(limited.path, 429, headers={"Retry-After": "1"})
    site.serve_bytes(pdf.path, b"%PDF-1.7 not a page", "application/pdf")
    site.serve_bytes(huge.path, b"<html><body>" + b"<p>x</p>" * 40_000, "text/html")
    late = b"<html><body><p>late</p></body></html>"
    site.serve_bytes(slow.path, late, "text/html")
    site.serve_slow(slow.path, 5.0)
    site.serve_bytes(private.path, late, "text/html")
    site.serve_bytes(
        short.path, b"<html><body><article><p>Ferries.</p></article></body></html>", "text/html"
    )
    stories = [missing, limited, pdf, huge, slow, private, short]
    site.serve_feed("/feeds/world.rss", stories)
    config = make_config(
        tmp_path,
        [{"name": "world", "url": site.url("/feeds/world.rss")}],
        max_body_size="256KiB",
        timeout="1s",
    )

    async def script(h: Harness) -> dict[str, dict[str, int]]:
        await h.poll("world")
        # The 429 blocks the host; once its Retry-After has passed the page is served.
        while site.article_hits(limited.path) == 0:
            await h.queue.run(until_idle=True)
            await asyncio.sleep(0.05)
        site.serve_story(Story(**{**STORIES["wire"].__dict__, "path": limited.path}))
        return await h.settle()

    counts = run(config, script)
    assert counts == {"world": {"extracted": 1, "failed": 6, "pending": 0}}
    entries = stored(config)

    def error(s: Story) -> str:
        return str(entries[f"world/{s.guid}"]["error"])

    assert error(missing) == "gave up after 4 attempts: HTTP 404 Not Found"
    assert site.article_hits(missing.path) == 4
    assert error(pdf) == "not an HTML page (application/pdf)"
    assert "over the 262144" in error(huge)
    assert error(slow) == "gave up after 4 attempts: timed out after 1s"
    assert error(private) == f"robots.txt of {site.base_url} disallows this page"
    assert site.article_hits(private.path) == 0
    assert "kept the feed's text" in error(short)
    assert entries[f"world/{short.guid}"]["content"] == ""
    limited_entry = entries[f"world/{limited.guid}"]
    assert limited_entry["status"] == "extracted" and limited_entry["attempts"] == 1
    # The retry came after the host's Retry-After, measured where the requests arrived.
    tries = [r.monotonic for r in site.requests(limited.path)]
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.9
    # Every failure kept the feed's own text.
    for s in stories:
        assert entries[f"world/{s.guid}"]["summary"] == s.first_sentence


def test_a_feed_poll_never_waits_behind_a_backlog_of_articles(
    site: ArticleSite, tmp_path: Path
) -> None:
    # A big first poll: 40 new entries on one host at 0.2 s apart is 8 s of article fetches.
    page = STORIES["wire"]
    many = [
        Story(f"n{i}", f"/world/n{i}/", f"Story {i}", "One sentence.", page.page) for i in range(40)
    ]
    for s in many:
        site.serve_story(s)
    site.serve_feed("/feeds/world.rss", many)
    site.serve_feed("/feeds/sport.rss", [STORIES["fr"]])
    config = make_config(
        tmp_path,
        [
            {"name": "world", "url": site.url("/feeds/world.rss")},
            {"name": "sport", "url": site.url("/feeds/sport.rss"), "full_content": False},
        ],
    )

    async def script(h: Harness) -> tuple[PollOutcome, int]:
        await h.poll("world")
        worker = asyncio.create_task(h.queue.run())
        while sum(site.article_hits(s.path) for s in many) < 3:
            await asyncio.sleep(0.05)
        # Deferred at most to the host's next turn (h.poll then polls again): the feed's
        # request goes ahead of the pages still queued.
        outcome = await h.poll("sport")
        fetched_before = sum(site.article_hits(s.path) for s in many)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        return outcome, fetched_before

    outcome, fetched_before = run(config, script)
    assert outcome.status == "ok"
    assert fetched_before < len(many) // 2
    # The pages were spread: one at a time on the host, never a burst.
    assert site.max_in_flight == 1
    # A feed without full_content queues nothing.
    assert "sport/fr-1" in stored(config) and stored(config)["sport/fr-1"].get("status") is None


def test_selectors_override_the_heuristics(site: ArticleSite, tmp_path: Path) -> None:
    fr = STORIES["fr"]
    site.serve_feed("/feeds/blog.rss", [fr])
    config = make_config(
        tmp_path,
        [
            {
                "name": "blog",
                "url": site.url("/feeds/blog.rss"),
                "content_selector": "div.entry-wrapper",
                "remove_selectors": ["div.post-footer", "#comments", "table.horaires"],
            }
        ],
        respect_robots=False,
    )

    async def script(h: Harness) -> None:
        await h.poll("blog")
        await h.settle()

    run(config, script)
    entry = stored(config)["blog/fr-1"]
    assert entry["method"] == "selector"
    content = entry["content"]
    assert "Publié le 12 juin 2024 par Camille" in content  # the byline the heuristics drop
    assert "<table" not in content and "Articles similaires" not in content
    assert "Merci pour ce récit" not in content
    assert "<h1" not in content  # the title, shown by readers already
    assert site.article_hits("/robots.txt") == 0  # respect_robots = false


def test_extraction_past_its_deadline_is_a_failure_of_that_entry(
    site: ArticleSite, tmp_path: Path
) -> None:
    site.serve_feed("/feeds/world.rss", [STORIES["wire"]])
    config = make_config(tmp_path, [{"name": "world", "url": site.url("/feeds/world.rss")}])
    # The pool's one thread is kept busy once the feed is parsed, so the extraction cannot
    # finish within its deadline however fast the machine is (a deadline alone raced it).
    pool = ThreadPoolExecutor(1)
    busy = threading.Event()

    async def script(h: Harness) -> None:
        await h.poll("world")
        pool.submit(busy.wait, 60)
        try:
            await h.settle()
        finally:
            busy.set()

    run(config, script, deadline=0.2, parse_pool=pool)
    entry = stored(config)["world/wire-1"]
    assert entry["status"] == "failed" and entry["error"] == "extraction took longer than 0.2s"
    assert entry["summary"] == STORIES["wire"].first_sentence and entry["content"] == ""


def test_an_extraction_past_parse_timeout_is_stopped_in_its_worker(
    site: ArticleSite, tmp_path: Path
) -> None:
    # The daemon's parse workers: a page whose extraction runs past their deadline has its
    # worker killed and replaced, and the entry keeps the feed's text.
    site.serve_feed("/feeds/world.rss", [STORIES["wire"]])
    config = make_config(tmp_path, [{"name": "world", "url": site.url("/feeds/world.rss")}])
    # In this worker extraction never ends (tests/endless_extraction.py): a short deadline
    # alone raced a fast machine, where the page was extracted within it.
    pool = DeadlinePool(1, 2.0, preload=("aggregator.ingest.poll", "endless_extraction"))

    async def script(h: Harness) -> None:
        await h.poll("world")
        await h.settle()

    run(config, script, parse_pool=pool)
    entry = stored(config)["world/wire-1"]
    assert entry["status"] == "failed"
    assert entry["error"] == "extraction took longer than 2s (parse_timeout); stopped"
    assert pool.replaced >= 1


def test_robots_crawl_delay_spaces_the_pages_of_its_host(tmp_path: Path) -> None:
    site = ArticleSite()
    try:
        site.serve_bytes(
            "/robots.txt", b"User-agent: *\nCrawl-delay: 1\n", "text/plain", etag=False
        )
        stories = [
            Story(f"c{i}", f"/world/c{i}/", f"Story {i}", "One sentence.", "wire-story.html")
            for i in range(3)
        ]
        for story in stories:
            site.serve_story(story)
        site.serve_feed("/feeds/world.rss", stories)
        config = make_config(
            tmp_path, [{"name": "world", "url": site.url("/feeds/world.rss")}], host_delay="0s"
        )

        async def script(h: Harness) -> dict[str, dict[str, int]]:
            await h.poll("world")
            return await h.settle()

        assert run(config, script)["world"]["extracted"] == 3
        pages = sorted(r.monotonic for s in stories for r in site.requests(s.path))
        # host_delay is 0 here: only the Crawl-delay spaces them (less a loaded machine's
        # jitter between a start and its arrival).
        assert len(pages) == 3 and all(b - a >= 0.7 for a, b in itertools.pairwise(pages))
    finally:
        site.close()


def test_pages_are_requested_with_the_feed_options_credentials_only_on_its_origin(
    site: ArticleSite, tmp_path: Path
) -> None:
    other = ArticleSite()
    try:
        other.serve_robots()
        elsewhere = Story("x1", "/elsewhere/", "Elsewhere", "One sentence.", "ru-nauka.html")
        other.serve_story(elsewhere)
        local = STORIES["wire"]
        feed = site.url("/feeds/paid.rss")
        items = f"""<item><title>{local.title}</title><link>{site.url(local.path)}</link>
<guid>{local.guid}</guid><description>One sentence.</description></item>
<item><title>Elsewhere</title><link>{other.url(elsewhere.path)}</link><guid>x1</guid>
<description>One sentence.</description></item>"""
        site.serve_bytes(
            "/feeds/paid.rss",
            f"<rss version='2.0'><channel><title>Paid</title>{items}</channel></rss>".encode(),
            "application/rss+xml",
        )
        paid = {"name": "paid", "url": feed, "cookie": "session=s3cret-cookie-value"}
        paid["user_agent"] = "PaidReader/2.0"
        config = make_config(tmp_path, [paid])

        async def script(h: Harness) -> dict[str, dict[str, int]]:
            await h.poll("paid")
            return await h.settle()

        assert run(config, script)["paid"]["extracted"] == 2
        [mine] = site.hits_of(local.path)
        assert mine.headers.get("Cookie") == "session=s3cret-cookie-value"
        assert mine.headers.get("User-Agent") == "PaidReader/2.0"
        [theirs] = other.hits_of(elsewhere.path)
        assert "Cookie" not in theirs.headers  # another origin never gets the credentials
        assert theirs.headers.get("User-Agent") == "PaidReader/2.0"
    finally:
        other.close()
