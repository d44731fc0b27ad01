"""aiohttp.web: output feeds served from a render cache with ETag/304, health, status, metrics.

Outputs are rendered from the store only when the store generation changed since the last
render (on a reader thread, never on the event loop), and served as cached bytes otherwise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import prometheus_client
from aiohttp import web

from .config import Config
from .errors import StoreError
from .models import FeedState, OutputFormat
from .output import Rendered, render_output
from .publish import CONTENT_TYPES
from .store import StoreThreads

FORMATS: tuple[OutputFormat, ...] = ("atom", "rss", "json")


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
        "gone": state.gone,
        "redirect_url": state.redirect_url,
        "redirect_count": state.redirect_count,
        "config_hint": state.config_hint,
    }


class Metrics:
    """Prometheus metrics of one daemon, in a registry of its own (tests start many)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.polls = prometheus_client.Counter(
            "aggregator_polls", "Feed polls by result", ["status"], registry=self.registry
        )
        self.entries = prometheus_client.Counter(
            "aggregator_entries_stored", "Entries written", ["kind"], registry=self.registry
        )
        self.renders = prometheus_client.Counter(
            "aggregator_renders", "Output renders", ["format"], registry=self.registry
        )
        self.cache_hits = prometheus_client.Counter(
            "aggregator_output_cache_hits", "Outputs served from cache", registry=self.registry
        )


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
    ) -> None:
        self.store = store
        self.config = config
        self.generation = generation
        self.healthy = healthy
        self.metrics = metrics
        self._cache: dict[tuple[str, OutputFormat], Rendered] = {}
        self._locks: dict[tuple[str, OutputFormat], asyncio.Lock] = {}
        self._config_seen: Config | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/outputs/{name}.{fmt}", self.output)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/status", self.status)
        app.router.add_get("/metrics", self.metrics_handler)
        return app

    async def rendered(self, name: str, fmt: OutputFormat) -> Rendered:
        config = self.config()
        if config is not self._config_seen:
            # Rules or sources may have changed: nothing cached can be trusted.
            self._cache.clear()
            self._config_seen = config
        key = (name, fmt)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one render per change, however many subscribers ask at once
            cached = self._cache.get(key)
            if cached is not None and cached.generation >= self.generation():
                self.metrics.cache_hits.inc()
                return cached
            fresh = await self.store.read(lambda s: render_output(s, config, name, fmt))
            self.metrics.renders.labels(fmt).inc()
            self._cache[key] = fresh
            return fresh

    async def output(self, request: web.Request) -> web.StreamResponse:
        name, fmt = request.match_info["name"], request.match_info["fmt"]
        if fmt not in FORMATS:
            raise web.HTTPNotFound(text=f"unknown format {fmt!r}: use atom, rss or json\n")
        if not any(o.name == name for o in self.config().outputs):
            raise web.HTTPNotFound(text=f"no output named {name!r}\n")
        r = await self.rendered(name, fmt)
        headers = {
            "ETag": r.etag,
            "Last-Modified": format_datetime(r.last_modified.astimezone(UTC), usegmt=True),
            "Cache-Control": "public, max-age=60",
        }
        if _not_modified(request, r):
            return web.Response(status=304, headers=headers)
        return web.Response(body=r.body, headers={**headers, "Content-Type": CONTENT_TYPES[fmt]})

    async def _feed_states(self) -> list[FeedState]:
        names = [f.name for f in self.config().feeds]
        return await self.store.read(lambda s: s.feed_states(names))

    async def healthz(self, request: web.Request) -> web.Response:
        problems = []
        if not self.healthy():
            problems.append("scheduler is not running")
        try:
            await self.store.write(lambda s: s.check_writable())
        except StoreError as e:
            problems.append(str(e))
        feeds = {s.name: _feed_json(s) for s in await self._feed_states()}
        body = {"status": "fail" if problems else "ok", "problems": problems, "feeds": feeds}
        return web.json_response(body, status=503 if problems else 200, dumps=_dumps)

    async def status(self, request: web.Request) -> web.Response:
        feeds = {s.name: _feed_json(s) for s in await self._feed_states()}
        outputs = {
            o.name: {
                f: f"{self.config().aggregator.base_url}/outputs/{o.name}.{f}" for f in FORMATS
            }
            for o in self.config().outputs
        }
        return web.json_response({"feeds": feeds, "outputs": outputs}, dumps=_dumps)

    async def index(self, request: web.Request) -> web.Response:
        base = self.config().aggregator.base_url
        outputs = [
            {
                "name": o.name,
                "title": o.title,
                **{f: f"{base}/outputs/{o.name}.{f}" for f in FORMATS},
            }
            for o in self.config().outputs
        ]
        return web.json_response({"outputs": outputs}, dumps=_dumps)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(self.metrics.registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def _not_modified(request: web.Request, r: Rendered) -> bool:
    """RFC 9110: If-None-Match decides when present; otherwise If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or r.etag in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return r.last_modified <= since
    return False
