"""Config file → `resolved.Config`: reads the TOML (I/O), validates it with the pydantic tables,
reports every problem as one line naming its key, and resolves the tables into frozen objects.

pydantic stays here and in the table modules; `load_config` and `parse_config` are the ways in.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from ..config.credentials import request_options
from ..config.env import apply_env, name_variables
from ..config.resolved import Config, Feed, Output, Settings
from ..config.schema import ConfigFile, FeedTable, OutputTable
from ..config.secret import unresolved_allowed
from ..config.settings import AggregatorTable
from ..errors import ConfigError
from ..ingest.decide import PollPolicy
from ..ingest.limits import Limits
from ..outputs.dedupe import DedupeSettings

DEFAULT_CONFIG = "config/aggregator.toml"
CONFIG_ENV = "AGGREGATOR_CONFIG"


def _settings(table: AggregatorTable) -> Settings:
    taken = {f.name for f in fields(Settings)} - {"host", "port", "limits"}
    limits = {f.name: getattr(table, f.name) for f in fields(Limits)}
    host, _, port = table.listen.rpartition(":")
    return Settings(
        **{name: getattr(table, name) for name in taken},
        host=host.strip("[]"),
        port=int(port),
        limits=Limits(**limits),
    )


def _feed(table: FeedTable, s: AggregatorTable) -> Feed:
    """A feed's table over the [aggregator] defaults, with its policy and filter made."""
    interval = table.interval or s.interval
    policy = PollPolicy(
        interval=interval,
        min_interval=s.min_interval,
        max_interval=s.max_interval,
        max_backoff=s.max_backoff,
        adaptive=s.adaptive if table.adaptive is None else table.adaptive,
        host_concurrency=table.host_concurrency or s.host_concurrency,
        host_delay=s.host_delay if table.host_delay is None else table.host_delay,
    )
    options = request_options(
        table.url,
        headers=table.headers,
        username=table.username,
        password=table.password,
        cookie=table.cookie,
        user_agent=table.user_agent,
        proxy=table.proxy,
        tls_verify=table.tls_verify,
    )
    return Feed(
        name=table.name,
        url=table.url,
        title=table.title,
        tags=table.tags,
        interval=interval,
        policy=policy,
        filter=table.compiled_filter(),
        update_policy=table.update_policy,
        request_options=options,
        full_content=s.full_content if table.full_content is None else table.full_content,
        content_selector=table.content_selector,
        remove_selectors=table.remove_selectors,
    )


def _output(table: OutputTable, feeds: tuple[Feed, ...], s: AggregatorTable) -> Output:
    """An output with its sources picked: those it names and those with its tags; neither
    means all."""
    if table.feeds or table.tags:
        wanted = set(table.tags)
        feeds = tuple(f for f in feeds if f.name in table.feeds or wanted.intersection(f.tags))
    intervals = [f.interval for f in feeds] or [s.interval]
    return Output(
        name=table.name,
        title=table.title,
        description=table.description,
        sources=feeds,
        limit=table.limit,
        page_size=table.page_size,
        query=table.query,
        filter=table.compiled_filter(table.max_per_feed),
        dedupe=DedupeSettings(table.dedupe, table.dedupe_threshold, table.dedupe_window),
        token=table.token,
        max_age=int(min(intervals).total_seconds()),
    )


def resolve(file: ConfigFile) -> Config:
    """The frozen Config of a validated file: everything derived from it is derived here, once."""
    s = file.aggregator
    feeds = tuple(_feed(f, s) for f in file.feeds)
    return Config(
        aggregator=_settings(s),
        feeds=MappingProxyType({f.name: f for f in feeds}),
        outputs=MappingProxyType({o.name: _output(o, feeds, s) for o in file.outputs}),
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


def _note_name(
    kind: str, i: int, table: dict[str, Any], seen: dict[str, int], problems: list[str]
) -> None:
    """Remember the name of `kind[i]`; one seen before is a problem naming both tables."""
    name = table.get("name")
    if isinstance(name, str):
        if name in seen:
            problems.append(
                f"{kind}[{i}].name: duplicate name {name!r} (also {kind}[{seen[name]}])"
            )
        seen.setdefault(name, i)


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
        _note_name("feeds", i, feed, seen, problems)
        feed_tags = feed.get("tags", [])
        if isinstance(feed_tags, list):
            tags.update(t for t in feed_tags if isinstance(t, str))
    out_seen: dict[str, int] = {}
    for i, out in enumerate(outputs):
        _note_name("outputs", i, out, out_seen, problems)
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
        config = ConfigFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(path, _problems(e) + problems) from e
    if problems:
        raise ConfigError(path, problems)
    return resolve(config)


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
    data, used = apply_env(data, AggregatorTable.model_fields, os.environ)
    try:
        if need_secrets:
            return parse_config(data, resolved)
        with unresolved_allowed():
            return parse_config(data, resolved)
    except ConfigError as e:
        if not used:
            raise
        raise ConfigError(resolved, name_variables(e.problems, used)) from e
