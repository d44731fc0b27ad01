"""Secret values of the config ("env:NAME", "file:/path" or literal) and their redaction.

Resolving reads the environment or a file (I/O, at config load). Every resolved secret is
remembered, so that `redact` and the log filter can blank it wherever it might slip through.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

MASK = "***"
# Shorter values are not blanked in logs: a 3-letter password would mangle every line that
# happens to contain those letters, and the value itself never reaches a log on purpose.
MIN_REDACTED = 4
# scheme://user:password@host in free text (an error message, a URL someone logged).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s?#]+@")


class Secret:
    """A secret string read from the config: shown as `***` (with its reference, never its
    value) by str() and repr(), so printing a config or a model never discloses it.

    Two secrets are equal when their values are, so a reload sees a rotated token as a change.
    """

    __slots__ = ("reference", "resolved", "value")

    def __init__(self, value: str, reference: str = "literal", resolved: bool = True) -> None:
        self.value = value
        self.reference = reference  # "env:NAME", "file:/path" or "literal": safe to show
        # False only under `unresolved_allowed`: the reference could not be read here.
        self.resolved = resolved

    def __repr__(self) -> str:
        return f"Secret({self.reference}: {MASK})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # A config value is a string reference; an already resolved Secret passes as it is.
        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, Secret) else resolve_secret(v)
        )


# Longest first (one secret may contain another); replaced whole, so readers need no lock.
_known: tuple[str, ...] = ()
_lock = threading.Lock()
_lenient: ContextVar[bool] = ContextVar("lenient", default=False)


@contextmanager
def unresolved_allowed() -> Iterator[None]:
    """Within: an env: or file: reference that cannot be read gives an unresolved Secret
    instead of an error. For commands that never use a secret's value (`aggregator feeds`,
    `reload`, ...), which may run without the daemon's environment or its secret files."""
    token = _lenient.set(True)
    try:
        yield
    finally:
        _lenient.reset(token)


def remember(value: str) -> None:
    """Blank `value` in every later `redact` and log line of this process."""
    global _known
    if len(value) >= MIN_REDACTED and value not in _known:
        with _lock:
            _known = tuple(sorted({*_known, value}, key=len, reverse=True))


def resolve_secret(raw: object, *, redacted: bool = True) -> Secret:
    """Resolve a config value: "env:NAME" (an environment variable), "file:PATH" (a file's
    content, without its final newline, as Docker and systemd secrets are written) or the
    literal string. A missing variable or file is a ValueError that names it, never its value.

    `redacted=False` for values that are not secret in themselves (a user name): they are
    still shown as `***`, but not blanked in logs, where they would mangle ordinary words.
    """
    if not isinstance(raw, str):
        raise ValueError("expected a string: a literal, 'env:NAME' or 'file:/path'")
    try:
        return _resolve(raw, redacted)
    except ValueError:
        named = raw.startswith(("env:", "file:")) and raw not in ("env:", "file:")
        if _lenient.get() and named:
            return Secret("", raw, resolved=False)
        raise


def _resolve(raw: str, redacted: bool) -> Secret:
    if raw.startswith("env:"):
        name = raw[4:]
        if not name:
            raise ValueError("'env:' needs the name of an environment variable")
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
    elif raw.startswith("file:"):
        path = raw[5:]
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as e:
            raise ValueError(f"cannot read secret file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"secret file {path} is not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")
    else:
        value = raw
        raw = "literal"
    if not value:
        raise ValueError(f"the secret ({raw}) is empty")
    if redacted:
        remember(value)
    return Secret(value, raw)


def redact(text: str) -> str:
    """`text` with every remembered secret and every URL's userinfo blanked."""
    if "@" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    return text


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(url without user:password@, user, password), the two percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=hostport))
    return clean, unquote(user), unquote(password) if sep else None


def strip_userinfo(url: str) -> str:
    """`url` without its user:password@, if it has one."""
    return split_userinfo(url)[0] if "@" in url else url


class RedactingFilter(logging.Filter):
    """Blanks remembered secrets and URL userinfo in a log record's message and traceback.

    A safety net: no code logs a secret on purpose, but a library's exception text might
    carry one (a proxy URL, a header echoed back).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        values = getattr(record, "fields", None)  # the keys of a JSON log line (logs.fields)
        if isinstance(values, dict):
            record.fields = {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}
        return True
