"""The [[feeds]] and [[outputs]] tables of the config file and the file as a whole, as pydantic
models: every user mistake is caught here, at load, with the key it concerns. Pure.

Nothing outside config/ sees these models: the loader resolves them into `resolved.Config`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..config.credentials import RESERVED_HEADERS
from ..config.rules import FilterKeys
from ..config.secret import Secret, resolve_secret, split_userinfo
from ..config.settings import AggregatorTable, Strict
from ..config.values import (
    HEADER_NAME,
    Duration,
    Identity,
    check_each,
    check_http_url,
    check_slug,
    check_token,
    checked_if_set,
    format_duration,
    ranged,
)
from ..ingest.extract import check_selector
from ..store.search import check_query


class FeedTable(FilterKeys):
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

    _name = field_validator("name")(classmethod(lambda cls, v: check_slug(v)))
    _url = field_validator("url")(classmethod(lambda cls, v: check_http_url(v)))
    _durations = ranged("interval", "host_delay")

    _content_selector = checked_if_set("content_selector", check_selector)

    @field_validator("remove_selectors")
    @classmethod
    def _remove_selectors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_each(v, check_selector)

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
            if not HEADER_NAME.match(name):
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
    def _credentials(self) -> FeedTable:
        names = {n.lower() for n in self.headers}
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.username is not None and "authorization" in names:
            raise ValueError("username/password and headers.Authorization both set; keep one")
        if self.cookie is not None and "cookie" in names:
            raise ValueError("cookie and headers.Cookie both set; keep one")
        return self


class OutputTable(FilterKeys):
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

    _name = field_validator("name")(classmethod(lambda cls, v: check_slug(v)))
    _durations = ranged("dedupe_window")
    _token = field_validator("token")(classmethod(lambda cls, v: check_token(v)))

    _query = checked_if_set("query", check_query)


class ConfigFile(Strict):
    """The whole validated config. Immutable; a reload builds a new one."""

    aggregator: AggregatorTable = AggregatorTable()
    feeds: tuple[FeedTable, ...] = ()
    outputs: tuple[OutputTable, ...] = ()

    @model_validator(mode="after")
    def _intervals_within_clamps(self) -> ConfigFile:
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
