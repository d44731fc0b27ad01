"""Publisher HTML made safe to republish: sanitised, links made absolute, XML-legal. Pure.

Feeds are untrusted input. feedparser already sanitises XML feeds, but JSON Feed content, stored
rows from older versions and whatever a future parser lets through all reach the outputs and the
HTML pages, so everything shown or republished passes through here once more.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import nh3

# Only these schemes survive in href/src: no javascript:, data:, vbscript: and the like.
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Characters XML 1.0 forbids (C0 controls except tab/newline/return, lone surrogates, U+FFFE/F).
# lxml refuses them outright and feed readers reject documents that carry them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 forbids."""
    return _XML_ILLEGAL.sub("", text)


def _is_http_url(url: str | None) -> bool:
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def clean_html(fragment: str, base: str | None) -> str:
    """Sanitise an HTML fragment and make its relative links absolute against `base`.

    Removes script and style (with their content), iframes, forms, event-handler and style
    attributes, and URLs whose scheme is not http, https or mailto. Relative URLs resolve
    against `base` (the entry's link) when it is an http(s) URL and are kept as they are
    otherwise. The result is XML-legal, so it can go into Atom and RSS as is.
    """
    if not fragment:
        return ""
    text = xml_safe(fragment)
    if _is_http_url(base):
        assert base is not None
        try:
            return nh3.clean(
                text, url_schemes=set(URL_SCHEMES), url_relative=("rewrite_with_base", base)
            )
        except ValueError:
            pass  # a base nh3 cannot parse: keep relative links rather than lose the entry
    return nh3.clean(text, url_schemes=set(URL_SCHEMES))
