"""The feed board behind /healthz and the per-feed metrics, error kinds, the health document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import ERROR_KINDS, FeedError, FetchError, ParseError, error_kind
from aggregator.health import HEARTBEAT_STALE, FeedBoard, Heartbeat, health_doc
from aggregator.metrics import Metrics, record_outcome
from aggregator.models import FeedState, PollOutcome

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def test_board_follows_config_and_polls() -> None:
    board = FeedBoard()
    ok = FeedState("a", "http://a/", last_status="ok", last_ok=NOW - timedelta(hours=1))
    board.reset(["a", "b"], {"a": ok})
    assert board.counts()["ok"] == 1 and board.counts()["pending"] == 1
    board.record(PollOutcome("b", "error", error="HTTP 500"), NOW)
    board.record(PollOutcome("b", "error", error="HTTP 500"), NOW + timedelta(minutes=5))
    b = dict(board.items())["b"]
    assert b.status == "error" and b.failing_since == NOW  # the first failure, kept
    board.record(PollOutcome("b", "deferred"), NOW)  # never ran: changes nothing
    assert dict(board.items())["b"].status == "error"
    board.record(PollOutcome("b", "not_modified"), NOW + timedelta(minutes=10))
    assert dict(board.items())["b"].last_ok == NOW + timedelta(minutes=10)
    board.record(PollOutcome("gone-from-config", "ok"), NOW)
    assert "gone-from-config" not in dict(board.items())
    board.reset(["b"], {})
    assert [n for n, _ in board.items()] == ["b"]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FetchError("f", "HTTP 404 Not Found", 404), "http_4xx"),
        (FetchError("f", "HTTP 500 Internal Server Error", 500), "http_5xx"),
        (FetchError("f", "HTTP 503 Service Unavailable", 503, "120"), "rate_limited"),
        (FetchError("f", "HTTP 429 Too Many Requests", 429), "rate_limited"),
        (FetchError("f", "timed out after 5s"), "timeout"),
        (FetchError("f", "cannot connect: [Errno 111] Connection refused"), "connect"),
        (FetchError("f", "redirect loop: http://x/ redirects back"), "redirect"),
        (FetchError("f", "more than 5 redirects"), "redirect"),
        (FetchError("f", "body is over the 1024 bytes limit", 200), "too_large"),
        (ParseError("f", "not a feed: the server sent an HTML page"), "html_page"),
        (ParseError("f", "not a feed (no entries and no feed format recognised)"), "not_a_feed"),
        (FetchError("f", "ClientPayloadError: broken"), "other"),
    ],
)
def test_error_kinds(error: FeedError, kind: str) -> None:
    assert error_kind(error) == kind
    assert kind in ERROR_KINDS


def test_health_doc_is_small_and_says_what_is_wrong() -> None:
    board = FeedBoard()
    board.reset([f"feed-{i}" for i in range(500)], {})
    ok, doc = health_doc(board, NOW, True, None)
    assert ok and doc["status"] == "ok" and doc["feeds"]["total"] == 500
    assert "feed-1" not in str(doc)  # no per-feed detail, whatever the number of feeds
    board.heartbeat = Heartbeat(NOW, "database is not writable: disk I/O error")
    ok, doc = health_doc(board, NOW, True, None)
    assert not ok and doc["problems"] == ["database is not writable: disk I/O error"]
    board.heartbeat = Heartbeat(NOW - HEARTBEAT_STALE - timedelta(seconds=1))
    ok, doc = health_doc(board, NOW, False, None)
    assert not ok and "scheduler is not running" in doc["problems"]
    assert any("has not answered" in p for p in doc["problems"])


def test_metrics_count_errors_by_kind_and_skip_deferred() -> None:
    metrics = Metrics()
    metrics.board.reset(["a"], {})
    record_outcome(metrics, PollOutcome("a", "error", error="x", error_kind="timeout"), NOW)
    record_outcome(metrics, PollOutcome("a", "deferred"), NOW)
    registry = metrics.registry
    assert registry.get_sample_value("aggregator_poll_errors_total", {"kind": "timeout"}) == 1
    assert registry.get_sample_value("aggregator_polls_total", {"status": "error"}) == 1
    assert registry.get_sample_value("aggregator_feeds", {"status": "error"}) == 1
    assert registry.get_sample_value(
        "aggregator_feed_seconds_since_last_success", {"feed": "a"}
    ) == float("inf")
    record_outcome(metrics, PollOutcome("a", "ok"), NOW)
    last = registry.get_sample_value(
        "aggregator_feed_last_success_timestamp_seconds", {"feed": "a"}
    )
    assert last == NOW.timestamp()
