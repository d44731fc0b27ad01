"""`aggregator fetch`: every feed (or the named ones) polled once by the daemon's own machinery,
politely (host turns and Retry-After are waited out within a deadline; on PostgreSQL under
leases, beside the pollers), then a summary. I/O.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import click

from .cli_common import command, fail, load
from .config.resolved import Config, Feed
from .config.values import parse_duration
from .errors import LeaseLost
from .fetch_leases import Late, SharedFetch
from .ingest.poll import PollContext, poll_source
from .logs import setup_logging
from .models import PollOutcome
from .runtime import open_runtime

STATUSES = ("ok", "not_modified", "unchanged", "error", "gone")


async def _fetch_all(
    config: Config,
    names: Sequence[str],
    progress: Callable[[], None],
    deadline: datetime,
) -> tuple[list[PollOutcome], dict[str, str]]:
    """Poll the named feeds once each, on the daemon's wiring (see runtime.py), then fetch
    the article pages of their new entries that want full content. On PostgreSQL the feeds
    are leased first, as pollers lease them (fetch_leases.py): those a poller holds are
    left to it, and returned with why."""
    async with open_runtime(config) as runtime:
        shared = SharedFetch(runtime, deadline) if config.aggregator.database.is_postgres else None
        polls, late = list(names), list[Late]()
        if shared is not None:
            polls, late = await shared.claim(names)
            for _ in range(len(names) - len(polls)):
                progress()
        again = shared.again if shared is not None else None

        async def one(feed: Feed) -> PollOutcome | None:
            try:
                if shared is not None:
                    await shared.start(feed.name)
                return await _poll_politely(runtime.ctx, feed, deadline, again)
            except LeaseLost:
                assert shared is not None
                shared.lost(feed.name)
                return None
            finally:
                progress()

        try:
            done = await asyncio.gather(*(one(runtime.feed(n)) for n in polls))
            # The pages of the new entries of full_content feeds, at the hosts' pace.
            await runtime.articles.run(until_idle=True)
        finally:
            if shared is not None:
                await shared.close()
        outcomes = [o for o in done if o is not None]
        outcomes += [
            _too_late(PollOutcome(t.name, "deferred", reason=t.reason), t.when) for t in late
        ]
        return outcomes, shared.held if shared is not None else {}


async def _poll_politely(
    ctx: PollContext,
    feed: Feed,
    deadline: datetime,
    again: Callable[[str], Awaitable[bool]] | None = None,
) -> PollOutcome | None:
    """One poll, waiting for the feed's host turn or Retry-After when it comes before the
    deadline; a deferral past it is returned with why. `again(name)`, if given, must say
    yes before a deferred feed is polled again (None is returned when it says no)."""
    while True:
        now = datetime.now(UTC)
        outcome = await poll_source(ctx, feed, now)
        when = outcome.next_poll
        if outcome.status != "deferred" or when is None:
            return outcome
        if when > deadline:
            # Its turn (host_delay) or the host's Retry-After comes after the deadline:
            # counted and said, never skipped silently.
            return _too_late(outcome, when)
        # Politeness (host_delay, Retry-After) holds for one-off polls too: wait.
        await asyncio.sleep((when - now).total_seconds())
        if again is not None and not await again(feed.name):
            return None


def _too_late(outcome: PollOutcome, when: datetime) -> PollOutcome:
    return replace(
        outcome,
        next_poll=when,
        error=f"{outcome.reason}: its turn comes at {when:%H:%M:%S} UTC, after --max-wait",
    )


@command()
@click.option("--feed", "feed_names", multiple=True, help="Poll only this feed (repeatable).")
@click.option(
    "--max-wait",
    default="10m",
    show_default=True,
    help="Longest the command waits for host_delay turns and Retry-After, e.g. '30m', '1h'.",
)
def fetch(config_path: str, feed_names: tuple[str, ...], max_wait: str) -> None:
    """Poll every feed (or the named ones) once, store what is new, and exit."""
    config = load(config_path, need_secrets=True)
    try:
        wait = parse_duration(max_wait)
    except ValueError as e:
        fail(f"--max-wait: {e}", 2)
    fmt = config.aggregator.log_format
    handler = setup_logging("warning", fmt)
    for name in feed_names:
        if name not in config.feeds:
            fail(f"no feed named {name!r} in {config_path}", 2)
    names = list(feed_names) or list(config.feeds)
    started = datetime.now(UTC)
    # No bar between JSON log lines: they are for a machine, and the bar would break them.
    bar_file = open(os.devnull, "w") if fmt == "json" else sys.stderr  # noqa: SIM115
    try:
        with click.progressbar(length=len(names), label="polling", file=bar_file) as bar:
            handler.bar = bar  # log lines clear the bar's line and redraw it after
            try:
                outcomes, held = asyncio.run(
                    _fetch_all(config, names, lambda: bar.update(1), started + wait)
                )
            finally:
                handler.bar = None
    finally:
        if bar_file is not sys.stderr:
            bar_file.close()
    seconds = (datetime.now(UTC) - started).total_seconds()
    click.echo(fetch_summary(outcomes, seconds, held))


def fetch_summary(
    outcomes: Sequence[PollOutcome], seconds: float, held: Mapping[str, str] | None = None
) -> str:
    """The lines `aggregator fetch` ends with: each failure and each feed it could not poll
    (with why) on stderr, and each it left to the pollers that hold it (PostgreSQL), then
    one summary line that counts them all."""
    held = held or {}
    for o in outcomes:
        if o.status == "error":
            click.echo(f"{o.feed}: error: {o.error}", err=True)
        elif o.status == "deferred":
            click.echo(f"{o.feed}: not polled: {o.error or o.reason}", err=True)
    for name, reason in sorted(held.items()):
        click.echo(f"{name}: not polled, left to the pollers: {reason}", err=True)
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    polled = len(outcomes) - sum(o.status == "deferred" for o in outcomes)
    gone = f", {counts['gone']} gone" if counts["gone"] else ""
    why = Counter(o.reason for o in outcomes if o.status == "deferred")
    skipped = (
        f"; {sum(why.values())} not polled before --max-wait ("
        + ", ".join(f"{n} waiting for {reason}" for reason, n in why.most_common())
        + ")"
        if why
        else ""
    )
    left = f"; {len(held)} left to the pollers that hold them" if held else ""
    return (
        f"polled {polled} of {len(outcomes) + len(held)} feeds in {seconds:.1f}s: "
        f"{counts['ok']} ok, {counts['not_modified']} not modified, {counts['unchanged']} "
        f"unchanged, {counts['error']} errors{gone}{skipped}{left}; "
        f"{sum(o.new for o in outcomes)} new and "
        f"{sum(o.updated for o in outcomes)} updated entries"
    )
