"""Plain fields made safe to republish: http(s)-only URLs, e-mail addresses, entity-decoded text,
and a title made from an entry's first words when it has none. Pure.

Feeds are untrusted: a `javascript:` link republished as an entry link runs when a subscriber
clicks it. Every URL we republish passes `safe_url` at ingest and again at render (rows stored
by older versions exist); links inside content are nh3's job (sanitize.py).
"""

from __future__ import annotations

import functools
import html
import re
from urllib.parse import unquote, urlsplit

from ..ingest.sanitize import html_to_text, xml_safe

# A complete character reference: "&#8211;", "&#x2013;", "&ndash;". Only these are decoded,
# so "AT&T" and "Q&A" stay as they are (html.unescape alone would also take "&copy2024").
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Whitespace or controls inside a URL: browsers drop them, so "java\tscript:" would run.
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_SPACE = re.compile(r"\s+")
TITLE_CHARS = 80  # a made-up title is at most this long, cut at a word
# Of a fragment, only so many characters are read for its first words: titles are made at
# render, and the sanitiser over a whole 512 KiB content would cost every render of it.
FIRST_WORDS_SOURCE = 16 * 1024


# Memoised: a render checks every entry's and source's URLs again, mostly the same ones as the
# render before (each change re-renders every format and page of an output).
@functools.lru_cache(maxsize=32768)
def safe_url(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL with a host, else None.

    Everything else (javascript:, data:, vbscript:, file:, relative or unparseable URLs, URLs
    with spaces or control characters) is dropped from the field; the entry itself is kept.
    """
    if not url:
        return None
    text = url.strip()
    if _URL_JUNK.search(text) or xml_safe(text) != text:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return text


def safe_email(address: str | None) -> str | None:
    """An e-mail address (a leading "mailto:" removed) if it looks like one, else None."""
    if not address:
        return None
    text = address.strip()
    if text.lower().startswith("mailto:"):
        text = unquote(text[7:]).split("?", 1)[0]
    return text if _EMAIL.match(text) else None


def safe_person_url(url: str | None) -> str | None:
    """An author's URL: http(s), or mailto: with a valid address (where an e-mail belongs)."""
    if url and url.strip().lower().startswith("mailto:"):
        email = safe_email(url)
        return f"mailto:{email}" if email else None
    return safe_url(url)


@functools.lru_cache(maxsize=32768)
def plain_text(text: str) -> str:
    """A plain-text field (title, author or feed name) as a reader shows it: character
    references that a publisher escaped twice ("Blog &#8211; InfluxData") decoded once,
    whitespace runs collapsed, XML-illegal characters dropped."""
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return xml_safe(_SPACE.sub(" ", text)).strip()


def first_words(fragment: str, limit: int = TITLE_CHARS) -> str:
    """A title made from the first words of an HTML fragment, as feed readers do: at most
    `limit` characters, cut at a word (at a character for scripts written without spaces),
    with an ellipsis when cut. "" when the fragment has no text."""
    text = plain_text(html_to_text(fragment[:FIRST_WORDS_SOURCE])) if fragment else ""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        return cut[:space].rstrip(" ,;:-–—") + "…"
    # No space late enough: a script written without spaces, or one very long word.
    return text[:limit].rstrip() + "…"


def name_from_url(url: str | None) -> str:
    """The last path segment of a URL, decoded ("episode-12.mp3"), or its host; "" if none."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    segment = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    return plain_text(segment or parts.hostname or "")
