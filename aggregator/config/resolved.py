"""The config as the program uses it: frozen, slotted objects with every value a poll or a
render needs already worked out (poll policies, compiled filters, an output's sources). Pure.

`load.load_config` builds them once per file read; a reload builds a new `Config` whole. Feeds
and outputs are read-only mappings by name, in the order of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from ..config.credentials import RequestOptions
from ..config.database import Database
from ..config.secret import Secret
from ..ingest.decide import PollPolicy
from ..ingest.identity import UpdatePolicy
from ..ingest.limits import Limits
from ..outputs.dedupe import DedupeSettings
from ..outputs.filters import Filter


@dataclass(frozen=True, slots=True)
class Settings:
    """The [aggregator] table (README: "Configuration"), with `limits`, `host` and `port`
    derived from it."""

    database: Database  # an SQLite file or a PostgreSQL URL (database.py)
    listen: str
    host: str  # of `listen`, without the brackets of an IPv6 address
    port: int
    base_url: str  # without a trailing slash
    user_agent: str
    timeout: timedelta
    interval: timedelta
    max_concurrency: int
    max_body_size: int
    parse_workers: int
    parse_timeout: timedelta
    limits: Limits  # max_nesting ... max_elements_per_entry: what one document may cost
    log_level: str
    log_format: str
    hub: str | None
    embed_hosts: tuple[str, ...]
    summary_interval: timedelta
    retention_days: int
    max_entries_per_feed: int
    min_interval: timedelta
    max_interval: timedelta
    max_backoff: timedelta
    adaptive: bool
    host_concurrency: int
    host_delay: timedelta
    lease: timedelta
    full_content: bool
    respect_robots: bool
    article_concurrency: int
    admin_token: Secret | None


@dataclass(frozen=True, slots=True)
class Feed:
    """One [[feeds]] table, with the [aggregator] defaults it does not override applied."""

    name: str
    url: str  # without user:password@ (they are in `request_options`)
    title: str | None
    tags: tuple[str, ...]
    interval: timedelta  # its own, or the [aggregator] one
    policy: PollPolicy  # how often it may and should be polled
    filter: Filter  # what its polls store; `filter.keeps(Candidate)`
    update_policy: UpdatePolicy
    # How it is requested (credentials, user agent, proxy, TLS); None for a public feed.
    request_options: RequestOptions | None
    full_content: bool  # its own, or the [aggregator] one
    content_selector: str | None
    remove_selectors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Output:
    """One [[outputs]] table: a merged, filtered view of its sources."""

    name: str
    title: str
    description: str | None
    # The feeds it draws from, in config order: those it names and those with its tags
    # (every feed when it names neither).
    sources: tuple[Feed, ...]
    limit: int
    # Stories per page of the feed formats; None: the whole `limit` on the first page.
    page_size: int | None
    query: str | None
    filter: Filter  # its rules, and max_per_feed
    dedupe: DedupeSettings
    token: Secret | None  # a private output answers only to this token (see tokens.py)
    # Seconds a client may reuse it: nothing in it can change sooner than its sources' shortest
    # poll interval.
    max_age: int


@dataclass(frozen=True, slots=True)
class Config:
    """The whole config. Immutable; a reload builds a new one."""

    aggregator: Settings
    feeds: Mapping[str, Feed]
    outputs: Mapping[str, Output]
