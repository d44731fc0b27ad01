"""TOML config file → validated, immutable Config. Every user mistake is caught here, at load.

Reads the file (I/O) and validates it with pydantic; nothing else in the package parses config.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .. import PROJECT_URL, __version__
from ..config.credentials import RESERVED_HEADERS, RequestOptions, request_options
from ..config.env import apply_env, name_variables
from ..config.secret import Secret, resolve_secret, split_userinfo, unresolved_allowed
from ..errors import ConfigError
from ..ingest.decide import PollPolicy
from ..ingest.extract import check_selector
from ..ingest.limits import DEFAULT_LIMITS, Limits
from ..outputs.dedupe import DedupeSettings
from ..outputs.filters import (
    FIELDS,
    AllOf,
    AnyOf,
    Filter,
    Language,
    MaxAge,
    Not,
    Rule,
    Rules,
    Text,
    compile_keyword,
    compile_regex,
    compile_rule,
)
from ..store.search import check_query

DEFAULT_CONFIG = "config/aggregator.toml"
CONFIG_ENV = "AGGREGATOR_CONFIG"
DEFAULT_USER_AGENT = f"feed-aggregator/{__version__} (+{PROJECT_URL})"

# One or more number-unit parts, largest unit first: "90s", "1.5h", "1h30m", "1w2d".
_PART = r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)"
_DURATION = re.compile(rf"^\s*(?:{_PART}\s*)+$")
_PARTS = re.compile(_PART)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ORDER = "wdhms"
DURATION_HINT = "expected a duration such as '90s', '30m', '1h30m', '2h', '1d' or '1w'"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def parse_duration(value: object) -> timedelta:
    """Parse "90s", "30m", "1h30m", "2h", "1d", "1w" (or a number of seconds) into a
    timedelta. Parts go from the largest unit down, each unit once."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str) and _DURATION.match(value):
        parts = _PARTS.findall(value)
        units = [_ORDER.index(unit) for _, unit in parts]
        if units == sorted(set(units)):
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(f"{DURATION_HINT}, got {value!r}")


def parse_size(value: object) -> int:
    """Parse a byte size with pydantic's ByteSize: an integer, or "10MiB", "512 KiB", "1GB"
    (KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '10MiB' or a number of bytes, got {value!r}")
    try:
        return int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError as e:
        raise ValueError(
            f"expected a size such as '10MiB' or a number of bytes, got {value!r}"
        ) from e


def format_duration(d: timedelta) -> str:
    """The shortest exact spelling of a duration in the config's own syntax."""
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
# A credential that is not secret in itself (a user name): hidden, but not blanked in logs.
Identity = Annotated[
    Secret,
    PlainValidator(lambda v: v if isinstance(v, Secret) else resolve_secret(v, redacted=False)),
]
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MIN_TOKEN = 16


def _check_token(v: Secret | None) -> Secret | None:
    """An access token must be long enough not to be guessed and fit in a URL's query."""
    if v is None or not v.resolved:
        return v
    if len(v.value) < _MIN_TOKEN:
        raise ValueError(
            f"a token needs at least {_MIN_TOKEN} characters "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if any(c.isspace() or not c.isprintable() for c in v.value):
        raise ValueError("a token cannot contain spaces or control characters")
    return v


def _in_range(name: str, d: timedelta, low: timedelta, high: timedelta) -> timedelta:
    if not low <= d <= high:
        raise ValueError(
            f"{name} {format_duration(d)} is out of range "
            f"({format_duration(low)} to {format_duration(high)})"
        )
    return d


# Every duration key's bounds, by key name, wherever the key appears ([aggregator], [[feeds]],
# [[outputs]]): one table, so a per-feed override cannot drift from the daemon-wide setting.
DURATION_RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "timeout": (timedelta(seconds=1), timedelta(minutes=10)),
    "parse_timeout": (timedelta(seconds=1), timedelta(minutes=10)),
    "interval": (timedelta(seconds=5), timedelta(days=30)),
    "summary_interval": (timedelta(seconds=5), timedelta(days=1)),
    "min_interval": (timedelta(seconds=5), timedelta(days=30)),
    "max_interval": (timedelta(seconds=5), timedelta(days=30)),
    "max_backoff": (timedelta(minutes=1), timedelta(days=30)),
    "host_delay": (timedelta(0), timedelta(minutes=10)),
    "dedupe_window": (timedelta(minutes=1), timedelta(days=30)),
}


