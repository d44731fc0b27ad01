"""Tests of what only the PostgreSQL store has (its migrations, its connection, its errors, the
FTS5-to-tsquery translation), against the real server of tests/pgserver.py. The behaviour it
shares with SQLite is tested once for both, through conftest's parametrised `store` fixture."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from pgserver import PgServer
from test_dedupe import T0, _load_sections
from test_sqlite import entries, ok, parsed
from test_store_errors import READS

from aggregator.errors import StoreError
from aggregator.store.postgres import PostgresStore
from aggregator.store.postgres_schema import GENERATION_SLOTS, INDEXED_CHARS, MIGRATIONS
from aggregator.store.postgres_search import QueryError, to_tsquery
from aggregator.store.search import to_fts
from aggregator.store.sqlite import SqliteStore as Store

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    try:
        yield s
    finally:
        s.close()


def test_the_test_server_takes_the_role_and_its_password(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT current_user, current_database(), version()").fetchone()
    assert row is not None
    assert row[0] == "aggregator"
    assert row[1].startswith("test_")
    assert row[2].startswith("PostgreSQL")
    wrong = pg_url.replace(pg_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()


def _applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(v, n) for v, n in rows.fetchall()]


def test_migrations_are_recorded_and_applied_once(pg_url: str) -> None:
    first = PostgresStore(pg_url)
    first.record_poll(ok("a", new=entries("a", parsed(1))))
    first.close()
    second = PostgresStore(pg_url)
    try:
        assert second.count_entries() == 1
        assert second.generation() == 1
    finally:
        second.close()
    assert _applied(pg_url) == [(n, name) for n, name, _ in MIGRATIONS]


def test_processes_opening_a_new_database_at_once_take_turns(pg_url: str) -> None:
    """The advisory lock: eight connections migrate a new database at the same moment, and
    every one of them opens it; the tables are made once."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait(timeout=60)
        try:
            PostgresStore(pg_url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert _applied(pg_url) == [(n, name) for n, name, _ in MIGRATIONS]


def test_a_wrong_password_is_a_store_error_that_never_shows_it(
    pg_server: PgServer, pg_url: str
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    url = pg_url.replace(pg_server.password, "Sekr3t-never-shown")
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert "cannot open database" in message and "password authentication failed" in message
    assert f"postgresql://127.0.0.1:{pg_server.port}/{name}" in message
    assert "Sekr3t" not in message and pg_server.password not in message
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_no_server_there_is_a_store_error(pg_server: PgServer) -> None:
    from conftest import free_port

    url = f"postgresql://aggregator:pw@127.0.0.1:{free_port()}/nothing?connect_timeout=10"
    with pytest.raises(StoreError, match=r"cannot open database postgresql://127\.0\.0\.1:"):
        PostgresStore(url)


def test_libpq_finds_the_password_in_pgpassword_or_a_pass_file(
    pg_server: PgServer, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = pg_url.replace(f":{pg_server.password}@", "@")
    assert pg_server.password not in bare
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    PostgresStore(bare).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:*:aggregator:{pg_server.password}\n")
    passfile.chmod(0o600)  # libpq ignores a pass file others can read
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    PostgresStore(bare).close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="cannot open database"):
        PostgresStore(bare)


def test_a_failing_read_is_a_store_error(pg: PostgresStore, pg_server: PgServer) -> None:
    pg.sync_feeds([("a", "https://a.example/")])
    name = pg.path.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.admin_url(name), autocommit=True) as admin:
        admin.execute("ALTER TABLE feeds RENAME TO feeds_gone")
    with pytest.raises(StoreError, match="feed states failed on postgresql:") as caught:
        pg.feed_states()
    assert isinstance(caught.value.__cause__, psycopg.Error)
    with pytest.raises(StoreError, match="iter entries failed on postgresql:"):
        list(pg.iter_entries(["a"]))


def test_check_writable_waits_for_a_lock_then_says_not_writable(
    pg: PostgresStore, pg_url: str
) -> None:
    pg.check_writable()
    with psycopg.connect(pg_url) as other:
        # Another session holds the row the check writes (a stuck transaction, say).
        other.execute("SELECT * FROM meta WHERE key = 'generation' FOR UPDATE")
        with pytest.raises(StoreError, match="not writable"):
            pg.check_writable()
        other.rollback()
    pg.check_writable()


def test_concurrent_writers_of_one_feed_take_turns(pg_url: str) -> None:
    """Two connections record errors on the same feed at once: the row lock orders them, so
    every poll's error is counted (the state is written whole from the state read)."""
    polls = 20
    failures: list[BaseException] = []

    def writer(offset: int) -> None:
        store = PostgresStore(pg_url)
        try:
            for i in range(polls):
                when = T0 + timedelta(seconds=2 * i + offset)
                store.record_poll(ok("a", when, status="error", error="HTTP 500"))
        except BaseException as e:
            failures.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    store = PostgresStore(pg_url)
    try:
        state = store.feed_state("a")
        assert state is not None and state.error_count == 2 * polls
    finally:
        store.close()


def _stores(url: str, n: int) -> list[PostgresStore]:
    stores = [PostgresStore(url) for _ in range(n)]
    for store in stores:
        # A write that queues behind another fails in time instead of hanging the test.
        store.conn.execute("SET lock_timeout = '20s'")
    return stores


def test_writers_adding_entries_to_different_feeds_do_not_wait_for_each_other(
    pg_url: str,
) -> None:
    """Two transactions add entries at once (two pollers' batches): the second commits while
    the first is still open. With the generation in one row, it waited for the first."""
    first, second = _stores(pg_url, 2)
    second.conn.execute("SET lock_timeout = '2s'")
    try:
        with first.atomic():
            first.record_poll(ok("a", new=entries("a", parsed(1))))
            second.record_poll(ok("b", new=entries("b", parsed(2))))
            # The first's write is not committed: the generation counts the second's only.
            assert second.generation() == 1
        assert second.generation() == first.generation() == 2
        assert second.count_entries() == 2
    finally:
        first.close()
        second.close()


def test_more_writers_at_once_than_generation_slots_all_commit(pg_url: str) -> None:
    """Every slot is held by an open transaction: one more writer waits for a slot, then
    commits, and every write is counted once."""
    holders = _stores(pg_url, GENERATION_SLOTS)
    [late] = _stores(pg_url, 1)
    errors: list[BaseException] = []
    try:
        for k, store in enumerate(holders):
            store.conn.execute("BEGIN")
            store.record_poll(ok(f"h{k}", new=entries(f"h{k}", parsed(k))))

        def write() -> None:
            try:
                late.record_poll(ok("late", new=entries("late", parsed(99))))
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=write)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), errors  # waiting for a slot, not writing beside its holder
        for store in holders:
            store.conn.execute("COMMIT")
        thread.join(timeout=60)
        assert errors == [] and not thread.is_alive()
        assert late.generation() == GENERATION_SLOTS + 1
        assert late.count_entries() == GENERATION_SLOTS + 1
    finally:
        for store in [*holders, late]:
            store.close()


