"""Enclosures, Media RSS, iTunes episode tags and authors read from feedparser entries and JSON
Feed items; their stored JSON form and their share of an entry's hashes. Pure.

Every URL passes `fields.safe_url` here, when read from the feed and again when read back from
the store, so nothing but http(s) reaches an output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import feedparser.namespaces.itunes

from ..ingest.fields import plain_text, safe_email, safe_person_url, safe_url
from ..models import Enclosure, Media, Person

_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:\.\d+)?$")
_EXPLICIT = {"yes": True, "true": True, "explicit": True, "no": False, "false": False}
_EXPLICIT |= {"clean": False}
_EPISODE_TYPES = frozenset({"full", "trailer", "bonus"})
_MEDIUMS = frozenset({"image", "audio", "video", "document", "executable"})
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
# Kept per entry: a feed listing hundreds of renditions of one video gains nothing from more.
MAX_ENCLOSURES = 16
MAX_AUTHORS = 16


def _end_itunes_explicit(self: Any) -> None:
    # feedparser 6 maps only "yes" and "clean", so Apple's current "true" / "false" (and "no")
    # came out as None: unknown. Read them all.
    value = str(self.pop("itunes_explicit", 0) or "").strip().lower()
    self._get_context()["itunes_explicit"] = _EXPLICIT.get(value)


feedparser.namespaces.itunes.Namespace._end_itunes_explicit = _end_itunes_explicit


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if 0 <= value < 2**53 else None
    text = _str(value)
    return int(text) if text.isdigit() and len(text) < 16 else None


def duration_seconds(value: object) -> int | None:
    """itunes:duration or Media RSS duration as seconds: "4215", "01:10:15", "70:15", "12.5"."""
    text = _str(value) if not isinstance(value, int | float) else str(value)
    if not text:
        return None
    if m := _CLOCK.match(text):
        hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), int(m.group(3))
        return hours * 3600 + minutes * 60 + seconds
    try:
        seconds_f = float(text)
    except ValueError:
        return None
    return int(seconds_f) if 0 <= seconds_f < 10**9 else None


def _enclosure(
    url: object, kind: object, length: object, duration: object = None, medium: object = None
) -> Enclosure | None:
    safe = safe_url(_str(url))
    if safe is None:
        return None
    mime = _str(kind).lower().split(";", 1)[0].strip()  # "audio/mpeg; codecs=mp3"
    if not _MIME.match(mime):
        mime = ""
    given = _str(medium).lower()
    return Enclosure(
        url=safe,
        type=mime,
        length=_int(length) or 0,
        duration=duration_seconds(duration),
        medium=given if given in _MEDIUMS else mime.partition("/")[0],
    )


def _unique(enclosures: Iterable[Enclosure | None]) -> tuple[Enclosure, ...]:
    seen: set[str] = set()
    out: list[Enclosure] = []
    for e in enclosures:
        if e is not None and e.url not in seen and len(out) < MAX_ENCLOSURES:
            seen.add(e.url)
            out.append(e)
    return tuple(out)


def _is_image(e: Enclosure) -> bool:
    return e.medium == "image" or e.type.startswith("image/")


def media_of_feedparser(entry: Mapping[str, Any]) -> Media:
    """An entry's files and episode tags as feedparser reads them: RSS enclosure and Atom
    rel=enclosure links first, then Media RSS content (media:group flattened by feedparser);
    a media:content picture is the entry's image, not a file to play."""
    files = [
        _enclosure(e.get("href") or e.get("url"), e.get("type"), e.get("length"))
        for e in entry.get("enclosures") or []
        if isinstance(e, Mapping)
    ]
    contents = [
        _enclosure(
            c.get("url"), c.get("type"), c.get("filesize"), c.get("duration"), c.get("medium")
        )
        for c in entry.get("media_content") or []
        if isinstance(c, Mapping)
    ]
    pictures = [c for c in contents if c is not None and _is_image(c)]
    files += [c for c in contents if c is not None and not _is_image(c)]
    image_tag = entry.get("image")
    thumbs = [t.get("url") for t in entry.get("media_thumbnail") or [] if isinstance(t, Mapping)]
    candidates = [image_tag.get("href") if isinstance(image_tag, Mapping) else None, *thumbs]
    candidates += [p.url for p in pictures]
    image = next((u for u in map(safe_url, candidates) if u), None)
    episode_type = _str(entry.get("itunes_episodetype")).lower()
    explicit = entry.get("itunes_explicit")
    return Media(
        enclosures=_unique(files),
        image=image or "",
        duration=duration_seconds(entry.get("itunes_duration")),
        explicit=explicit if isinstance(explicit, bool) else None,
        episode=_int(entry.get("itunes_episode")),
        season=_int(entry.get("itunes_season")),
        episode_type=episode_type if episode_type in _EPISODE_TYPES else "",
    )


def _person(
    name: object, email: object = None, url: object = None, avatar: object = None
) -> Person | None:
    p = Person(
        name=plain_text(_str(name))[:200],
        email=safe_email(_str(email)) or "",
        url=safe_person_url(_str(url)) or "",
        avatar=safe_url(_str(avatar)) or "",
    )
    return p if p.name or p.email else None


