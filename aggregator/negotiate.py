"""What the server reads from a request and writes as JSON, without I/O: Accept negotiation
(HTML or JSON), ?page= and ?limit=, and a feed's status document."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from .models import FeedStatus
from .outputs.plan import MAX_PAGE_SIZE


def feed_json(state: FeedStatus) -> dict[str, Any]:
    """One feed of /status.json: its state, times in ISO 8601."""

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


def dumps(obj: Any) -> str:
    """JSON for people as well as machines: indented, non-ASCII kept."""
    return json.dumps(obj, indent=2, ensure_ascii=False)


def paging(request: web.Request) -> tuple[int, int | None]:
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


def prefers_html(accept: str) -> bool:
    """True when a client (a browser) ranks HTML above JSON; clients that accept anything
    equally (curl's */*) or send no Accept keep getting JSON, as before."""
    html = _quality(accept, ("text/html", "application/xhtml+xml"))
    return html > 0 and html > _quality(accept, ("application/json", "application/*", "*/*"))
