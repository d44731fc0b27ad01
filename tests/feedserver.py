"""A loopback HTTP server that serves feed fixtures to tests.

The server runs aiohttp in a background thread with its own event loop and listens on
127.0.0.1 on a free port.  Tests configure it from their own thread (every method is
thread-safe): each configured path maps to a route, and one catch-all handler answers
every request from that table.  Unknown paths get 404.

Usage from a test module or conftest (``tests/`` is on ``sys.path`` under pytest's default
``prepend`` import mode, because it has no ``__init__.py``)::

    from feedserver import FeedServer, feed_server  # noqa: F401

    def test_poll(feed_server: FeedServer) -> None:
        feed_server.serve_file("/feed.xml", "rss20.xml")
        url = feed_server.url("/feed.xml")

Routes created by ``serve_bytes``/``serve_file`` behave like a static file server: a strong
``ETag`` (hash of the body) and a ``Last-Modified`` date, conditional requests answered with
``304 Not Modified`` (``If-None-Match`` wins over ``If-Modified-Since``, as in RFC 9110), and
gzip when the client sends ``Accept-Encoding: gzip``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["DATA_DIR", "FeedServer", "RequestRecord", "feed_server", "guess_content_type"]

DATA_DIR = Path(__file__).resolve().parent / "data"

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_CHUNK_SIZE = 64 * 1024

_MINIMAL_FEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Slow feed</title><link>http://127.0.0.1/</link>
<description>Answered late on purpose.</description>
<item><title>Late entry</title><link>http://127.0.0.1/late</link><guid>slow-1</guid>
<pubDate>Mon, 02 Oct 2023 08:00:00 GMT</pubDate><description>Late.</description></item>
</channel></rss>
"""

_HUGE_PREFIX = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
    b"<title>Huge feed</title><link>http://127.0.0.1/huge</link>"
    b"<description>An endless stream of entries.</description>\n"
)
_HUGE_ITEM = (
    b"<item><title>Filler entry</title><link>http://127.0.0.1/huge/filler</link>"
    b"<description>&lt;p&gt;Filler text to make the document large.&lt;/p&gt;</description>"
    b"</item>\n"
)
_HUGE_SUFFIX = b"</channel></rss>\n"


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server received, and the status it answered with.

    A request is logged when its answer is ready, so a request still sleeping in a slow
    route is not listed yet; one cut short by ``close()`` is logged with status 500.
    """

    path: str  # URL path without the query string, e.g. "/feed.xml"
    query_string: str  # raw query string ("" when there is none)
    method: str
    headers: CIMultiDictProxy[str]  # read-only, case-insensitive snapshot (dict-like)
    status: int
    time: float  # time.time() when the request arrived
    monotonic: float  # time.monotonic() when the request arrived
    finished: float = 0.0  # time.monotonic() when its answer was ready (or it was cut short)


@dataclasses.dataclass(frozen=True)
class _Route:
    kind: str  # "bytes" | "status" | "huge" | "redirect"
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    last_modified: datetime | None = None
    size: int = 0
    delay: float = 0.0


def guess_content_type(filename: str, body: bytes) -> str:
    """Content type for a fixture file, by extension (and sniffing ``<feed`` for .xml)."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".xml":
        head = body[:2048]
        if b"<feed" in head:
            return "application/atom+xml"
        if b"<rdf:RDF" in head:
            return "application/rdf+xml"
        return "application/rss+xml"
    if suffix == ".rdf":
        return "application/rdf+xml"
    if suffix == ".json":
        return "application/feed+json"
    if suffix in {".html", ".htm"}:
        return "text/html; charset=utf-8"
    if suffix == ".atom":
        return "application/atom+xml"
    if suffix == ".rss":
        return "application/rss+xml"
    return "application/octet-stream"


def _norm(path: str) -> str:
    return "/" + path.lstrip("/")


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in {"gzip", "x-gzip"}:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def _etag_matches(if_none_match: str, etag: str) -> bool:
    # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x".
    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    candidates = [c for c in (t.strip() for t in if_none_match.split(",")) if c]
    return any(c == "*" or opaque(c) == opaque(etag) for c in candidates)


