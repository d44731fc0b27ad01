"""HTTP caching for everything the server sends: validators, 304, gzip, HEAD, Cache-Control.

A `Cached` body is compressed once, when it is made, so serving it costs no CPU per request.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web

GZIP_MIN_SIZE = 512  # smaller bodies gain nothing from compression


@dataclass(frozen=True, slots=True)
class Cached:
    """A response body with its validators, and its gzip form when that is worth sending."""

    body: bytes
    gzipped: bytes | None
    etag: str  # strong, quoted; the gzip form is served under its own tag
    last_modified: datetime | None
    content_type: str
    last_modified_http: str | None = None  # formatted once, not per request


def make_cached(
    body: bytes, content_type: str, last_modified: datetime | None, etag: str | None = None
) -> Cached:
    """Wrap a body for serving: its ETag (a hash of the body unless given) and gzip form."""
    tag = etag or '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    # mtime=0 keeps the compressed bytes, and so their ETag, the same across renders.
    gz = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_MIN_SIZE else None
    http_date = (
        format_datetime(last_modified.astimezone(UTC), usegmt=True) if last_modified else None
    )
    return Cached(body, gz, tag, last_modified, content_type, http_date)


def _gzip_tag(etag: str) -> str:
    return etag[:-1] + '-gzip"'


def accepts_gzip(request: web.BaseRequest) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().removeprefix("q=")
            return not (params and q.replace(".", "", 1).isdigit() and float(q) == 0)
    return False


def not_modified(request: web.BaseRequest, etags: tuple[str, ...], last: datetime | None) -> bool:
    """RFC 9110: If-None-Match decides when present (weak comparison); else If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or any(tag in tags for tag in etags)
    ims = request.headers.get("If-Modified-Since")
    if ims and last is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return last.replace(microsecond=0) <= since
    return False


def respond(
    request: web.BaseRequest,
    cached: Cached,
    cache_control: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Answer a GET or HEAD with `cached`: 304 when the client's copy is current, gzip when the
    client accepts it. aiohttp sends no body for HEAD but keeps Content-Length."""
    gz = cached.gzipped is not None and accepts_gzip(request)
    out = {
        "ETag": _gzip_tag(cached.etag) if gz else cached.etag,
        "Cache-Control": cache_control,
        "Vary": "Accept, Accept-Encoding",
        **(headers or {}),
    }
    if cached.last_modified_http is not None:
        out["Last-Modified"] = cached.last_modified_http
    if not_modified(request, (cached.etag, _gzip_tag(cached.etag)), cached.last_modified):
        return web.Response(status=304, headers=out)
    out["Content-Type"] = cached.content_type
    if gz:
        out["Content-Encoding"] = "gzip"
        return web.Response(body=cached.gzipped, headers=out)
    return web.Response(body=cached.body, headers=out)
