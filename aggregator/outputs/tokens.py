"""Who may see what: private outputs' tokens and the admin token, checked per request. Pure.

A token is accepted three ways, for the clients that exist: `?token=` (what feed readers
support), HTTP basic auth with the token as password (any user name), and
`Authorization: Bearer`. Comparisons take constant time, so response timing does not leak
how much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from urllib.parse import quote

from ..config.resolved import Config, Output
from ..config.secret import Secret


def presented(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The token a request carries, if any: ?token=, then Bearer, then basic auth."""
    token = query.get("token")
    if token:
        return token
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password or None
    return None


def matches(secret: Secret | None, token: str | None) -> bool:
    """Whether `token` is `secret`, in time independent of where they differ."""
    if secret is None or token is None:
        return False
    return hmac.compare_digest(secret.value.encode(), token.encode())


def may_read(output: Output, token: str | None) -> bool:
    """A public output is for everyone; a private one only for its token."""
    return output.token is None or matches(output.token, token)


def is_admin(config: Config, token: str | None) -> bool:
    """Whether the daemon's own pages are open to this request: always without an
    admin_token, and with one only to that token."""
    admin = config.aggregator.admin_token
    return admin is None or matches(admin, token)


def visible_outputs(
    config: Config, token: str | None, *, admin: bool = False
) -> tuple[Output, ...]:
    """The outputs a request may learn of: the public ones and a private one with its own
    token; with `admin` (the /status of a daemon that has an admin_token, to that token),
    all of them. Only the existence: reading a private output still takes its own token."""
    if admin and config.aggregator.admin_token is not None:
        return tuple(config.outputs.values())
    return tuple(o for o in config.outputs.values() if may_read(o, token))


def token_query(output: Output) -> str:
    """`token=…` for the links of a private output ("" for a public one)."""
    if output.token is None:
        return ""
    return "token=" + quote(output.token.value, safe="")
