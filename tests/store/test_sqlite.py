"""Tests of the store against real SQLite files in tmp_path and, through the parametrised
`store` fixture (conftest.py), the same behaviour against PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests_support import REPO, in_transaction

from aggregator.errors import StoreError
from aggregator.ingest.identity import identify
from aggregator.models import Entry, ParsedEntry, PollRecord, Validators
from aggregator.store.sqlite import SqliteStore as Store

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def parsed(
    n: int,
    *,
    title: str | None = None,
    published: datetime | None = None,
    dated: bool = True,
) -> ParsedEntry:
    return ParsedEntry(
        guid=f"guid-{n}",
        guid_is_permalink=False,
        link=f"https://example.com/{n}",
        title=title if title is not None else f"Entry {n}",
        summary=f"Summary {n}",
        content=f"<p>Content {n}</p>",
        author="Ann",
        categories=("a", "b"),
        published=(published or T0 - timedelta(days=n)) if dated else None,
        updated=None,
    )


def entries(feed: str, *items: ParsedEntry, now: datetime = T0) -> tuple[Entry, ...]:
    return tuple(identify(feed, items, now))


def ok(feed: str, now: datetime = T0, **fields: object) -> PollRecord:
    return replace(
        PollRecord(feed, f"https://{feed}.example/feed.xml", now, "ok", now + timedelta(hours=1)),
        **fields,
    )


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def test_migrations_applied_once_and_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.db"
    first = Store(path)
    try:
        first.sync_feeds([("a", "https://a.example/feed.xml")])
        first.record_poll(ok("a", new=entries("a", parsed(1), parsed(2))))
    finally:
        first.close()

    second = Store(path)
    try:
        assert second.count_entries("a") == 2
        assert second.generation() == 1
    finally:
        second.close()

    with raw(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
        generations = conn.execute("SELECT count(*) FROM meta WHERE key = 'generation'")
        assert generations.fetchone()[0] == 1
    assert names == [
        "m001_initial",
        "m002_polling",
        "m003_dedupe",
        "m004_retention",
        "m005_fts_merging",
        "m006_sanitize_once",
        "m007_media",
        "m008_articles",
        "m010_no_userinfo",
        "m011_text_only_hashes",
        "m012_next_kind",
        "m013_nodes",
    ]


@pytest.mark.sqlite_only("WAL is SQLite's journal mode")
def test_wal_mode_is_on(store: Store, tmp_path: Path) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with raw(tmp_path / "x.db") as conn:
        # WAL is a property of the file: every other connection sees it too.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("interval 30m", "interval"),
        ("interval 5m, raised to min_interval, then skipHours", "interval"),
        ("adaptive 5m", "adaptive"),
        ("ttl 1h", "hint"),
        ("sy:updatePeriod 12h, capped at max_interval", "hint"),
        ("Cache-Control max-age 2h", "hint"),
        ("Expires 3h", "hint"),
        ("backoff after 3 errors: 2h", "backoff"),
        ("network down, no backoff; interval 30m", "network_down"),
        ("Retry-After 10m", "retry_after"),
        ("Retry-After of https://a.example", "retry_after"),
        ("host_delay of https://a.example", "host_delay"),
        ("gone (HTTP 410): not polled again", "gone"),
        ("a reason no version wrote", None),
        (None, None),
    ],
)
def test_m012_gives_rows_of_older_versions_the_kind_of_their_reason(
    tmp_path: Path, reason: str | None, kind: str | None
) -> None:
    path = tmp_path / "x.db"
    Store(path).close()
    with raw(path) as conn:  # the database as the version before m012 left it
        conn.execute("ALTER TABLE feeds DROP COLUMN next_kind")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm012_next_kind'")
        conn.execute(
            "INSERT INTO feeds (name, url, next_reason, next_poll) VALUES (?, ?, ?, ?)",
            ["a", "https://a.example/feed.xml", reason, "2024-03-01T09:00:00+00:00"],
        )
        conn.commit()
    store = Store(path)
    try:
        state = store.poll_state("a")
        assert state is not None
        assert state.next_kind == kind
        assert (state.next_reason, state.next_poll) == (reason, T0.replace(hour=9))
    finally:
        store.close()


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()

    with pytest.raises(StoreError, match="cannot open database"):
        Store(tmp_path / "dir.db")


def test_record_poll_is_all_or_nothing(store: Store) -> None:
    store.sync_feeds([("a", "https://a.example/feed.xml")])
    store.record_poll(ok("a", new=entries("a", parsed(1)), title="Before"))
    before = store.feed_state("a")
    generation = store.generation()

    [first] = entries("a", parsed(2))
    clash = replace(first, title="Same key, other story")  # same feed + key, so same uid
    bad = ok(
        "a",
        T0 + timedelta(hours=1),
        new=(first, clash),
        title="After",
        validators=Validators('"v2"', "Fri, 01 Mar 2024 13:00:00 GMT"),
        body_hash="h2",
    )

    with pytest.raises(StoreError, match="write failed"):
        store.record_poll(bad)

    assert store.count_entries("a") == 1
    assert store.feed_state("a") == before
    assert store.generation() == generation
    assert not in_transaction(store)
    # The connection is still usable after the rollback.
    store.record_poll(ok("a", T0 + timedelta(hours=2), new=(first,)))
    assert store.count_entries("a") == 2


def test_record_poll_creates_an_unknown_feed(store: Store) -> None:
    store.record_poll(ok("new", new=entries("new", parsed(1))))

    state = store.feed_state("new")
    assert state is not None
    assert state.url == "https://new.example/feed.xml"
    assert state.entry_count == 1


def test_iter_entries_newest_first_and_only_requested_feeds(store: Store) -> None:
    store.record_poll(ok("a", new=entries("a", parsed(3), parsed(1)), title="Feed A"))
    store.record_poll(ok("b", new=entries("b", parsed(2))))
    store.record_poll(ok("c", new=entries("c", parsed(0))))

    got = list(store.iter_entries(["a", "b"], batch=1))

    assert [(s.entry.feed, s.entry.title) for s in got] == [
        ("a", "Entry 1"),
        ("b", "Entry 2"),
        ("a", "Entry 3"),
    ]
    assert got[0].feed_title == "Feed A"
    assert got[1].feed_title == "b"  # no title yet: the feed's name stands in
    assert got[0].entry == entries("a", parsed(1))[0]
    assert got[0].first_seen == T0
    assert list(store.iter_entries([])) == []


def test_feed_states_and_entry_counts(store: Store) -> None:
    store.sync_feeds([("a", "https://a.example/"), ("b", "https://b.example/")])
    store.record_poll(ok("a", new=entries("a", parsed(1), parsed(2), parsed(3))))

    states = {s.name: s for s in store.feed_states()}
    assert states["a"].entry_count == 3
    assert states["b"].entry_count == 0
    assert [s.name for s in store.feed_states(["b"])] == ["b"]
    assert store.feed_state("missing") is None


def test_known_entries(store: Store) -> None:
    new = entries("a", parsed(1), parsed(2))
    store.record_poll(ok("a", new=new))
    store.record_poll(ok("b", new=entries("b", parsed(9))))

    known = store.known_entries("a")
    assert {key: k.content_hash for key, k in known.items()} == {e.key: e.content_hash for e in new}
    assert {key: k.uid for key, k in known.items()} == {e.key: e.uid for e in new}
    assert store.known_entries("nobody") == {}


def test_sync_feeds_keeps_state_and_updates_url(store: Store) -> None:
    store.sync_feeds([("a", "https://old.example/feed.xml")])
    store.record_poll(
        replace(
            ok("a", new=entries("a", parsed(1))),
            url="https://old.example/feed.xml",
            validators=Validators('"tag"', "Fri, 01 Mar 2024 12:00:00 GMT"),
            body_hash="hash",
            title="A",
        )
    )

    before = store.feed_state("a")

    store.sync_feeds([("a", "https://old.example/feed.xml"), ("b", "https://b.example/")])

    assert store.feed_state("a") == before
    assert store.feed_state("b") is not None

    store.sync_feeds([("a", "https://new.example/feed.xml")])

    state = store.feed_state("a")
    assert state is not None
    assert state.url == "https://new.example/feed.xml"
    # Another URL is another resource: what the old one said about itself no longer applies.
    assert state.validators == Validators(None, None)
    assert state.body_hash is None
    assert state.title == "A"
    assert (state.last_poll, state.last_status) == (T0, "ok")
    assert state.entry_count == 1


def test_error_poll_counts_and_success_resets(store: Store) -> None:
    for i in range(2):
        store.record_poll(
            ok("a", T0 + timedelta(minutes=i), status="error", error="HTTP 500", http_status=500)
        )
    state = store.feed_state("a")
    assert state is not None
    assert (state.error_count, state.last_error, state.last_status) == (2, "HTTP 500", "error")
    assert state.last_ok is None

    store.record_poll(ok("a", T0 + timedelta(minutes=5)))
    state = store.feed_state("a")
    assert state is not None
    assert (state.error_count, state.last_error, state.last_status) == (0, None, "ok")
    assert state.last_ok == T0 + timedelta(minutes=5)


def test_generation_grows_only_when_entries_change(store: Store) -> None:
    assert store.generation() == 0
    assert store.record_poll(ok("a", new=entries("a", parsed(1)))) == 1
    assert store.record_poll(ok("a", status="not_modified")) == 1
    assert store.record_poll(ok("a", status="error", error="x")) == 1
    changed = replace(entries("a", parsed(1, title="Retitled"))[0])
    assert store.record_poll(ok("a", updated=(changed,))) == 2


def test_update_in_place_keeps_identity_and_first_seen(store: Store) -> None:
    [original] = entries("a", parsed(1))
    store.record_poll(ok("a", new=(original,)))
    later = T0 + timedelta(days=1)
    [edited] = entries("a", parsed(1, title="Retitled"), now=later)

    store.record_poll(ok("a", later, updated=(edited,)))

    [stored] = store.iter_entries(["a"])
    assert stored.entry.uid == original.uid
    assert stored.entry.title == "Retitled"
    assert stored.first_seen == T0
    assert stored.last_changed == later
    assert store.count_entries() == 1


def test_undated_entry_keeps_first_seen_date_on_update(store: Store) -> None:
    [undated] = entries("a", parsed(1, dated=False), now=T0)
    assert not undated.date_known and undated.published == T0
    store.record_poll(ok("a", new=(undated,)))
    later = T0 + timedelta(days=2)
    [edited] = entries("a", parsed(1, dated=False, title="Retitled"), now=later)
    assert edited.published == later

    store.record_poll(ok("a", later, updated=(edited,)))

    [stored] = store.iter_entries(["a"])
    assert stored.entry.title == "Retitled"
    assert stored.entry.published == T0
    assert stored.entry.updated == T0
    assert stored.last_changed == later


@pytest.mark.sqlite_only("holds SQLite's write lock from a second connection to the file")
def test_check_writable(store: Store, tmp_path: Path) -> None:
    store.check_writable()

    with raw(tmp_path / "x.db") as other:
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")
        # Do not wait out the 30 s busy timeout: fail as soon as the lock is seen.
        store.db.execute("PRAGMA busy_timeout = 0")
        with pytest.raises(StoreError, match="not writable"):
            store.check_writable()
        other.execute("ROLLBACK")

    store.check_writable()
    assert not store.db.conn.in_transaction


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta

    from aggregator.ingest.identity import identify
    from aggregator.models import ParsedEntry, PollRecord
    from aggregator.store.sqlite import SqliteStore as Store

    store = Store(sys.argv[1])
    store.sync_feeds([("crash", "https://crash.example/feed.xml")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    poll = 0
    while True:
        poll += 1
        now = start + timedelta(seconds=poll)
        items = [
            ParsedEntry(f"p{poll}-{i}", False, None, f"poll {poll} entry {i}", "s" * 500,
                        "c" * 2000, "", (), now, None)
            for i in range(10)
        ]
        store.record_poll(
            PollRecord("crash", "https://crash.example/feed.xml", now, "ok", None,
                       title=str(poll), body_hash=str(poll),
                       new=tuple(identify("crash", items, now)))
        )
    """
)


