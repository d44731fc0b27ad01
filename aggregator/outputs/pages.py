"""Server-rendered HTML pages: the index of outputs, one output's entries, feed health. Pure.

The pages are Jinja2 templates (aggregator/templates/) with autoescape on, so every value
from a feed or the config is escaped by the template; entry HTML arrives already sanitised
(publish.entry_html) and is the only markup passed through, as `Markup`. Python here only
builds the values the templates show: no raw Python value (None, False) reaches a page.
No JavaScript: the pages are plain documents with autodiscovery links and a GET search form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..ingest.fields import plain_text
from ..models import StoredEntry
from ..outputs.extensions import people
from ..outputs.players import media_html
from ..outputs.publish import (
    OutputMeta,
    entry_html,
    entry_link,
    entry_title,
    entry_updated,
    source_home,
)

FEED_TYPES = (
    ("atom", "application/atom+xml", "Atom"),
    ("rss", "application/rss+xml", "RSS"),
    ("json", "application/feed+json", "JSON Feed"),
)
FAILING = ("error", "gone")
# The status summary's order and words; statuses with no feed are left out of the line.
STATUS_LABELS = (
    ("ok", "ok"),
    ("not_modified", "not modified"),
    ("unchanged", "unchanged"),
    ("redirected", "redirected"),
    ("error", "failing"),
    ("gone", "gone"),
    ("pending", "not polled yet"),
)
NONE = "—"


@cache
def _env() -> Environment:
    # Autoescape for every template, whatever its name: a page can never be mis-escaped.
    return Environment(
        loader=PackageLoader("aggregator.outputs", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _page(template: str, **values: Any) -> bytes:
    return _env().get_template(template).render(**values).encode()


def time_tag(when: datetime | None) -> Markup | str:
    """An exact time: `<time datetime=…>2026-01-05 10:00 UTC</time>`."""
    if when is None:
        return NONE
    utc = when.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), f"{utc:%Y-%m-%d %H:%M} UTC"
    )


def ago(when: datetime, now: datetime) -> str:
    """`12 min ago`, `in 5 min`, `3 h ago`, `2 days ago`: how people read a status page."""
    seconds = (now - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        return "in a moment" if future else "just now"
    if seconds < 3600:
        amount, unit = int(seconds // 60), "min"
    elif seconds < 2 * 86400:
        amount, unit = int(seconds // 3600), "h"
    else:
        amount, unit = int(seconds // 86400), "days"
    return f"in {amount} {unit}" if future else f"{amount} {unit} ago"


def relative_tag(when: datetime | None, now: datetime) -> Markup | str:
    """A relative time in a `<time>` element carrying the exact UTC time (also as a tooltip)."""
    if when is None:
        return NONE
    utc = when.astimezone(UTC)
    exact = f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        utc.isoformat(), exact, ago(utc, now)
    )


# --- the index ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputLink:
    """One output as the index lists it."""

    name: str
    title: str
    description: str | None
    sources: int
    entries: int = 0
    updated: datetime | None = None
    failing: int = 0  # sources in error or gone
    query: str = ""  # "token=…" on every link to a private output

    def url(self, base_url: str, ext: str) -> str:
        return f"{base_url}/outputs/{self.name}.{ext}" + (f"?{self.query}" if self.query else "")


def _output_url(base_url: str, o: OutputLink, ext: str) -> str:
    return f"{base_url}/outputs/{o.name}.{ext}" + (f"?{o.query}" if o.query else "")


def render_index(base_url: str, outputs: Sequence[OutputLink]) -> bytes:
    """The front page: every output with its entry count, last update, number of sources and
    how many of them fail, and links to its page, feed formats and OPML."""
    shown = [
        {
            "name": o.name,
            "title": o.title,
            "description": o.description,
            "sources": o.sources,
            "entries": o.entries,
            "updated": time_tag(o.updated) if o.updated else None,
            "failing": o.failing,
            "urls": {ext: o.url(base_url, ext) for ext in ("html", "atom", "rss", "json", "opml")},
        }
        for o in outputs
    ]
    return _page(
        "index.html", title="Feeds", base_url=base_url, outputs=shown, feed_types=FEED_TYPES
    )


# --- an output's page --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchBox:
    """The output page's search form: what was asked, and the sources one can filter by."""

    query: str = ""
    source: str = ""
    sources: tuple[tuple[str, str], ...] = ()  # (feed name, label)

    @property
    def active(self) -> bool:
        return bool(self.query or self.source)

    @property
    def source_label(self) -> str:
        return dict(self.sources).get(self.source, self.source)