def _duration_in_range(v: timedelta | None, info: ValidationInfo) -> timedelta | None:
    if v is None:  # an optional per-feed override left out
        return v
    name = str(info.field_name)
    low, high = DURATION_RANGES[name]
    return _in_range(name, v, low, high)


def _ranged(*names: str) -> Any:
    """A field validator checking the named duration fields against DURATION_RANGES."""
    return field_validator(*names)(classmethod(lambda cls, v, info: _duration_in_range(v, info)))


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower-case letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Settings(_Strict):
    """The [aggregator] table: daemon-wide settings."""

    database: Path = Path("data/aggregator.db")
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
    full_content: bool = False
    respect_robots: bool = True
    article_concurrency: int = Field(default=2, ge=1, le=64)
    admin_token: Secret | None = None

    _admin_token = field_validator("admin_token")(classmethod(lambda cls, v: _check_token(v)))
    _durations = _ranged(
        "timeout",
        "parse_timeout",
        "interval",
        "summary_interval",
        "min_interval",
        "max_interval",
        "max_backoff",
        "host_delay",
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
        return _check_http_url(v).rstrip("/")

    @field_validator("hub")
    @classmethod
    def _hub(cls, v: str | None) -> str | None:
        return None if v is None else _check_http_url(v)

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

    def limits(self) -> Limits:
        """The bounds every parse of a feed document keeps to."""
        return Limits(
            max_nesting=self.max_nesting,
            max_title_size=self.max_title_size,
            max_author_size=self.max_author_size,
            max_content_size=self.max_content_size,
            max_entries_per_document=self.max_entries_per_document,
            max_links_per_entry=self.max_links_per_entry,
            max_elements_per_entry=self.max_elements_per_entry,
        )

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


FieldName = Literal["title", "summary", "content", "link", "author", "category"]
assert set(FIELDS) == set(FieldName.__args__)  # type: ignore[attr-defined]


class RuleSpec(_Strict):
    """One node of a rule tree: exactly one of keyword, regex, all, any, not, max_age, language.

    `fields` narrows a keyword or regex to some of title, summary, content, link, author and
    category (all of them by default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keyword: str | None = None
    regex: str | None = None
    fields: tuple[FieldName, ...] = ()
    all_: tuple[RuleSpec, ...] | None = Field(default=None, alias="all")
    any_: tuple[RuleSpec, ...] | None = Field(default=None, alias="any")
    not_: RuleSpec | None = Field(default=None, alias="not")
    max_age: Duration | None = None
    language: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RuleSpec:
        kinds = [
            k
            for k, v in (
                ("keyword", self.keyword),
                ("regex", self.regex),
                ("all", self.all_),
                ("any", self.any_),
                ("not", self.not_),
                ("max_age", self.max_age),
                ("language", self.language),
            )
            if v is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a rule needs exactly one of keyword, regex, all, any, not, max_age, language"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.fields and kinds[0] not in ("keyword", "regex"):
            raise ValueError("fields only applies to keyword and regex rules")
        if self.keyword is not None and not self.keyword.strip():
            raise ValueError("empty keyword")
        if self.regex is not None:
            compile_regex(self.regex)
        return self

    def compile(self) -> Rule:
        if self.keyword is not None:
            return Text(compile_keyword(self.keyword), self.fields)
        if self.regex is not None:
            return Text(compile_regex(self.regex), self.fields)
        if self.all_ is not None:
            return AllOf(tuple(r.compile() for r in self.all_))
        if self.any_ is not None:
            return AnyOf(tuple(r.compile() for r in self.any_))
        if self.not_ is not None:
            return Not(self.not_.compile())
        if self.max_age is not None:
            return MaxAge(self.max_age)
        assert self.language is not None
        return Language(tuple(x.lower() for x in self.language))


def _check_each(v: tuple[str, ...], check: Callable[[str], object]) -> tuple[str, ...]:
    problems = []
    for i, item in enumerate(v):
        try:
            check(item)
        except ValueError as e:
            problems.append(f"[{i}]: {e}")
    if problems:
        # Carry the index so the message names `outputs[1].include[0]`.
        raise ValueError("; ".join(problems))
    return v


def _check_rules(v: tuple[str, ...]) -> tuple[str, ...]:
    return _check_each(v, compile_rule)


class _Filtered(_Strict):
    """The filter keys shared by feeds (applied before storing) and outputs (at render time)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    filters: tuple[RuleSpec, ...] = ()
    max_age: Duration | None = None
    language: tuple[str, ...] = ()

    _rule_lists = field_validator("include", "exclude")(classmethod(lambda cls, v: _check_rules(v)))

    def compiled_filter(self, max_per_feed: int | None = None) -> Filter:
        """The filter these keys describe; check names say which key dropped an entry."""
        checks: list[tuple[str, Rule]] = []
        if self.include:
            checks.append(("include", AnyOf(tuple(Text(compile_rule(r)) for r in self.include))))
        for i, r in enumerate(self.exclude):
            checks.append((f"exclude[{i}] {r!r}", Not(Text(compile_rule(r)))))
        for i, spec in enumerate(self.filters):
            checks.append((f"filters[{i}]", spec.compile()))
        if self.max_age is not None:
            checks.append((f"max_age {format_duration(self.max_age)}", MaxAge(self.max_age)))
        if self.language:
            checks.append(
                (
                    f"language {', '.join(self.language)}",
                    Language(tuple(x.lower() for x in self.language)),
                )
            )
        return Filter(tuple(checks), max_per_feed)


class FeedConfig(_Filtered):
    """One [[feeds]] table: a source to poll."""

    name: str
    url: str
    title: str | None = None
    interval: Duration | None = None
    tags: tuple[str, ...] = ()
    update_policy: Literal["ignore", "update", "republish"] = "update"
    adaptive: bool | None = None
    host_concurrency: int | None = Field(default=None, ge=1, le=64)
    host_delay: Duration | None = None
    full_content: bool | None = None
    content_selector: str | None = None
    remove_selectors: tuple[str, ...] = ()
    # A private feed's request (see credentials.py): secrets are literal, env: or file:.
    headers: dict[str, Secret] = Field(default_factory=dict)
    username: Identity | None = None
    password: Secret | None = None
    cookie: Secret | None = None
    user_agent: str | None = None
    proxy: Secret | None = None
    tls_verify: bool = True

    _name = field_validator("name")(classmethod(lambda cls, v: _check_slug(v)))
    _url = field_validator("url")(classmethod(lambda cls, v: _check_http_url(v)))
    _durations = _ranged("interval", "host_delay")

    @field_validator("content_selector")
    @classmethod
    def _content_selector(cls, v: str | None) -> str | None:
        if v is not None:
            check_selector(v)
        return v

    @field_validator("remove_selectors")
    @classmethod
    def _remove_selectors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_each(v, check_selector)

    @model_validator(mode="before")
    @classmethod
    def _userinfo(cls, data: Any) -> Any:
        """user:password@ in the URL become the feed's basic credentials and leave the URL,
        which is shown and stored everywhere."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        url, user, password = split_userinfo(data["url"])
        if user is None:
            return data
        if "username" in data or "password" in data:
            raise ValueError(
                "url: has user:password@ and username/password are set too; keep one of them"
            )
        data = {**data, "url": url, "username": Secret(user)}
        if password:
            data["password"] = resolve_secret(password)
        return data

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, Secret]) -> dict[str, Secret]:
        for name, value in v.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is set by the fetcher itself")
            if any(c in value.value for c in "\r\n\0"):  # "" when unresolved
                raise ValueError(f"the value of {name} contains a line break")
        return v

    @field_validator("cookie", "password")
    @classmethod
    def _one_line(cls, v: Secret | None) -> Secret | None:
        if v is not None and any(c in v.value for c in "\r\n\0"):
            raise ValueError("contains a line break")
        return v

    @field_validator("user_agent")
    @classmethod
    def _user_agent(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "\r\n\0")):
            raise ValueError("must be one non-empty line")
        return v

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: Secret | None) -> Secret | None:
        # The message never quotes the URL: it may hold the proxy's password.
        if v is None or not v.resolved:
            return v
        parts = urlsplit(v.value)
        if parts.scheme.lower().startswith("socks"):
            raise ValueError("SOCKS proxies are not supported: use an http:// or https:// proxy")
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// proxy URL")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> FeedConfig:
        names = {n.lower() for n in self.headers}
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.username is not None and "authorization" in names:
            raise ValueError("username/password and headers.Authorization both set; keep one")
        if self.cookie is not None and "cookie" in names:
            raise ValueError("cookie and headers.Cookie both set; keep one")
        return self

    @cached_property
    def request_options(self) -> RequestOptions | None:
        """How this feed is requested; None for a public feed with the daemon's defaults."""
        return request_options(
            self.url,
            headers=self.headers,
            username=self.username,
            password=self.password,
            cookie=self.cookie,
            user_agent=self.user_agent,
            proxy=self.proxy,
            tls_verify=self.tls_verify,
        )


class OutputConfig(_Filtered):
    """One [[outputs]] table: a merged, filtered view re-published as Atom, RSS and JSON Feed."""

    name: str
    title: str
    description: str | None = None
    feeds: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    limit: int = Field(default=100, ge=1, le=10_000)
    # Stories per page of the feed formats; None: the whole `limit` on the first page, which
    # is what a subscriber's reader fetches (almost none follows rel="next").
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    max_per_feed: int | None = Field(default=None, ge=1, le=10_000)
    query: str | None = None
    dedupe: Literal["off", "exact", "near"] = "near"
    dedupe_threshold: float = Field(default=0.8, ge=0.5, le=1.0)
    dedupe_window: Duration = timedelta(days=2)
    # A private output answers only to this token (see tokens.py).
    token: Secret | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_slug(v)))
    _durations = _ranged("dedupe_window")
    _token = field_validator("token")(classmethod(lambda cls, v: _check_token(v)))

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        if v is not None:
            check_query(v)
        return v

    @property
    def rules(self) -> Rules:
        return Rules.compile(self.include, self.exclude)

    @property
    def filter(self) -> Filter:
        return self.compiled_filter(self.max_per_feed)

    @property
    def dedupe_settings(self) -> DedupeSettings:
        return DedupeSettings(self.dedupe, self.dedupe_threshold, self.dedupe_window)


