"""Every store method raises StoreError, with the sqlite3 error as its cause, when the database
fails under it: real SQLite files whose tables vanish or whose pages are overwritten."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_sqlite import T0, entries, ok, parsed

from aggregator.cli import main
from aggregator.errors import StoreError
from aggregator.store.protocol import Store
from aggregator.store.sqlite import SqliteStore
from aggregator.store.threads import StoreThreads

# Every read a caller makes, with what it reads (a table of ours dropped behind its back).
READS: dict[str, Callable[[Store], Any]] = {
    "feed state": lambda s: s.feed_state("a"),
    "feed states": lambda s: s.feed_states(),
    "known entries": lambda s: s.known_entries("a"),
    "recent published": lambda s: s.recent_published("a"),
    "feed languages": lambda s: s.feed_languages(["a"]),
    "count entries": lambda s: s.count_entries(),
    "iter entries": lambda s: list(s.iter_entries(["a"])),
    "search": lambda s: s.search('"entry"'),
    "last prune": lambda s: s.last_prune(),
    "generation": lambda s: s.generation(),
    "articles due": lambda s: s.articles_due(T0),
    "take articles": lambda s: s.take_articles(T0, timedelta(minutes=2)),
    "next article due": lambda s: s.next_article_due(),
    "article counts": lambda s: s.article_counts(),
    "sanitize resume": lambda s: s.sanitize_resume("policy"),
    "sanitize batch": lambda s: s.sanitize_batch(0, 10),
}


def _filled(path: Path, count: int = 3) -> None:
    store = SqliteStore(path)
    try:
        store.record_poll(ok("a", new=entries("a", *(parsed(n) for n in range(count)))))
    finally:
        store.close()


def _drop_tables(path: Path) -> None:
    """What a careless tool (or a restore of the wrong file) does to a running daemon."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("entries_fts", "entry_articles", "articles", "entries", "feeds", "meta"):
            conn.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


def _assert_store_error(e: StoreError, path: Path, what: str) -> None:
    assert f"{what} failed on {path}" in str(e)
    assert isinstance(e.__cause__, sqlite3.Error)


@pytest.mark.parametrize("what", READS)
def test_a_read_on_a_table_gone_raises_store_error(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.db"
    _filled(path)
    store = SqliteStore(path)
    try:
        _drop_tables(path)
        with pytest.raises(StoreError) as info:
            READS[what](store)
        _assert_store_error(info.value, path, what)
    finally:
        store.close()


def _corrupt_entries(path: Path) -> None:
    """Overwrite the root page of the entries table with garbage, as a bad disk would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()
    finally:
        conn.close()
    with path.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\xa5" * page_size)


@pytest.mark.parametrize("what", ["iter entries", "search", "known entries"])
def test_a_read_of_a_corrupted_page_raises_store_error(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.db"
    _filled(path, count=200)  # the table spans pages: its root page is an interior one
    _corrupt_entries(path)
    store = SqliteStore(path)  # the schema and the migrations' table are intact: it opens
    try:
        with pytest.raises(StoreError) as info:
            READS[what](store)
        _assert_store_error(info.value, path, what)
        assert "malformed" in str(info.value)
    finally:
        store.close()


def test_store_threads_hand_the_store_error_to_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _filled(path)

    async def scenario() -> list[BaseException | Any]:
        threads = StoreThreads(path)
        try:
            _drop_tables(path)
            return await asyncio.gather(
                threads.read(lambda s: s.feed_states()),
                threads.read_batched(lambda s: s.known_entries("a")),
                threads.write_batched(lambda s: s.generation()),
                return_exceptions=True,
            )
        finally:
            await threads.aclose()

    results = asyncio.run(scenario())
    assert all(isinstance(r, StoreError) for r in results), results


def test_the_cli_says_what_failed_in_one_line(tmp_path: Path) -> None:
    """Corruption is an sqlite3.DatabaseError, which the search once let through as a
    traceback: now the command ends with one line naming the file and the cause."""
    path = tmp_path / "x.db"
    _filled(path, count=200)
    _corrupt_entries(path)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[aggregator]\ndatabase = "{path}"\n\n[[feeds]]\nname = "a"\n'
        'url = "https://a.example/feed.xml"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["search", "entry", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert f"error: search failed on {path}: database disk image is malformed" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_secret_in_the_cause_never_reaches_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTS5 names an unknown column in its error: a query holding a secret (pasted by
    mistake) must come out blanked, as every message does (secret.redact)."""
    from aggregator.config import secret

    monkeypatch.setattr(secret, "_known", ())  # what the test remembers is forgotten after
    secret.remember("hunter2token")
    store = SqliteStore(tmp_path / "x.db")
    try:
        with pytest.raises(StoreError) as info:
            store.search("hunter2token:word")
    finally:
        store.close()
    assert "hunter2token" not in str(info.value)
    assert "hunter2token" in str(info.value.__cause__)  # the cause, for a debugger, keeps it
