"""HTTP fetching with aiohttp: conditional GET, timeouts, a body cap, bounded concurrency. I/O.

Returns Fetched (a 200 read in full) or NotModified (a 304); every failure — an HTTP error
status, a timeout, DNS, a refused connection, too many redirects, a body over the cap —
becomes a FetchError naming the feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from ..config.credentials import Origin, RequestOptions, origin_of
from ..config.secret import redact, strip_userinfo
from ..errors import FetchError
from ..models import Fetched, NotModified, Validators

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/feed+json, application/json;q=0.8, application/xml;q=0.8, "
    "text/xml;q=0.8, */*;q=0.5"
)
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


async def _on_headers_sent(
    _session: aiohttp.ClientSession,
    ctx: Any,
    _params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    sent = ctx.trace_request_ctx  # a fetch's `sent`, on its first hop only
    if sent is not None:
        sent()


# One for every session: a request given a `sent` callback hears when its headers are out.
_HEADERS_SENT = aiohttp.TraceConfig()
_HEADERS_SENT.on_request_headers_sent.append(_on_headers_sent)
_HEADERS_SENT.freeze()
log = logging.getLogger("aggregator.fetch")


class Fetcher:
    """One aiohttp session shared by every poll, with a global limit on fetches in flight.

    Use as an async context manager: the session lives as long as the daemon (or CLI run).
    """

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: float,
        max_body_size: int,
        max_concurrency: int,
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.max_concurrency = max_concurrency
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_concurrency)
        self._insecure: set[str] = set()  # feeds whose tls_verify = false was logged

    async def __aenter__(self) -> Fetcher:
        connect = min(10.0, self.timeout)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self.timeout, sock_connect=connect, sock_read=self.timeout
            ),
            connector=aiohttp.TCPConnector(limit=self.max_concurrency, ttl_dns_cache=300),
            headers={"User-Agent": self.user_agent, "Accept": ACCEPT},
            # Our own cookie jar would leak state between feeds of one host; feeds need none.
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[_HEADERS_SENT],
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        feed: str,
        url: str,
        validators: Validators | None = None,
        options: RequestOptions | None = None,
        *,
        accept: str = "",
        sent: Callable[[], None] | None = None,
    ) -> Fetched | NotModified:
        """GET `url`, sending back the validators of the last 200 exactly as they came, and a
        private feed's `options` (credentials only to its own origin, see credentials.py).
        `accept` replaces the feed formats' Accept header (article pages ask for HTML).
        `sent` is called once: when the first request's headers are written, or when the
        fetch ends before that (the host's pacing waits for it, see HostGates.pace)."""
        try:
            return await self._fetch(feed, url, validators, options, accept, sent)
        finally:
            if sent is not None:
                sent()

    async def _fetch(
        self,
        feed: str,
        url: str,
        validators: Validators | None,
        options: RequestOptions | None,
        accept: str,
        sent: Callable[[], None] | None,
    ) -> Fetched | NotModified:
        if self._session is None:
            raise RuntimeError("Fetcher used outside 'async with'")
        headers = {"Accept": accept} if accept else {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        if options is not None and not options.tls_verify and feed not in self._insecure:
            self._insecure.add(feed)
            log.warning(
                "feed %s: TLS certificates of %s are not verified (tls_verify = false)",
                feed,
                "{}://{}:{}".format(*options.origin),
            )
        async with self._slots:
            started = time.monotonic()
            try:
                return await self._get(feed, url, headers, started, options, sent)
            except FetchError:
                raise
            except TimeoutError as e:
                raise FetchError(feed, f"timed out after {self.timeout:g}s") from e
            except aiohttp.ClientConnectorError as e:
                raise FetchError(feed, redact(f"cannot connect: {e.os_error or e}")) from e
            except aiohttp.InvalidURL as e:
                raise FetchError(feed, redact(f"invalid URL: {e}")) from e
            except aiohttp.ClientError as e:
                # Library messages may quote a URL (a proxy's, with its password): blank it.
                raise FetchError(feed, redact(f"{type(e).__name__}: {e}")) from e

    async def _get(
        self,
        feed: str,
        url: str,
        headers: dict[str, str],
        started: float,
        options: RequestOptions | None,
        sent: Callable[[], None] | None = None,
    ) -> Fetched | NotModified:
        """Follow redirects ourselves, so that each hop gets the credentials its origin may."""
        assert self._session is not None
        hops: list[tuple[int, str]] = []  # (status, URL) of each redirect answered
        current = url
        while True:
            extra: dict[str, Any] = {}
            sent_headers = headers
            if options is not None:
                sent_headers = {**headers, **options.headers_for(current)}
                if options.proxy:
                    extra["proxy"] = options.proxy
                if not options.verify_for(current):
                    extra["ssl"] = False
            async with self._session.get(
                current,
                headers=sent_headers,
                allow_redirects=False,
                # The first hop's headers written: the host's next request may be paced from now.
                trace_request_ctx=sent if not hops else None,
                **extra,
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECTS and location:
                    hops.append((resp.status, current))
                    current = self._next_hop(feed, resp, location, hops)
                    continue
                return await self._read(feed, resp, hops, started, options)

    def _next_hop(
        self, feed: str, resp: aiohttp.ClientResponse, location: str, hops: list[tuple[int, str]]
    ) -> str:
        try:
            target = resp.url.join(URL(location))
        except ValueError as e:
            raise FetchError(feed, "redirect to an invalid URL", resp.status) from e
        if target.scheme not in ("http", "https"):
            raise FetchError(feed, "redirect to a non-http(s) URL", resp.status)
        # user:password@ in a Location is not ours to send, nor to store or show.
        nxt = strip_userinfo(str(target))
        if any(nxt == seen for _, seen in hops):
            raise FetchError(feed, f"redirect loop: {hops[-1][1]} redirects back")
        if len(hops) > MAX_REDIRECTS:
            raise FetchError(feed, f"more than {MAX_REDIRECTS} redirects")
        return nxt

    async def _read(
        self,
        feed: str,
        resp: aiohttp.ClientResponse,
        hops: list[tuple[int, str]],
        started: float,
        options: RequestOptions | None,
    ) -> Fetched | NotModified:
        final_url = str(resp.url)
        response_headers = {k: v for k, v in resp.headers.items()}
        moved = permanent_target(hops, final_url)
        if resp.status == 304:
            return NotModified(final_url, response_headers, time.monotonic() - started, moved)
        if resp.status != 200:
            reason = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
            if resp.status in (401, 403) and options and options.credentials_withheld(final_url):
                reason += (
                    f" from {origin_name(final_url)}: the feed's credentials are sent only to "
                    f"{origin_name(options.origin)}"
                )
            raise FetchError(
                feed,
                reason,
                resp.status,
                resp.headers.get("Retry-After") if resp.status in (429, 503) else None,
            )
        declared = resp.content_length
        if declared is not None and declared > self.max_body_size:
            raise FetchError(
                feed, f"body of {declared} bytes is over the {self.max_body_size} limit", 200
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > self.max_body_size:
                raise FetchError(feed, f"body is over the {self.max_body_size} bytes limit", 200)
            chunks.append(chunk)
        return Fetched(
            url=final_url,
            status=resp.status,
            body=b"".join(chunks),
            headers=response_headers,
            validators=Validators(
                etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"),
            ),
            elapsed=time.monotonic() - started,
            permanent_url=moved,
        )


def permanent_target(hops: Sequence[tuple[int, str]], final_url: str) -> str | None:
    """Where the leading run of 301/308 redirects of a chain of (status, URL) hops leads.

    Each hop's target is the URL of the next one. The run stops at the first other status
    (a 302 or 307 is temporary: the feed keeps its URL), as feed readers such as lemon24/reader do.
    """
    if not hops:
        return None  # the common case, on every poll: no redirect at all
    urls = [*(u for _, u in hops), final_url]
    target = None
    for i, (status, _) in enumerate(hops):
        if status not in (301, 308):
            break
        target = urls[i + 1]
    return target


def origin_name(url_or_origin: str | Origin) -> str:
    """scheme://host:port, for messages: never a path, query or user name."""
    scheme, host, port = (
        origin_of(url_or_origin) if isinstance(url_or_origin, str) else url_or_origin
    )
    return f"{scheme}://{host}:{port}"
