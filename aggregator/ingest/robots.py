"""robots.txt rules per host, as RFC 9309 reads them, kept for a day. Pure: the caller fetches.

Only article pages are checked: feeds are published to be polled, and every feed reader
fetches them whatever robots.txt says. A robots.txt that is missing (any 4xx) allows
everything; one that cannot be had (5xx, a timeout, a refused connection) disallows the whole
host until it is tried again, as the RFC asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.robotparser import RobotFileParser

KEEP = timedelta(hours=24)  # how long a robots.txt that was read is trusted
RETRY_UNREACHABLE = timedelta(minutes=30)  # when an unreachable one is tried again


@dataclass(frozen=True, slots=True)
class Rules:
    """One host's robots.txt as read at `fetched`; `parser` None means "allow everything"
    and `unreachable` means "disallow everything" until `expires`."""

    fetched: datetime
    expires: datetime
    parser: RobotFileParser | None = None
    unreachable: bool = False

    def allows(self, user_agent: str, url: str) -> bool:
        if self.unreachable:
            return False
        return self.parser is None or self.parser.can_fetch(user_agent, url)

    def crawl_delay(self, user_agent: str) -> timedelta | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        return timedelta(seconds=float(delay)) if delay is not None else None


def rules_from(status: int | None, body: bytes, now: datetime) -> Rules:
    """The rules an answer to GET /robots.txt gives: `status` None for no HTTP answer."""
    if status is not None and 400 <= status < 500:
        return Rules(now, now + KEEP)
    if status is None or status >= 500:
        return Rules(now, now + RETRY_UNREACHABLE, unreachable=True)
    parser = RobotFileParser()
    # RFC 9309 asks parsers to read at least 500 KiB; the rest is ignored.
    parser.parse(body[: 512 * 1024].decode("utf-8", "replace").splitlines())
    return Rules(now, now + KEEP, parser)


class RobotsCache:
    """The rules of each host (origin) this process has read, until they expire."""

    def __init__(self) -> None:
        self._rules: dict[str, Rules] = {}

    def get(self, host: str, now: datetime) -> Rules | None:
        """The host's rules, or None when they must be (re)fetched first."""
        rules = self._rules.get(host)
        if rules is None or rules.expires <= now:
            return None
        return rules

    def put(self, host: str, rules: Rules) -> None:
        self._rules[host] = rules
