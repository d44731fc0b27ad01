"""Publisher HTML made safe to republish: sanitised (nh3), links made absolute, XML-legal. Pure.

Feeds are untrusted input. feedparser's own sanitiser and relative-URI passes are switched off
for speed (they were half of its parse time, spent on every entry of every changed document):
the poll sanitises new and changed entries here once, at ingest, and they are stored sanitised.
Renders never sanitise again; a change of policy (SANITIZER_POLICY, embed_hosts) re-sanitises
the stored rows once, in the background (resanitize.py).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import nh3

# Bump when the rules below change: stored entries are then sanitised again, once.
SANITIZER_POLICY = "nh3 ammonia defaults; schemes http https mailto; iframes of embed_hosts; v1"
# Only these schemes survive in href/src: no javascript:, data:, vbscript: and the like.
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Characters XML 1.0 forbids (C0 controls except tab/newline/return, lone surrogates, U+FFFE/F).
# lxml refuses them outright and feed readers reject documents that carry them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MARKUP = frozenset("<>&")


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 forbids."""
    return _XML_ILLEGAL.sub("", text)


def _is_http_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


EMBED_ATTRIBUTES = frozenset({"src", "width", "height", "title", "allowfullscreen"})


def _embed_filter(hosts: frozenset[str]) -> Callable[[str, str, str], str | None]:
    def keep(tag: str, attr: str, value: str) -> str | None:
        if tag != "iframe" or attr != "src":
            return value
        try:
            parts = urlsplit(value)
        except ValueError:
            return None
        # Only https players on the hosts the operator allowed; any other iframe is left
        # without a source, so it shows nothing and loads nothing.
        return value if parts.scheme == "https" and parts.hostname in hosts else None

    return keep


def _clean(fragment: str, embed_hosts: frozenset[str], **options: Any) -> str:
    if not embed_hosts:
        cleaned: str = nh3.clean(fragment, link_rel=None, url_schemes=set(URL_SCHEMES), **options)
        return cleaned
    attributes = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes["iframe"] = set(EMBED_ATTRIBUTES)
    cleaned = nh3.clean(
        fragment,
        tags=set(nh3.ALLOWED_TAGS) | {"iframe"},
        attributes=attributes,
        attribute_filter=_embed_filter(embed_hosts),
        link_rel=None,
        url_schemes=set(URL_SCHEMES),
        **options,
    )
    return cleaned


def sanitize_html(
    fragment: str, base: str | None = None, embed_hosts: frozenset[str] = frozenset()
) -> str:
    """Sanitise an HTML fragment and make its relative links absolute against `base`.

    Removes script and style (with their content), iframes, forms, objects, event-handler and
    style attributes, and URLs whose scheme is not http, https or mailto. Relative URLs resolve
    against `base` (the entry's xml:base, its link or the document URL) when it is an http(s)
    URL and are kept as they are otherwise. The result is XML-legal: the sanitiser decodes
    character references, so "&#8;" would otherwise come out as a forbidden character.
    Iframes are removed too, unless their source is an https URL on one of `embed_hosts`
    (the operator's `embed_hosts` setting, for video players and the like).
    """
    if not fragment:
        return ""
    if not _MARKUP.intersection(fragment):
        return xml_safe(fragment)
    if _is_http_url(base):
        assert base is not None
        try:
            return xml_safe(_clean(fragment, embed_hosts, url_relative=("rewrite_with_base", base)))
        except ValueError:
            pass  # a base nh3 cannot parse: keep relative links rather than lose the entry
    return xml_safe(_clean(fragment, embed_hosts))


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (for titles given as HTML): tags dropped, entities decoded.
    The text of script and style elements is dropped with them."""
    if not _MARKUP.intersection(fragment):
        return fragment
    return xml_safe(html.unescape(nh3.clean(fragment, tags=set()))).strip()


def text_to_html(text: str) -> str:
    """A plain-text field as HTML, for content given as text (JSON Feed content_text)."""
    return html.escape(text, quote=False)
