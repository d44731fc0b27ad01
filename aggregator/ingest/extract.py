"""An article page's bytes → its main text as safe HTML. CPU-bound and pure: runs in a worker.

trafilatura finds the story (paragraphs, headings, lists, tables, images and links kept as
HTML); readability-lxml is the fallback when it finds nothing. A feed's `content_selector`
names the element holding the story and skips both heuristics; its `remove_selectors` drop
elements (share bars, newsletters) before anything else looks at the page. Links resolve
against the page's final URL (and its <base href>), and the result is sanitised with the
feed content's nh3 policy, so what is returned can be stored as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import lxml.etree
import lxml.html
from lxml.cssselect import CSSSelector

from ..ingest.identity import clean_text
from ..ingest.sanitize import html_to_text, sanitize_html
from ..outputs.dedupe import chrome_line

# Less story text than this from the fallback is navigation or a teaser, not an article.
MIN_FALLBACK_TEXT = 200
# A fallback result that is mostly link text is a list of links (an index page), not a story.
MAX_LINK_SHARE = 0.5
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_CHROME_TAGS = ("script", "style", "noscript", "template")
_BLOCK_START = re.compile(
    r"(?i)</?(p|div|br|li|td|th|tr|h[1-6]|blockquote|table|ul|ol|figure|figcaption|section)\b"
)


@dataclass(frozen=True, slots=True)
class Extraction:
    """What extraction made of one page. `html` is sanitised and "" when nothing was found;
    `reason` then says why. Lengths are characters of whitespace-normalised text."""

    html: str
    text_length: int
    page_text_length: int
    method: str  # "selector", "trafilatura", "readability" or "" (nothing)
    reason: str = ""

    @property
    def found(self) -> bool:
        return bool(self.html)


def is_html(content_type: str, body: bytes) -> bool:
    """Whether a response is an HTML page: by its Content-Type, or by sniffing when it has none."""
    kind = content_type.split(";")[0].strip().lower()
    if kind:
        return kind in ("text/html", "application/xhtml+xml")
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def decode(body: bytes, content_type: str) -> str:
    """The page as text: the header's charset, else a <meta charset>, else UTF-8, else
    Windows-1252 (which decodes any byte)."""
    candidates: list[str] = []
    if "charset=" in content_type.lower():
        candidates.append(content_type.lower().split("charset=")[1].split(";")[0].strip(" \"'"))
    if m := _CHARSET.search(body[:4096]):
        candidates.append(m.group(1).decode("ascii"))
    candidates += ["utf-8", "cp1252"]
    for charset in candidates:
        try:
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return body.decode("utf-8", "replace")


def check_selector(css: str) -> None:
    """Raise ValueError naming the problem when `css` is not a selector lxml can use."""
    try:
        CSSSelector(css)
    except Exception as e:  # cssselect's SelectorError and friends
        raise ValueError(f"{css!r} is not a CSS selector: {e}") from e


def normalised_text(html: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed: what lengths count. Block
    boundaries (paragraphs, list items, table cells) separate words."""
    return _SPACE.sub(" ", html_to_text(_BLOCK_START.sub(r" \g<0>", html))).strip()


def _text(tree: lxml.html.HtmlElement) -> str:
    return _SPACE.sub(" ", tree.text_content()).strip()


def _inner_body(fragment: str) -> str:
    m = _BODY.search(fragment)
    return (m.group(1) if m else fragment).strip()


def _anchor_texts(tree: lxml.html.HtmlElement) -> frozenset[str]:
    return frozenset(t for a in tree.iter("a") if (t := _text(a)))


def _link_share(fragment: str, anchors: frozenset[str]) -> float:
    """The share of a result's text that is whole links of the page: high for a list of
    teasers (an index page), whether or not the extractor kept them as links."""
    try:
        tree = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return 0.0
    lines = [_SPACE.sub(" ", line).strip() for line in tree.text_content().splitlines()]
    total = sum(len(line) for line in lines)
    linked = sum(len(line) for line in lines if line in anchors)
    linked = max(linked, sum(len(_text(a)) for a in tree.iter("a")))
    return linked / total if total else 0.0


def _trim(fragment: str, title: str) -> str:
    """Without what pages put around a story and readers show already or never want: atop
    it a heading or line repeating the entry's title, and at either end date stamps, lines of
    icon names or menu words, share bars and syndication boilerplate."""
    try:
        tree = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return fragment
    want = _SPACE.sub(" ", title).strip().casefold()
    # Leaf blocks of text, however deeply nested, in document order.
    blocks = [
        el
        for el in tree.iter("h1", "h2", "h3", "p", "div")
        if _text(el) and not (el.tag == "div" and len(el))
    ]
    dropped = []
    others = 0
    # Atop the story: before its second paragraph of other text (a lead often comes first).
    for el in blocks:
        text = _text(el)
        if (want and text.casefold() == want) or chrome_line(text):
            dropped.append(el)
        else:
            others += 1
            if others == 2:
                break
    for el in reversed(blocks):
        if el in dropped or not chrome_line(_text(el)):
            break
        dropped.append(el)
    for el in dropped:
        el.drop_tree()
    if not dropped:
        return fragment
    return (tree.text or "") + "".join(lxml.html.tostring(el, encoding="unicode") for el in tree)


