"""OPML 2.0 subscription lists of feeds, written and read. Pure: feeds in, bytes out, and back.

Reading is lenient, because real exports are messy; every outline left out is reported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET


@dataclass(frozen=True, slots=True)
class Subscription:
    """One feed as an OPML outline: its config name, URL, display title and site link."""

    name: str
    url: str
    title: str | None = None
    html_url: str | None = None
    tags: tuple[str, ...] = ()


def render_opml(title: str, feeds: Sequence[Subscription]) -> bytes:
    """An OPML 2.0 document listing `feeds` as rss outlines, in the order given.

    Deterministic (no dateCreated), so it can be served with a stable ETag.
    """
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    body = ET.SubElement(root, "body")
    for feed in feeds:
        attrs = {
            "type": "rss",
            "text": feed.title or feed.name,
            "title": feed.title or feed.name,
            "xmlUrl": feed.url,
        }
        if feed.html_url:
            attrs["htmlUrl"] = feed.html_url
        if feed.tags:
            attrs["category"] = ",".join(feed.tags)
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


# --- reading -------------------------------------------------------------------------------

_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_BARE_AMP = re.compile(rb"&(?!#\d+;|#x[0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Skipped:
    """An outline that was not imported: where it is (its path of titles) and why."""

    where: str
    reason: str


@dataclass(frozen=True, slots=True)
class OpmlImport:
    """What an OPML document holds: the feeds to add, and every outline left out."""

    feeds: tuple[Subscription, ...]
    skipped: tuple[Skipped, ...]


def slugify(text: str) -> str:
    """A config name from a title: lower-case ASCII letters and digits joined by '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")[:64].strip("-")


def _decode(data: bytes) -> ET.Element:
    """Parse OPML as exported by real readers: a declared encoding that lies, no declaration
    at all on Latin-1 text, and bare '&' in URLs are all common."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    elif data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    else:
        try:
            return ET.fromstring(data)
        except ET.ParseError:
            pass
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    # Decoded by hand: the declaration (which may name another encoding) must go.
    raw = _XML_DECL.sub(b"", text.encode("utf-8"), count=1)
    try:
        return ET.fromstring(raw)
    except ET.ParseError:
        return ET.fromstring(_BARE_AMP.sub(b"&amp;", raw))


def _attr(el: ET.Element, name: str) -> str | None:
    """An attribute by case-insensitive name (xmlUrl, xmlurl and XMLURL are all seen)."""
    for key, value in el.attrib.items():
        if key.lower() == name.lower():
            return value.strip() or None
    return None


def parse_opml(
    data: bytes, known_urls: Iterable[str] = (), known_names: Iterable[str] = ()
) -> OpmlImport:
    """The feeds of an OPML subscription list, with every skipped outline and why.

    Nested outlines (folders) are walked; each feed gets the slugs of its folders as tags, plus
    its `category` values. A title falls back to `text`, then to the host name. Names are made
    unique against `known_names`; a URL already in `known_urls` or earlier in the file is
    skipped. Raises ValueError when the document is not OPML at all.
    """
    try:
        root = _decode(data)
    except ET.ParseError as e:
        raise ValueError(f"not an XML document: {e}") from e
    if root.tag.lower() != "opml":
        raise ValueError(f"not an OPML document: the root element is <{root.tag}>")
    body = next((c for c in root if c.tag.lower() == "body"), None)
    if body is None:
        raise ValueError("not an OPML document: it has no <body>")
    seen_urls = {u.strip() for u in known_urls}
    names = set(known_names)
    feeds: list[Subscription] = []
    skipped: list[Skipped] = []

    def walk(parent: ET.Element, path: tuple[str, ...], tags: tuple[str, ...]) -> None:
        for i, el in enumerate(c for c in parent if c.tag.lower() == "outline"):
            label = _attr(el, "title") or _attr(el, "text")
            where = " > ".join((*path, label or f"outline {i + 1}"))
            url = _attr(el, "xmlUrl")
            children = [c for c in el if c.tag.lower() == "outline"]
            if url is None:
                if children:
                    folder = slugify(label or "")
                    walk(
                        el,
                        (*path, label or f"outline {i + 1}"),
                        (*tags, folder) if folder else tags,
                    )
                else:
                    skipped.append(Skipped(where, "no xmlUrl (not a feed)"))
                continue
            if url.lower().startswith("feed://"):
                url = "http://" + url[len("feed://") :]
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                skipped.append(Skipped(where, f"{url!r} is not an http(s) URL"))
                continue
            if url in seen_urls:
                skipped.append(Skipped(where, f"duplicate URL {url}"))
                continue
            seen_urls.add(url)
            title = label
            base = slugify(label or "") or slugify(parts.hostname or "") or "feed"
            name, n = base, 1
            while name in names:
                n += 1
                suffix = f"-{n}"
                name = base[: 64 - len(suffix)] + suffix
            names.add(name)
            categories = tuple(
                c for c in (slugify(x) for x in (_attr(el, "category") or "").split(",")) if c
            )
            feed_tags = tuple(dict.fromkeys((*tags, *categories)))
            feeds.append(Subscription(name, url, title, _attr(el, "htmlUrl"), feed_tags))
            if children:
                walk(el, (*path, label or f"outline {i + 1}"), tags)

    walk(body, (), ())
    return OpmlImport(tuple(feeds), tuple(skipped))
