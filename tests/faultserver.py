"""A loopback fault server: the FeedServer plus what polling politeness is checked against.

Each FaultServer is one host (its own port on 127.0.0.1). On top of FeedServer's routes (files,
bare statuses with any headers such as Retry-After, redirects of any status, slow answers) it
serves bodies that trickle in slowly, and it keeps its own log of every request with:

- the *simulated* time it arrived at, read from the `clock` the test gives (the injected clock
  of the poller), so a simulated hour can be checked without waiting for it;
- how many requests were in flight on this host when it arrived, counted on the server side,
  so a concurrency limit is checked where it matters, not where it is enforced.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from aiohttp import web
from feedserver import FeedServer, _Route

__all__ = ["FaultServer", "Hit", "fault_server"]


@dataclasses.dataclass(frozen=True)
class Hit:
    path: str
    at: datetime | None  # simulated time of arrival (None without a clock)
    in_flight: int  # requests in flight on this host, this one included
    headers: dict[str, str]


class FaultServer(FeedServer):
    """One loopback host with a request log in simulated time and an in-flight counter."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._drips: dict[str, tuple[bytes, int, float]] = {}
        super().__init__()

    def serve_drip(
        self, path: str, body: bytes, chunks: int = 4, pause: float = 0.05, content_type: str = ""
    ) -> None:
        """Send `body` in `chunks` pieces with `pause` seconds between them: a slow body."""
        key = "/" + path.lstrip("/")
        with self._lock:
            self._drips[key] = (body, chunks, pause)
            self._routes[key] = _Route(
                kind="drip", content_type=content_type or "application/rss+xml"
            )

    def hits_of(self, path: str) -> list[Hit]:
        key = "/" + path.lstrip("/")
        with self._lock:
            return [h for h in self.hits if h.path == key]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.hits.append(
                Hit(
                    request.path,
                    self.clock() if self.clock is not None else None,
                    self.in_flight,
                    dict(request.headers),
                )
            )
        try:
            return await super()._handle(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond_bytes(self, request: web.Request, route: _Route) -> web.Response:
        response = super()._respond_bytes(request, route)
        if response.status == 304:
            # RFC 9110 §15.4.5: a 304 carries the Cache-Control and Expires a 200 would have.
            for name, value in route.headers:
                if name.lower() in ("cache-control", "expires"):
                    response.headers[name] = value
        return response

    async def _respond(self, request: web.Request, route: _Route) -> web.StreamResponse:
        if route.kind != "drip":
            return await super()._respond(request, route)
        with self._lock:
            body, chunks, pause = self._drips[request.path]
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = route.content_type or "application/rss+xml"
        response.content_length = len(body)
        await response.prepare(request)
        size = -(-len(body) // chunks)
        for i in range(0, len(body), size):
            await response.write(body[i : i + size])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    try:
        yield server
    finally:
        server.close()
