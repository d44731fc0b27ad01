"""HTTP fetching with aiohttp: conditional GET, timeouts, a body cap, bounded concurrency. I/O.

Returns Fetched (a 200 read in full) or NotModified (a 304); every failure — an HTTP error
status, a timeout, DNS, a refused connection, too many redirects, a body over the cap —
becomes a FetchError naming the feed.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

import aiohttp

from .errors import FetchError
from .models import Fetched, NotModified, Validators

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/feed+json, application/json;q=0.8, application/xml;q=0.8, "
    "text/xml;q=0.8, */*;q=0.5"
)
MAX_REDIRECTS = 5
CHUNK = 64 * 1024


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
        self, feed: str, url: str, validators: Validators | None = None, *, accept: str = ""
    ) -> Fetched | NotModified:
        """GET `url`, sending back the validators of the last 200 exactly as they came.
        `accept` replaces the feed formats' Accept header (article pages ask for HTML)."""
        if self._session is None:
            raise RuntimeError("Fetcher used outside 'async with'")
        headers = {"Accept": accept} if accept else {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        async with self._slots:
            started = time.monotonic()
            try:
                return await self._get(feed, url, headers, started)
            except FetchError:
                raise
            except TimeoutError as e:
                raise FetchError(feed, f"timed out after {self.timeout:g}s") from e
            except aiohttp.TooManyRedirects as e:
                urls = [str(r.url) for r in e.history]
                if len(set(urls)) < len(urls):
                    raise FetchError(feed, f"redirect loop: {urls[-1]} redirects back") from e
                raise FetchError(feed, f"more than {MAX_REDIRECTS} redirects") from e
            except aiohttp.ClientConnectorError as e:
                raise FetchError(feed, f"cannot connect: {e.os_error or e}") from e
            except aiohttp.InvalidURL as e:
                raise FetchError(feed, f"invalid URL: {e}") from e
            except aiohttp.ClientError as e:
                raise FetchError(feed, f"{type(e).__name__}: {e}") from e

    async def _get(
        self, feed: str, url: str, headers: dict[str, str], started: float
    ) -> Fetched | NotModified:
        assert self._session is not None
        # aiohttp raises once the count of redirects *reaches* max_redirects; allow MAX_REDIRECTS.
        async with self._session.get(url, headers=headers, max_redirects=MAX_REDIRECTS + 1) as resp:
            final_url = str(resp.url)
            response_headers = {k: v for k, v in resp.headers.items()}
            moved = permanent_target(resp)
            if resp.status == 304:
                return NotModified(final_url, response_headers, time.monotonic() - started, moved)
            if resp.status != 200:
                reason = resp.reason or ""
                raise FetchError(
                    feed,
                    f"HTTP {resp.status} {reason}".rstrip(),
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
                    raise FetchError(
                        feed, f"body is over the {self.max_body_size} bytes limit", 200
                    )
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


def permanent_target(resp: aiohttp.ClientResponse) -> str | None:
    """Where the leading run of 301/308 redirects of a response's chain leads, if any.

    Each hop's target is the URL of the next response. The run stops at the first other status
    (a 302 or 307 is temporary: the feed keeps its URL), as feed readers such as lemon24/reader do.
    """
    if not resp.history:
        return None  # the common case, on every poll: no redirect at all
    urls = [*(str(h.url) for h in resp.history), str(resp.url)]
    target = None
    for i, hop in enumerate(resp.history):
        if hop.status not in (301, 308):
            break
        target = urls[i + 1]
    return target
