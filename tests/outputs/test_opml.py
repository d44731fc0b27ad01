"""OPML rendering: well-formed, ordered, deterministic, escaped."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from aggregator.outputs.opml import Subscription, render_opml


def test_render_opml_lists_feeds_in_order_with_their_attributes() -> None:
    feeds = [
        Subscription("a", "https://a.example/feed?x=1&y=2", "A & B <news>", "https://a.example/"),
        Subscription("b", "https://b.example/rss", tags=("tech", "blogs")),
    ]
    body = render_opml("My outputs", feeds)
    assert body == render_opml("My outputs", feeds)
    root = ET.fromstring(body)
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title") == "My outputs"
    outlines = root.findall("body/outline")
    assert [o.get("xmlUrl") for o in outlines] == [f.url for f in feeds]
    assert outlines[0].get("text") == "A & B <news>"
    assert outlines[0].get("htmlUrl") == "https://a.example/"
    assert outlines[1].get("text") == "b" and outlines[1].get("category") == "tech,blogs"
    assert all(o.get("type") == "rss" for o in outlines)
