"""What feedgen does not write, added to the Atom and RSS trees it builds and to JSON Feed items:
enclosures, Media RSS, iTunes episode tags, Dublin Core creators and a complete atom:source.
Pure: from stored entries to XML elements and dicts.

A merged podcast output must play in a podcast app: RSS items carry `<enclosure>` (RSS 2.0
allows one: the first file), every file again as `media:content`, `media:thumbnail` and the
iTunes tags; Atom entries carry every file as `link rel="enclosure"`; JSON Feed items carry
`attachments` and `image`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from feedgen.entry import FeedEntry
from lxml import etree

from ..ingest.fields import plain_text, safe_email, safe_url
from ..models import Media, Person, StoredEntry

ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
MEDIA_NS = "http://search.yahoo.com/mrss/"
DC_NS = "http://purl.org/dc/elements/1.1/"
NAMESPACES = {"itunes": ITUNES_NS, "media": MEDIA_NS, "dc": DC_NS}
# RSS requires a type on <enclosure>; a file the feed gave none is served as bytes.
UNKNOWN_TYPE = "application/octet-stream"
_RSS_AUTHOR = re.compile(r"^(\S+@\S+)\s+\((.+)\)$")


def people(item: StoredEntry) -> tuple[Person, ...]:
    """An entry's authors: the stored list, or (rows from before it was kept, feeds that gave
    a bare string) one person named by the author string, RSS's "address (name)" split."""
    e = item.entry
    if e.authors:
        return e.authors
    text = plain_text(e.author)
    if m := _RSS_AUTHOR.match(text):
        email = safe_email(m.group(1))
        if email:
            return (Person(name=m.group(2).strip(), email=email),)
    return (Person(name=text),) if text else ()


def add_to_feedgen(fe: FeedEntry, item: StoredEntry, fmt: str) -> None:
    """What feedgen writes itself: Atom authors with e-mail and URI, RSS `<author>` only for
    those with an e-mail address (names go in dc:creator, see `extend_rss`), and the RSS
    enclosure, for the first file (RSS 2.0 allows one)."""
    authors = people(item)
    if fmt == "atom":
        for p in authors:
            person = {"name": p.name or p.email}
            email = p.email or (p.url[7:] if p.url.startswith("mailto:") else "")
            if email:
                person["email"] = email
            if p.url.startswith(("http://", "https://")):
                person["uri"] = p.url
            fe.author(person)
        return  # enclosure links: extend_atom (feedgen 1.0 drops an entry link's rel)
    for p in authors:
        if p.email:  # feedgen writes "email (name)", the form RSS 2.0 defines
            fe.author({"name": p.name or p.email, "email": p.email})
    files = item.entry.media.enclosures
    if files:
        first = files[0]
        fe.enclosure(first.url, str(first.length), first.type or UNKNOWN_TYPE)


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> None:
    el = etree.SubElement(parent, tag)
    for key, value in attrs.items():
        if value:
            el.set(key, value)
    if text is not None:
        el.text = text


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _itunes_item(el: etree._Element, media: Media) -> None:
    duration = media.duration
    if duration is None and media.enclosures:
        duration = media.enclosures[0].duration
    if duration is not None:
        _sub(el, f"{{{ITUNES_NS}}}duration", _clock(duration))
    if media.image:
        _sub(el, f"{{{ITUNES_NS}}}image", href=media.image)
    if media.explicit is not None:
        _sub(el, f"{{{ITUNES_NS}}}explicit", "true" if media.explicit else "false")
    if media.episode is not None:
        _sub(el, f"{{{ITUNES_NS}}}episode", str(media.episode))
    if media.season is not None:
        _sub(el, f"{{{ITUNES_NS}}}season", str(media.season))
    if media.episode_type:
        _sub(el, f"{{{ITUNES_NS}}}episodeType", media.episode_type)


def _media_rss(el: etree._Element, media: Media) -> None:
    for f in media.enclosures:
        _sub(
            el,
            f"{{{MEDIA_NS}}}content",
            url=f.url,
            type=f.type,
            medium=f.medium if f.medium in ("image", "audio", "video", "document") else "",
            fileSize=str(f.length) if f.length else "",
            duration=str(f.duration) if f.duration is not None else "",
        )
    if media.image:
        _sub(el, f"{{{MEDIA_NS}}}thumbnail", url=media.image)