def test_killed_writer_leaves_only_whole_polls(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while committed < 50:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer committed too little in time"
            if path.exists():
                with raw(path) as conn, contextlib.suppress(sqlite3.OperationalError):
                    # The table may not exist yet while the writer migrates.
                    committed = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(path)
    try:
        state = store.feed_state("crash")
        assert state is not None and state.title is not None
        polls = int(state.title)
        assert state.body_hash == str(polls)
        assert state.entry_count == store.count_entries("crash") == 10 * polls >= 50
        assert state.last_poll == datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=polls)
        # Every poll that left a trace left all ten of its entries.
        counts = store.db.execute(
            "SELECT substr(key, 1, instr(key, '-')) AS p, count(*) FROM entries GROUP BY p"
        ).fetchall()
        assert len(counts) == polls
        assert {c for _, c in counts} == {10}
    finally:
        store.close()


def test_rows_with_forbidden_characters_still_render(tmp_path: Path) -> None:
    """A row written by an older version with a character XML forbids cannot break an output."""
    from aggregator.config.load import parse_config
    from aggregator.outputs.plan import render_output

    store = Store(tmp_path / "x.db")
    try:
        store.sync_feeds([("f", "https://f.example/feed")])
        store.db.execute(
            "INSERT INTO entries (feed, key, key_kind, uid, guid, link, title, summary, content, "
            "author, categories, published, updated, date_known, content_hash, first_seen, "
            "last_changed) VALUES ('f', 'guid:1', 'guid', 'urn:uuid:1', '1', NULL, 'T\x08itle', "
            "'s\x0b', '<p>c\x08</p>', 'a\x01', '[\"x\\u0002\"]', '2024-01-01T00:00:00+00:00', "
            "'2024-01-01T00:00:00+00:00', 1, 'h', '2024-01-01T00:00:00+00:00', "
            "'2024-01-01T00:00:00+00:00')"
        )
        config = parse_config(
            {
                "feeds": [{"name": "f", "url": "https://f.example/feed"}],
                "outputs": [{"name": "o", "title": "O"}],
            }
        )
        for fmt in ("atom", "rss", "json"):
            rendered = render_output(store, config, "o", fmt)  # type: ignore[arg-type]
            assert b"Title" in rendered.body and rendered.entries == 1
    finally:
        store.close()


