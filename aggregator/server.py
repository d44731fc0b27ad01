"""aiohttp.web: outputs and pages served from a render cache with ETag/304, gzip and HEAD;
health, status (HTML or JSON) and Prometheus metrics.

Outputs are served from the render cache (rendercache.py): rendered when the store changed,
off the event loop, as cached bytes otherwise. Pages that change with every poll (the index,
/status) are rendered per request, on a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from aiohttp import web

from .config.database import Database
from .config.resolved import Config, Output
from .health import FAILING, health_doc
from .metrics import Metrics
from .models import FeedStatus, OutputFormat
from .negotiate import dumps, feed_json, paging, prefers_html
from .nodes import NODE_LIVE, nodes_view
from .outputs.httpcache import Cached, make_cached, respond
from .outputs.pages import (
    NodesShown,
    OutputLink,
    OutputStatus,
    render_index,
    render_status_page,
)
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
from .outputs.tokens import is_admin, may_read, presented, token_query, visible_outputs
from .rendercache import RenderCache
from .store.protocol import Store
from .store.search import to_fts
from .store.threads import StoreThreads

FORMATS: tuple[OutputFormat, ...] = ("atom", "rss", "json")
HTML = "text/html; charset=utf-8"
log = logging.getLogger("aggregator.server")
# Without the admin_token: how a browser is asked for it (any user name, the token as password).
ADMIN_CHALLENGE = {"WWW-Authenticate": 'Basic realm="aggregator admin", charset="UTF-8"'}
# A private output's page links out to the entries' sites: its URL (with the token) must not
# go along as the Referer.
PRIVATE_HEADERS = {"Referrer-Policy": "no-referrer"}


def _token(request: web.Request) -> str | None:
    return presented(request.query, request.headers)


def database_json(database: Database) -> dict[str, str]:
    """Which store the daemon runs on, as /healthz and /status show it: never a password."""
    return {"kind": database.kind, "name": database.display}


@dataclass(eq=False, repr=False)
class OutputServer:
    """The HTTP face of the daemon. `config` and `generation` are read at each request, so a
    new config or a store write is picked up without restarting the server."""

    store: StoreThreads
    config: Callable[[], Config]
    generation: InitVar[Callable[[], int]]  # read by the render cache only
    healthy: Callable[[], bool]
    metrics: Metrics
    reload_status: Callable[[], dict[str, Any] | None] = lambda: None
    config_loaded: Callable[[], datetime | None] = lambda: None
    role: str = "all"  # the process's role (daemon.ROLES), shown in /healthz
    plans: InitVar[PlanCache | None] = None
    node_id: str | None = None  # this process's row in the nodes table (marked on /status)
    renders: RenderCache = field(init=False)

    def __post_init__(self, generation: Callable[[], int], plans: PlanCache | None) -> None:
        self.renders = RenderCache(self.store, self.config, generation, self.metrics, plans)

    def app(self, outputs: bool = True) -> web.Application:
        """The routes; without `outputs` (a poller) only /healthz and /metrics."""
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_handler)
        if outputs:
            app.router.add_get("/", self.index)
            app.router.add_get("/outputs/{name}.{fmt}", self.output)
            app.router.add_get("/status", self.status)
            app.router.add_get("/status.json", self.status_json)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.renders.close()

    async def rendered(
        self, name: str, fmt: ServedFormat, page: int = 1, per_page: int | None = None
    ) -> Rendered:
        """The output as of the current store generation (what the WebSub notifier compares);
        see RenderCache.rendered."""
        return await self.renders.rendered(name, fmt, page, per_page)

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
        page, per_page = paging(request)
        cache_control, headers = self._output_headers(config, name, fmt)
        if fmt == "html" and ("q" in request.query or "source" in request.query):
            searched = await self._searched(request, config, name)
            scope = "private, no-cache" if found.token is not None else "no-cache"
            return respond(request, searched, scope, headers)
        try:
            _, cached = await self.renders.served(name, fmt, page, per_page)
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

    async def _feed_states(self) -> list[FeedStatus]:
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
        body["role"] = self.role
        status = 200 if ok else 503
        if not is_admin(self.config(), _token(request)):
            return web.json_response({"status": body["status"]}, status=status)
        body["database"] = database_json(self.config().aggregator.database)
        return web.json_response(body, status=status, dumps=dumps)

    async def _status_doc(self, request: web.Request) -> dict[str, Any]:
        feeds = {s.name: feed_json(s) for s in await self._feed_states()}
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
        now = datetime.now(UTC)
        live = await self.store.read(lambda s: s.nodes(now - NODE_LIVE))
        nodes, warning = nodes_view(live, now, self.node_id)
        return {
            "database": database_json(config.aggregator.database),
            "summary": self.metrics.board.counts(),
            "config_loaded": loaded.isoformat(timespec="seconds") if loaded else None,
            "feeds": feeds,
            "outputs": outputs,
            "reload": self.reload_status(),
            "nodes": nodes,
            "nodes_warning": warning,
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
        if not prefers_html(request.headers.get("Accept", "")):
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
                base,
                doc["feeds"],
                datetime.now(UTC),
                outputs,
                doc["reload"],
                loaded,
                NodesShown(doc["nodes"], doc["nodes_warning"]),
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
            lambda: make_cached(dumps(doc).encode(), "application/json; charset=utf-8", None)
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
