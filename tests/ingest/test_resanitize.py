"""Stored rows sanitised again once after a policy change (resanitize.py), on real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path

from test_sqlite import entries, ok, parsed

from aggregator.ingest.limits import DEFAULT_LIMITS
from aggregator.ingest.resanitize import BATCH_ROWS, policy_of, resanitize
from aggregator.ingest.workers import DeadlinePool
from aggregator.models import ParsedEntry
from aggregator.store.sqlite import SqliteStore as Store
from aggregator.store.threads import StoreThreads

PLAYER = '<iframe src="https://www.youtube.com/embed/abc"></iframe>'
DEEP = "<div>" * 100_000 + "deep" + "</div>" * 100_000


def _entry(n: int, content: str) -> ParsedEntry:
    return replace(parsed(n), content=content, summary=f"<b onclick='x()'>Summary {n}</b>")


def _stored(path: Path, *items: ParsedEntry) -> None:
    store = Store(path)
    try:
        store.sync_feeds([("a", "https://a.example/feed.xml")])
        store.record_poll(ok("a", new=entries("a", *items)))
    finally:
        store.close()


def _rows(path: Path) -> dict[str, tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT guid, summary, content, content_hash FROM entries")
        }


def _run(
    path: Path, embed_hosts: frozenset[str] = frozenset(), pool: Executor | None = None
) -> tuple[int, list[int]]:
    heard: list[int] = []

    async def go() -> int:
        threads = StoreThreads(path)
        try:
            return await resanitize(threads, pool, embed_hosts, DEFAULT_LIMITS, heard.append)
        finally:
            await threads.aclose()

    return asyncio.run(go()), heard


def test_rows_stored_before_are_sanitised_once_with_their_hashes_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _stored(
        path,
        _entry(1, "<p>fine</p><script>alert(1)</script>"),
        _entry(2, DEEP),
        _entry(3, "<p>already clean</p>"),
    )
    before = _rows(path)
    changed, heard = _run(path)
    after = _rows(path)
    assert changed == 3  # every summary had an onclick
    assert heard, "a change of stored content is a store change: outputs render again"
    assert "script" not in after["guid-1"][1] and "<p>fine</p>" in after["guid-1"][1]
    assert "onclick" not in after["guid-2"][0]
    # The deep entry is cut at the nesting limit before the sanitiser sees it.
    assert after["guid-2"][1].count("<div>") <= DEFAULT_LIMITS.max_nesting
    assert after["guid-3"][1] == "<p>already clean</p>"
    # What a reader sees of the entry did not change: no poll will call it "updated".
    assert {g: r[2] for g, r in after.items()} == {g: r[2] for g, r in before.items()}
    # Once done, the policy is recorded and a second pass (a restart) has nothing to do.
    assert _run(path) == (0, [])
    with sqlite3.connect(path) as conn:
        [(policy,)] = conn.execute("SELECT value FROM meta WHERE key = 'sanitize_policy'")
    assert policy == policy_of(())


def test_a_stricter_embed_hosts_removes_players_already_stored(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _stored(path, _entry(1, f"<p>video</p>{PLAYER}"))
    hosts = frozenset({"www.youtube.com"})
    _run(path, hosts)
    assert "youtube.com/embed/abc" in _rows(path)["guid-1"][1]
    assert _run(path, hosts)[0] == 0
    changed, _ = _run(path)  # the operator removed the host from embed_hosts
    assert changed == 1
    assert "youtube.com/embed" not in _rows(path)["guid-1"][1]


def test_a_pass_resumes_after_the_last_batch_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    count = BATCH_ROWS + 5
    _stored(path, *(_entry(n, "<p>x</p><script>1</script>") for n in range(count)))
    with sqlite3.connect(path) as conn:
        # As if a pass stopped after its first batch: those rows are taken as done.
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('sanitize_target', ?), "
            "('sanitize_rowid', ?)",
            [policy_of(()), str(BATCH_ROWS)],
        )
    changed, _ = _run(path)
    assert changed == 5
    rows = _rows(path)
    assert sum("script" in r[1] for r in rows.values()) == BATCH_ROWS


def test_an_entry_a_poll_rewrote_meanwhile_is_left_as_the_poll_wrote_it(tmp_path: Path) -> None:
    from aggregator.ingest.resanitize import clean_rows

    path = tmp_path / "x.db"
    _stored(path, _entry(1, "<p>old</p><script>1</script>"))
    store = Store(path)
    try:
        rows = store.sanitize_batch(0, BATCH_ROWS)
        cleaned = clean_rows(rows, frozenset(), DEFAULT_LIMITS)
        # A poll stores an edit of the entry between the read and the write of the batch.
        edited = replace(_entry(1, "<p>edited by the publisher</p>"), title="Edited")
        store.record_poll(ok("a", updated=entries("a", edited)))
        store.write_sanitized(policy_of(()), cleaned, rows[-1][0], done=True)
    finally:
        store.close()
    assert _rows(path)["guid-1"][1] == "<p>edited by the publisher</p>"


def test_a_pool_whose_workers_die_stops_the_pass_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _stored(path, _entry(1, "<p>x</p><script>1</script>"), _entry(2, "<p>fine</p>"))
    before = _rows(path)
    # Every worker of this pool dies while it starts: nothing is known about the rows.
    broken = DeadlinePool(1, deadline=60.0, preload=("no_such_module_xyz",))
    try:
        assert _run(path, pool=broken) == (0, [])
    finally:
        broken.shutdown(wait=True, cancel_futures=True)
    assert _rows(path) == before  # not replaced by escaped text
    # The next start (a pool that works) does the pass.
    good = DeadlinePool(1, deadline=60.0)
    try:
        changed, _ = _run(path, pool=good)
    finally:
        good.shutdown(wait=True, cancel_futures=True)
    assert changed == 2
    after = _rows(path)
    assert "script" not in after["guid-1"][1] and after["guid-2"][1] == "<p>fine</p>"
    assert "&lt;" not in after["guid-1"][1] + after["guid-1"][0]
