"""Server-rendered HTML pages: the index of outputs, one output's entries, feed health. Pure.

Every value from a feed or the config is escaped here; entry HTML arrives already sanitised
(publish.entry_html). No JavaScript: the pages are plain documents with autodiscovery links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from .extensions import people
from .fields import plain_text
from .models import StoredEntry
from .players import media_html
from .publish import OutputMeta, entry_html, entry_link, entry_title, entry_updated, source_home

FEED_TYPES = (
    ("atom", "application/atom+xml", "Atom"),
    ("rss", "application/rss+xml", "RSS"),
    ("json", "application/feed+json", "JSON Feed"),
)
_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:0 auto;padding:1rem;color:#222}
a{color:#0645ad}header,footer{color:#555;font-size:.9rem}
article{border-top:1px solid #ddd;padding:.5rem 0}article h2{font-size:1.15rem;margin:.3rem 0}
.meta{color:#555;font-size:.85rem}.summary img{max-width:100%;height:auto}
.media img,.media video{max-width:100%;height:auto}.media audio{width:100%}
.enclosures{list-style:none;padding:0}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border:1px solid #ddd;padding:.3rem}
th{text-align:left;background:#f4f4f4}.error{color:#b00020}.ok{color:#1b5e20}
"""


@dataclass(frozen=True, slots=True)
class OutputLink:
    """One output as the index lists it."""

    name: str
    title: str
    description: str | None
    sources: int
    query: str = ""  # "token=…" on every link to a private output


def _a(href: str, text: str, rel: str | None = None) -> str:
    rel_attr = f' rel="{escape(rel)}"' if rel else ""
    return f'<a href="{escape(href)}"{rel_attr}>{escape(text)}</a>'


def _time(when: datetime | None) -> str:
    if when is None:
        return "—"
    utc = when.astimezone(UTC)
    return f'<time datetime="{utc.isoformat()}">{utc:%Y-%m-%d %H:%M} UTC</time>'


def _document(title: str, head: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n{head}</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    ).encode()


def _output_url(base_url: str, o: OutputLink, ext: str) -> str:
    return f"{base_url}/outputs/{o.name}.{ext}" + (f"?{o.query}" if o.query else "")


def render_index(base_url: str, outputs: Sequence[OutputLink]) -> bytes:
    """The front page: every output with links to its page, feed formats and OPML."""
    items = []
    for o in outputs:
        formats = " · ".join(
            _a(_output_url(base_url, o, fmt), label) for fmt, _, label in FEED_TYPES
        )
        desc = f"<p>{escape(o.description)}</p>" if o.description else ""
        items.append(
            f'<li class="output" id="output-{escape(o.name)}"><h2>'
            f"{_a(_output_url(base_url, o, 'html'), o.title)}</h2>{desc}<p class=meta>"
            f"{o.sources} source(s) · {formats} · "
            f"{_a(_output_url(base_url, o, 'opml'), 'OPML')}</p></li>\n"
        )
    head = "".join(
        f'<link rel="alternate" type="{ctype}" title="{escape(o.title)} ({label})" '
        f'href="{escape(_output_url(base_url, o, fmt))}">\n'
        for o in outputs
        for fmt, ctype, label in FEED_TYPES
    )
    body = (
        "<header><h1>Feeds</h1></header>\n<main>\n"
        + (f"<ul>\n{''.join(items)}</ul>\n" if items else "<p>No outputs are configured.</p>\n")
        + "</main>\n<footer>"
        + _a(f"{base_url}/status", "Feed status")
        + " · "
        + _a(f"{base_url}/metrics", "Metrics")
        + "</footer>\n"
    )
    return _document("Feeds", head, body)


def _entry(item: StoredEntry, embed_hosts: frozenset[str]) -> str:
    e = item.entry
    summary, content = entry_html(item, embed_hosts)
    title = entry_title(item)
    link = entry_link(item)
    heading = _a(link, title) if link else escape(title)
    source_url = source_home(item)
    source_name = plain_text(item.feed_title) or e.feed
    source = _a(source_url, source_name) if source_url else escape(source_name)
    meta = f"{source} · {_time(e.published)}"
    names = [p.name or p.email for p in people(item)]
    if names:
        meta += f" · {escape(', '.join(names))}"
    if entry_updated(item) > e.published:
        meta += f" · updated {_time(entry_updated(item))}"
    shown = summary or content
    # The full text, when there is more than the summary, folded away under it.
    more = (
        f'<details><summary>Full text</summary><div class="content">{content}</div></details>'
        if summary and content and content != summary
        else ""
    )
    return (
        f'<article class="entry"><h2>{heading}</h2><p class="meta">{meta}</p>'
        f'<div class="summary">{shown}</div>{media_html(e.media)}{more}</article>\n'
    )


