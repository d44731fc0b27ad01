"""An entry's files on its HTML page: an `<audio controls>` or `<video controls>` player, or a
link with the file's type and size, and its picture. Pure: one HTML fragment per entry.

Kept apart from pages.py so that it carries as it is into a template. Every value is escaped
and every URL has passed `fields.safe_url` (in media.py, when read from the store).
"""

from __future__ import annotations

from dataclasses import replace
from html import escape

from ..ingest.fields import name_from_url
from ..models import Enclosure, Media

_UNITS = ("bytes", "KB", "MB", "GB", "TB")


def file_size(length: int) -> str:
    """A byte count as people read it: "48.2 MB"."""
    size = float(length)
    for unit in _UNITS:
        if size < 1000 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _kind(f: Enclosure) -> str:
    major = f.type.partition("/")[0] if f.type else f.medium
    return major if major in ("audio", "video", "image") else ""


def _label(f: Enclosure) -> str:
    facts = [f.type or "file"]
    if f.length:
        facts.append(file_size(f.length))
    if f.duration:
        facts.append(_clock(f.duration))
    return f"{escape(name_from_url(f.url) or f.url)} ({escape(', '.join(facts))})"


def _one(f: Enclosure, poster: str) -> str:
    url = escape(f.url)
    link = (
        f'<a href="{url}" type="{escape(f.type)}">{_label(f)}</a>'
        if f.type
        else (f'<a href="{url}">{_label(f)}</a>')
    )
    kind = _kind(f)
    # preload="none": a page of fifty episodes must not start fifty downloads.
    if kind == "audio":
        player = f'<audio controls preload="none" src="{url}"></audio>'
    elif kind == "video":
        poster_attr = f' poster="{escape(poster)}"' if poster else ""
        player = f'<video controls preload="none" src="{url}"{poster_attr}></video>'
    else:
        player = ""
    return f'<li class="enclosure">{player}{link}</li>'


def media_html(media: Media) -> str:
    """The files and picture of an entry as a fragment ("" without any): a player for each
    audio or video file, a link with type and size for every file."""
    if not media.enclosures and not media.image:
        return ""
    videos = any(_kind(f) == "video" for f in media.enclosures)
    parts = []
    if media.image and not videos:
        parts.append(f'<img class="artwork" src="{escape(media.image)}" alt="" loading="lazy">')
    if media.enclosures:
        first = media.enclosures[0]
        if first.duration is None and media.duration is not None:
            first = replace(first, duration=media.duration)  # itunes:duration is the episode's
        files = "".join(_one(f, media.image) for f in (first, *media.enclosures[1:]))
        parts.append(f'<ul class="enclosures">{files}</ul>')
    return f'<div class="media">{"".join(parts)}</div>'
