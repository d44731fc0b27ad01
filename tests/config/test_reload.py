"""Hot reload: the plan between two configs, the file watcher, and a reload applied in-process
to a live scheduler and store (the subprocess tests are in test_e2e_unattended.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.config.load import load_config, parse_config
from aggregator.config.reload import ConfigWatcher, plan_reload
from aggregator.daemon import Daemon
from aggregator.store.threads import StoreThreads

FEEDS = """
[[feeds]]
name = "a"
url = "https://a.example/feed"
[[feeds]]
name = "b"
url = "https://b.example/feed"
interval = "2h"
[[feeds]]
name = "c"
url = "https://c.example/feed"
[[outputs]]
name = "all"
title = "All"
"""


def test_plan_names_every_kind_of_change() -> None:
    old = parse_config(
        {
            "aggregator": {"interval": "1h"},
            "feeds": [
                {"name": "a", "url": "https://a.example/feed"},
                {"name": "b", "url": "https://b.example/feed", "interval": "2h"},
                {"name": "c", "url": "https://c.example/feed"},
            ],
            "outputs": [{"name": "all", "title": "All"}],
        }
    )
    new = parse_config(
        {
            "aggregator": {"interval": "30m", "listen": "127.0.0.1:9999"},
            "feeds": [
                {"name": "a", "url": "https://a.example/feed"},  # default interval changed
                {"name": "b", "url": "https://b.example/other", "interval": "2h"},  # url only
                {"name": "d", "url": "https://d.example/feed"},
            ],
            "outputs": [{"name": "all", "title": "Everything"}],
        }
    )
    plan = plan_reload(old, new)
    assert [f.name for f in plan.added] == ["d"]
    assert plan.removed == ("c",)
    assert [f.name for f in plan.rescheduled] == ["a"]
    assert plan.changed == ("b",)
    assert plan.outputs_changed
    assert plan.needs_restart == ("listen",)
    assert not plan.empty
    assert plan_reload(old, old).empty


def test_watcher_sees_content_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("a = 1\n")
    watcher = ConfigWatcher(path)
    assert not watcher.changed()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    assert not watcher.changed()
    path.write_text("a = 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert watcher.changed()
    assert not watcher.changed()
    # Loaded by a SIGHUP, then changed back: the watcher compares with what was loaded last.
    path.write_text("a = 3\n")
    watcher.mark()
    path.write_text("a = 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3 * 10**9))
    assert watcher.changed()
    path.unlink()  # mid-rename: not a change, and no error
    assert not watcher.changed()


def test_reload_applies_the_difference_to_a_live_scheduler(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    path = write_config(FEEDS)
    far = datetime.now(UTC) + timedelta(minutes=50)

    async def noop(name: str) -> None:
        return None

    async def scenario() -> None:
        daemon = Daemon(load_config(path), path)
        store = StoreThreads(tmp_path / "data" / "aggregator.db")
        daemon._store = store
        try:
            await store.write(
                lambda s: s.sync_feeds([(f.name, f.url) for f in daemon.config.feeds.values()])
            )
            for feed in daemon.config.feeds.values():
                daemon.scheduler.add(feed.name, far, noop)
            daemon.scheduler.start()
            config_before = daemon.config

            # An invalid file: nothing changes, and the failure is recorded with its problems.
            path.write_text(path.read_text().replace('name = "c"', 'name = "C!"'))
            assert not await daemon.reload("SIGHUP")
            assert daemon.config is config_before
            status = daemon.reload_status
            assert status is not None and status["status"] == "failed"
            assert status["trigger"] == "SIGHUP"
            assert any(p.startswith("feeds[2].name:") for p in status["problems"])

            # A valid one: c removed, d added, a's interval halved, b's interval doubled.
            text = write_config(FEEDS).read_text()
            text = text.replace(
                'name = "c"\nurl = "https://c.example/feed"',
                'name = "d"\nurl = "https://d.example/feed"',
            )
            text = text.replace(
                'name = "a"\nurl = "https://a.example/feed"',
                'name = "a"\nurl = "https://a.example/feed"\ninterval = "30m"',
            )
            text = text.replace('interval = "2h"', 'interval = "4h"')
            path.write_text(text)
            assert await daemon.reload("file change")
            assert daemon.reload_status is not None and daemon.reload_status["status"] == "ok"
            assert list(daemon.config.feeds) == ["a", "b", "d"]
            assert daemon.scheduler.next_run("c") is None
            d_next = daemon.scheduler.next_run("d")
            assert d_next is not None and d_next <= datetime.now(UTC) + timedelta(minutes=1)
            # b keeps its planned poll; a's comes forward to within its new, shorter interval.
            assert daemon.scheduler.next_run("b") == far
            a_next = daemon.scheduler.next_run("a")
            # (plus the jitter every interval decision may add: a tenth, here 3 minutes)
            assert a_next is not None and a_next <= datetime.now(UTC) + timedelta(minutes=33)
            states = await store.read(lambda s: s.feed_states())
            assert {s.name for s in states} == {"a", "b", "c", "d"}  # c's rows and entries stay
        finally:
            daemon.scheduler.shutdown()
            store.close()

    asyncio.run(scenario())
