"""The pure feed-state step: each rule of feedstate.next_state, table-driven, and its properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.ingest.feedstate import (
    backoff_level,
    deferred,
    moved,
    next_state,
    poll_url,
    second,
)
from aggregator.models import FeedHints, FeedState, NextKind, PollRecord, PollStatus, Validators

T0 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
H = timedelta(hours=1)
URL = "https://f.example/feed.xml"
MOVED = "https://g.example/feed.xml"


def rec(status: PollStatus = "ok", now: datetime = T0, **fields: object) -> PollRecord:
    return replace(PollRecord("f", URL, now, status, now + H), **fields)


def run(*records: PollRecord, old: FeedState | None = None) -> FeedState:
    state = old
    for r in records:
        state = next_state(state, r)
    assert state is not None
    return state


# --- errors, failing_since, last_ok ----------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "errors", "failing_since", "last_ok"),
    [
        (["ok"], 0, None, 0),
        (["error"], 1, 0, None),
        (["error", "error", "error"], 3, 0, None),
        (["ok", "error", "error"], 2, 1, 0),
        (["error", "ok"], 0, None, 1),
        (["error", "not_modified"], 0, None, 1),
        (["error", "unchanged", "error"], 1, 2, 1),
        (["error", "gone"], 2, 0, None),  # a 410 counts as an error of the same run
    ],
)
def test_error_count_failing_since_and_last_ok(
    statuses: list[PollStatus], errors: int, failing_since: int | None, last_ok: int | None
) -> None:
    state = run(*(rec(s, T0 + i * H, error="x" if s in ("error", "gone") else None)
                  for i, s in enumerate(statuses)))  # fmt: skip
    assert state.error_count == errors
    assert state.failing_since == (T0 + failing_since * H if failing_since is not None else None)
    assert state.last_ok == (T0 + last_ok * H if last_ok is not None else None)
    assert state.last_error == ("x" if errors else None)
    assert state.last_status == statuses[-1]


# --- backoff -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "status", "network_down", "expected"),
    [
        (0, "error", False, 1),
        (3, "error", False, 4),
        (3, "error", True, 3),  # the network, not the feed: no growth
        (0, "error", True, 0),
        (3, "ok", False, 0),
        (3, "not_modified", False, 0),
        (3, "gone", False, 0),  # never retried: nothing to back off from
    ],
)
def test_backoff_level(level: int, status: PollStatus, network_down: bool, expected: int) -> None:
    old = FeedState("f", URL, backoff_level=level)
    assert backoff_level(old, status, network_down) == expected
    assert next_state(old, rec(status, network_down=network_down)).backoff_level == expected


def test_backoff_of_a_new_feed_starts_at_one() -> None:
    assert backoff_level(None, "error", False) == 1
    assert next_state(None, rec("error")).backoff_level == 1


# --- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old_url", "old_count", "status", "permanent", "expected"),
    [
        (None, 0, "ok", MOVED, (MOVED, 1)),  # a new 301/308 target starts counting
        (MOVED, 1, "ok", MOVED, (MOVED, 2)),  # the same target once more
        (MOVED, 2, "ok", "https://h.example/", ("https://h.example/", 1)),  # another target
        (MOVED, 2, "not_modified", None, (MOVED, 3)),  # polled at MOVED, which stays put
        (MOVED, 2, "unchanged", None, (MOVED, 3)),
        (None, 0, "ok", None, (None, 0)),  # no redirect at all
        (MOVED, 2, "ok", URL, (None, 0)),  # the target sends the feed back home
        (MOVED, 2, "error", None, (MOVED, 2)),  # a failure proves nothing
        (MOVED, 2, "gone", None, (MOVED, 2)),
    ],
)
def test_redirect_counting(
    old_url: str | None,
    old_count: int,
    status: PollStatus,
    permanent: str | None,
    expected: tuple[str | None, int],
) -> None:
    old = FeedState("f", URL, redirect_url=old_url, redirect_count=old_count)
    state = next_state(old, rec(status, permanent_url=permanent))
    assert (state.redirect_url, state.redirect_count) == expected


def test_poll_url_follows_a_stored_redirect_of_the_same_url_only() -> None:
    state = FeedState("f", URL, redirect_url=MOVED)
    assert poll_url(state, URL) == MOVED
    assert poll_url(state, "https://other.example/") == "https://other.example/"
    assert poll_url(None, URL) == URL
    assert poll_url(FeedState("f", URL), URL) == URL


# --- gone --------------------------------------------------------------------------------


def test_gone_is_a_410_and_ends_when_the_url_changes() -> None:
    state = next_state(None, rec("gone", http_status=410, error="gone", next_poll=None))
    assert (state.gone, state.status, state.next_poll) == (True, "gone", None)
    assert moved(state, MOVED).gone is False
    assert next_state(state, rec("ok")).gone is False


# --- what a poll without a document keeps ------------------------------------------------


def full_state() -> FeedState:
    return next_state(
        None,
        rec(
            http_status=200,
            validators=Validators('"e1"', "Mon, 01 Jan 2024 00:00:00 GMT"),
            body_hash="h1",
            title="F",
            link="https://f.example/",
            warning="malformed feed, entries kept: x",
            language="en",
            key_mode="link",
            hints=FeedHints(ttl_minutes=30, skip_hours=(1, 2)),
        ),
    )


@pytest.mark.parametrize(
    ("status", "http_status"), [("not_modified", 304), ("unchanged", 200), ("error", 500)]
)
def test_a_poll_that_says_nothing_keeps_what_was_known(
    status: PollStatus, http_status: int
) -> None:
    old = full_state()
    state = next_state(old, rec(status, T0 + H, http_status=http_status))
    kept = ("validators", "body_hash", "title", "link", "warning", "language", "key_mode", "hints")
    assert {k: getattr(state, k) for k in kept} == {k: getattr(old, k) for k in kept}
    assert state.http_status == http_status


def test_language_and_warning_change_only_with_a_parsed_document() -> None:
    old = full_state()
    state = next_state(old, rec("ok", T0 + H, language=None, warning=None))
    assert (state.language, state.warning) == (None, None)
    assert next_state(old, rec("error", warning="w", language="de")).language == "en"


def test_the_decision_is_stored_as_decided_to_the_second() -> None:
    now = T0 + timedelta(microseconds=123456)
    r = rec(now=now, next_poll=now + H, next_reason="ttl 1h", next_kind=NextKind.HINT)
    state = next_state(None, r)
    assert (state.last_poll, state.next_poll) == (T0, T0 + H)
    assert (state.next_reason, state.next_kind) == ("ttl 1h", NextKind.HINT)
    assert second(now) == T0


# --- a changed URL, deferral -------------------------------------------------------------


def test_a_changed_url_drops_what_concerned_the_old_one() -> None:
    old = replace(full_state(), redirect_url=MOVED, redirect_count=2, gone=True, backoff_level=3)
    state = moved(old, "https://new.example/feed.xml")
    assert state.url == "https://new.example/feed.xml"
    assert (state.validators, state.body_hash, state.hints) == (Validators(), None, FeedHints())
    assert (state.redirect_url, state.redirect_count, state.gone, state.backoff_level) == (
        None,
        0,
        False,
        0,
    )
    # What people read of the feed's history stays.
    assert (state.title, state.last_poll, state.key_mode) == (old.title, old.last_poll, "link")
    assert moved(old, old.url) is old


def test_a_poll_of_another_url_starts_from_the_moved_state() -> None:
    old = replace(full_state(), backoff_level=3, redirect_url=MOVED, redirect_count=2)
    r = replace(rec("error", T0 + H, error="x"), url="https://new.example/feed.xml")
    state = next_state(old, r)
    assert (state.validators, state.body_hash, state.backoff_level) == (Validators(), None, 1)
    assert (state.redirect_url, state.redirect_count) == (None, 0)


def test_deferral_moves_only_the_next_poll() -> None:
    old = replace(full_state(), backoff_level=2)
    later = T0 + timedelta(minutes=7, microseconds=5)
    state = deferred(old, later, "host_delay of https://f.example", NextKind.HOST_DELAY)
    assert state == replace(
        old,
        next_poll=T0 + timedelta(minutes=7),
        next_reason="host_delay of https://f.example",
        next_kind=NextKind.HOST_DELAY,
    )


# --- properties --------------------------------------------------------------------------

statuses = st.lists(
    st.tuples(st.sampled_from(["ok", "not_modified", "unchanged", "error", "gone"]), st.booleans()),
    min_size=1,
    max_size=30,
)


def trailing(items: list[tuple[str, bool]], pred: object) -> list[int]:
    """Indexes of the trailing run of items for which pred holds."""
    run: list[int] = []
    for i in range(len(items) - 1, -1, -1):
        if not pred(items[i]):  # type: ignore[operator]
            break
        run.insert(0, i)
    return run


@given(statuses)
def test_error_count_is_the_trailing_run_of_failures(polls: list[tuple[str, bool]]) -> None:
    state = run(
        *(rec(s, T0 + i * H, error="x", network_down=down) for i, (s, down) in enumerate(polls))  # type: ignore[arg-type]
    )
    failures = trailing(polls, lambda p: p[0] in ("error", "gone"))
    assert state.error_count == len(failures)
    assert state.failing_since == (T0 + failures[0] * H if failures else None)
    successes = [i for i, (s, _) in enumerate(polls) if s not in ("error", "gone")]
    assert state.last_ok == (T0 + successes[-1] * H if successes else None)


@given(statuses)
def test_backoff_is_the_trailing_errors_the_network_did_not_cause(
    polls: list[tuple[str, bool]],
) -> None:
    state = run(
        *(rec(s, T0 + i * H, network_down=down) for i, (s, down) in enumerate(polls))  # type: ignore[arg-type]
    )
    errors = trailing(polls, lambda p: p[0] == "error")
    assert state.backoff_level == sum(1 for i in errors if not polls[i][1])
    assert state.backoff_level <= state.error_count
