"""The `aggregator` command: click commands over the same functions the daemon uses.

The only place where errors become exit codes and one-line messages: 2 for a bad config,
1 for any other failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from . import __version__, cli_fetch, cli_ops, cli_store
from .cli_common import CONFIG_HELP, CONTEXT, command, fail, load, opened_store
from .config.env import PREFIX as ENV_PREFIX
from .config.load import CONFIG_ENV
from .logs import setup_logging
from .models import StoredEntry
from .store.backup import backup_database
from .store.lock import running_daemon


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="aggregator")
@click.option(
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    default=None,
    type=click.Path(dir_okay=False),
    help=CONFIG_HELP,
)
def main(config_path: str | None) -> None:
    """Poll feeds, merge and deduplicate their entries, and republish them as output feeds."""


def _known_output(config_path: str, names: list[str], output: str) -> None:
    if output not in names:
        fail(f"no output named {output!r} in {config_path}", 2)


def _listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    host, colon, port = (value or "").rpartition(":")
    if value is not None and not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8081)")
    return value


@command()
@click.option(
    "--role",
    type=click.Choice(["all", "poller", "server"]),
    default="all",
    show_default=True,
    help="poller: poll feeds, serve only /healthz and /metrics; server: serve every output "
    "and page from the store, poll nothing; all: both.",
)
@click.option(
    "--listen",
    callback=_listen,
    metavar="HOST:PORT",
    help="Listen here instead of [aggregator] listen (as $AGGREGATOR_LISTEN does): one port "
    "per process on one machine.",
)
def run(config_path: str, role: str, listen: str | None) -> None:
    """Run the daemon: poll every feed on its interval and serve the outputs over HTTP."""
    from .daemon import ROLES, run_daemon

    if listen is not None:
        # Through the environment, so that every reload of the file keeps it too.
        os.environ[f"{ENV_PREFIX}LISTEN"] = listen
    config = load(config_path, need_secrets=True)
    setup_logging(config.aggregator.log_level, config.aggregator.log_format)
    chosen = next(r for r in ROLES if r == role)  # the Literal click's Choice checked
    run_daemon(config, config_path, chosen)  # a taken listen address is an OSError: exit 1


@command("check-config")
def check_config(config_path: str) -> None:
    """Validate the config file and exit: 0 when valid, 2 with one line per problem otherwise."""
    config = load(config_path, need_secrets=True)
    click.echo(f"{config_path}: ok ({len(config.feeds)} feeds, {len(config.outputs)} outputs)")


@command()
@click.argument("output")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["atom", "rss", "json", "html", "opml"]),
    default="atom",
    show_default=True,
    help="A feed format, the output's HTML page, or the OPML of its sources.",
)
@click.option(
    "--page",
    type=click.IntRange(min=1),
    default=None,
    help="Write only this page (of the output's page_size) instead of the whole output.",
)
def render(config_path: str, output: str, fmt: str, page: int | None) -> None:
    """Render OUTPUT from the stored entries to standard output: all of it, or one --page."""
    from .outputs.plan import PageNotFound, render_output

    config = load(config_path, need_secrets=True)
    _known_output(config_path, list(config.outputs), output)
    with opened_store(config) as store:
        try:
            rendered = render_output(
                store,
                config,
                output,
                fmt,  # type: ignore[arg-type]
                page=page or 1,
                whole=page is None,
            )
        except PageNotFound as e:
            fail(str(e), 2)
    sys.stdout.buffer.write(rendered.body)
    sys.stdout.buffer.write(b"\n")


def _when(d: datetime | None) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d else "-"


@command()
def feeds(config_path: str) -> None:
    """List the configured feeds: status, last success, errors, entries."""
    config = load(config_path)
    with opened_store(config) as store:
        states = {s.name: s for s in store.feed_states()}
        articles = store.article_counts()
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
    for f in config.feeds.values():
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
        if f.name in articles:
            n = articles[f.name]
            notes.append(
                f"{f.name}: articles {n['extracted']} extracted, {n['failed']} failed, "
                f"{n['pending']} pending"
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    for note in notes:
        click.echo(note)


@command()
@click.argument("url")
@click.option("--selector", help="CSS selector of the element holding the story.")
@click.option("--remove", multiple=True, help="CSS selector of elements to drop (repeatable).")
@click.option("--feed", "feed_name", help="Use this feed's content_selector and remove_selectors.")
def extract(
    config_path: str, url: str, selector: str | None, remove: tuple[str, ...], feed_name: str | None
) -> None:
    """Print the text full_content would store for the article at URL."""
    from .cli_extract import try_extract
    from .ingest.extract import check_selector

    config = load(config_path)
    if feed_name is not None:
        feed = config.feeds.get(feed_name)
        if feed is None:
            fail(f"no feed named {feed_name!r} in {config_path}", 2)
        selector = selector or feed.content_selector
        remove = remove or feed.remove_selectors
    try:
        for css in (selector, *remove):
            if css is not None:
                check_selector(css)
    except ValueError as e:
        fail(str(e), 2)
    if not url.startswith(("http://", "https://")):
        fail(f"{url!r} is not an http(s) URL", 2)
    result = asyncio.run(try_extract(config, url, selector, remove))
    x = result.extraction
    if not x.found:
        fail(f"{result.url}: {x.reason}")
    click.echo(x.html)
    click.echo(
        f"{result.url}: {x.text_length} characters of text by {x.method}, of the page's "
        f"{x.page_text_length} ({result.size} bytes)",
        err=True,
    )


def _line(item: StoredEntry) -> str:
    e = item.entry
    return f"{_when(e.published)}  {e.feed:<16} {e.title[:70]}"


@command()
def reload(config_path: str) -> None:
    """Make the running daemon reload its config file (sends it SIGHUP); on PostgreSQL, says
    how to reach the nodes."""
    config = load(config_path)  # an invalid file is reported here, before signalling
    try:
        pid = running_daemon(config.aggregator.database)  # LockError: none runs, exit 1
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        fail(f"cannot signal the daemon: {e}")
    click.echo(f"sent SIGHUP to the daemon (pid {pid}); /status shows the result")


@command()
@click.argument("output")
def preview(config_path: str, output: str) -> None:
    """List what OUTPUT would contain, the duplicates merged, and which rule dropped the rest."""
    from .outputs.plan import plan_output

    config = load(config_path)
    _known_output(config_path, list(config.outputs), output)
    with opened_store(config) as store:
        plan = plan_output(store, config, output, datetime.now(UTC))
    merged = sum(len(s.merged) for s in plan.stories)
    click.echo(f"{output}: {len(plan.stories)} stories ({merged} duplicates merged)")
    for story in plan.stories:
        click.echo("  " + _line(story.item))
        for other in story.merged:
            click.echo(f"      = merged: {other.entry.feed}: {other.entry.title[:60]}")
    if plan.beyond_limit:
        click.echo(f"beyond the limit: {len(plan.beyond_limit)} older stories")
    if plan.dropped:
        click.echo(f"dropped by rules: {len(plan.dropped)}")
        for item, reason in plan.dropped:
            click.echo(f"  {_line(item)}  [{reason}]")


@command()
@click.argument("query")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Print at most this many entries.",
)
def search(config_path: str, query: str, limit: int) -> None:
    """Full-text search for QUERY over the stored entries, best match first: plain words
    (`iOS 15.5`, `C#`), or SQLite FTS5 syntax (`"climate summit" NOT sport`) when the query
    uses it."""
    from .store.search import to_fts

    config = load(config_path)
    fts = to_fts(query)
    if fts is None:
        fail(f"nothing to search for in {query!r}: give at least one word", 2)
    with opened_store(config) as store:
        found = store.search(fts, limit)
    for item in found:
        click.echo(_line(item) + (f"  {item.entry.link}" if item.entry.link else ""))
    click.echo(f"{len(found)} entries", err=True)


@command()
@click.option("--vacuum", is_flag=True, help="Then give the freed space back to the disk.")
def prune(config_path: str, vacuum: bool) -> None:
    """Delete entries beyond retention_days and max_entries_per_feed now."""
    config = load(config_path)
    s = config.aggregator
    with opened_store(config) as store:
        count = store.prune(datetime.now(UTC), s.retention_days, s.max_entries_per_feed)
        if count is None:
            # PostgreSQL: a node's daily prune holds the prune lock; it does this same work.
            fail("another node is pruning this database right now; try again later", 1)
        if vacuum:
            store.vacuum()
    click.echo(
        f"pruned {count} entries (retention_days={s.retention_days}, "
        f"max_entries_per_feed={s.max_entries_per_feed})" + ("; vacuumed" if vacuum else "")
    )


@command()
@click.argument("target")
def backup(config_path: str, target: str) -> None:
    """Copy the SQLite database to TARGET (a file, or a directory to put a dated file in);
    a PostgreSQL database is backed up with pg_dump."""
    config = load(config_path)
    database = config.aggregator.database
    if database.is_postgres:
        fail(
            f"the database is PostgreSQL ({database.display}): back it up with pg_dump, for "
            "example `pg_dump --format=custom --file=aggregator.dump <database URL>`, and "
            'restore with pg_restore (README: "Backups")'
        )
    path = Path(target)
    if path.is_dir() or target.endswith("/"):
        path.mkdir(parents=True, exist_ok=True)
        path = path / f"aggregator-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.db"
    if path.exists():
        fail(f"{path} already exists; choose a new name", 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create {path.parent}: {e.strerror}")
    backup_database(database.sqlite_path(), path)
    click.echo(f"backed up {database.display} to {path}")


@command("import-opml")
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--print", "print_only", is_flag=True, help="Print the [[feeds]] tables; change nothing."
)
def import_opml(config_path: str, opml_file: Path, print_only: bool) -> None:
    """Add the feeds of the OPML file OPML_FILE to the config (comments kept), or print them."""
    from .config.edit import append_feeds, feeds_toml
    from .outputs.opml import parse_opml

    config = load(config_path)
    try:
        result = parse_opml(
            opml_file.read_bytes(),
            known_urls=[f.url for f in config.feeds.values()],
            known_names=list(config.feeds),
        )
    except (OSError, ValueError) as e:
        fail(f"{opml_file}: {e}", 2)
    for skip in result.skipped:
        click.echo(f"skipped: {skip.where}: {skip.reason}", err=True)
    if print_only:
        click.echo(feeds_toml(result.feeds), nl=False)
        return
    if result.feeds:
        header = f"Imported from {opml_file.name} on {datetime.now(UTC):%Y-%m-%d}"
        append_feeds(Path(config_path), result.feeds, header)  # ConfigError: exit 2
    click.echo(
        f"added {len(result.feeds)} feeds to {config_path}, skipped {len(result.skipped)} outlines"
    )


@command("export-opml")
@click.option(
    "--title",
    default="Feed aggregator subscriptions",
    show_default=True,
    help="The title of the subscription list.",
)
def export_opml(config_path: str, title: str) -> None:
    """Write every configured feed as an OPML 2.0 subscription list to standard output."""
    from .outputs.opml import Subscription, render_opml

    config = load(config_path)
    states = {}
    database = config.aggregator.database
    if database.is_postgres or database.sqlite_path().is_file():  # titles and site links
        with opened_store(config) as store:
            states = {s.name: s for s in store.feed_states()}
    subs = []
    for f in config.feeds.values():
        state = states.get(f.name)
        subs.append(
            Subscription(
                f.name,
                f.url,
                f.title or (state.title if state else None),
                state.link if state else None,
                f.tags,
            )
        )
    sys.stdout.buffer.write(render_opml(title, subs))


# Every command, those of the operator's own modules too, registered here so `main` lists them.
for _command in (
    run,
    check_config,
    render,
    feeds,
    extract,
    reload,
    preview,
    search,
    prune,
    backup,
    import_opml,
    export_opml,
    cli_fetch.fetch,
    cli_ops.health,
    cli_ops.add,
    cli_ops.remove,
    cli_store.copy_store,
):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