def test_a_store_from_before_the_generation_slots_keeps_its_generation(pg_url: str) -> None:
    """A database whose generation is all in meta (as before migration 7) opens with that
    generation, and counts on from it."""
    store = PostgresStore(pg_url)
    store.conn.execute("DROP TABLE generation_slots")
    store.conn.execute("DELETE FROM schema_migrations WHERE version = 7")
    store.conn.execute("UPDATE meta SET value = '41' WHERE key = 'generation'")
    store.conn.commit()
    store.close()
    again = PostgresStore(pg_url)
    try:
        assert again.generation() == 41
        assert again.record_poll(ok("a", new=entries("a", parsed(1)))) == 42
        assert again.generation() == 42
    finally:
        again.close()


def test_the_index_follows_updates_and_prunes(pg: PostgresStore) -> None:
    [rain] = entries("a", parsed(1, title="Heavy rain expected"))
    pg.record_poll(ok("a", new=(rain,)))
    assert [s.entry.key for s in pg.search('"rain"')] == [rain.key]
    snow = replace(rain, title="Snow expected", content_hash="x")
    pg.record_poll(ok("a", T0 + timedelta(hours=1), updated=(snow,)))
    assert pg.search('"rain"') == []
    assert [s.entry.key for s in pg.search("snow")] == [rain.key]
    pg.prune(T0 + timedelta(days=1), retention_days=0, max_per_feed=0)  # nothing: rules off
    assert pg.search("snow")
    pg.prune(T0 + timedelta(days=400), retention_days=30, max_per_feed=0)
    assert pg.search("snow") == []
    pg.vacuum()
    assert pg.count_entries() == 0 and pg.known_entries("a").keys() == {rain.key}


