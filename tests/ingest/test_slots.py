"""The start times a claim hands out (ingest/slots.py): host slots, spacing, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.ingest.hosts import HostLimit
from aggregator.ingest.slots import HostRow, plan_starts

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
