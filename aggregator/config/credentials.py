"""What a private feed's request carries besides the GET, and to which origins. Pure.

Credentials (Authorization, Cookie and the feed's own headers) belong to the origin of the
feed's configured URL: a redirect to any other origin loses them, as browsers do, and so does
a feed whose permanent redirect took it elsewhere. The one exception is the upgrade of the
same host from http to https (as in `requests`), where nothing travels less safely.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..config.secret import Secret

Origin = tuple[str, str, int]  # scheme, lower-case host, port
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers the fetcher owns: framing, the connection and the conditional GET.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "if-none-match",
        "if-modified-since",
        "accept-encoding",
    }
)


def origin_of(url: str) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme, 0)


def may_send(own: Origin, url: str) -> bool:
    """Whether credentials bound to origin `own` may go with a request to `url`."""
    there = origin_of(url)
    if there == own:
        return True
    upgrade = (own[0], own[2], there[0], there[2]) == ("http", 80, "https", 443)
    return upgrade and there[1] == own[1]


def basic_authorization(username: str, password: str) -> str:
    """The value of an HTTP basic Authorization header (RFC 7617, UTF-8)."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """One feed's request settings. `credentials` go only to `origin` (see `may_send`), and
    `tls_verify=False` applies only there; `user_agent` and `proxy` apply to every hop."""

    origin: Origin
    # Never in a repr: these are the secrets themselves (a proxy URL may hold a password).
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    user_agent: str | None = None
    proxy: str | None = field(default=None, repr=False)
    tls_verify: bool = True

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers a request to `url` adds to the session's own."""
        out = dict(self.credentials) if self.credentials and may_send(self.origin, url) else {}
        if self.user_agent:
            out["User-Agent"] = self.user_agent
        return out

    def verify_for(self, url: str) -> bool:
        """Whether to check TLS certificates for `url`: always, except where the feed's
        credentials may go (its own origin, or its https upgrade) with `tls_verify = false`."""
        return self.tls_verify or not may_send(self.origin, url)

    def credentials_withheld(self, url: str) -> bool:
        """True when this feed has credentials and `url` is not allowed to get them."""
        return bool(self.credentials) and not may_send(self.origin, url)


def request_options(
    url: str,
    *,
    headers: Mapping[str, Secret],
    username: Secret | None,
    password: Secret | None,
    cookie: Secret | None,
    user_agent: str | None,
    proxy: Secret | None,
    tls_verify: bool,
) -> RequestOptions | None:
    """A feed's RequestOptions, or None when it has none (the common, cheapest case)."""
    if not (headers or username or cookie or user_agent or proxy) and tls_verify:
        return None
    credentials = {name: value.value for name, value in headers.items()}
    if username is not None:
        credentials["Authorization"] = basic_authorization(
            username.value, password.value if password is not None else ""
        )
    if cookie is not None:
        credentials["Cookie"] = cookie.value
    return RequestOptions(
        origin=origin_of(url),
        credentials=credentials,
        user_agent=user_agent,
        proxy=proxy.value if proxy is not None else None,
        tls_verify=tls_verify,
    )
