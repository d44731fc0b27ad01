"""The next poll time of a feed, and why: one pure decision per poll. No I/O, no clock.

Inputs are the feed's policy (its interval and clamps), what the poll observed (the outcome, the
document's hints, the response's caching headers, Retry-After) and `now`; the output is a time
and a reason a person can read in `aggregator feeds` ("ttl 60m", "backoff after 3 errors").
Each decision also names its rule as a `NextKind`, which is what a restart acts on; nothing
reads the reason back. The rules, in order:

- 410 Gone: never again (until the feed's URL changes in the config).
- Retry-After (429/503): not before the time the server named.
- The network is down (nearly every feed failed at once): retry at the regular time, no backoff.
- An error: exponential backoff from the interval, capped at `max_backoff`, never abandoned.
- Otherwise the interval (or the adaptive one), raised by the feed's own hints — <ttl>,
  sy:updatePeriod, Cache-Control max-age, Expires — and clamped to [min_interval, max_interval].

Jitter is only ever added, so a decision is never earlier than its rule; skipHours / skipDays
push it to the next allowed hour.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

from ..models import FeedHints, NextKind

MAX_JITTER = timedelta(minutes=5)
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)

Outcome = Literal["ok", "error", "gone"]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How often one feed may and should be polled, from the config."""

    interval: timedelta
    min_interval: timedelta = timedelta(0)
    max_interval: timedelta = timedelta(days=30)
    max_backoff: timedelta = timedelta(hours=24)
    adaptive: bool = False
    jitter: bool = True
    host_concurrency: int = 1
    host_delay: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class Signals:
    """What one poll observed that bears on the next one."""

    outcome: Outcome
    hints: FeedHints = field(default_factory=FeedHints)
    max_age: timedelta | None = None
    expires: datetime | None = None
    retry_after: datetime | None = None
    backoff_level: int = 0  # consecutive counted errors, this poll included
    network_down: bool = False
    entry_gap: timedelta | None = None  # observed time between entries (adaptive mode)


@dataclass(frozen=True, slots=True)
class Decision:
    """When to poll next (None: never), the rule that said so, and the reason for people."""

    when: datetime | None
    reason: str
    kind: NextKind