def test_an_entry_too_long_for_the_index_is_stored_and_found_by_its_title(
    pg: PostgresStore,
) -> None:
    words = " ".join(f"w{i}" for i in range(INDEXED_CHARS // 3))  # far past a tsvector's 1 MB
    [huge] = entries("a", replace(parsed(1, title="Enormous page"), content=words * 3))
    pg.record_poll(ok("a", new=(huge,)))
    [found] = pg.search("enormous")
    assert found.entry.content == huge.content


@pytest.mark.parametrize(
    ("fts", "tsquery"),
    [
        ("putin", "'putin'"),
        ('"latin america"', "'latin america'"),
        # NOT binds tightest (then AND, then OR), as in FTS5.
        ("latin america NOT sport", "('latin' & ('america' & !'sport'))"),
        ("a AND b OR c", "(('a' & 'b') | 'c')"),
        ("a OR b c", "('a' | ('b' & 'c'))"),
        ("(a OR b) c", "(('a' | 'b') & 'c')"),
        ("clim*", "'clim':*"),
        ("title:putin OR kremlin", "('putin':A | 'kremlin')"),
        ("{title summary}:rain", "'rain':AB"),
        ("-content:rain*", "'rain':*AB"),
        ("title:(a OR b)", "('a':A | 'b':A)"),
        ("big + deal", "('big' <-> 'deal')"),
        ("NEAR(climate summit, 5)", "('climate' & 'summit')"),
        ('"it\'s" "a\\b" """hi"', "(('it''s' & 'a\\\\b') & '\"hi')"),
    ],
)
def test_fts5_queries_become_tsqueries(fts: str, tsquery: str) -> None:
    assert to_tsquery(fts) == tsquery


@pytest.mark.parametrize("bad", ["", "(a", "a)", "nosuch:x", "- a", "OR"])
def test_what_is_not_fts5_is_refused(bad: str) -> None:
    with pytest.raises(QueryError):
        to_tsquery(bad)


TYPED = [
    "putin",
    "Putin kremlin",
    "latin america NOT sport",
    '"latin america"',
    "putin OR rain",
    "title:putin",
    "rain-expected",
    "capital*",
    "iOS 15.5",
    "C#",
    "don't",
    "(putin OR rain) capital",
    "forecasters",
    "summary:forecasters",
    "dúma",
    "moscow stock",
    "stock OR exchange NOT moscow",
    "putin NOT title:latin",
    "nothingmatches",
]


def test_both_stores_find_the_same_entries(pg: PostgresStore, tmp_path: Path) -> None:
    """What people type (through search.to_fts, as `aggregator search` does) selects the same
    entries on SQLite and on PostgreSQL; only the order of equally good matches may differ."""
    sqlite = Store(tmp_path / "same.db")
    try:
        _load_sections(sqlite)
        _load_sections(pg)
        for typed in TYPED:
            fts = to_fts(typed)
            assert fts is not None
            on_sqlite = {s.entry.uid for s in sqlite.search(fts, 100)}
            on_pg = {s.entry.uid for s in pg.search(fts, 100)}
            assert on_pg == on_sqlite, typed
            feeds = ["russia", "world", "top"]
            assert [s.entry.uid for s in pg.iter_entries(feeds, 2, query=fts)] == [
                s.entry.uid for s in sqlite.iter_entries(feeds, 2, query=fts)
            ], typed
        found = [t for t in TYPED if sqlite.search(to_fts(t) or "", 100)]
        assert len(found) >= 12, found  # not a comparison of empty results
    finally:
        sqlite.close()


def test_data_version_moves_when_another_connection_commits(pg: PostgresStore, pg_url: str) -> None:
    before = pg.data_version()
    assert pg.data_version() == before  # reading moves nothing
    other = PostgresStore(pg_url)
    try:
        other.sync_feeds([("x", "https://x.example/feed.xml")])
    finally:
        other.close()
    assert pg.data_version() != before
    # A write still in progress when we look, committed after: the commit moves it again.
    with psycopg.connect(pg_url) as writer:
        writer.execute("UPDATE feeds SET title = 'X' WHERE name = 'x'")
        during = pg.data_version()
        writer.commit()
    assert pg.data_version() != during


@pytest.mark.parametrize("what", READS)
def test_a_read_on_a_table_gone_raises_store_error(
    pg: PostgresStore, pg_server: PgServer, what: str
) -> None:
    """test_store_errors' reads, on PostgreSQL: the tables dropped behind the store's back."""
    pg.record_poll(ok("a", new=entries("a", parsed(1), parsed(2))))
    name = pg.path.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.admin_url(name), autocommit=True) as admin:
        admin.execute("DROP TABLE entry_articles, articles, pruned, entries, feeds, meta CASCADE")
    with pytest.raises(StoreError) as info:
        READS[what](pg)
    assert f"{what} failed on {pg.path}: " in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.Error)
    assert pg_server.password not in str(info.value)


def test_a_server_that_never_answers_is_a_store_error_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq waits forever by default; the store gives a URL without connect_timeout one."""
    import socket

    from aggregator.store import postgres_connection

    monkeypatch.setattr(postgres_connection, "CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreError, match="cannot open database"):
            PostgresStore(f"postgresql://aggregator:pw@127.0.0.1:{port}/db")
        assert time.monotonic() - started < 60  # a deadline, not a measurement