def test_batched_writes_commit_each_poll_whole_and_alone(tmp_path: Path) -> None:
    """Polls queued together share one transaction, but each is still all or nothing: one
    that fails (two entries with the same key) is rolled back alone and its caller alone
    sees the error."""
    import asyncio

    from aggregator.store.threads import StoreThreads

    good = [ok(f"f{i}", new=entries(f"f{i}", parsed(1), parsed(2))) for i in range(5)]
    twice = entries("bad", parsed(1))
    bad = ok("bad", new=twice + twice)

    async def scenario() -> list[object]:
        threads = StoreThreads(tmp_path / "x.db")
        try:
            calls = [threads.write_batched(lambda s, r=r: s.record_poll(r)) for r in good]
            calls.insert(2, threads.write_batched(lambda s: s.record_poll(bad)))
            calls.append(threads.write_batched(lambda s: s.check_writable()))
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            threads.close()

    results = asyncio.run(scenario())
    assert isinstance(results[2], StoreError)
    assert all(isinstance(r, int) for i, r in enumerate(results[:-1]) if i != 2)
    assert results[-1] is None
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as conn:
        per_feed = dict(conn.execute("SELECT feed, count(*) FROM entries GROUP BY feed"))
        polled = {r[0] for r in conn.execute("SELECT name FROM feeds WHERE last_poll IS NOT NULL")}
    assert per_feed == {f"f{i}": 2 for i in range(5)}
    assert polled == {f"f{i}" for i in range(5)}  # the failed poll left no trace


