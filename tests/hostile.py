"""Hostile feed documents, generated in code (megabytes are not committed): each is small enough
to pass the body cap and built to make one stage of a poll or a render slow.

Every function returns the bytes of an RSS 2.0 or Atom document whose hostile entry sits
beside one ordinary entry, so a test can tell "the feed was cut down" from "the feed was lost".
"""

from __future__ import annotations

from collections.abc import Callable

_RSS_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
    "<title>{name}</title><link>http://127.0.0.1/{name}</link><description>hostile</description>\n"
)
_ORDINARY = (
    "<item><title>{name} ordinary</title><link>http://127.0.0.1/{name}/ordinary</link>"
    "<guid>{name}-ordinary</guid><pubDate>Mon, 02 Oct 2023 08:00:00 GMT</pubDate>"
    "<description>An ordinary entry beside the hostile one.</description></item>\n"
)


def _rss(name: str, hostile_item: str) -> bytes:
    return (
        _RSS_HEAD.format(name=name)
        + _ORDINARY.format(name=name)
        + hostile_item
        + "</channel></rss>"
    ).encode()


def _item(name: str, *, title: str | None = None, body: str = "", extra: str = "") -> str:
    # The HTML goes in CDATA, as most publishers send it: unescaped, so its size is its own.
    return (
        f"<item><title>{title if title is not None else name + ' hostile'}</title>"
        f"<link>http://127.0.0.1/{name}/hostile</link><guid>{name}-hostile</guid>"
        f"<pubDate>Mon, 02 Oct 2023 09:00:00 GMT</pubDate>{extra}"
        f"<description><![CDATA[{body}]]></description></item>\n"
    )


def deep_html(name: str = "deep-html", depth: int = 100_000) -> bytes:
    """Content of HTML nested `depth` levels deep (1.1 MB at 100,000): an HTML parser's scope
    checks walk the stack of open elements, so each tag costs the depth."""
    body = "<div>" * depth + "deep" + "</div>" * depth
    return _rss(name, _item(name, body=body))


def deep_xml(name: str = "deep-xml", depth: int = 100_000) -> bytes:
    """Unknown XML elements nested `depth` levels deep inside one item."""
    nest = "<x:n>" * depth + "deep" + "</x:n>" * depth
    doc = _rss(name, _item(name, body="the item of deep XML", extra=nest))
    return doc.replace(b'<rss version="2.0">', b'<rss version="2.0" xmlns:x="urn:x">', 1)


def huge_fields(name: str = "huge-fields", size: int = 3_000_000) -> bytes:
    """A title of `size` characters and a content of as many more (plain words)."""
    words = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    return _rss(name, _item(name, title=words, body=f"<p>{words}</p>"))


def quadratic_author(name: str = "quadratic-author", size: int = 1_000_000) -> bytes:
    """An <author> of `size` letters and no "@": feedparser 6's e-mail regex retries from every
    position, so its time grows with the square of the size (60 KB took 31 s)."""
    return _rss(
        name,
        _item(name, body="an entry with a long author", extra=f"<author>{'a' * size}</author>"),
    )


def many_entries(name: str = "many-entries", count: int = 100_000) -> bytes:
    """A feed of `count` tiny entries."""
    items = "".join(
        f"<item><guid>{name}-{i}</guid><title>t{i}</title></item>" for i in range(count)
    )
    return _rss(name, items)


def many_links(name: str = "many-links", count: int = 100_000) -> bytes:
    """An Atom entry with `count` <link> elements, and in its content as many anchors."""
    # Relative references keep the document under the 10 MiB body cap (about 4.5 MB).
    links = "".join(f'<link rel="related" href="/{i}"/>' for i in range(count))
    anchors = "".join(f'<a href="/a{i}">{i}</a> ' for i in range(count))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{name}</title><id>urn:{name}</id><updated>2023-10-02T09:00:00Z</updated>"
        f'<link href="http://127.0.0.1/{name}"/>'
        f"<entry><title>{name} ordinary</title><id>urn:{name}:ordinary</id>"
        f'<link href="http://127.0.0.1/{name}/ordinary"/><updated>2023-10-02T08:00:00Z</updated>'
        "<summary>An ordinary entry beside the hostile one.</summary></entry>"
        f"<entry><title>{name} hostile</title><id>urn:{name}:hostile</id>"
        f'<link href="http://127.0.0.1/{name}/hostile"/>{links}'
        "<updated>2023-10-02T09:00:00Z</updated>"
        f'<content type="html"><![CDATA[{anchors}]]></content></entry></feed>'
    ).encode()


# Every hostile document by feed name, as tests and the bench serve them.
HOSTILE: dict[str, Callable[[], bytes]] = {
    "deep-html": deep_html,
    "deep-xml": deep_xml,
    "huge-fields": huge_fields,
    "quadratic-author": quadratic_author,
    "many-entries": many_entries,
    "many-links": many_links,
}
