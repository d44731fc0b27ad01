"""`aggregator copy-store`: a store filled by real polls of loopback servers (feeds, full
content from article pages, a prune's tombstones) copied from SQLite to the real PostgreSQL
test server, then both stores asked the same questions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from articlesite import STORIES, ArticleSite, article_site
from click.testing import CliRunner, Result
from feedserver import FeedServer
from pgserver import PgServer

from aggregator.cli import main
from aggregator.store.postgres import PostgresStore
from aggregator.store.protocol import Store
from aggregator.store.sqlite import SqliteStore

pytestmark = pytest.mark.postgres
COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
__all__ = ["article_site"]  # a fixture, used by name


def _run(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(path)])


def _body(site: ArticleSite, feed_server: FeedServer) -> str:
    site.serve_feed("/feeds/world.rss", [STORIES[k] for k in ("wire", "de", "ru", "fr")])
    feed_server.serve_file("/eng.xml", "rss20.xml")
    feed_server.serve_file("/bakery.xml", "atom10.xml")
    return f"""
[[feeds]]
name = "world"
url = "{site.url("/feeds/world.rss")}"
full_content = true

[[feeds]]
name = "eng"
url = "{feed_server.url("/eng.xml")}"

[[feeds]]
name = "bakery"
url = "{feed_server.url("/bakery.xml")}"

[[outputs]]
name = "all"
title = "All"
"""


def _answers(store: Store) -> dict[str, object]:
    """What the rest of the program can ask a store, for every feed."""
    names = ["world", "eng", "bakery"]
    return {
        "feed_states": store.feed_states(),
        "poll_states": [store.poll_state(n) for n in names],
        "entries": list(store.iter_entries(names)),
        "known": [store.known_entries(n) for n in names],  # tombstones included
        # The entries found; their order is each engine's ranking (bm25, ts_rank).
        "search": [
            sorted(s.entry.uid for s in store.search(q))
            for q in ('"job queue"', "outage", "sourdough OR pantry", "solarpark OR gauges")
        ],
        "articles": store.article_counts(),
        "last_prune": store.last_prune(),
        "count": store.count_entries(),
        "languages": store.feed_languages(names),
    }


def test_copy_a_polled_sqlite_store_to_postgresql(
    write_config: Callable[..., Path],
    feed_server: FeedServer,
    article_site: ArticleSite,
    pg_url: str,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    body = _body(article_site, feed_server)
    sqlite_config = write_config(body, host_delay="0.2s", max_entries_per_feed=3)
    fetched = _run(sqlite_config, "fetch")
    assert fetched.exit_code == 0, fetched.output
    assert "pruned 2 entries" in _run(sqlite_config, "prune").output  # eng and world had 4
    db = tmp_path / "data" / "aggregator.db"

    source = SqliteStore(db)
    try:
        before = _answers(source)
        generation = source.generation()
    finally:
        source.close()
    assert before["count"] == 3 + 3 + 3 and len(before["known"][1]) == 4  # type: ignore[arg-type]
    assert before["articles"]["world"]["extracted"] >= 1  # type: ignore[index]
    assert before["last_prune"] is not None and all(before["search"])  # type: ignore[arg-type]

    copied = _run(sqlite_config, "copy-store", "--from", str(db), "--to", pg_url)
    assert copied.exit_code == 0, copied.output
    assert pg_server.password not in copied.output
    table = {
        line.split()[0]: line.split()[1:]
        for line in copied.stdout.splitlines()[2:]  # after "copied ..." and the header
    }
    assert table["entries"] == ["9", "9"] and table["pruned"] == ["2", "2"]
    assert table["feeds"] == ["3", "3"] and set(table) == {
        "feeds",
        "entries",
        "pruned",
        "articles",
        "entry_articles",
        "meta",
    }

    target = PostgresStore(pg_url)
    try:
        after = _answers(target)
        assert target.generation() > generation
        # Columns PostgreSQL has beyond SQLite's are derived as its migrations derive them.
        if "origin" in {r["column_name"] for r in target._all(COLUMNS, ["feeds"])}:
            origins = target._all("SELECT name, origin FROM feeds ORDER BY name")
            assert [r["origin"] for r in origins] == [
                feed_server.url("/").rstrip("/"),
                feed_server.url("/").rstrip("/"),
                article_site.url("/").rstrip("/"),
            ]
        # The re-sanitising pass has nothing to redo: it knows where SQLite's was.
        policy = target._one("SELECT value FROM meta WHERE key = 'sanitize_policy'")
        assert policy is not None and target.sanitize_resume(policy["value"]) is None
    finally:
        target.close()
    for key, value in before.items():
        assert after[key] == value, key

    # A second copy into the now full database is refused and writes nothing; --replace
    # empties it first.
    again = _run(sqlite_config, "copy-store", "--from", str(db), "--to", pg_url)
    assert again.exit_code == 1 and "is not empty (3 feeds, 9 entries, 2 pruned)" in again.output
    replaced = _run(sqlite_config, "copy-store", "--from", str(db), "--to", pg_url, "--replace")
    assert replaced.exit_code == 0, replaced.output

    # The daemon's config switched to the URL: the next poll knows every entry (the pruned
    # one included) and stores nothing twice; new entries get ids after the copied ones.
    pg_config = write_config(body, name="pg.toml", host_delay="0.2s", database=pg_url)
    assert _run(pg_config, "fetch").exit_code == 0
    target = PostgresStore(pg_url)
    try:
        assert target.count_entries() == 9
        assert target.known_entries("eng") == before["known"][1]  # type: ignore[index]
        target.sync_feeds([("new", "https://new.example/feed")])
        from aggregator.ingest.identity import identify
        from aggregator.models import ParsedEntry, PollRecord

        now = datetime(2024, 5, 1, tzinfo=UTC)
        entry = ParsedEntry("n1", False, "https://new.example/1", "New", "", "", "", (), now, None)
        new = tuple(identify("new", [entry], now))
        target.record_poll(PollRecord("new", "https://new.example/feed", now, "ok", None, new=new))
        ids = target._one(
            "SELECT max(id) FILTER (WHERE feed = 'new') AS new, "
            "max(id) FILTER (WHERE feed <> 'new') AS copied, count(*) AS n FROM entries"
        )
        assert ids is not None and ids["n"] == 10 and ids["new"] > ids["copied"]
    finally:
        target.close()


def test_copy_store_refuses_what_it_cannot_copy(
    write_config: Callable[..., Path], tmp_path: Path, pg_url: str
) -> None:
    path = write_config("")
    missing = _run(path, "copy-store", "--to", pg_url)  # --from: the config's file, absent
    assert missing.exit_code == 1 and "no database at" in missing.output
    assert _run(path, "copy-store", "--from", pg_url, "--to", pg_url).exit_code == 2
    to_file = _run(path, "copy-store", "--from", "a.db", "--to", str(tmp_path / "b.db"))
    assert to_file.exit_code == 2 and "postgresql:// URL" in to_file.output
    assert _run(path, "copy-store", "--to", "mysql://x/y").exit_code == 2