def test_batched_reads_return_each_callers_result(tmp_path: Path) -> None:
    import asyncio

    from aggregator.store.threads import StoreThreads

    async def scenario() -> list[object]:
        threads = StoreThreads(tmp_path / "x.db")
        try:
            await threads.write(lambda s: s.sync_feeds([("a", "https://a/"), ("b", "https://b/")]))
            calls = [
                threads.read_batched(lambda s, n=n: s.poll_state(n)) for n in ("a", "b", "missing")
            ]
            return await asyncio.gather(*calls)
        finally:
            threads.close()

    a, b, missing = asyncio.run(scenario())
    assert getattr(a, "url", None) == "https://a/" and getattr(b, "url", None) == "https://b/"
    assert missing is None


def test_batched_calls_free_what_they_carried_without_the_cyclic_collector(
    tmp_path: Path,
) -> None:
    """A batch's callables (each poll's record, with every entry's text) must be freed by
    reference counting once their callers have the results: kept alive in a cycle, they piled
    up to 240 MB in the poller between two runs of the cyclic collector."""
    import asyncio
    import gc
    import weakref

    from aggregator.store.threads import StoreThreads

    class Payload:
        pass

    async def scenario() -> list[weakref.ref[Payload]]:
        threads = StoreThreads(tmp_path / "x.db")
        refs = []
        try:
            for batched in (threads.write_batched, threads.read_batched):
                payload = Payload()
                refs.append(weakref.ref(payload))
                await batched(lambda s, p=payload: s.generation() + (0 if p else 1))
                del payload
            await asyncio.sleep(0.05)  # let the loop drop the handles it ran
            return refs
        finally:
            threads.close()

    gc.disable()
    try:
        refs = asyncio.run(scenario())
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


