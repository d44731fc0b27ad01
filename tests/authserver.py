"""A loopback feed server whose paths can demand a credential, as private feeds do.

`guard(path, header, value)` makes `path` answer 401 unless the request carries `header`
with exactly `value` (an Authorization, a Cookie, a custom header, a Proxy-Authorization).
Every request is recorded with its headers by FeedServer, so a test can check what reached
which origin. Start one on 127.0.0.2 for a second origin on the same machine.
"""

from __future__ import annotations

import ssl

from aiohttp import web
from feedserver import FeedServer, _Route

__all__ = ["GuardedServer"]


class GuardedServer(FeedServer):
    """FeedServer plus per-path credential checks."""

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self._guards: dict[str, tuple[str, str]] = {}
        super().__init__(host, ssl_context)

    def guard(self, path: str, header: str, value: str) -> None:
        with self._lock:
            self._guards["/" + path.lstrip("/")] = (header, value)

    async def _respond(self, request: web.Request, route: _Route) -> web.StreamResponse:
        with self._lock:
            guard = self._guards.get(request.path)
        if guard is not None and request.headers.get(guard[0]) != guard[1]:
            status = 407 if guard[0].lower() == "proxy-authorization" else 401
            return web.Response(status=status, text="credentials required\n")
        return await super()._respond(request, route)