def render_output_page(meta: OutputMeta, items: Sequence[StoredEntry]) -> bytes:
    """One output as a page: its entries (title, source, time, summary), newest first, with
    `<link rel="alternate">` to its feed formats so browsers and readers discover them."""
    head = "".join(
        f'<link rel="alternate" type="{ctype}" title="{escape(meta.title)} ({label})" '
        f'href="{escape(meta.page_url(fmt, 1))}">\n'
        for fmt, ctype, label in FEED_TYPES
    )
    for rel, href in meta.paging_links("html"):
        head += f'<link rel="{rel}" href="{escape(href)}">\n'
    formats = " · ".join(_a(meta.page_url(fmt, 1), label) for fmt, _, label in FEED_TYPES)
    nav = []
    paging: dict[str, str] = dict(meta.paging_links("html"))
    for rel, label in (("previous", "← Newer"), ("next", "Older →")):
        target = paging.get(rel)
        if target:
            nav.append(_a(target, label, rel))
    body = (
        f"<header><p>{_a(meta.base_url + '/', 'All outputs')}</p>"
        f"<h1>{escape(meta.title)}</h1>"
        + (f"<p>{escape(meta.description)}</p>" if meta.description != meta.title else "")
        + f'<p class="meta">Subscribe: {formats} · '
        f"{_a(meta.page_url('opml', 1), 'sources (OPML)')}</p></header>\n<main>\n"
        + ("".join(_entry(i, meta.embed_hosts) for i in items) or "<p>No entries yet.</p>\n")
        + "</main>\n"
        + (f'<nav class="paging">{" · ".join(nav)}</nav>\n' if nav else "")
    )
    return _document(meta.title, head, body)


_STATUS_COLUMNS = (
    ("status", "Status"),
    ("http_status", "HTTP"),
    ("last_poll", "Last poll"),
    ("last_ok", "Last success"),
    ("next_poll", "Next poll"),
    ("errors", "Errors"),
    ("entries", "Entries"),
)
# Shown under the row rather than in a column: long text, and fields other code may add.
_LONG = ("last_error", "warning")
_SHOWN = {"url", "title", *(k for k, _ in _STATUS_COLUMNS), *_LONG}


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str) and len(value) >= 20 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return _time(datetime.fromisoformat(value))
        except ValueError:
            pass
    return escape(str(value))


def render_status_page(base_url: str, feeds: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Every feed's health as a table, from the same dicts `/status.json` serves.

    Fields this page does not know (added by later versions) are listed under the feed's row,
    so the page never hides what the JSON says.
    """
    rows = []
    for name, f in feeds.items():
        status = str(f.get("status") or "pending")
        cls = "error" if status == "error" else "ok"
        title = f.get("title") or name
        cells = "".join(
            f'<td class="{k}">{_cell(f.get(k))}</td>' for k, _ in _STATUS_COLUMNS if k != "status"
        )
        rows.append(
            f'<tr id="feed-{escape(name)}"><td>{_a(str(f.get("url", "")), str(title))}'
            f'<br><small>{escape(name)}</small></td><td class="status {cls}">{escape(status)}</td>'
            f"{cells}</tr>\n"
        )
        notes = [(k, f.get(k)) for k in _LONG if f.get(k)]
        notes += [(k, v) for k, v in f.items() if k not in _SHOWN and v not in (None, "", [], {})]
        if notes:
            text = "; ".join(f"{escape(k.replace('_', ' '))}: {_cell(v)}" for k, v in notes)
            span = len(_STATUS_COLUMNS)
            rows.append(f'<tr class="notes"><td></td><td colspan="{span}">{text}</td></tr>\n')
    header = "".join(f"<th>{label}</th>" for _, label in _STATUS_COLUMNS)
    body = (
        f"<header><p>{_a(base_url + '/', 'All outputs')} · "
        f"{_a(base_url + '/status.json', 'JSON')}</p><h1>Feed status</h1></header>\n<main>\n"
        f"<table>\n<thead><tr><th>Feed</th>{header}</tr></thead>\n<tbody>\n"
        + "".join(rows)
        + "</tbody>\n</table>\n</main>\n"
    )
    return _document("Feed status", "", body)