def test_the_state_a_poll_saves_is_the_state_read_back(store: Store) -> None:
    """The poller keeps in memory the state it saved instead of reading the row before every
    poll: the row must give back exactly that state, every field of it."""
    from aggregator.ingest.feedstate import deferred, next_state
    from aggregator.models import FeedHints, NextKind

    t = T0 + timedelta(microseconds=123456)  # stored to the second
    hints = FeedHints(ttl_minutes=30, skip_hours=(1, 2))
    polls = [
        ok(
            "f",
            t,
            http_status=200,
            validators=Validators('"e1"', "Mon, 01 Jan 2024 00:00:00 GMT"),
            body_hash="h1",
            title="F",
            link="https://f.example/",
            warning="malformed feed, entries kept: x",
            language="en",
            hints=hints,
            new=entries("f", parsed(1)),
            next_reason="interval 1h",
            next_kind=NextKind.INTERVAL,
        ),
        ok("f", t + timedelta(hours=1), status="not_modified", http_status=304),
        ok("f", t + timedelta(hours=2), status="unchanged", http_status=200, body_hash="h1"),
        ok("f", t + timedelta(hours=3), status="error", http_status=500, error="HTTP 500"),
        ok("f", t + timedelta(hours=4), status="error", error="timed out", network_down=True),
        ok(
            "f",
            t + timedelta(hours=5),
            http_status=200,
            body_hash="h2",
            key_mode="link",
            permanent_url="https://g.example/feed.xml",
            next_kind=NextKind.BACKOFF,
        ),
        ok("f", t + timedelta(hours=6), status="gone", http_status=410, error="gone"),
    ]
    state = None
    for rec in polls:
        state = next_state(state, rec)
        store.save_poll(state, rec.new, rec.updated)
        assert state == store.poll_state("f"), rec.status
    assert state is not None
    assert (state.gone, state.error_count, state.redirect_count) == (True, 1, 1)
    later = t + timedelta(days=1)
    state = deferred(state, later, "host_delay of https://f.example", NextKind.HOST_DELAY)
    store.save_poll(state)
    assert state == store.poll_state("f")
    # A feed whose row exists before its first poll (sync_feeds) starts from that row, and
    # record_poll applies the same step over the stored row.
    store.sync_feeds([("g", "https://g.example/feed.xml")])
    before = store.poll_state("g")
    rec = ok("g", t, url="https://g.example/feed.xml", status="error", error="refused")
    store.record_poll(rec)
    assert next_state(before, rec) == store.poll_state("g")


def test_a_guarded_save_writes_only_over_the_state_it_started_from(store: Store) -> None:
    from aggregator.models import FeedState

    first = FeedState("f", "https://f.example/feed.xml", last_status="ok", last_poll=T0)
    second = replace(first, last_status="error", error_count=1)
    assert store.save_poll_if(None, first) is not None
    assert store.save_poll_if(None, first) is None  # the row exists by now
    assert store.save_poll_if(second, replace(second, error_count=2)) is None
    assert store.poll_state("f") == first  # nothing written over another writer's row
    [entry] = entries("f", parsed(1))
    assert store.save_poll_if(first, second, new=(entry,)) == 1
    assert (store.poll_state("f"), store.count_entries("f")) == (second, 1)


