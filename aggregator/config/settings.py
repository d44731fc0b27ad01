"""The [aggregator] table of the config file: daemon-wide settings, validated. Pure.

The loader (load.py) resolves it into the frozen `resolved.Settings` the rest of the program reads.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import PROJECT_URL, __version__
from ..config.database import Database
from ..config.secret import Secret
from ..config.values import Duration, Size, check_http_url, check_token, ranged
from ..ingest.limits import DEFAULT_LIMITS

DEFAULT_USER_AGENT = f"feed-aggregator/{__version__} (+{PROJECT_URL})"


class Strict(BaseModel):
    """Every table of the file: unknown keys are errors (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AggregatorTable(Strict):
    """The [aggregator] table: daemon-wide settings."""

    database: Database = Database(path=Path("data/aggregator.db"))  # or a postgresql:// URL
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"  # without one in the file: from `listen`
    user_agent: str = DEFAULT_USER_AGENT
    timeout: Duration = timedelta(seconds=20)
    interval: Duration = timedelta(minutes=30)
    max_concurrency: int = Field(default=32, ge=1, le=1024)
    max_body_size: Size = Field(default=10 * 1024**2, ge=1024, le=1024**3)
    parse_workers: int = Field(default=0, ge=0, le=64)
    # Bounds on one feed document's work (limits.py); a parse past parse_timeout is stopped.
    parse_timeout: Duration = timedelta(seconds=15)
    max_nesting: int = Field(default=DEFAULT_LIMITS.max_nesting, ge=8, le=10_000)
    max_title_size: Size = Field(default=DEFAULT_LIMITS.max_title_size, ge=64, le=1024**2)
    max_author_size: Size = Field(default=DEFAULT_LIMITS.max_author_size, ge=16, le=64 * 1024)
    max_content_size: Size = Field(
        default=DEFAULT_LIMITS.max_content_size, ge=1024, le=64 * 1024**2
    )
    max_entries_per_document: int = Field(
        default=DEFAULT_LIMITS.max_entries_per_document, ge=1, le=1_000_000
    )
    max_links_per_entry: int = Field(default=DEFAULT_LIMITS.max_links_per_entry, ge=1, le=1_000_000)
    max_elements_per_entry: int = Field(
        default=DEFAULT_LIMITS.max_elements_per_entry, ge=16, le=1_000_000
    )
    log_level: str = "info"
    hub: str | None = None
    embed_hosts: tuple[str, ...] = ()
    log_format: str = "text"
    summary_interval: Duration = timedelta(minutes=1)
    retention_days: int = Field(default=90, ge=0, le=36500)
    max_entries_per_feed: int = Field(default=1000, ge=0, le=1_000_000)
    min_interval: Duration = timedelta(minutes=1)
    max_interval: Duration = timedelta(days=1)
    max_backoff: Duration = timedelta(hours=24)
    adaptive: bool = False
    host_concurrency: int = Field(default=1, ge=1, le=64)
    host_delay: Duration = timedelta(seconds=1)
    # How long a poller's claim of a feed lasts without renewal (PostgreSQL, cluster.py).
    lease: Duration = timedelta(minutes=2)
    full_content: bool = False
    respect_robots: bool = True
    article_concurrency: int = Field(default=2, ge=1, le=64)
    admin_token: Secret | None = None

    _admin_token = field_validator("admin_token")(classmethod(lambda cls, v: check_token(v)))
    _durations = ranged(
        "timeout",
        "parse_timeout",
        "interval",
        "summary_interval",
        "min_interval",
        "max_interval",
        "max_backoff",
        "host_delay",
        "lease",
    )

    @model_validator(mode="before")
    @classmethod
    def _base_url_from_listen(cls, data: Any) -> Any:
        """No base_url: the server's own address (a wildcard host is reached on loopback)."""
        if not isinstance(data, dict) or data.get("base_url") or "listen" not in data:
            return data
        host, sep, port = str(data["listen"]).strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit():
            return data  # the listen validator reports it
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        shown = f"[{host}]" if ":" in host else host
        return {**data, "base_url": f"http://{shown}:{port}"}

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v.lower() not in ("text", "json"):
            raise ValueError(f"{v!r} is not one of text, json")
        return v.lower()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return check_http_url(v).rstrip("/")

    @field_validator("hub")
    @classmethod
    def _hub(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    @field_validator("embed_hosts")
    @classmethod
    def _embed_hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for host in v:
            if not re.fullmatch(
                r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+", host
            ):
                raise ValueError(
                    f"{host!r} is not a host name: write it as 'www.youtube.com', lower-case, "
                    "with no scheme, port or path"
                )
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not HOST:PORT (for example '127.0.0.1:8080')")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"{v!r} is not one of debug, info, warning, error")
        return v.lower()
