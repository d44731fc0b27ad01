"""What every `aggregator` command shares: `-h`, the --config option (before or after the
command), the store as a context manager, and the one place where errors become a line on
stderr and an exit code. I/O: reads the config file, opens the database.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from .config.load import CONFIG_ENV, DEFAULT_CONFIG, load_config
from .config.resolved import Config
from .errors import AggregatorError, ConfigError
from .store.open import open_store
from .store.protocol import Store

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
CONFIG_HELP = f"Config file (or set ${CONFIG_ENV}); given before or after the command."


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and the exit code: 1 a runtime failure, 2 a bad config or argument."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exits_on_errors(fn: F) -> F:
    """The one translation of errors into exit codes: a bad config 2 (with one line per
    problem), any other AggregatorError or OS error (the database, the listen address) 1,
    as `error: …` on stderr. Everything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            fail(str(e), 2)
        except (AggregatorError, OSError) as e:
            fail(str(e))

    return run  # type: ignore[return-value]


def _config_path(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # Given after the command, it wins; else one given before it (`aggregator --config x.toml
    # feeds`); else $AGGREGATOR_CONFIG, else the default (`value` is then one of those).
    if ctx.get_parameter_source("config_path") is ParameterSource.COMMANDLINE:
        return value
    root = ctx.find_root()
    if root is not ctx and root.get_parameter_source("config_path") is ParameterSource.COMMANDLINE:
        return str(root.params["config_path"])
    return value


def config_option(fn: F) -> F:
    """--config on a command; the group takes the same option before the command."""
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        callback=_config_path,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=CONFIG_HELP,
    )(fn)


def command(name: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    """An `aggregator` command: `-h`/`--help`, `--config`, and errors through
    `exits_on_errors`. Its docstring is its help; every option says what it is for."""

    def make(fn: Callable[..., Any]) -> click.Command:
        return click.command(name, context_settings=CONTEXT)(config_option(exits_on_errors(fn)))

    return make


def load(path: str, *, need_secrets: bool = False) -> Config:
    """The config of a command (a ConfigError exits 2, see `exits_on_errors`). Only the
    commands that send or serve secrets need them readable here: the others may run without
    the daemon's environment or its secret files."""
    return load_config(path, need_secrets=need_secrets)


@contextlib.contextmanager
def opened_store(config: Config) -> Iterator[Store]:
    """The config's database (an SQLite file or a PostgreSQL URL), opened (and migrated) for
    the command, closed after it; a database that cannot be opened is a StoreError (exit 1)."""
    store = open_store(config.aggregator.database)
    try:
        yield store
    finally:
        store.close()