def _entry(item: StoredEntry, embed_hosts: frozenset[str]) -> dict[str, Any]:
    e = item.entry
    summary, content = entry_html(item, embed_hosts)
    updated = entry_updated(item)
    link = entry_link(item)
    names = [p.name or p.email for p in people(item)]
    return {
        "title": entry_title(item),
        "link": link,
        "source": plain_text(item.feed_title) or e.feed,
        "source_url": source_home(item),
        "published": time_tag(e.published),
        "author": ", ".join(n for n in names if n),
        "updated": time_tag(updated) if updated > e.published else None,
        # Sanitised on the way in and again by entry_html: the only markup a page passes on.
        "summary": Markup(summary or content),
        # The full text, when there is more than the summary, folded away under it.
        "content": Markup(content) if summary and content and content != summary else None,
        # Players and enclosure links, built (and escaped) by players.py.
        "media": Markup(media_html(e.media)),
    }


def render_output_page(
    meta: OutputMeta, items: Sequence[StoredEntry], search: SearchBox | None = None
) -> bytes:
    """One output as a page: its entries (title, source, time, summary), newest first, with
    `<link rel="alternate">` to its feed formats so browsers and readers discover them, and a
    search box (full text within the output, a filter by source)."""
    paging = meta.paging_links("html")
    links = dict(paging)
    nav = [
        (rel, label, links[rel])
        for rel, label in (("previous", "← Newer"), ("next", "Older →"))
        if links.get(rel)
    ]
    return _page(
        "output.html",
        title=meta.title,
        meta=meta,
        paging=paging,
        nav=nav,
        feed_types=FEED_TYPES,
        search=search or SearchBox(),
        # A private output's token rides along with the search, as the form's own field.
        hidden=parse_qsl(meta.link_query),
        entries=[_entry(i, meta.embed_hosts) for i in items],
    )


# --- the status page ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputStatus:
    """One output as the status page lists it."""

    name: str
    title: str
    html: str
    formats: tuple[tuple[str, str], ...]  # (format, URL)
    entries: int | None = None


# Fields shown in their own column, or folded into another field's note.
_COLUMNS = {"url", "title", "status", "last_ok", "failing_since", "next_poll", "errors", "entries"}
_NOTE_LABELS = {
    "last_error": "last error",
    "warning": "warning",
    "next_reason": "next poll because",
    "http_status": "HTTP status",
    "last_poll": "last poll",
    "backoff_level": "backoff level",
    "key_mode": "entries keyed by",
    "redirect_url": "moved to",
    "config_hint": "advice",
}
_QUIET = {"gone", "redirect_count"}  # said by the status itself, or with redirect_url


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _value(value: object, now: datetime) -> Markup | str:
    """Any status value for people: times relative, yes/no, lists joined, never `None`."""
    when = _parse_time(value)
    if when is not None:
        return relative_tag(when, now)
    if value is None or value == "" or value == [] or value == {}:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _notes(f: Mapping[str, Any], now: datetime) -> list[tuple[str, Markup | str]]:
    notes: list[tuple[str, Markup | str]] = []
    for key, value in f.items():
        if key in _COLUMNS or key in _QUIET or value in (None, "", [], {}, False):
            continue
        if key == "backoff_level" and not value:
            continue
        if key == "key_mode" and value == "guid":
            continue  # the normal case: worth a note only once guids proved unusable
        shown = _value(value, now)
        if key == "redirect_url" and f.get("redirect_count"):
            shown = f"{shown} (confirmed by {f['redirect_count']} polls)"
        notes.append((_NOTE_LABELS.get(key, key.replace("_", " ")), shown))
    return notes


