"""The `aggregator` command as a skin: every option and argument explained, `-h`, --config
before or after the command, and errors as one line and the documented exit code. Real config
files and real SQLite files in tmp_path, through click's runner and one real subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aggregator.cli import main
from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.store.sqlite import SqliteStore

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS: dict[str, click.Command] = main.commands  # type: ignore[attr-defined]
FEEDS = '[[feeds]]\nname = "{name}"\nurl = "https://{name}.example/feed"\n'


def _config(write_config: Callable[..., Path], name: str, feed: str) -> Path:
    return write_config(FEEDS.format(name=feed), name=name)


def _store_one_entry(path: Path, feed: str) -> None:
    now = datetime(2024, 3, 1, tzinfo=UTC)
    entry = ParsedEntry(
        guid="g1",
        guid_is_permalink=False,
        link=f"https://{feed}.example/1",
        title="Storm over the harbour",
        summary="Storm",
        content="<p>Storm over the harbour</p>",
        author="",
        categories=(),
        published=now,
        updated=None,
    )
    store = SqliteStore(path)
    try:
        store.sync_feeds([(feed, f"https://{feed}.example/feed")])
        new = tuple(identify(feed, [entry], now))
        store.record_poll(
            PollRecord(feed, f"https://{feed}.example/feed", now, "ok", None, new=new)
        )
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_and_argument_of_every_command_is_explained(name: str) -> None:
    command = COMMANDS[name]
    assert command.help, f"{name} has no help text"
    assert f"`aggregator {name}" in README
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"
        else:  # an argument has no help of its own: the command's text names it
            assert param.human_readable_name in command.help, (name, param.name)


def test_the_group_options_are_explained_too() -> None:
    for param in main.params:
        assert isinstance(param, click.Option) and param.help, param.name


@pytest.mark.parametrize("args", [[], *([name] for name in sorted(COMMANDS))])
def test_dash_h_is_help_like_double_dash_help(args: list[str]) -> None:
    short = CliRunner().invoke(main, [*args, "-h"])
    long = CliRunner().invoke(main, [*args, "--help"])
    assert short.exit_code == long.exit_code == 0, short.output
    assert short.stdout == long.stdout
    assert short.stdout.startswith("Usage: ")
    assert "-h, --help" in short.stdout


def test_config_is_taken_before_or_after_the_command(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two config files on one database: which one was read shows in the feeds listed.
    before = _config(write_config, "before.toml", "alpha")
    after = _config(write_config, "after.toml", "beta")
    env = _config(write_config, "env.toml", "gamma")

    def listed(*args: str) -> list[str]:
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return [line.split()[0] for line in result.stdout.splitlines()[1:]]

    assert listed("--config", str(before), "feeds") == ["alpha"]
    assert listed("feeds", "--config", str(after)) == ["beta"]
    # Both: the one after the command is the more specific, and wins.
    assert listed("--config", str(before), "feeds", "--config", str(after)) == ["beta"]
    # $AGGREGATOR_CONFIG still works, and either placement overrides it.
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(env))
    assert listed("feeds") == ["gamma"]
    assert listed("--config", str(before), "feeds") == ["alpha"]
    assert listed("feeds", "--config", str(after)) == ["beta"]
    # Without either, the default path, relative to the working directory.
    monkeypatch.delenv("AGGREGATOR_CONFIG")
    (tmp_path / "config").mkdir()
    _config(write_config, "config/aggregator.toml", "delta")
    monkeypatch.chdir(tmp_path)
    assert listed("feeds") == ["delta"]


def test_config_before_the_command_reaches_commands_of_every_module(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_config(FEEDS.format(name="alpha"))
    _store_one_entry(tmp_path / "data" / "aggregator.db", "alpha")
    found = CliRunner().invoke(main, ["--config", str(path), "search", "storm"])
    assert found.exit_code == 0, found.output
    assert "Storm over the harbour" in found.stdout
    # `remove` lives in cli_ops.py: the group's --config reaches it as well.
    removed = CliRunner().invoke(main, ["--config", str(path), "remove", "alpha"])
    assert removed.exit_code == 0, removed.output
    assert "alpha" not in path.read_text()


@pytest.mark.parametrize("command", ["feeds", "search storm", "prune", "preview o", "fetch"])
def test_a_missing_config_is_one_error_and_exit_2(tmp_path: Path, command: str) -> None:
    path = tmp_path / "absent.toml"
    result = CliRunner().invoke(main, ["--config", str(path), *command.split()])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: invalid config (1 problem(s)):",
        "  file not found",
    ]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_bad_config_lists_its_problems_and_exits_2(write_config: Callable[..., Path]) -> None:
    path = write_config(FEEDS.format(name="alpha") + "intervall = '1h'\n")
    result = CliRunner().invoke(main, ["feeds", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: invalid config (1 problem(s)):",
        "  feeds[0].intervall: unknown key (is it misspelled?)",
    ]


@pytest.mark.parametrize("command", ["feeds", "search storm", "prune", "export-opml"])
def test_an_unreadable_database_is_one_line_and_exit_1(
    write_config: Callable[..., Path], tmp_path: Path, command: str
) -> None:
    database = tmp_path / "data" / "aggregator.db"
    database.parent.mkdir()
    database.write_bytes(b"this is not an SQLite database, only some bytes " * 100)
    path = write_config(FEEDS.format(name="alpha"))
    result = CliRunner().invoke(main, ["--config", str(path), *command.split()])
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot open database {database}: ")
    assert isinstance(result.exception, SystemExit)  # not a traceback


def test_the_real_command_takes_config_first_and_dash_h(write_config: Callable[..., Path]) -> None:
    path = _config(write_config, "aggregator.toml", "alpha")
    command = [sys.executable, "-m", "aggregator"]
    ok = subprocess.run(
        [*command, "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{path}: ok (1 feeds, 0 outputs)\n"
    helped = subprocess.run([*command, "fetch", "-h"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--max-wait" in helped.stdout


def test_only_the_commands_that_use_secrets_need_them_readable(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_TEST_PASSWORD", raising=False)
    secret = 'username = "reader"\npassword = "env:CLI_TEST_PASSWORD"\n'
    path = write_config(FEEDS.format(name="alpha") + secret)
    listed = CliRunner().invoke(main, ["--config", str(path), "feeds"])
    assert listed.exit_code == 0, listed.output
    checked = CliRunner().invoke(main, ["--config", str(path), "check-config"])
    assert checked.exit_code == 2
    assert "CLI_TEST_PASSWORD is not set" in checked.stderr