def _merge_people(people: Iterable[Person | None]) -> tuple[Person, ...]:
    """One Person per name (or address): RSS feeds often name an author twice, once in
    dc:creator and once in <author> with an address."""
    out: dict[str, Person] = {}
    for p in people:
        if p is None:
            continue
        key = (p.name or p.email).casefold()
        old = out.get(key)
        if old is None:
            if len(out) < MAX_AUTHORS:
                out[key] = p
            continue
        out[key] = Person(
            old.name or p.name, old.email or p.email, old.url or p.url, old.avatar or p.avatar
        )
    return tuple(out.values())


def authors_of_feedparser(entry: Mapping[str, Any]) -> tuple[Person, ...]:
    """An entry's authors, several kept as several (feedparser's `authors` list)."""
    return _merge_people(
        _person(a.get("name"), a.get("email"), a.get("href"))
        for a in entry.get("authors") or []
        if isinstance(a, Mapping)
    )


def authors_of_json(item: Mapping[str, Any]) -> tuple[Person, ...]:
    """JSON Feed 1.1 `authors` objects, or the 1.0 `author` object."""
    listed = item.get("authors")
    people = listed if isinstance(listed, list) else [item.get("author")]
    return _merge_people(
        _person(p.get("name"), None, p.get("url"), p.get("avatar"))
        for p in people
        if isinstance(p, Mapping)
    )


def media_of_json(item: Mapping[str, Any]) -> Media:
    """JSON Feed `attachments` and `image`."""
    attachments = item.get("attachments")
    files = (
        [
            _enclosure(
                a.get("url"),
                a.get("mime_type"),
                a.get("size_in_bytes"),
                a.get("duration_in_seconds"),
            )
            for a in attachments
            if isinstance(a, Mapping)
        ]
        if isinstance(attachments, list)
        else []
    )
    return Media(enclosures=_unique(files), image=safe_url(_str(item.get("image"))) or "")


# --- stored form ----------------------------------------------------------------------------


def _set_fields(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of `obj` that are set (not empty, zero or None), by name."""
    return {name: value for name in names if (value := getattr(obj, name))}


def media_json(media: Media) -> str | None:
    """The stored form of an entry's media: JSON, None when it has none (most entries)."""
    if not media:
        return None
    doc: dict[str, Any] = {
        "enclosures": [
            _set_fields(e, ("url", "type", "length", "duration", "medium"))
            for e in media.enclosures
        ]
    }
    for key in ("image", "duration", "explicit", "episode", "season", "episode_type"):
        value = getattr(media, key)
        if value is not None and value != "":
            doc[key] = value
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def media_from_json(text: str | None) -> Media:
    """Media read back from the store, every URL checked again (older rows, other writers)."""
    if not text:
        return Media()
    try:
        doc = json.loads(text)
    except ValueError:
        return Media()
    if not isinstance(doc, dict):
        return Media()
    files = [
        _enclosure(e.get("url"), e.get("type"), e.get("length"), e.get("duration"), e.get("medium"))
        for e in doc.get("enclosures") or []
        if isinstance(e, dict)
    ]
    explicit = doc.get("explicit")
    return Media(
        enclosures=_unique(files),
        image=safe_url(_str(doc.get("image"))) or "",
        duration=_int(doc.get("duration")),
        explicit=explicit if isinstance(explicit, bool) else None,
        episode=_int(doc.get("episode")),
        season=_int(doc.get("season")),
        episode_type=_str(doc.get("episode_type"))
        if doc.get("episode_type") in _EPISODE_TYPES
        else "",
    )


def authors_json(people: tuple[Person, ...]) -> str | None:
    if not people:
        return None
    return json.dumps(
        [_set_fields(p, ("name", "email", "url", "avatar")) for p in people],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def authors_from_json(text: str | None) -> tuple[Person, ...]:
    if not text:
        return ()
    try:
        doc = json.loads(text)
    except ValueError:
        return ()
    return (
        _merge_people(
            _person(p.get("name"), p.get("email"), p.get("url"), p.get("avatar"))
            for p in doc
            if isinstance(p, dict)
        )
        if isinstance(doc, list)
        else ()
    )


# --- identity -------------------------------------------------------------------------------


def media_key(url: str) -> str:
    """A media file's URL without its query and fragment: podcast hosts sign their URLs with
    tokens and expiry times that change on every fetch of the feed, never the file."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return urlunsplit(
        (
            parts.scheme.lower(),
            (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else ""),
            parts.path,
            "",
            "",
        )
    )


def media_fingerprint(media: Media, stable: bool) -> str:
    """What of an entry's media takes part in its hashes: every file's URL and length (with
    the volatile query dropped when `stable`). "" without media, so the hashes of entries
    without media are what they were before media was stored."""
    if not media.enclosures:
        return ""
    return "\x1e".join(
        f"{media_key(e.url) if stable else e.url} {e.length}" for e in media.enclosures
    )


def playable_keys(media: Media) -> frozenset[str]:
    """Keys of the audio and video files of an entry, across feeds: the same episode carried
    by two feeds is one story. Pictures are left out (a show's cover art is on every episode)."""
    return frozenset(media_key(e.url) for e in media.enclosures if not _is_image(e))