@dataclass(slots=True)
class _Row:
    name: str
    title: str
    url: str
    status: str
    status_label: str
    failing: bool
    last_ok: Markup | str
    failing_since: Markup | str
    next_poll: Markup | str
    errors: str
    entries: str
    notes: list[tuple[str, Markup | str]] = field(default_factory=list)
    since: datetime | None = None


def _row(name: str, f: Mapping[str, Any], now: datetime) -> _Row:
    status = str(f.get("status") or "pending")
    return _Row(
        name=name,
        title=str(f.get("title") or name),
        url=str(f.get("url") or ""),
        status=status,
        status_label=dict(STATUS_LABELS).get(status, status).replace("failing", "error"),
        failing=status in FAILING,
        last_ok=_value(f.get("last_ok"), now) if f.get("last_ok") else "never",
        failing_since=_value(f.get("failing_since"), now),
        next_poll=_value(f.get("next_poll"), now),
        errors=str(f.get("errors") or 0),
        entries=str(f.get("entries") or 0),
        notes=_notes(f, now),
        since=_parse_time(f.get("failing_since")),
    )


@dataclass(frozen=True, slots=True)
class NodesShown:
    """The live nodes sharing the store, as /status.json lists them (nodes.nodes_view), and
    the warning when their configs differ."""

    nodes: Sequence[Mapping[str, Any]] = ()
    warning: str | None = None


def _node_rows(nodes: NodesShown, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            **n,
            "started": relative_tag(_parse_time(n["started"]), now),
            "last_seen": relative_tag(_parse_time(n["last_seen"]), now),
        }
        for n in nodes.nodes
    ]


def render_status_page(
    base_url: str,
    feeds: Mapping[str, Mapping[str, Any]],
    now: datetime | None = None,
    outputs: Sequence[OutputStatus] = (),
    reload: Mapping[str, Any] | None = None,
    loaded: datetime | None = None,
    nodes: NodesShown = NodesShown(),
) -> bytes:
    """Every feed's health, from the same dicts `/status.json` serves: a summary line, a
    banner when the last reload failed, failing feeds first (the longest failing first), then
    the others in config order; times relative, with the exact UTC time in `<time>`.

    Fields this page does not know (added by later versions) are listed under the feed's row,
    so the page never hides what the JSON says. The live nodes sharing the store follow the
    outputs, under a warning when they run different configs.
    """
    now = now or datetime.now(UTC)
    rows = [_row(name, f, now) for name, f in feeds.items()]
    failing = sorted((r for r in rows if r.failing), key=lambda r: r.since or now)
    rows = failing + [r for r in rows if not r.failing]
    tally = {s: sum(r.status == s for r in rows) for s, _ in STATUS_LABELS}
    counts = [(s, label, tally[s]) for s, label in STATUS_LABELS if tally[s]]
    reload_view = None
    if reload:
        at = _parse_time(reload.get("at"))
        reload_view = {
            "failed": reload.get("status") == "failed",
            "trigger": reload.get("trigger") or "reload",
            "at": relative_tag(at, now) if at else NONE,
            "problems": list(reload.get("problems") or [reload.get("error") or "unknown"]),
        }
    return _page(
        "status.html",
        title="Feed status",
        base_url=base_url,
        total=len(rows),
        counts=counts,
        feeds=rows,
        outputs=outputs,
        reload=reload_view,
        loaded=relative_tag(loaded, now) if loaded else None,
        nodes=_node_rows(nodes, now),
        nodes_warning=nodes.warning,
    )
