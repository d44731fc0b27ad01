"""Per-host gates and the network watch, driven by an injected clock."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aggregator.cluster_gates import ClusterGates
from aggregator.ingest.hosts import HostGates, HostLimit, NetworkWatch, origin

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
HOST = "http://a.example"


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("HTTP://A.example:8080/feed?x=1") == "http://a.example:8080"
    assert origin("https://a.example/feed") == "https://a.example"


def test_the_most_polite_setting_of_a_host_wins() -> None:
    gates = HostGates()
    gates.configure(HOST, HostLimit(3, 1 * S))
    gates.configure(HOST, HostLimit(1, 5 * S))
    gates.configure(HOST, HostLimit(2, 2 * S))
    assert gates.limit(HOST) == HostLimit(1, 5 * S)
    assert HostGates(default=HostLimit(4, S)).limit("http://other") == HostLimit(4, S)


def test_the_hosts_own_limits_leave_out_those_of_the_default() -> None:
    # Every feed's host is configured; a PostgreSQL claim sends the hosts' own limits each
    # time, so the many with the default limit are not among them.
    gates = HostGates(default=HostLimit(2, S))
    gates.configure(HOST, HostLimit(1, 5 * S))
    gates.configure("http://plain", HostLimit(2, S))
    limits, default = gates.limits()
    assert (limits, default) == ({HOST: HostLimit(1, 5 * S)}, HostLimit(2, S))
    assert gates.limit("http://plain") == HostLimit(2, S)


def test_host_delay_spaces_starts_and_serves_waiting_feeds_first_come_first_served() -> None:
    gates = HostGates({HOST: HostLimit(1, 10 * S)})
    assert gates.reserve(HOST, NOW, "a") is None
    # b and c arrive at once: each gets its own turn, 10 s apart, in order of arrival.
    assert gates.reserve(HOST, NOW, "b") == NOW + 10 * S
    assert gates.reserve(HOST, NOW, "c") == NOW + 20 * S
    # d arrives later than b and c but when b's turn has come: it queues behind them.
    assert gates.reserve(HOST, NOW + 10 * S, "d") == NOW + 30 * S
    assert gates.reserve(HOST, NOW + 10 * S, "b") is None
    # c comes back early: told its turn again.
    assert gates.reserve(HOST, NOW + 15 * S, "c") == NOW + 20 * S
    assert gates.reserve(HOST, NOW + 20 * S, "c") is None
    assert gates.reserve(HOST, NOW + 30 * S, "d") is None
    # Another host is not held up.
    assert gates.reserve("http://b.example", NOW + 30 * S, "e") is None


def test_a_late_turn_never_breaks_the_spacing() -> None:
    gates = HostGates({HOST: HostLimit(1, 10 * S)})
    assert gates.reserve(HOST, NOW, "a") is None
    assert gates.reserve(HOST, NOW, "b") == NOW + 10 * S
    # b is late; a newcomer takes the free slot first, so b is given the next one.
    assert gates.reserve(HOST, NOW + 25 * S, "c") is None
    assert gates.reserve(HOST, NOW + 26 * S, "b") == NOW + 35 * S
    assert gates.reserve(HOST, NOW + 35 * S, "b") is None


def test_retry_after_blocks_the_whole_host_until_its_time() -> None:
    gates = HostGates()
    gates.block(HOST, NOW + 60 * S)
    gates.block(HOST, NOW + 30 * S)  # a shorter one never shortens the wait
    assert gates.blocked_until(HOST, NOW) == NOW + 60 * S
    assert gates.blocked_until(HOST, NOW + 60 * S) is None
    assert gates.blocked_until("http://b.example", NOW) is None


def test_slots_limit_requests_in_flight_per_host() -> None:
    async def scenario() -> int:
        gates = HostGates({HOST: HostLimit(2, timedelta(0))})
        in_flight = peak = 0

        async def fetch() -> None:
            nonlocal in_flight, peak
            async with gates.slot(HOST):
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.01)
                in_flight -= 1

        await asyncio.gather(*(fetch() for _ in range(8)))
        return peak

    assert asyncio.run(scenario()) == 2


def test_the_network_is_down_only_when_nearly_all_recent_polls_of_many_hosts_failed() -> None:
    watch = NetworkWatch()
    for i in range(10):
        watch.record(NOW, f"http://h{i % 3}", unreachable=True)
    assert watch.down(NOW)
    # Half an hour later they still count (feeds are polled every so often)...
    assert watch.down(NOW + timedelta(minutes=30))
    # ... two hours later they are history, and successes end it at once.
    assert not watch.down(NOW + timedelta(hours=2))
    for i in range(3):
        watch.record(NOW, f"http://h{i}", unreachable=False)
    assert not watch.down(NOW)

    one_host = NetworkWatch()
    for _ in range(10):
        one_host.record(NOW, "http://h0", unreachable=True)
    assert not one_host.down(NOW)  # one host down is that host's problem

    mixed = NetworkWatch()
    for i in range(10):
        mixed.record(NOW, f"http://h{i}", unreachable=i < 7)
    assert not mixed.down(NOW)

    few = NetworkWatch()
    for i in range(3):
        few.record(NOW, f"http://h{i}", unreachable=True)
    assert not few.down(NOW)


def test_new_gates_carry_the_old_ones_turns_blocks_and_slots() -> None:
    # A reload builds new gates: they go on from the old ones' memory of each host.
    old = HostGates({HOST: HostLimit(1, 10 * S)})
    assert old.reserve(HOST, NOW, "a") is None
    old.block("http://b.example", NOW + 60 * S)
    new = HostGates({HOST: HostLimit(1, 10 * S)})
    new.block("http://b.example", NOW + 30 * S)  # learnt from the stored state: the later wins
    new.carry_from(old)
    assert new.reserve(HOST, NOW + S, "b") == NOW + 10 * S  # a's start still counts
    assert new.blocked_until("http://b.example", NOW) == NOW + 60 * S
    # The old gates' request slot is the new ones' while the concurrency is the same.
    changed = HostGates({HOST: HostLimit(2, 10 * S)})

    async def slots() -> tuple[bool, bool]:
        async with old.slot(HOST):
            new.carry_from(old)
            changed.carry_from(old)
            return new.slot(HOST).locked(), changed.slot(HOST).locked()

    assert asyncio.run(slots()) == (True, False)


def test_new_gates_pace_after_the_old_ones_last_request_even_one_still_leaving() -> None:
    delay = 0.2

    async def scenario() -> tuple[bool, float, float]:
        old = HostGates({HOST: HostLimit(2, timedelta(seconds=delay))}, paced=True)
        sent = await old.pace(HOST)  # a poll under way at the reload: its request not sent yet
        new = HostGates({HOST: HostLimit(2, timedelta(seconds=delay))}, paced=True)
        new.carry_from(old)
        waiting = asyncio.ensure_future(new.pace(HOST))
        await asyncio.sleep(delay * 2)
        blocked = not waiting.done()  # it waits for the old gates' request to leave
        sent()
        left = time.monotonic()
        (await waiting)()
        return blocked, left, time.monotonic()

    blocked, left, started = asyncio.run(scenario())
    assert blocked
    assert started - left >= delay  # never closer on the wire than host_delay


def test_carried_blocks_are_not_sent_on_again() -> None:
    sent: list[tuple[str, datetime]] = []
    old = ClusterGates({}, HostLimit(), lambda host, until: sent.append((host, until)))
    old.block(HOST, NOW + 60 * S)
    new = ClusterGates({}, HostLimit(), lambda host, until: sent.append((host, until)))
    new.carry_from(old)
    assert new.blocked_until(HOST, NOW) == NOW + 60 * S
    assert sent == [(HOST, NOW + 60 * S)]  # once, when the old gates learnt it