def _not_modified_since(if_modified_since: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified.replace(microsecond=0) <= since


def _huge_chunks(size: int) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes of RSS, well-formed whenever size fits prefix+suffix."""
    remaining = size
    head = _HUGE_PREFIX[:remaining]
    remaining -= len(head)
    if head:
        yield head
    items_per_chunk = max(1, _CHUNK_SIZE // len(_HUGE_ITEM))
    block = _HUGE_ITEM * items_per_chunk
    tail_room = len(_HUGE_SUFFIX)
    while remaining - tail_room >= len(block):
        yield block
        remaining -= len(block)
    while remaining - tail_room >= len(_HUGE_ITEM):
        yield _HUGE_ITEM
        remaining -= len(_HUGE_ITEM)
    if remaining > tail_room:
        yield b" " * (remaining - tail_room)
        remaining = tail_room
    if remaining > 0:
        yield _HUGE_SUFFIX[:remaining]


class FeedServer:
    """Loopback HTTP server for tests; see the module docstring."""

    base_url: str

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        # Another loopback address (127.0.0.2) is another origin on the same machine; with an
        # ssl_context the server speaks HTTPS.
        self.host = host
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._log: list[RequestRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._port = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="FeedServer", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("FeedServer did not start in time")
        if self._startup_error is not None:
            self._thread.join(_STOP_TIMEOUT)
            raise RuntimeError("FeedServer failed to start") from self._startup_error
        self.base_url = f"{'https' if ssl_context else 'http'}://{host}:{self._port}"

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def serve_file(
        self,
        path: str,
        filename: str,
        content_type: str | None = None,
        *,
        etag: bool | str = True,
        last_modified: bool | datetime = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``tests/data/<filename>`` (read now) at ``path``."""
        body = (DATA_DIR / filename).read_bytes()
        if content_type is None:
            content_type = guess_content_type(filename, body)
        self.serve_bytes(
            path,
            body,
            content_type,
            etag=etag,
            last_modified=last_modified,
            headers=headers,
        )

    def serve_bytes(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/xml",
        *,
        etag: bool | str = True,
        last_modified: bool | datetime = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``body`` at ``path``, replacing whatever the path served before.

        ``etag``: True for a strong ETag computed from the body, False for none, or a string
        sent verbatim (quote it yourself, e.g. ``'W/"v1"'``).
        ``last_modified``: True for "now" (strictly later than the date this path had before,
        so an edit within the same second still counts as a modification), False for none,
        or an explicit datetime (naive means UTC).
        """
        key = _norm(path)
        tag: str | None
        if etag is True:
            tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        elif etag is False:
            tag = None
        else:
            tag = etag
        with self._lock:
            modified: datetime | None
            if last_modified is True:
                modified = datetime.now(UTC).replace(microsecond=0)
                previous = self._routes.get(key)
                if previous is not None and previous.last_modified is not None:
                    modified = max(modified, previous.last_modified + timedelta(seconds=1))
            elif last_modified is False:
                modified = None
            else:
                modified = last_modified
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                modified = modified.astimezone(UTC).replace(microsecond=0)
            self._routes[key] = _Route(
                kind="bytes",
                body=bytes(body),
                content_type=content_type,
                headers=tuple((headers or {}).items()),
                etag=tag,
                last_modified=modified,
            )

    def serve_status(
        self,
        path: str,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer ``path`` with a bare status (e.g. 404, 410, 429 + Retry-After, 500)."""
        with self._lock:
            self._routes[_norm(path)] = _Route(
                kind="status",
                status=status,
                body=bytes(body),
                headers=tuple((headers or {}).items()),
            )

    def serve_slow(self, path: str, delay: float) -> None:
        """Sleep ``delay`` seconds before answering ``path``.

        Whatever the path already serves is kept and just delayed; an unconfigured path
        serves a one-entry RSS feed.
        """
        key = _norm(path)
        with self._lock:
            route = self._routes.get(key)
            if route is None:
                route = _Route(
                    kind="bytes",
                    body=_MINIMAL_FEED,
                    content_type="application/rss+xml",
                    etag='"' + hashlib.sha256(_MINIMAL_FEED).hexdigest()[:32] + '"',
                    last_modified=datetime.now(UTC).replace(microsecond=0),
                )
            self._routes[key] = dataclasses.replace(route, delay=delay)

    def serve_huge(self, path: str, size: int) -> None:
        """Stream exactly ``size`` bytes of RSS, chunked, generated on the fly."""
        with self._lock:
            self._routes[_norm(path)] = _Route(
                kind="huge", size=size, content_type="application/rss+xml"
            )

    def serve_redirect(self, path: str, target_path: str, status: int = 301) -> None:
        """Redirect ``path`` to ``target_path`` (a path on this server, or an absolute URL)."""
        if target_path.startswith(("http://", "https://")):
            location = target_path
        else:
            location = self.url(target_path)
        with self._lock:
            self._routes[_norm(path)] = _Route(
                kind="redirect", status=status, headers=(("Location", location),)
            )

    def remove(self, path: str) -> None:
        """Forget ``path`` (it answers 404 again)."""
        with self._lock:
            self._routes.pop(_norm(path), None)

    def requests(self, path: str | None = None) -> list[RequestRecord]:
        """Requests received so far (optionally only those for ``path``), oldest first."""
        with self._lock:
            log = list(self._log)
        if path is None:
            return log
        key = _norm(path)
        return [r for r in log if r.path == key]

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def close(self) -> None:
        """Stop the server (in well under a second) and join its thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError("FeedServer thread did not stop")

    def __enter__(self) -> FeedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ server thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - reported to the constructor
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                raise

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, 0, ssl_context=self._ssl)
            await site.start()
            address = runner.addresses[0]
            self._port = int(address[1])
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived, arrived_mono = time.time(), time.monotonic()
        with self._lock:
            route = self._routes.get(request.path)
        status = 500
        try:
            if route is None:
                status = 404
                return web.Response(status=404, text="404: Not Found")
            if route.delay > 0:
                await asyncio.sleep(route.delay)
            response = await self._respond(request, route)
            status = response.status
            return response
        finally:
            record = RequestRecord(
                path=request.path,
                query_string=request.query_string,
                method=request.method,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                status=status,
                time=arrived,
                monotonic=arrived_mono,
                finished=time.monotonic(),
            )
            with self._lock:
                self._log.append(record)

    async def _respond(self, request: web.Request, route: _Route) -> web.StreamResponse:
        if route.kind == "status" or route.kind == "redirect":
            response = web.Response(status=route.status, body=route.body or None)
            for name, value in route.headers:
                response.headers[name] = value
            return response
        if route.kind == "huge":
            return await self._stream_huge(request, route)
        return self._respond_bytes(request, route)

    def _respond_bytes(self, request: web.Request, route: _Route) -> web.Response:
        validators: dict[str, str] = {}
        if route.etag is not None:
            validators["ETag"] = route.etag
        if route.last_modified is not None:
            validators["Last-Modified"] = _http_date(route.last_modified)
        if request.method in {"GET", "HEAD"}:
            inm = request.headers.get("If-None-Match")
            ims = request.headers.get("If-Modified-Since")
            not_modified = False
            if inm is not None:
                not_modified = route.etag is not None and _etag_matches(inm, route.etag)
            elif ims is not None and route.last_modified is not None:
                not_modified = _not_modified_since(ims, route.last_modified)
            if not_modified:
                response = web.Response(status=304)
                response.headers.update(validators)
                return response
        response = web.Response(status=route.status, body=route.body)
        if route.content_type:
            response.headers["Content-Type"] = route.content_type
        response.headers.update(validators)
        response.headers["Vary"] = "Accept-Encoding"
        for name, value in route.headers:
            response.headers[name] = value
        if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _stream_huge(self, request: web.Request, route: _Route) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = route.content_type or "application/rss+xml"
        response.enable_chunked_encoding()
        if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            for chunk in _huge_chunks(route.size):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up, e.g. it hit its own size limit
        return response


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A running FeedServer, closed after the test."""
    server = FeedServer()
    try:
        yield server
    finally:
        server.close()
