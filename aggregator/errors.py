"""The exception tree. Library errors are wrapped where they enter, with the cause kept.

AggregatorError
├── ConfigError          the config file is unusable; lists every problem with its key
├── FeedError            something went wrong with one feed; carries the feed's name
│   ├── FetchError       HTTP status, timeout, DNS, connection, body too large
│   └── ParseError       not a feed at all (no entries and not recognisable)
├── StoreError           the database could not be opened, migrated, read or written
│   └── LeaseLost        a poll's write refused: another poller holds the feed's lease now
└── LockError            another daemon holds the database (or none does, for `reload`)
"""

from __future__ import annotations

from collections.abc import Sequence


class AggregatorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AggregatorError):
    """A config file failed validation. `problems` holds one line per problem, naming the key."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{path}: invalid config ({len(self.problems)} problem(s)):\n{lines}")


class FeedError(AggregatorError):
    """A failure that concerns one feed; recorded on that feed, never fatal to the daemon."""

    def __init__(self, feed: str, message: str) -> None:
        self.feed = feed
        self.message = message
        super().__init__(f"{feed}: {message}")

    def __reduce__(self) -> tuple[type[FeedError], tuple[str, str]]:
        # Parse errors cross a process boundary; pickle by constructor arguments, not by .args.
        return (type(self), (self.feed, self.message))


class FetchError(FeedError):
    """The feed could not be fetched. `status` is the HTTP status when there was one, and
    `retry_after` the raw Retry-After header of a 429 or 503."""

    def __init__(
        self, feed: str, message: str, status: int | None = None, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(feed, message)

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[FetchError], tuple[str, str, int | None, str | None]]:
        return (type(self), (self.feed, self.message, self.status, self.retry_after))


class ParseError(FeedError):
    """The fetched document is not a feed."""


class StoreError(AggregatorError):
    """The database failed: cannot open, migrate, read or commit. The cause is chained."""


class LeaseLost(StoreError):
    """A poller's write of a feed it no longer holds the lease of (it expired and another
    poller claimed the feed): nothing was written, the other poller owns the feed now."""

    def __init__(self, feed: str, owner: str) -> None:
        self.feed = feed
        self.owner = owner
        super().__init__(f"{feed}: lease lost (another poller holds it); poll result dropped")


class LockError(AggregatorError):
    """One daemon per database: the lock is taken, or no daemon holds it when one should."""


# The kinds `error_kind` sorts feed errors into (the `kind` label of the errors metric).
ERROR_KINDS = (
    "http_4xx",
    "http_5xx",
    "rate_limited",
    "timeout",
    "connect",
    "redirect",
    "too_large",
    "html_page",
    "not_a_feed",
    "other",
)


def error_kind(error: FeedError) -> str:
    """A small fixed set of kinds for a feed error, so a metric can count them without one
    series per message."""
    message = error.message.lower()
    if isinstance(error, ParseError):
        return "html_page" if "html page" in message else "not_a_feed"
    status = error.status if isinstance(error, FetchError) else None
    if status in (429, 503) and isinstance(error, FetchError) and error.retry_after:
        return "rate_limited"
    if status == 429:
        return "rate_limited"
    if status is not None and 400 <= status < 500:
        return "http_4xx"
    if status is not None and status >= 500:
        return "http_5xx"
    if "over the" in message and "limit" in message:
        return "too_large"
    if message.startswith("timed out"):
        return "timeout"
    if message.startswith("cannot connect"):
        return "connect"
    if "redirect" in message:
        return "redirect"
    return "other"
