"""The start times a claim hands out (ingest/slots.py): host slots, spacing, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.ingest.hosts import HostLimit
from aggregator.ingest.slots import HostRow, Start, plan_named, plan_starts

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
A, B = "http://a.example", "http://b.example"


def starts(candidates: list[tuple[str, str]], hosts: dict[str, HostRow], **kw: object) -> list:
    limits = kw.pop("limits", {})
    default = kw.pop("default", HostLimit(2, 2 * S))
    limit = kw.pop("limit", 100)
    plan = plan_starts(candidates, hosts, limits, default, NOW, limit, **kw)  # type: ignore[arg-type]
    return [(s.name, (s.at - NOW) / S) for s in plan.starts]


def test_a_free_host_grants_its_slots_delay_apart() -> None:
    got = starts([("a1", A), ("a2", A), ("a3", A), ("b1", B)], {})
    assert got == [("a1", 0), ("a2", 2), ("b1", 0)]


def test_leases_held_elsewhere_take_slots() -> None:
    got = starts([("a1", A), ("a2", A), ("b1", B)], {A: HostRow(A, in_flight=1)})
    assert got == [("a1", 0), ("b1", 0)]
    assert starts([("a1", A)], {A: HostRow(A, in_flight=2)}) == []


def test_the_next_start_and_a_retry_after_are_waited_for() -> None:
    hosts = {A: HostRow(A, next_start=NOW + 3 * S), B: HostRow(B, blocked_until=NOW + 4 * S)}
    assert starts([("a1", A), ("a2", A), ("b1", B)], hosts) == [("a1", 3), ("a2", 5), ("b1", 4)]


def test_no_start_beyond_the_claims_reach() -> None:
    hosts = {A: HostRow(A, blocked_until=NOW + 60 * S), B: HostRow(B, next_start=NOW - 9 * S)}
    assert starts([("a1", A), ("b1", B)], hosts) == [("b1", 0)]
    one = HostLimit(5, 4 * S)
    got = starts([("a1", B), ("a2", B), ("a3", B)], {}, default=one, ahead=5 * S)
    assert got == [("a1", 0), ("a2", 4)]  # the third would start 8 s ahead


def test_own_limits_win_and_the_total_is_capped() -> None:
    limits = {A: HostLimit(1, 0 * S)}
    assert starts([("a1", A), ("a2", A), ("b1", B), ("b2", B)], {}, limits=limits, limit=2) == [
        ("a1", 0),
        ("b1", 0),
    ]


def test_the_hosts_next_start_moves_past_the_last_grant() -> None:
    plan = plan_starts([("a1", A), ("a2", A)], {}, {}, HostLimit(2, 2 * S), NOW, 10)
    assert plan.next_start == {A: NOW + 4 * S}
    assert plan_starts([], {}, {}, HostLimit(), NOW, 10).next_start == {}


def test_named_feeds_all_get_a_start_but_on_hosts_other_pollers_have() -> None:
    limits = {B: HostLimit(2, timedelta(0))}
    plan = plan_named(
        [("a1", A), ("a2", A), ("a3", A), ("b1", B), ("b2", B), ("c1", "http://c.example")],
        {A: HostRow(A, next_start=NOW + S)},
        {"http://c.example": "poller-1"},  # a host with a delay another poller owns
        {B: 1},  # one request of another poller in flight on B, which has no delay
        limits,
        HostLimit(1, 2 * S),
        NOW,
        4 * S,
    )
    # More than a claim of due feeds hands out (it stops at the host's free slots): the
    # one-off command polls them all, its own pacing spacing them; a3's turn comes too late.
    assert [(s.name, (s.at - NOW) / S) for s in plan.starts] == [
        ("a1", 1),
        ("a2", 3),
        ("b1", 0),
        ("b2", 0),
    ]
    assert plan.late == {"a3": Start("a3", A, NOW + 5 * S)}
    assert plan.held == {"c1": "its host http://c.example is polled by poller-1 now"}
    assert plan.slots == {A: 1, B: 1}  # B's second slot is the other poller's


def test_a_host_without_a_delay_filled_by_other_pollers_is_left_to_them() -> None:
    plan = plan_named([("b1", B)], {}, {}, {B: 2}, {}, HostLimit(2, timedelta(0)), NOW, 60 * S)
    assert plan.starts == () and list(plan.held) == ["b1"]
    assert "host_concurrency" in plan.held["b1"]


def test_named_feeds_wait_for_a_retry_after() -> None:
    hosts = {A: HostRow(A, blocked_until=NOW + 30 * S)}
    plan = plan_named([("a1", A)], hosts, {}, {}, {}, HostLimit(1, S), NOW, 60 * S)
    assert [(s.name, s.at) for s in plan.starts] == [("a1", NOW + 30 * S)]
    late = plan_named([("a1", A)], hosts, {}, {}, {}, HostLimit(1, S), NOW, 10 * S)
    assert late.starts == () and late.late["a1"].at == NOW + 30 * S