class Config(_Strict):
    """The whole validated config. Immutable; a reload builds a new one."""

    aggregator: Settings = Settings()
    feeds: tuple[FeedConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()

    def feed(self, name: str) -> FeedConfig:
        for f in self.feeds:
            if f.name == name:
                return f
        raise KeyError(name)

    def output(self, name: str) -> OutputConfig:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    @model_validator(mode="after")
    def _intervals_within_clamps(self) -> Config:
        s = self.aggregator
        problems = []
        if s.min_interval > s.max_interval:
            problems.append(
                f"aggregator.min_interval: {format_duration(s.min_interval)} is above "
                f"max_interval {format_duration(s.max_interval)}"
            )
        where = [("aggregator.interval", s.interval)] + [
            (f"feeds[{i}].interval", f.interval) for i, f in enumerate(self.feeds) if f.interval
        ]
        for key, value in where:
            if value is not None and not s.min_interval <= value <= s.max_interval:
                problems.append(
                    f"{key}: {format_duration(value)} is outside min_interval "
                    f"{format_duration(s.min_interval)} to max_interval "
                    f"{format_duration(s.max_interval)}"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def full_content_of(self, feed: FeedConfig) -> bool:
        """Whether the feed's new entries get their article page's text as content."""
        return self.aggregator.full_content if feed.full_content is None else feed.full_content

    def interval_of(self, feed: FeedConfig) -> timedelta:
        return feed.interval or self.aggregator.interval

    def policy_of(self, feed: FeedConfig) -> PollPolicy:
        """How often `feed` may and should be polled: its settings over the [aggregator] ones."""
        s = self.aggregator
        return PollPolicy(
            interval=self.interval_of(feed),
            min_interval=s.min_interval,
            max_interval=s.max_interval,
            max_backoff=s.max_backoff,
            adaptive=s.adaptive if feed.adaptive is None else feed.adaptive,
            host_concurrency=feed.host_concurrency or s.host_concurrency,
            host_delay=s.host_delay if feed.host_delay is None else feed.host_delay,
        )

    def sources_of(self, output: OutputConfig) -> tuple[FeedConfig, ...]:
        """The feeds an output draws from: named ones and those with its tags; neither means all."""
        if not output.feeds and not output.tags:
            return self.feeds
        wanted_tags = set(output.tags)
        return tuple(
            f for f in self.feeds if f.name in output.feeds or wanted_tags.intersection(f.tags)
        )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        else:
            out += f".{part}"
    return out


def _problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = _loc(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (is it misspelled?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        if not loc:
            lines.extend(msg.splitlines())
        elif msg.startswith("[") and "]: " in msg:
            # A list validator reports per-item problems as "[i]: message"; attach them to the key.
            lines.extend(f"{loc}{part}" for part in msg.split("; "))
        else:
            lines.append(f"{loc}: {msg}")
    return lines


def _cross_problems(data: dict[str, Any]) -> list[str]:
    """Checks across tables (unique names, outputs naming real feeds and tags).

    Run on the raw document, so that these problems are reported together with field errors
    instead of only after every field is fixed.
    """

    def tables(key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        return [t if isinstance(t, dict) else {} for t in value] if isinstance(value, list) else []

    problems: list[str] = []
    feeds, outputs = tables("feeds"), tables("outputs")
    seen: dict[str, int] = {}
    tags: set[str] = set()
    for i, feed in enumerate(feeds):
        name = feed.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    f"feeds[{i}].name: duplicate name {name!r} (also feeds[{seen[name]}])"
                )
            seen.setdefault(name, i)
        feed_tags = feed.get("tags", [])
        if isinstance(feed_tags, list):
            tags.update(t for t in feed_tags if isinstance(t, str))
    out_seen: dict[str, int] = {}
    for i, out in enumerate(outputs):
        name = out.get("name")
        if isinstance(name, str):
            if name in out_seen:
                problems.append(
                    f"outputs[{i}].name: duplicate name {name!r} (also outputs[{out_seen[name]}])"
                )
            out_seen.setdefault(name, i)
        for key, known, what in (
            ("feeds", seen, "no feed is named"),
            ("tags", tags, "no feed has the tag"),
        ):
            values = out.get(key, [])
            if not isinstance(values, list):
                continue
            for j, value in enumerate(values):
                if isinstance(value, str) and value not in known:
                    problems.append(f"outputs[{i}].{key}[{j}]: {what} {value!r}")
    return problems


def parse_config(data: dict[str, Any], path: str = "<config>") -> Config:
    """Validate a decoded TOML document. Raises ConfigError naming every problem."""
    problems = _cross_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(path, _problems(e) + problems) from e
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(path: str | os.PathLike[str] | None = None, *, need_secrets: bool = True) -> Config:
    """Read and validate the config file at `path`, or $AGGREGATOR_CONFIG, or the default.

    `need_secrets=False` accepts env: and file: secrets that cannot be read here (they stay
    unresolved), for commands that never send or serve them.
    """
    resolved = str(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        with open(resolved, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(resolved, ["file not found"]) from e
    except OSError as e:
        raise ConfigError(resolved, [f"cannot read: {e.strerror}"]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(resolved, [f"not valid TOML: {e}"]) from e
    data, used = apply_env(data, Settings.model_fields, os.environ)
    try:
        if need_secrets:
            return parse_config(data, resolved)
        with unresolved_allowed():
            return parse_config(data, resolved)
    except ConfigError as e:
        if not used:
            raise
        raise ConfigError(resolved, name_variables(e.problems, used)) from e