@functools.lru_cache(maxsize=1024)
def fmt(d: timedelta) -> str:
    """A duration the way the config spells it, rounded to the largest fitting unit."""
    seconds = max(0, round(d.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    if seconds >= 600:
        return f"{round(seconds / 60)}m"
    return f"{seconds}s"


def jitter(interval: timedelta) -> timedelta:
    """The most slack added to a wait, so feeds of one interval do not fire in lock-step."""
    return min(interval / 10, MAX_JITTER)


def backoff(policy: PollPolicy, level: int) -> timedelta:
    """The wait after `level` consecutive errors: the interval, doubled per further error,
    capped at max_backoff (but never shorter than the interval)."""
    base = max(policy.interval, policy.min_interval)
    grown = base * (2 ** min(max(level, 1) - 1, 20)) if level > 0 else base
    return max(base, min(grown, policy.max_backoff))


def decide(policy: PollPolicy, now: datetime, signals: Signals, rng: random.Random) -> Decision:
    """The next poll of a feed after a poll that observed `signals` at `now`."""
    if signals.outcome == "gone":
        return Decision(None, "gone (HTTP 410): not polled again", NextKind.GONE)
    s = signals
    if s.retry_after is not None and s.retry_after > now:
        ceiling = max(policy.max_backoff, policy.max_interval)
        wait = min(max(s.retry_after - now, policy.min_interval), ceiling)
        # The other feeds of the host, deferred by this Retry-After, are spread over the first
        # jitter span after it (poll.py); the feed that was told to wait goes after them.
        wait += jitter(wait) if policy.jitter else timedelta(0)
        reason = f"Retry-After {fmt(s.retry_after - now)}"
        return _finish(policy, now, wait, reason, NextKind.RETRY_AFTER, s, rng)
    if s.outcome == "error" and s.network_down:
        wait, reason, _ = _regular(policy, now, s)
        reason = f"network down, no backoff; {reason}"
        return _finish(policy, now, wait, reason, NextKind.NETWORK_DOWN, s, rng)
    if s.outcome == "error":
        level = max(s.backoff_level, 1)
        wait = backoff(policy, level)
        errors = "error" if level == 1 else "errors"
        capped = " (max_backoff)" if wait >= policy.max_backoff else ""
        reason = f"backoff after {level} {errors}: {fmt(wait)}{capped}"
        return _finish(policy, now, wait, reason, NextKind.BACKOFF, s, rng)
    wait, reason, kind = _regular(policy, now, s)
    return _finish(policy, now, wait, reason, kind, s, rng)


def _regular(policy: PollPolicy, now: datetime, s: Signals) -> tuple[timedelta, str, NextKind]:
    wait, reason, kind = policy.interval, f"interval {fmt(policy.interval)}", NextKind.INTERVAL
    if policy.adaptive and s.entry_gap is not None:
        # Poll about twice per expected entry: rare publishers less often, busy ones more.
        wait, reason = s.entry_gap / 2, f"adaptive {fmt(s.entry_gap / 2)}"
        kind = NextKind.ADAPTIVE
    hints: list[tuple[timedelta | None, str]] = [
        (_minutes(s.hints.ttl_minutes), "ttl"),
        (_minutes(s.hints.update_minutes), "sy:updatePeriod"),
        (s.max_age, "Cache-Control max-age"),
        (s.expires - now if s.expires is not None else None, "Expires"),
    ]
    for hint, name in hints:
        if hint is not None and hint > wait:
            wait, reason, kind = hint, f"{name} {fmt(hint)}", NextKind.HINT
    if wait < policy.min_interval:
        wait, reason = policy.min_interval, f"{reason}, raised to min_interval"
    elif wait > policy.max_interval:
        wait, reason = policy.max_interval, f"{reason}, capped at max_interval"
    return wait, reason, kind


def _minutes(value: int | None) -> timedelta | None:
    return timedelta(minutes=value) if value else None


def _finish(
    policy: PollPolicy,
    now: datetime,
    wait: timedelta,
    reason: str,
    kind: NextKind,
    s: Signals,
    rng: random.Random,
) -> Decision:
    when = now + wait
    if policy.jitter:
        when += timedelta(seconds=rng.uniform(0, jitter(wait).total_seconds()))
    skipped = skip(when, s.hints)
    if skipped != when:
        which = "skipDays" if when.astimezone(UTC).weekday() in s.hints.skip_days else "skipHours"
        reason = f"{reason}, then {which}"
        when = skipped
    return Decision(when.astimezone(UTC), reason, kind)


def skip(when: datetime, hints: FeedHints) -> datetime:
    """The first moment at or after `when` outside the feed's skipHours and skipDays (UTC)."""
    if not hints.skip_hours and not hints.skip_days:
        return when
    t = when.astimezone(UTC)
    for _ in range(24 * 8):
        if t.hour not in hints.skip_hours and t.weekday() not in hints.skip_days:
            return t
        t = (t + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return when  # every hour of the week skipped: the hints are nonsense, ignore them


# --- reading the signals out of a response ---------------------------------------------------


def http_date(value: str | None) -> datetime | None:
    """An HTTP date as aware UTC, or None when absent or malformed."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After as a moment: a number of seconds after `now`, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=min(int(value), 366 * 86400))
    return http_date(value)


def cache_signals(
    headers: Mapping[str, str], now: datetime
) -> tuple[timedelta | None, datetime | None]:
    """Cache-Control max-age and Expires of a response (max-age wins, as in RFC 9111)."""
    lower = {k.lower(): v for k, v in headers.items()}
    control = lower.get("cache-control", "")
    if "no-store" in control.lower() or "no-cache" in control.lower():
        return None, None
    if m := _MAX_AGE.search(control):
        return timedelta(seconds=min(int(m.group(1)), 366 * 86400)), None
    expires = http_date(lower.get("expires"))
    return None, expires if expires is not None and expires > now else None


def entry_gap(published: Sequence[datetime], now: datetime) -> timedelta | None:
    """The observed time between a feed's entries, newest first; a long silence counts too."""
    if len(published) < 2:
        return None
    newest, oldest = published[0], published[-1]
    mean = (newest - oldest) / (len(published) - 1)
    return max(mean, now - newest, timedelta(seconds=1))
