"""OPML 2.0 subscription lists of feeds. Pure: feeds in, bytes out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
