"""`aggregator copy-store`: move an SQLite store to PostgreSQL (store/copy.py) and print the
rows of each table on both sides.

Registered on the `aggregator` group by cli.py. I/O: both databases.
"""

from __future__ import annotations

import click

from .cli_common import command, fail, load
from .config.database import parse_database


@command("copy-store")
@click.option(
    "--from",
    "source",
    default=None,
    help="The SQLite file to copy (default: the config's database, when it is a file).",
)
@click.option(
    "--to",
    "target",
    default=None,
    help="The postgresql:// URL to copy into (default: the config's database, when it is one).",
)
@click.option(
    "--replace", is_flag=True, help="Empty a target that already holds feeds or entries first."
)
def copy_store(config_path: str, source: str | None, target: str | None, replace: bool) -> None:
    """Copy an SQLite store into an empty PostgreSQL database: feeds and their polling state,
    entries, tombstones, article pages and queue, meta. Checks the rows of every table; a
    failed copy writes nothing."""
    from .store.copy import copy_store as copy

    configured = load(config_path).aggregator.database
    try:
        src = parse_database(source) if source is not None else configured
        dst = parse_database(target) if target is not None else configured
    except ValueError as e:
        fail(f"copy-store: {e}", 2)
    if src.is_postgres:
        fail("copy-store: --from is the SQLite file to copy (a path)", 2)
    if dst.url is None:
        fail("copy-store: --to is the PostgreSQL database to copy into (a postgresql:// URL)", 2)
    counts = copy(
        src.sqlite_path(),
        dst.url,
        replace=replace,
        progress=lambda table, rows: click.echo(f"copied {table}: {rows} rows", err=True),
    )
    click.echo(f"copied {src.display} to {dst.display}")
    width = max(len(c.table) for c in counts)
    click.echo(f"{'TABLE':<{width}}  {'SOURCE':>9}  {'TARGET':>9}")
    for c in counts:
        click.echo(f"{c.table:<{width}}  {c.source:>9}  {c.target:>9}")
