"""The `aggregator` command: click commands over the same functions the daemon uses.

The only place where errors become exit codes and one-line messages: 2 for a bad config,
1 for any other failure.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from . import __version__
from .config import CONFIG_ENV, Config, FeedConfig, load_config
from .daemon import make_fetcher, make_gates, make_parse_pool
from .errors import AggregatorError, ConfigError
from .models import PollOutcome
from .poll import PollContext, poll_source
from .store import Store, StoreThreads

F = TypeVar("F", bound=Callable[..., Any])
MAX_CLI_WAIT = timedelta(minutes=2)
STATUSES = ("ok", "not_modified", "unchanged", "error", "gone")


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default="config/aggregator.toml",
        show_default=True,
        type=click.Path(dir_okay=False),
        help=f"Config file (or set ${CONFIG_ENV}).",
    )(fn)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every job run at INFO; our own poll line says more, once.
    logging.getLogger("apscheduler").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper()))
    )


@click.group()
@click.version_option(__version__, prog_name="aggregator")
def main() -> None:
    """Poll feeds, merge and deduplicate their entries, and republish them as output feeds."""


@main.command()
@config_option
def run(config_path: str) -> None:
    """Run the daemon: poll every feed on its interval and serve the outputs over HTTP."""
    from .daemon import run_daemon

    config = _load(config_path)
    _setup_logging(config.aggregator.log_level)
    try:
        run_daemon(config)
    except AggregatorError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:  # typically the listen address is taken
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@main.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate the config file and exit: 0 when valid, 2 with one line per problem otherwise."""
    config = _load(config_path)
    click.echo(f"{config_path}: ok ({len(config.feeds)} feeds, {len(config.outputs)} outputs)")


async def _fetch_all(
    config: Config, names: Sequence[str], progress: Callable[[PollOutcome], None]
) -> list[PollOutcome]:
    store = StoreThreads(config.aggregator.database)
    pool = make_parse_pool(config.aggregator.parse_workers)
    try:
        feeds = [config.feed(n) for n in names]
        await store.write(lambda s: s.sync_feeds([(f.name, f.url) for f in config.feeds]))
        states = {s.name: s for s in await store.read(lambda s: s.feed_states())}
        async with make_fetcher(config) as fetcher:
            ctx = PollContext(
                fetcher, store, pool, hosts=make_gates(config, states, datetime.now(UTC))
            )

            async def one(feed: FeedConfig) -> PollOutcome:
                while True:
                    now = datetime.now(UTC)
                    outcome = await poll_source(
                        ctx, feed.name, feed.url, now, policy=config.policy_of(feed)
                    )
                    when = outcome.next_poll
                    if outcome.status != "deferred" or when is None:
                        break
                    if when - now > MAX_CLI_WAIT:
                        # A host asked for a long wait (Retry-After): say so, do not hang.
                        outcome = replace(outcome, error=outcome.reason)
                        break
                    # Politeness (host_delay, a short Retry-After) holds for one-off polls too.
                    await asyncio.sleep((when - now).total_seconds())
                progress(outcome)
                return outcome

            return await asyncio.gather(*(one(f) for f in feeds))
    finally:
        pool.shutdown(wait=True)
        await asyncio.to_thread(store.close)


@main.command()
@config_option
@click.option("--feed", "feed_names", multiple=True, help="Poll only this feed (repeatable).")
def fetch(config_path: str, feed_names: tuple[str, ...]) -> None:
    """Poll every feed (or the named ones) once, store what is new, and exit."""
    config = _load(config_path)
    _setup_logging("warning")
    known = {f.name for f in config.feeds}
    for name in feed_names:
        if name not in known:
            click.echo(f"error: no feed named {name!r} in {config_path}", err=True)
            sys.exit(2)
    names = list(feed_names) or [f.name for f in config.feeds]
    started = datetime.now(UTC)
    with click.progressbar(length=len(names), label="polling", file=sys.stderr) as bar:
        try:
            outcomes = asyncio.run(_fetch_all(config, names, lambda o: bar.update(1)))
        except AggregatorError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
    for o in outcomes:
        if o.status == "error":
            click.echo(f"{o.feed}: error: {o.error}", err=True)
        elif o.status == "deferred":
            click.echo(f"{o.feed}: not polled: {o.error}", err=True)
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    seconds = (datetime.now(UTC) - started).total_seconds()
    gone = f", {counts['gone']} gone" if counts["gone"] else ""
    click.echo(
        f"polled {len(outcomes)} feeds in {seconds:.1f}s: {counts['ok']} ok, "
        f"{counts['not_modified']} not modified, {counts['unchanged']} unchanged, "
        f"{counts['error']} errors{gone}; {sum(o.new for o in outcomes)} new and "
        f"{sum(o.updated for o in outcomes)} updated entries"
    )


@main.command()
@config_option
@click.argument("output")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["atom", "rss", "json"]),
    default="atom",
    show_default=True,
)
def render(config_path: str, output: str, fmt: str) -> None:
    """Render OUTPUT from the stored entries to standard output."""
    from .output import render_output

    config = _load(config_path)
    if not any(o.name == output for o in config.outputs):
        click.echo(f"error: no output named {output!r} in {config_path}", err=True)
        sys.exit(2)
    try:
        store = Store(config.aggregator.database)
    except AggregatorError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    try:
        rendered = render_output(store, config, output, fmt)  # type: ignore[arg-type]
    finally:
        store.close()
    sys.stdout.buffer.write(rendered.body)
    sys.stdout.buffer.write(b"\n")


def _when(d: datetime | None) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d else "-"


@main.command()
@config_option
def feeds(config_path: str) -> None:
    """List the configured feeds: status, last success, errors, entries."""
    config = _load(config_path)
    try:
        store = Store(config.aggregator.database)
    except AggregatorError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    try:
        states = {s.name: s for s in store.feed_states()}
    finally:
        store.close()
    rows = [
        (
            "NAME",
            "STATUS",
            "LAST OK (UTC)",
            "NEXT POLL (UTC)",
            "WHY",
            "ERRORS",
            "FAILING SINCE",
            "ENTRIES",
            "LAST ERROR",
        )
    ]
    notes = []
    for f in config.feeds:
        s = states.get(f.name)
        if s is None:
            rows.append((f.name, "pending", "-", "-", "", "0", "-", "0", ""))
            continue
        rows.append(
            (
                f.name,
                s.status,
                _when(s.last_ok),
                _when(s.next_poll),
                s.next_reason or "",
                str(s.error_count),
                _when(s.failing_since),
                str(s.entry_count),
                (s.last_error or "")[:60],
            )
        )
        if s.config_hint:
            notes.append(f"{f.name}: {s.config_hint}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    for note in notes:
        click.echo(note)


if __name__ == "__main__":  # pragma: no cover
    main()
