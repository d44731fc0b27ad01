"""The config's value types and the checks shared by its tables: durations ("1h30m", "1w"),
byte sizes ("10MiB"), names, URLs, tokens, and the range of every duration key. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    ByteSize,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..config.secret import Secret, resolve_secret
from ..outputs.filters import compile_rule

# One or more number-unit parts, largest unit first: "90s", "1.5h", "1h30m", "1w2d".
_PART = r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)"
_DURATION = re.compile(rf"^\s*(?:{_PART}\s*)+$")
_PARTS = re.compile(_PART)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ORDER = "wdhms"
DURATION_HINT = "expected a duration such as '90s', '30m', '1h30m', '2h', '1d' or '1w'"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MIN_TOKEN = 16


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


def check_token(v: Secret | None) -> Secret | None:
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
    "lease": (timedelta(seconds=3), timedelta(hours=1)),
    "dedupe_window": (timedelta(minutes=1), timedelta(days=30)),
}


def _duration_in_range(v: timedelta | None, info: ValidationInfo) -> timedelta | None:
    if v is None:  # an optional per-feed override left out
        return v
    name = str(info.field_name)
    low, high = DURATION_RANGES[name]
    return _in_range(name, v, low, high)


def ranged(*names: str) -> Any:
    """A field validator checking the named duration fields against DURATION_RANGES."""
    return field_validator(*names)(classmethod(lambda cls, v, info: _duration_in_range(v, info)))


def checked_if_set(name: str, check: Callable[[str], object]) -> Any:
    """A field validator running `check` on an optional string field when it is given."""

    def validate(cls: type, v: str | None) -> str | None:
        if v is not None:
            check(v)
        return v

    return field_validator(name)(classmethod(validate))


def check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower-case letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    return value


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def check_each(v: tuple[str, ...], check: Callable[[str], object]) -> tuple[str, ...]:
    """Check every item of a list key; problems carry their index."""
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


def check_rules(v: tuple[str, ...]) -> tuple[str, ...]:
    return check_each(v, compile_rule)
