"""The pure decision: next poll times and their reasons, asserted exactly (jitter off)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.ingest.decide import (
    PollPolicy,
    Signals,
    backoff,
    cache_signals,
    decide,
    entry_gap,
    retry_after,
    skip,
)
from aggregator.ingest.parse import parse_feed
from aggregator.models import FeedHints

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)  # a Monday
M = timedelta(minutes=1)
H = timedelta(hours=1)
POLICY = PollPolicy(
    interval=30 * M, min_interval=M, max_interval=24 * H, max_backoff=24 * H, jitter=False
)
RNG = random.Random(0)


def at(signals: Signals, policy: PollPolicy = POLICY) -> tuple[timedelta | None, str]:
    d = decide(policy, NOW, signals, RNG)
    return (d.when - NOW if d.when is not None else None), d.reason


@pytest.mark.parametrize(
    ("signals", "wait", "reason"),
    [
        (Signals("ok"), 30 * M, "interval 30m"),
        (Signals("ok", FeedHints(ttl_minutes=60)), 60 * M, "ttl 1h"),
        (Signals("ok", FeedHints(ttl_minutes=10)), 30 * M, "interval 30m"),  # hints only raise
        (Signals("ok", FeedHints(update_minutes=720)), 12 * H, "sy:updatePeriod 12h"),
        (Signals("ok", max_age=2 * H), 2 * H, "Cache-Control max-age 2h"),
        (Signals("ok", expires=NOW + 3 * H), 3 * H, "Expires 3h"),
        (
            Signals("ok", FeedHints(ttl_minutes=60), max_age=2 * H),
            2 * H,
            "Cache-Control max-age 2h",
        ),
        (Signals("ok", FeedHints(ttl_minutes=3 * 1440)), 24 * H, "ttl 3d, capped at max_interval"),
        (Signals("gone"), None, "gone (HTTP 410): not polled again"),
        (Signals("error", backoff_level=1), 30 * M, "backoff after 1 error: 30m"),
        (Signals("error", backoff_level=3), 2 * H, "backoff after 3 errors: 2h"),
        (Signals("error", backoff_level=9), 24 * H, "backoff after 9 errors: 1d (max_backoff)"),
        (
            Signals("error", backoff_level=5, network_down=True),
            30 * M,
            "network down, no backoff; interval 30m",
        ),
        (Signals("error", retry_after=NOW + 2 * H), 2 * H, "Retry-After 2h"),
        # A Retry-After shorter than the floor waits for the floor.
        (Signals("error", retry_after=NOW + timedelta(seconds=5)), M, "Retry-After 5s"),
    ],
)
def test_decisions_and_their_reasons(signals: Signals, wait: timedelta | None, reason: str) -> None:
    assert at(signals) == (wait, reason)


def test_backoff_doubles_from_the_interval_up_to_the_cap_and_stays_there() -> None:
    waits = [backoff(POLICY, level) for level in range(1, 10)]
    hours = [w / H for w in waits]
    assert hours == [0.5, 1, 2, 4, 8, 16, 24, 24, 24]


def test_backoff_never_polls_faster_than_the_interval() -> None:
    slow = PollPolicy(interval=2 * 24 * H, max_interval=30 * 24 * H, max_backoff=H, jitter=False)
    assert backoff(slow, 5) == 2 * 24 * H


@pytest.mark.parametrize(
    ("gap", "wait", "reason"),
    [
        (10 * M, 5 * M, "adaptive 5m"),  # busy: more often than the 30m interval
        (6 * H, 3 * H, "adaptive 3h"),  # rare: less often
        (30 * 24 * H, 24 * H, "adaptive 15d, capped at max_interval"),
        (timedelta(seconds=30), M, "adaptive 15s, raised to min_interval"),
    ],
)
def test_adaptive_mode_follows_the_entry_rate_within_the_clamps(
    gap: timedelta, wait: timedelta, reason: str
) -> None:
    policy = PollPolicy(
        interval=30 * M, min_interval=M, max_interval=24 * H, adaptive=True, jitter=False
    )
    assert at(Signals("ok", entry_gap=gap), policy) == (wait, reason)


def test_skip_hours_move_the_poll_to_the_next_allowed_hour() -> None:
    hints = FeedHints(skip_hours=(9, 10))
    wait, reason = at(Signals("ok", hints))  # 08:30 + 30m = 09:00, skipped until 11:00
    assert (NOW + wait, reason) == (NOW.replace(hour=11, minute=0), "interval 30m, then skipHours")


def test_skip_days_move_the_poll_to_the_next_allowed_day() -> None:
    hints = FeedHints(skip_days=(0, 1))  # Monday and Tuesday
    wait, reason = at(Signals("ok", hints))
    assert NOW + wait == datetime(2026, 3, 4, 0, 0, tzinfo=UTC)
    assert reason == "interval 30m, then skipDays"


def test_skipping_every_hour_is_ignored_rather_than_never_polling() -> None:
    hints = FeedHints(skip_hours=tuple(range(24)))
    assert skip(NOW, hints) == NOW


def test_jitter_is_only_ever_added_and_bounded() -> None:
    policy = PollPolicy(interval=30 * M, min_interval=M, max_interval=24 * H)
    rng = random.Random(5)
    waits = [decide(policy, NOW, Signals("ok"), rng).when - NOW for _ in range(200)]  # type: ignore[operator]
    assert all(30 * M <= w <= 33 * M for w in waits)
    assert len(set(waits)) > 150


@given(
    interval_min=st.integers(1, 24 * 60),
    level=st.integers(0, 40),
    ttl=st.none() | st.integers(1, 100_000),
    outcome=st.sampled_from(["ok", "error"]),
    retry=st.none() | st.integers(0, 10**6),
    network_down=st.booleans(),
)
def test_a_decision_is_never_earlier_than_the_floor_nor_beyond_the_ceilings(
    interval_min: int,
    level: int,
    ttl: int | None,
    outcome: str,
    retry: int | None,
    network_down: bool,
) -> None:
    policy = PollPolicy(
        interval=interval_min * M, min_interval=M, max_interval=24 * H, max_backoff=24 * H
    )
    signals = Signals(
        outcome,  # type: ignore[arg-type]
        FeedHints(ttl_minutes=ttl),
        retry_after=NOW + timedelta(seconds=retry) if retry is not None else None,
        backoff_level=level,
        network_down=network_down,
    )
    d = decide(policy, NOW, signals, random.Random(1))
    assert d.when is not None and d.reason
    assert d.when - NOW >= policy.min_interval
    # At most the longest ceiling, plus its jitter (a tenth, at most 5 minutes) twice over.
    assert d.when - NOW <= 24 * H + 10 * M


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert retry_after("120", NOW) == NOW + 2 * M
    assert retry_after("Mon, 02 Mar 2026 09:00:00 GMT", NOW) == NOW + 30 * M
    assert retry_after("soon", NOW) is None
    assert retry_after(None, NOW) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Cache-Control": "public, max-age=900"}, (15 * M, None)),
        ({"cache-control": "max-age=60", "Expires": "Mon, 02 Mar 2026 12:00:00 GMT"}, (M, None)),
        ({"Expires": "Mon, 02 Mar 2026 12:00:00 GMT"}, (None, NOW + 3.5 * H)),
        ({"Expires": "Mon, 02 Mar 2026 01:00:00 GMT"}, (None, None)),  # in the past
        ({"Expires": "0"}, (None, None)),
        ({"Cache-Control": "no-cache, max-age=900"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_cache_signals(
    headers: dict[str, str], expected: tuple[timedelta | None, datetime | None]
) -> None:
    assert cache_signals(headers, NOW) == expected


def test_entry_gap_is_the_mean_gap_or_the_silence_since_the_last_entry() -> None:
    hourly = [NOW - i * H for i in range(5)]
    assert entry_gap(hourly, NOW) == H
    quiet = [NOW - 10 * H - i * H for i in range(5)]
    assert entry_gap(quiet, NOW) == 10 * H
    assert entry_gap([NOW], NOW) is None


def test_parse_reads_every_polling_hint_of_a_feed() -> None:
    doc = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>
<title>t</title><link>http://example.org/</link><description>d</description><ttl>45</ttl>
<sy:updatePeriod>daily</sy:updatePeriod><sy:updateFrequency>4</sy:updateFrequency>
<skipHours><hour>0</hour><hour>1</hour><hour>23</hour></skipHours>
<skipDays><day>Saturday</day><day>Sunday</day></skipDays>
<item><title>a</title><guid>a</guid></item></channel></rss>"""
    hints = parse_feed("x", doc, {}, "http://example.org/feed").hints
    assert hints == FeedHints(
        ttl_minutes=45, update_minutes=360, skip_hours=(0, 1, 23), skip_days=(5, 6)
    )


def test_parse_ignores_nonsense_hints() -> None:
    doc = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<ttl>soon</ttl><skipHours><hour>99</hour></skipHours><skipDays><day>Caturday</day></skipDays>
<item><title>a</title><guid>a</guid></item></channel></rss>"""
    assert parse_feed("x", doc, {}, "http://example.org/feed").hints == FeedHints()