def test_a_guarded_save_sees_another_connections_commit(tmp_path: Path) -> None:
    from aggregator.models import FeedState, Validators

    path = tmp_path / "x.db"
    store = Store(path)
    try:
        first = FeedState("f", "https://f.example/", validators=Validators('"a"'), last_poll=T0)
        assert store.save_poll_if(None, first) is not None
        second = replace(first, last_poll=T0 + timedelta(hours=1))
        assert store.save_poll_if(first, second) is not None  # the row is what it wrote
        with raw(path) as conn:  # another process forgets the validators
            conn.execute("UPDATE feeds SET etag = NULL WHERE name = 'f'")
            conn.commit()
        third = replace(second, last_poll=T0 + timedelta(hours=2))
        assert store.save_poll_if(second, third) is None
        state = store.poll_state("f")
        assert state is not None and state.validators == Validators()
    finally:
        store.close()


def test_no_write_computes_a_state_field(store: Store) -> None:
    """The store writes the state it is given: a row written with an error count, failing_since
    or backoff that the rules would never give is read back exactly as written."""
    from aggregator.models import FeedState

    odd = FeedState(
        "f",
        "https://f.example/feed.xml",
        last_status="ok",
        error_count=7,
        failing_since=T0,
        backoff_level=3,
        gone=True,
    )
    store.save_poll(odd)
    assert store.poll_state("f") == odd


def test_insert_statement_lists_the_row_columns_in_order() -> None:
    import re

    from aggregator.store.rows import _INSERT_ENTRY, _entry_row

    [e] = entries("f", parsed(1))
    named = re.search(r"\(([^)]*)\) VALUES", _INSERT_ENTRY)
    assert named is not None
    columns = [c.strip() for c in named.group(1).split(",")]
    assert columns == [*_entry_row(e), "first_seen", "last_changed"]
    assert _INSERT_ENTRY.count("?") == len(columns)


@pytest.mark.sqlite_only("reads the FTS5 index's own config table")
def test_full_text_index_merges_in_large_steps(store: Store) -> None:
    config = dict(store.db.execute("SELECT k, v FROM entries_fts_config").fetchall())
    assert (config.get("automerge"), config.get("crisismerge")) == (16, 64)


def test_iter_entries_orders_alike_by_feed_lookup_and_by_date_walk(store: Store) -> None:
    """A few feeds of many are looked up by feed and sorted; a large share of them is read by
    walking the date index. Both give the same rows in the same order, ties included."""
    from aggregator.store.sqlite import SCAN_SHARE

    names = [f"f{i:02d}" for i in range(SCAN_SHARE * 4)]
    for i, name in enumerate(names):
        items = [parsed(n, published=T0 - timedelta(hours=(n * 7 + i) % 5)) for n in range(4)]
        items.append(parsed(9, dated=False))  # undated: first seen at the poll
        store.record_poll(ok(name, T0 + timedelta(minutes=i % 3), new=entries(name, *items)))

    def expected(feeds: list[str]) -> list[str]:
        rows = [s for f in feeds for s in store.iter_entries([f])]
        rows.sort(key=lambda s: s.entry.uid)
        rows.sort(key=lambda s: (s.entry.published, s.first_seen), reverse=True)
        return [s.entry.uid for s in rows]

    few = names[:2]  # looked up by feed
    many = names[: len(names) // SCAN_SHARE + 1]  # walked by date
    for feeds in (few, many, names):
        assert [s.entry.uid for s in store.iter_entries(feeds, batch=3)] == expected(feeds)


def test_closing_commits_lingering_writes_and_refuses_later_ones(tmp_path: Path) -> None:
    """Batched writes wait a few milliseconds for company; closing the store must send the
    ones still waiting (a stopping daemon loses no poll), and a write queued after the close
    fails with StoreError instead of a traceback in the event loop."""
    import asyncio

    from aggregator.store.threads import StoreThreads

    rec = ok("a", new=entries("a", parsed(1)))

    async def scenario() -> tuple[int, BaseException | None]:
        threads = StoreThreads(tmp_path / "x.db")
        queued = asyncio.ensure_future(threads.write_batched(lambda s: s.record_poll(rec)))
        await asyncio.sleep(0)  # queued, lingering
        await threads.aclose()
        generation = await queued
        late = asyncio.ensure_future(threads.write_batched(lambda s: s.generation()))
        await asyncio.sleep(0.05)  # past the linger: the batch meets a closed store
        return generation, late.exception()

    generation, late = asyncio.run(scenario())
    assert generation == 1
    assert isinstance(late, StoreError)
    with raw(tmp_path / "x.db") as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