def _parse(text: str) -> lxml.html.HtmlElement | None:
    try:
        return lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError):
        # An XML declaration in a str, or a document with no elements at all.
        try:
            return lxml.html.document_fromstring(text.encode("utf-8"))
        except (lxml.etree.ParserError, ValueError):
            return None


def _by_selector(tree: lxml.html.HtmlElement, css: str) -> str:
    found = CSSSelector(css)(tree)
    # Nested matches (an article inside an article) would repeat text: keep the outermost.
    outer = [el for el in found if not any(a in found for a in el.iterancestors())]
    return "".join(lxml.html.tostring(el, encoding="unicode") for el in outer)


def _base_url(tree: lxml.html.HtmlElement, url: str) -> str:
    """What relative links of the page resolve against: its <base href>, else its URL."""
    for el in tree.iter("base"):
        href = str(el.get("href") or "").strip()
        if href:
            return urljoin(url, href)
    return url


def _trafilatura(tree: lxml.html.HtmlElement) -> str:
    # Imported here: config validation imports this module, and trafilatura takes 0.2 s to
    # import, which only the parse workers and `aggregator extract` should pay.
    import trafilatura

    result = trafilatura.extract(
        tree,
        output_format="html",
        include_links=True,
        include_images=True,
        include_tables=True,
        include_formatting=True,
        include_comments=False,
        with_metadata=False,
    )
    return _inner_body(result) if result else ""


def _readability(tree: lxml.html.HtmlElement) -> str:
    from readability import Document

    page = lxml.html.tostring(tree, encoding="unicode")
    try:
        summary = Document(page).summary(html_partial=True)
    except Exception:  # readability raises its own Unparseable and lxml errors alike
        return ""
    if len(normalised_text(summary)) < MIN_FALLBACK_TEXT:
        return ""
    return str(summary)


def extract_article(
    body: bytes,
    content_type: str,
    url: str,
    *,
    title: str = "",
    selector: str | None = None,
    remove: Sequence[str] = (),
    embed_hosts: frozenset[str] = frozenset(),
) -> Extraction:
    """Extract the story of one fetched page; `url` is its final URL (after redirects).

    `selector` (a feed's content_selector) takes the matching elements as the story; when it
    matches nothing, the heuristics run as without it. `remove` selectors are dropped first.
    `title` is the entry's, so that a heading repeating it is not stored twice. Never raises
    on bad pages: an empty `html` with a `reason` says what went wrong.
    """
    if not is_html(content_type, body):
        kind = content_type.split(";")[0].strip() or "unknown"
        return Extraction("", 0, 0, "", f"not an HTML page ({kind})")
    tree = _parse(decode(body, content_type))
    if tree is None:
        return Extraction("", 0, 0, "", "empty page")
    for el in [e for tag in _CHROME_TAGS for e in tree.iter(tag)]:
        el.drop_tree()
    # Relative links are resolved by the sanitiser, in the story alone: resolving every link
    # of the page first (lxml's make_links_absolute) was a seventh of the extraction time,
    # and trafilatura resolves them again whenever it is given a URL.
    base = _base_url(tree, url)
    page_length = len(_text(tree))
    for css in remove:
        for el in CSSSelector(css)(tree):
            if el.getparent() is not None:
                el.drop_tree()
    raw, method = "", ""
    if selector:
        raw, method = _by_selector(tree, selector), "selector"
    if not raw:
        anchors = _anchor_texts(tree)
        for name, find in (("trafilatura", _trafilatura), ("readability", _readability)):
            raw, method = find(tree), name
            if raw and _link_share(raw, anchors) <= MAX_LINK_SHARE:
                break
            raw = ""
    if not raw:
        return Extraction("", 0, page_length, "", "no article text found on the page")
    cleaned = clean_text(sanitize_html(_trim(raw, title), base, embed_hosts))
    length = len(normalised_text(cleaned))
    if not length:
        return Extraction("", 0, page_length, "", "no article text found on the page")
    return Extraction(cleaned, length, page_length, method)


def headers_content_type(headers: Mapping[str, str]) -> str:
    """The Content-Type of a response's headers, whatever their case."""
    return next((v for k, v in headers.items() if k.lower() == "content-type"), "")
