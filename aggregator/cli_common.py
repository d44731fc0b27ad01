"""What every `aggregator` command shares: the --config option and loading the config or
exiting 2 with its problems. I/O: reads the config file."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from .config.load import CONFIG_ENV, DEFAULT_CONFIG, load_config
from .config.resolved import Config
from .errors import AggregatorError, ConfigError
from .store.protocol import Store
from .store.sqlite import SqliteStore


def config_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=f"Config file (or set ${CONFIG_ENV}).",
    )(fn)


def load_or_exit(path: str, need_secrets: bool = False) -> Config:
    """The config, or exit 2. Only the commands that send or serve secrets need them readable
    here: the others may run without the daemon's environment or its secret files."""
    try:
        return load_config(path, need_secrets=need_secrets)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and the exit code: 1 a runtime failure, 2 a bad config or argument."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def open_store_or_exit(config: Config) -> Store:
    """The config's database, opened (and migrated), or exit 1 with why it could not be."""
    try:
        return SqliteStore(config.aggregator.database)
    except AggregatorError as e:
        fail(str(e))
