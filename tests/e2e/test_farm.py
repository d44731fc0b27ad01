"""Done means: a simulated hour of 200 feeds with mixed behaviours, checked on the server side."""

from __future__ import annotations

from pathlib import Path

import farm as sim

from aggregator.models import REDIRECT_CONFIRMATIONS, FeedHints


def test_a_simulated_hour_of_200_feeds_keeps_every_rule(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    farm = sim.build(db)
    try:
        sim.simulate(farm, db)
        report = sim.check(farm)
    finally:
        sim.close(farm)
    print("\n".join(report.lines()))

    assert report.violations == []
    assert report.min_gap_ratio >= 1
    # Each host held its limit, and the one allowed two requests at once did use both.
    assert all(n <= 1 for h, n in report.max_in_flight.items() if h != sim.CONCURRENT_HOST)
    assert report.max_in_flight[sim.CONCURRENT_HOST] == 2
    # Every fault is reflected in the status of its feed.
    for feed in farm.feeds:
        state = farm.states[feed.name]
        status, detail = sim.expected_status(feed)
        if status:
            assert state.status == status, (feed.name, state)
        shown = f"{state.last_error} {state.next_reason} {state.redirect_url}"
        waiting_on_host = (state.next_reason or "").startswith(("Retry-After of", "host_delay"))
        if feed.kind in ("ttl", "max-age", "sy", "skip") and waiting_on_host:
            # Its last poll was deferred by its host; the hint is kept for the next decision.
            assert feed.kind == "max-age" or state.hints != FeedHints(), state
        else:
            assert detail in shown, (feed.name, state)
        if feed.kind in ("404", "500", "loop", "html"):
            # Retried all hour with a growing wait, its error count and first failure visible.
            assert state.failing_since is not None and state.failing_since <= state.last_poll
            assert state.backoff_level == state.error_count >= (3 if feed.host < 8 else 1)
            assert waiting_on_host or "backoff after" in (state.next_reason or ""), state
        if feed.kind == "301":
            assert state.redirect_count >= REDIRECT_CONFIRMATIONS
            assert state.config_hint is not None
        if feed.kind == "302":
            assert state.redirect_url is None and state.status != "error", state
        if feed.kind == "410":
            assert state.next_poll is None
    # Nothing was left behind: every feed that is not gone still has a next poll.
    assert all(s.next_poll is not None for s in farm.states.values() if not s.gone)
