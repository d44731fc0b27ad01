"""The parse pool with a deadline per task (workers.py): real worker processes, real kills."""

from __future__ import annotations

import asyncio
import operator
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import hostile
import pytest
from feedserver import FeedServer
from test_poll import T0, poll, run_polls, state_of

from aggregator.ingest import workers
from aggregator.ingest.limits import Limits
from aggregator.ingest.poll import PollContext
from aggregator.ingest.workers import DeadlinePool, WorkerDied, WorkTimeout
from aggregator.models import PollOutcome

# Generous waits for answers (a loaded machine starts workers slowly); never asserted as times.
WAIT = 120.0


@pytest.fixture
def pool() -> Iterator[DeadlinePool]:
    p = DeadlinePool(2, deadline=3.0)
    try:
        yield p
    finally:
        p.shutdown(wait=True, cancel_futures=True)


def test_a_task_past_the_deadline_is_stopped_and_the_others_go_on(pool: DeadlinePool) -> None:
    slow = pool.submit(time.sleep, 600)
    quick = [pool.submit(pow, 2, n) for n in range(20)]
    assert [f.result(timeout=WAIT) for f in quick] == [2**n for n in range(20)]
    with pytest.raises(WorkTimeout, match="deadline of 3 s"):
        slow.result(timeout=WAIT)
    assert pool.replaced == 1
    # The replaced worker takes tasks again.
    assert [pool.submit(pow, 3, 2).result(timeout=WAIT) for _ in range(4)] == [9] * 4


def test_a_worker_that_dies_fails_only_its_task(pool: DeadlinePool) -> None:
    dying = pool.submit(os._exit, 3)
    with pytest.raises(WorkerDied, match="exit code 3"):
        dying.result(timeout=WAIT)
    assert pool.submit(pow, 2, 3).result(timeout=WAIT) == 8


def test_a_task_s_exception_comes_back_as_it_was(pool: DeadlinePool) -> None:
    with pytest.raises(ZeroDivisionError):
        pool.submit(operator.truediv, 1, 0).result(timeout=WAIT)
    assert pool.replaced == 0


class PickyError(Exception):
    """Pickles as (message,) but its __init__ wants two arguments: it cannot be unpickled."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_picky() -> None:
    raise PickyError("picky", 7)


def test_a_worker_that_cannot_start_fails_its_task_instead_of_hanging_it() -> None:
    p = DeadlinePool(1, deadline=60.0, preload=("no_such_module_xyz",))
    try:
        with pytest.raises(WorkerDied, match="while starting"):
            p.submit(pow, 2, 3).result(timeout=WAIT)
        # The slot goes on: the next task is tried with a fresh worker (which fails the same way).
        with pytest.raises(WorkerDied):
            p.submit(pow, 2, 3).result(timeout=WAIT)
    finally:
        p.shutdown(wait=True, cancel_futures=True)


def test_an_answer_that_does_not_unpickle_fails_only_its_task(pool: DeadlinePool) -> None:
    with pytest.raises(WorkerDied, match="could not be read"):
        pool.submit(raise_picky).result(timeout=WAIT)
    assert [pool.submit(pow, 2, 3).result(timeout=WAIT) for _ in range(3)] == [8] * 3


def test_shutdown_cancels_what_is_still_queued_and_gives_up_what_runs() -> None:
    p = DeadlinePool(1, deadline=600.0)
    running = p.submit(time.sleep, 600)
    end = time.monotonic() + WAIT
    while not running.running() and time.monotonic() < end:
        time.sleep(0.01)
    queued = [p.submit(pow, 2, 2) for _ in range(5)]
    # Returns without waiting out the running task (pytest-timeout stops a hang).
    p.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(WorkerDied, match="shut down"):
        running.result(timeout=WAIT)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        p.submit(pow, 2, 2)


def test_shutdown_gives_up_a_worker_that_is_still_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Longer than the test's own timeout: only noticing the shutdown lets it return.
    monkeypatch.setattr(workers, "START_TIMEOUT", 3600.0)
    p = DeadlinePool(1, deadline=60.0, preload=("slow_import",))
    starting = p.submit(pow, 2, 2)
    end = time.monotonic() + WAIT
    while not starting.running() and time.monotonic() < end:
        time.sleep(0.01)
    p.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(WorkerDied, match="shut down while a worker started"):
        starting.result(timeout=WAIT)


def test_shutdown_without_cancelling_lets_queued_tasks_finish() -> None:
    p = DeadlinePool(1, deadline=60.0)
    futures = [p.submit(pow, 2, n) for n in range(5)]
    p.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [2**n for n in range(5)]


def test_a_parse_past_the_deadline_is_an_error_on_its_feed(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """With the author limit lifted, feedparser's quadratic e-mail search on a 300 KB author
    would run for minutes: the deadline stops it, the feed records why, the other feed is
    stored, and the next poll uses a fresh worker."""
    db = tmp_path / "x.db"
    feed_server.serve_bytes("/slow.xml", hostile.quadratic_author(size=300_000), "application/xml")
    feed_server.serve_file("/feed.xml", "rss20.xml")
    pool = DeadlinePool(1, deadline=2.0, preload=("aggregator.ingest.poll",))

    async def both(ctx: PollContext) -> list[PollOutcome]:
        ctx = replace(ctx, limits=Limits(max_author_size=64 * 1024 * 16))
        slow = await poll(ctx, "slow", feed_server.url("/slow.xml"), T0)
        good = await poll(ctx, "blog", feed_server.url("/feed.xml"), T0)
        return [slow, good]

    try:
        slow, good = run_polls(db, both, parse_pool=pool, timeout=WAIT)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    assert slow.status == "error"
    assert slow.error == "parsing took longer than 2 s (parse_timeout); stopped"
    assert state_of(db, "slow").last_error == slow.error
    assert (good.status, good.new) == ("ok", 4)
    assert pool.replaced == 1


def test_the_daemon_pool_runs_polls_under_the_configured_deadline() -> None:
    from aggregator.runtime import make_parse_pool

    p = make_parse_pool(1, 7.5)
    try:
        assert isinstance(p, DeadlinePool) and p.deadline == 7.5
        assert asyncio.run(_in_executor(p)) == 1024
    finally:
        p.shutdown(wait=True)


async def _in_executor(p: DeadlinePool) -> int:
    result: int = await asyncio.get_running_loop().run_in_executor(p, pow, 2, 10)
    return result
