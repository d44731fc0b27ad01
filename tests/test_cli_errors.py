"""The new settings' validation and the CLI's error paths for reload, import-opml and backup."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aggregator.config.load import parse_config
from aggregator.errors import ConfigError


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"log_format": "xml"}, "aggregator.log_format: 'xml' is not one of text, json"),
        ({"summary_interval": "1s"}, "summary_interval 1s is out of range (5s to 1d)"),
        ({"retention_days": -1}, "aggregator.retention_days: Input should be greater than"),
        ({"max_entries_per_feed": "many"}, "aggregator.max_entries_per_feed: Input should be"),
    ],
)
def test_new_settings_are_validated(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"aggregator": settings})
    assert any(problem in p for p in e.value.problems), e.value.problems


def test_new_settings_defaults() -> None:
    s = parse_config({}).aggregator
    assert (s.log_format, s.summary_interval.total_seconds()) == ("text", 60)
    assert (s.retention_days, s.max_entries_per_feed) == (90, 1000)
    assert parse_config({"aggregator": {"log_format": "JSON"}}).aggregator.log_format == "json"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def test_cli_error_paths(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = write_config('[[feeds]]\nname = "a"\nurl = "https://a.example/feed"\n')
    no_daemon = cli(path, "reload")
    assert no_daemon.returncode == 1 and "no daemon is running" in no_daemon.stderr

    not_opml = tmp_path / "page.html"
    not_opml.write_text("<html><body>nope</body></html>")
    before = path.read_text()
    bad = cli(path, "import-opml", str(not_opml))
    assert bad.returncode == 2 and "not an OPML document" in bad.stderr
    assert path.read_text() == before

    # Nothing new to add: the config is not rewritten.
    same = tmp_path / "same.opml"
    same.write_text('<opml><body><outline text="A" xmlUrl="https://a.example/feed"/></body></opml>')
    nothing = cli(path, "import-opml", str(same))
    assert nothing.returncode == 0 and "added 0 feeds" in nothing.stdout
    assert path.read_text() == before

    exported = cli(path, "export-opml", "--title", "Mine")
    assert exported.returncode == 0 and 'xmlUrl="https://a.example/feed"' in exported.stdout
    assert "<title>Mine</title>" in exported.stdout
    assert not (tmp_path / "data").exists()  # export reads the database only if it exists

    missing_db = cli(path, "backup", str(tmp_path / "copy.db"))
    assert missing_db.returncode == 1 and "no database at" in missing_db.stderr
    assert not (tmp_path / "copy.db").exists()
