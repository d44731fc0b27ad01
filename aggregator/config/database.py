"""`[aggregator] database`: an SQLite file's path or a `postgresql://` URL, resolved into the
frozen `Database` every user of the store reads. Pure, but for remembering the password so
that logs and messages blank it.

The URL is handed to libpq as written: its password may be in it (`user:password@`, or
`?password=`), or come from libpq itself (`PGPASSWORD`, a pass file, a service file). Only
`display`, the URL without user, password or a `password=` parameter, is ever shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from .secret import remember, split_userinfo

SCHEMES = ("postgresql", "postgres")
# Any `scheme://`: a URL of another engine is an error, not a file named `mysql:/x`.
_URL = re.compile(r"(?i)^([a-z][a-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True, repr=False)
class Database:
    """Where the store lives: exactly one of `path` (SQLite) and `url` (PostgreSQL).

    `url` may hold a password: str() and repr() give `display` only, so printing a config,
    a Settings or an error that names the database never shows it.
    """

    path: Path | None = None
    url: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def display(self) -> str:
        """What logs, /status and errors name the database by: never a password."""
        return display_url(self.url) if self.url is not None else str(self.path)

    @property
    def kind(self) -> str:
        return "postgresql" if self.is_postgres else "sqlite"

    def sqlite_path(self) -> Path:
        """The SQLite file; only for code that has checked `is_postgres` is false."""
        assert self.path is not None, "a PostgreSQL database has no file"
        return self.path

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"Database({self.display!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # A config value is a string (or a Path, as the defaults and tests give it).
        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, Database) else parse_database(v)
        )


def display_url(url: str) -> str:
    """A PostgreSQL URL without its user, password and `password=` parameter (the rest as
    written: `postgresql:///db?host=/run/postgresql` keeps its empty host)."""
    parts = urlsplit(split_userinfo(url)[0])
    kept = [p for p in parts.query.split("&") if p and p.partition("=")[0] != "password"]
    query = f"?{'&'.join(kept)}" if kept else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


def parse_database(value: object) -> Database:
    """A path or a `postgresql://` / `postgres://` URL; ValueError (naming what is accepted)
    for anything else. The URL's password, and `$PGPASSWORD`, are remembered for redaction."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("expected a file path or a postgresql:// URL")
    text = value.strip()
    if not text:
        raise ValueError("empty: give a file path or a postgresql:// URL")
    scheme = _URL.match(text)
    if scheme is None:
        return Database(path=Path(text))
    if scheme.group(1).lower() not in SCHEMES:
        raise ValueError(
            f"{scheme.group(1)}:// is not supported: give a file path (SQLite) or a "
            "postgresql:// URL"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise ValueError(f"not a valid postgresql:// URL: {e}") from None
    password = split_userinfo(text)[2]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for secret in (password, query.get("password"), os.environ.get("PGPASSWORD")):
        if secret:
            remember(secret)  # blanked in every later log line and redacted message
    return Database(url=text)
