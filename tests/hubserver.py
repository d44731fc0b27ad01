"""A loopback WebSub hub for tests: records every publish ping it receives.

Runs aiohttp in a background thread on 127.0.0.1 and a free port, like feedserver.FeedServer.
`status` sets what it answers (204 by default, as real hubs do for an accepted ping).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

__all__ = ["Hub", "Ping", "hub"]


@dataclass(frozen=True)
class Ping:
    """One POST the hub received: its form fields, in order, and its User-Agent."""

    form: tuple[tuple[str, str], ...]
    user_agent: str

    @property
    def mode(self) -> str | None:
        return next((v for k, v in self.form if k == "hub.mode"), None)

    @property
    def urls(self) -> list[str]:
        return [v for k, v in self.form if k == "hub.url"]


class Hub:
    def __init__(self) -> None:
        self.status = 204
        self._pings: list[Ping] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hub did not start in time")
        self.url = f"http://127.0.0.1:{self._port}/hub"

    @property
    def pings(self) -> list[Ping]:
        with self._lock:
            return list(self._pings)

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        ping = Ping(
            tuple((k, str(v)) for k, v in form.items()), request.headers.get("User-Agent", "")
        )
        with self._lock:
            self._pings.append(ping)
        return web.Response(status=self.status)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hub", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    try:
        yield h
    finally:
        h.close()
