"""aiohttp.web: outputs and pages served from a render cache with ETag/304, gzip and HEAD;
health, status (HTML or JSON) and Prometheus metrics.

Outputs are rendered from the store only when the store generation changed since the last
render (on render threads, never on the event loop), and served as cached bytes otherwise; the
bytes of the last render keep being served while the next one is made.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from aiohttp import web

from .config.resolved import Config, Output
from .health import FAILING, health_doc
from .metrics import Metrics
from .models import FeedState, OutputFormat
from .outputs.httpcache import Cached, make_cached, respond
from .outputs.pages import OutputLink, OutputStatus, render_index, render_status_page
from .outputs.plan import (
    MAX_PAGE_SIZE,
    SERVED_FORMATS,
    Narrow,
    PageNotFound,
    PlanCache,
    Rendered,
    ServedFormat,
    render_output,
)
from .outputs.publish import CONTENT_TYPES
from .outputs.tokens import is_admin, may_read, presented, token_query, visible_outputs
from .store.protocol import Store
from .store.search import to_fts
from .store.threads import StoreThreads

FORMATS: tuple[OutputFormat, ...] = ("atom", "rss", "json")
SERVED_TYPES: dict[ServedFormat, str] = {
    "atom": CONTENT_TYPES["atom"],
    "rss": CONTENT_TYPES["rss"],
    "json": CONTENT_TYPES["json"],
    "html": "text/html; charset=utf-8",
    "opml": "text/x-opml; charset=utf-8",
}
HTML = "text/html; charset=utf-8"
CACHE_LIMIT = 512  # rendered pages kept; ?page= and ?limit= can ask for many
RENDER_THREADS = 4  # outputs rendered at once, each on a thread of the renders' own
log = logging.getLogger("aggregator.server")
# Without the admin_token: how a browser is asked for it (any user name, the token as password).
ADMIN_CHALLENGE = {"WWW-Authenticate": 'Basic realm="aggregator admin", charset="UTF-8"'}
# A private output's page links out to the entries' sites: its URL (with the token) must not
# go along as the Referer.
PRIVATE_HEADERS = {"Referrer-Policy": "no-referrer"}


def _token(request: web.Request) -> str | None:
    return presented(request.query, request.headers)


def _feed_json(state: FeedState) -> dict[str, Any]:
    def ts(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    return {
        "url": state.url,
        "title": state.title,
        "status": state.status,
        "http_status": state.http_status,
        "last_poll": ts(state.last_poll),
        "last_ok": ts(state.last_ok),
        "next_poll": ts(state.next_poll),
        "next_reason": state.next_reason,
        "errors": state.error_count,
        "backoff_level": state.backoff_level,
        "failing_since": ts(state.failing_since),
        "last_error": state.last_error,
        "warning": state.warning,
        "entries": state.entry_count,
        "key_mode": state.key_mode,
        "gone": state.gone,
        "redirect_url": state.redirect_url,
        "redirect_count": state.redirect_count,
        "config_hint": state.config_hint,
    }


class OutputServer:
    """The HTTP face of the daemon. `config` and `generation` are read at each request, so a
    new config or a store write is picked up without restarting the server."""

    def __init__(
        self,
        store: StoreThreads,
        config: Callable[[], Config],
        generation: Callable[[], int],
        healthy: Callable[[], bool],
        metrics: Metrics,
        reload_status: Callable[[], dict[str, Any] | None] = lambda: None,
        config_loaded: Callable[[], datetime | None] = lambda: None,
        plans: PlanCache | None = None,
    ) -> None:
        self.config_loaded = config_loaded
        self.store = store
        self.reload_status = reload_status
        self.config = config
        self.generation = generation
        self.healthy = healthy
        self.metrics = metrics
        # An output's plan, shared by the renders of its formats and pages (see plan.py).
        self.plans = plans if plans is not None else PlanCache()
        self._cache: dict[PageKey, tuple[Rendered, Cached]] = {}
        # The render in flight per page, with the config it renders under.
        self._refreshing: dict[PageKey, tuple[Config, asyncio.Task[tuple[Rendered, Cached]]]] = {}
        self._lanes: dict[str, asyncio.Lock] = {}  # one render at a time per output
        self._render_threads = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="render")
        self._config_seen: Config | None = None
        # When this config took effect: the date of what depends only on it (OPML).
        self._config_since = datetime.now(UTC).replace(microsecond=0)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/outputs/{name}.{fmt}", self.output)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/status", self.status)
        app.router.add_get("/status.json", self.status_json)
        app.router.add_get("/metrics", self.metrics_handler)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        for _, task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.to_thread(self._render_threads.shutdown, True, cancel_futures=True)

    def _check_config(self) -> Config:
        config = self.config()
        if config is not self._config_seen:
            # Rules or sources may have changed: nothing cached can be trusted.
            self._cache.clear()
            self._config_seen = config
            self._config_since = datetime.now(UTC).replace(microsecond=0)
        return config

    async def rendered(
        self, name: str, fmt: ServedFormat, page: int = 1, per_page: int | None = None
    ) -> Rendered:
        """The output as of the current store generation: rendered now, or from the cache
        when the store has not changed since (what the WebSub notifier compares)."""
        return (await self._served(name, fmt, page, per_page, fresh=True))[0]

    async def _served(
        self, name: str, fmt: ServedFormat, page: int, per_page: int | None, fresh: bool = False
    ) -> tuple[Rendered, Cached]:
        """The cached body while it is current. After a store change the body cached before
        it is still served (unless `fresh`) while one render brings it up to date in the
        background: a subscriber never waits for a render once the output was rendered once."""
        config = self._check_config()
        key = (name, fmt, page, per_page)
        # The common case, a cache hit, takes no lock: it is the whole cost of serving.
        cached = self._cache.get(key)
        if cached is not None and cached[0].generation >= self.generation():
            self.metrics.cache_hits.inc()
            return cached
        running = self._refreshing.get(key)
        # A render started before a reload is of the old sources, rules and links: whoever
        # asks after the reload waits for one of the new config (it takes the output's lane
        # after the old one), never joins the old.
        if running is not None and running[0] is config:
            task = running[1]
        else:
            task = asyncio.ensure_future(self._refresh(config, key))
            self._refreshing[key] = (config, task)
            task.add_done_callback(functools.partial(self._refreshed, key))
        if cached is not None and not fresh:
            self.metrics.stale_served.inc()
            return cached
        # Shielded: a subscriber who hangs up must not cancel the render others wait for.
        return await asyncio.shield(task)

    def _refreshed(self, key: PageKey, task: asyncio.Task[tuple[Rendered, Cached]]) -> None:
        running = self._refreshing.get(key)
        if running is not None and running[1] is task:
            del self._refreshing[key]
        error = None if task.cancelled() else task.exception()
        if isinstance(error, PageNotFound):
            # The page is past the end now (fewer stories): the next request gets its 404.
            self._cache.pop(key, None)
        elif error is not None:
            # Whoever waited got the error; one served stale must still leave a trace.
            log.error("render of %s failed: %s", key, error)

    async def _refresh(self, config: Config, key: PageKey) -> tuple[Rendered, Cached]:
        name, fmt, page, per_page = key
        # One render at a time per output (its formats and pages share one plan of it), on
        # threads of their own: a slow output holds one of them, never another output's turn.
        async with self._lanes.setdefault(name, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached is not None and cached[0].generation >= self.generation():
                return cached
            since = self._config_since

            def render(store: Store) -> tuple[Rendered, Cached]:
                fresh = render_output(store, config, name, fmt, page, per_page, plans=self.plans)
                # Compressed on the render thread too: gzip of a big body takes most of a
                # second, which on the loop would stall every other request.
                return fresh, make_cached(
                    fresh.body,
                    SERVED_TYPES[fmt],
                    # An OPML follows the config: it dates from when the config took effect.
                    since if fmt == "opml" else fresh.last_modified,
                    fresh.etag,
                )

            entry = await self.store.read(render, self._render_threads)
        self.metrics.renders.labels(fmt).inc()
        if config is self._config_seen:  # a reload meanwhile: this render is of the old rules
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()  # rare (many ?limit= values): re-rendering is the cost
            self._cache[key] = entry
        return entry

    async def output(self, request: web.Request) -> web.StreamResponse:
        name, fmt = request.match_info["name"], request.match_info["fmt"]
        if fmt not in SERVED_FORMATS:
            raise web.HTTPNotFound(
                text=f"unknown format {fmt!r}: use {', '.join(SERVED_FORMATS)}\n"
            )
        config = self.config()
        found = config.outputs.get(name)
        if found is None or not may_read(found, _token(request)):
            # A private output without its token is not there at all: 404, not 403. The check
            # comes first, so no ETag, 304 or body of it reaches anyone without the token.
            raise web.HTTPNotFound(text=f"no output named {name!r}\n")
        page, per_page = _paging(request)
        cache_control, headers = self._output_headers(config, name, fmt)
        if fmt == "html" and ("q" in request.query or "source" in request.query):
            searched = await self._searched(request, config, name)
            scope = "private, no-cache" if found.token is not None else "no-cache"
            return respond(request, searched, scope, headers)
        try:
            _, cached = await self._served(name, fmt, page, per_page)
        except PageNotFound as e:
            raise web.HTTPNotFound(text=f"{e}\n") from e
        return respond(request, cached, cache_control, headers)

    async def _searched(self, request: web.Request, config: Config, name: str) -> Cached:
        """An output page narrowed by the reader's search (?q=) and source (?source=):
        rendered per request on a reader thread, never cached (the space of queries is open)."""
        text = request.query.get("q", "").strip()[:500]
        source = request.query.get("source", "") or None
        known = config.outputs[name].sources
        if source is not None and all(f.name != source for f in known):
            raise web.HTTPBadRequest(text=f"?source=: {name!r} has no source {source!r}\n")
        # Text with nothing searchable in it (only punctuation) matches nothing: '""'.
        query = (to_fts(text) or '""') if text else None
        narrow = Narrow(query=query, source=source, text=text)

        def search(store: Store) -> Cached:
            # The newest matching stories, one page of them: a search narrows, it does not page.
            found = render_output(store, config, name, "html", 1, MAX_PAGE_SIZE, narrow=narrow)
            return make_cached(found.body, HTML, None)  # gzip too, off the loop

        return await self.store.read(search)

    def _output_headers(
        self, config: Config, name: str, fmt: ServedFormat
    ) -> tuple[str, dict[str, str]]:
        """Cache-Control and Link of an output, from what its config worked out at load."""
        output = config.outputs[name]
        private = output.token is not None
        headers = dict(PRIVATE_HEADERS) if private else {}
        if fmt in FORMATS:
            query = token_query(output)
            url = f"{config.aggregator.base_url}/outputs/{name}.{fmt}"
            links = [f'<{url}{"?" + query if query else ""}>; rel="self"']
            if config.aggregator.hub and not private:  # never announced: see websub.py
                links.append(f'<{config.aggregator.hub}>; rel="hub"')
            headers["Link"] = ", ".join(links)
        # "private": no shared cache may keep what only the token's holder may read.
        scope = "private" if private else "public"
        return f"{scope}, max-age={output.max_age}", headers

    async def _feed_states(self) -> list[FeedState]:
        names = list(self.config().feeds)
        return await self.store.read(lambda s: s.feed_states(names))

    def _require_admin(self, request: web.Request) -> None:
        """/status and /metrics of a daemon with an admin_token are for that token only."""
        if not is_admin(self.config(), _token(request)):
            raise web.HTTPUnauthorized(
                text="this page needs the admin token\n", headers=ADMIN_CHALLENGE
            )

    async def healthz(self, request: web.Request) -> web.Response:
        """Cheap and small, for probes every few seconds: read from memory (the feed board
        and the writer's heartbeat), never from or to the database. With an admin_token,
        others learn only whether the daemon is healthy."""
        ok, body = health_doc(
            self.metrics.board, datetime.now(UTC), self.healthy(), self.reload_status()
        )
        status = 200 if ok else 503
        if not is_admin(self.config(), _token(request)):
            return web.json_response({"status": body["status"]}, status=status)
        return web.json_response(body, status=status, dumps=_dumps)

    async def _status_doc(self, request: web.Request) -> dict[str, Any]:
        feeds = {s.name: _feed_json(s) for s in await self._feed_states()}
        # Feeds with full_content: how many of their articles were extracted, failed, pending.
        for name, tally in (await self.store.read(lambda s: s.article_counts())).items():
            if name in feeds:
                feeds[name]["articles"] = tally
        config = self.config()
        token = _token(request)
        # The admin sees that private outputs exist, not their tokens: no URL here has one.
        shown = visible_outputs(config, token, admin=is_admin(config, token))
        outputs = {
            o.name: {f: f"{config.aggregator.base_url}/outputs/{o.name}.{f}" for f in FORMATS}
            for o in shown
        }
        loaded = self.config_loaded()
        return {
            "summary": self.metrics.board.counts(),
            "config_loaded": loaded.isoformat(timespec="seconds") if loaded else None,
            "feeds": feeds,
            "outputs": outputs,
            "reload": self.reload_status(),
        }

    async def _totals(
        self, config: Config, outputs: Sequence[Output] | None = None
    ) -> dict[str, Rendered]:
        """Each output's first page as served (from the render cache when the store has not
        changed): its story count and last update, for the index and the status page."""
        chosen = config.outputs.values() if outputs is None else outputs
        return {o.name: await self.rendered(o.name, "atom") for o in chosen}

    async def status(self, request: web.Request) -> web.Response:
        """HTML for browsers (Accept prefers text/html), the JSON of /status.json otherwise."""
        self._require_admin(request)
        if not _prefers_html(request.headers.get("Accept", "")):
            return await self.status_json(request)
        config = self.config()
        doc = await self._status_doc(request)
        totals = await self._totals(config)
        base = config.aggregator.base_url
        outputs = [
            OutputStatus(
                o.name,
                o.title,
                f"{base}/outputs/{o.name}.html",
                tuple((f, url) for f, url in doc["outputs"][o.name].items()),
                totals[o.name].total,
            )
            for o in config.outputs.values()
            if o.name in doc["outputs"]
        ]
        loaded = self.config_loaded()

        def page() -> Cached:
            body = render_status_page(
                base, doc["feeds"], datetime.now(UTC), outputs, doc["reload"], loaded
            )
            return make_cached(body, HTML, None)

        # Rendered per request (polls change it without changing the store generation), on a
        # thread: with thousands of feeds its template and gzip take long enough to stall the
        # loop. The ETag still spares a reloading browser the body.
        return respond(request, await asyncio.to_thread(page), "no-cache")

    async def status_json(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        doc = await self._status_doc(request)
        # Serialised and compressed on a thread: one object per feed, possibly thousands.
        cached = await asyncio.to_thread(
            lambda: make_cached(_dumps(doc).encode(), "application/json; charset=utf-8", None)
        )
        return respond(request, cached, "no-cache")

    async def index(self, request: web.Request) -> web.Response:
        """The front page: the outputs with their entry counts, last update, sources and how
        many of those fail; private outputs only with their token. Rendered per request from
        cached outputs and the feed board."""
        config = self.config()
        shown = visible_outputs(config, _token(request))
        totals = await self._totals(config, shown)
        board = dict(self.metrics.board.items())
        outputs = []
        for o in shown:
            sources = o.sources
            failing = sum(f.name in board and board[f.name].status in FAILING for f in sources)
            first = totals[o.name]
            outputs.append(
                OutputLink(
                    o.name,
                    o.title,
                    o.description,
                    len(sources),
                    entries=first.total,
                    updated=first.last_modified if first.total else None,
                    failing=failing,
                    query=token_query(o),
                )
            )
        # The template and gzip on a thread, as every page: never CPU on the loop.
        cached = await asyncio.to_thread(
            lambda: make_cached(render_index(config.aggregator.base_url, outputs), HTML, None)
        )
        if any(o.token is not None for o in shown):
            return respond(request, cached, "private, no-cache", PRIVATE_HEADERS)
        return respond(request, cached, "no-cache")

    async def metrics_handler(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        body = prometheus_client.generate_latest(self.metrics.registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


PageKey = tuple[str, ServedFormat, int, int | None]


def _paging(request: web.Request) -> tuple[int, int | None]:
    """?page= (from 1) and ?limit= (entries per page); a bad value is a 400 saying why."""

    def number(key: str, high: int) -> int | None:
        raw = request.query.get(key)
        if raw is None:
            return None
        if not raw.isdigit() or not 1 <= int(raw) <= high:
            raise web.HTTPBadRequest(text=f"?{key}= must be a whole number from 1 to {high}\n")
        return int(raw)

    return number("page", 1_000_000) or 1, number("limit", MAX_PAGE_SIZE)


def _quality(accept: str, wanted: tuple[str, ...]) -> float:
    best = 0.0
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        if kind.lower() not in wanted:
            continue
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def _prefers_html(accept: str) -> bool:
    """True when a client (a browser) ranks HTML above JSON; clients that accept anything
    equally (curl's */*) or send no Accept keep getting JSON, as before."""
    html = _quality(accept, ("text/html", "application/xhtml+xml"))
    return html > 0 and html > _quality(accept, ("application/json", "application/*", "*/*"))