def extend_rss(channel: etree._Element, items: Sequence[StoredEntry], author: str) -> None:
    """dc:creator for every author, Media RSS and iTunes tags for entries with media, and the
    channel's iTunes tags when any has; namespaces are declared once, on the root."""
    podcast = False
    for el, item in zip(channel.findall("item"), items, strict=True):
        for p in people(item):
            if p.name:
                _sub(el, f"{{{DC_NS}}}creator", p.name)
        media = item.entry.media
        if media:
            podcast = True
            _media_rss(el, media)
            _itunes_item(el, media)
    if podcast:
        # What podcast apps read of the show (the output is its own show, by its own name),
        # before the first item as in the shows they read.
        explicit = any(i.entry.media.explicit for i in items)
        first = channel.find("item")
        for tag, text in (("author", author), ("explicit", "true" if explicit else "false")):
            el = etree.Element(f"{{{ITUNES_NS}}}{tag}")
            el.text = text
            if first is not None:
                first.addprevious(el)
            else:
                channel.append(el)
    root = channel.getparent()
    etree.cleanup_namespaces(root if root is not None else channel, top_nsmap=NAMESPACES)


def _source_updated(items: Sequence[StoredEntry], updated_of: Any) -> dict[str, datetime]:
    newest: dict[str, datetime] = {}
    for item in items:
        when = updated_of(item)
        if item.entry.feed not in newest or when > newest[item.entry.feed]:
            newest[item.entry.feed] = when
    return newest


def extend_atom(root: etree._Element, items: Sequence[StoredEntry], updated_of: Any) -> None:
    """A complete atom:source on every entry (id, title, updated, the source's links: what the
    validator asks for), a `link rel="enclosure"` for every file and media:thumbnail where an
    entry has a picture.

    The source's `updated` is the newest change of that feed's entries in this document: from
    stored data, so rendering the same entries twice gives the same bytes.
    """
    newest = _source_updated(items, updated_of)
    # feedgen builds Atom with unqualified tags under an xmlns attribute: so do we.
    for el, item in zip(root.findall("entry"), items, strict=True):
        source = etree.SubElement(el, "source")
        feed_url = safe_url(item.feed_url)
        _sub(source, "id", feed_url or f"urn:feed-aggregator:feed:{item.entry.feed}")
        _sub(source, "title", plain_text(item.feed_title) or item.entry.feed)
        _sub(source, "updated", _rfc3339(newest[item.entry.feed]))
        home = safe_url(item.feed_link)
        if home:
            _sub(source, "link", rel="alternate", href=home)
        if feed_url:
            _sub(source, "link", rel="self", href=feed_url)
        for f in item.entry.media.enclosures:
            length = str(f.length) if f.length else ""
            _sub(el, "link", rel="enclosure", href=f.url, type=f.type, length=length)
        if item.entry.media.image:
            _sub(el, f"{{{MEDIA_NS}}}thumbnail", url=item.entry.media.image)
    etree.cleanup_namespaces(root, top_nsmap={"media": MEDIA_NS})


def json_extras(item: StoredEntry) -> dict[str, Any]:
    """JSON Feed 1.1 `authors` (objects, with url and avatar where known), `image` and
    `attachments` of one item."""
    out: dict[str, Any] = {}
    authors = []
    for p in people(item):
        obj = {"name": p.name or p.email}
        if p.url:
            obj["url"] = p.url
        elif p.email:
            obj["url"] = f"mailto:{p.email}"
        if p.avatar:
            obj["avatar"] = p.avatar
        authors.append(obj)
    if authors:
        out["authors"] = authors
    media = item.entry.media
    if media.image:
        out["image"] = media.image
    attachments = []
    for f in media.enclosures:
        att: dict[str, Any] = {"url": f.url, "mime_type": f.type or UNKNOWN_TYPE}
        if f.length:
            att["size_in_bytes"] = f.length
        duration = (
            f.duration
            if f.duration is not None
            else (media.duration if f is media.enclosures[0] else None)
        )
        if duration is not None:
            att["duration_in_seconds"] = duration
        attachments.append(att)
    if attachments:
        out["attachments"] = attachments
    return out
