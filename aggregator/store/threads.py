"""The daemon's access to a store from asyncio: one writer thread, a few reader threads, and the
batching of many small calls into one thread hop (and one transaction for writes). I/O.

Shaped by SQLite (one writer, connections that never cross threads), it asks nothing of the
store but the Store protocol, so any store opened per thread fits. A connection that broke
(`Store.is_broken`: a PostgreSQL server restarted) is dropped and reopened at the next call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from .protocol import AheadWrite, Store, WritesAhead
from .sqlite import SqliteStore

T = TypeVar("T")
# A queued call: what to run, who waits for it, and the state-only write it makes, if known.
_Call = tuple[Callable[["Store"], Any], "asyncio.Future[Any]", "AheadWrite | None"]
# How long a batched write waits for others to join its batch (seconds).
WRITE_LINGER = 0.005


class _Batcher:
    """Runs the calls queued during one turn of the event loop on a store thread together: one
    thread hop and one wake-up of the loop per batch instead of one per call.

    With `transaction`, a batch of several calls runs in one transaction, each call in a
    savepoint of its own (see `connection.Atomic`); results are handed back only after the
    commit, so a caller never sees as committed what a failed commit lost.
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        store: Callable[[], Store],
        transaction: bool,
        linger: float = 0.0,
        max_batch: int = 64,
    ):
        self._executor = executor
        self._store = store
        self._transaction = transaction
        self._linger = linger
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        # Commits by other connections (another process), seen by the writer between batches.
        self.external_changes = 0
        self._data_version: int | None = None

    async def call(self, fn: Callable[[Store], T], ahead: AheadWrite | None = None) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future, ahead))
        if len(self._pending) >= self._max_batch:
            if self._timer is not None:
                self._timer.cancel()
            self._flush(loop)
        elif self._timer is None:
            # Lingering a few milliseconds gathers the small writes of many polls into one
            # batch: each hop to the store thread costs the event loop a GIL hand-over.
            if self._linger > 0:
                self._timer = loop.call_later(self._linger, self._flush, loop)
            else:
                self._timer = loop.call_soon(self._flush, loop)
        return await future

    def flush_now(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the calls waiting for company at once (the store is about to close)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._pending:
            self._flush(loop)
        self._timer = None

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending, self._timer = self._pending, [], None
        try:
            done = self._executor.submit(self._run, batch)
        except RuntimeError:  # the executor is shut down: the store was closed
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(StoreError("the store is closed"))
            return
        # A partial, not a closure over `done`: the future keeps its callbacks, and a callback
        # that refers back to the future is a cycle that kept every batch (each poll's entries
        # with their full text) alive until the cyclic collector ran: 240 MB of the poller's
        # RSS in the cold bench round.
        done.add_done_callback(functools.partial(self._hand_back, loop, batch))

    def _hand_back(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Call],
        done: concurrent.futures.Future[list[tuple[bool, Any]]],
    ) -> None:
        loop.call_soon_threadsafe(self._deliver, batch, done)

    def _run(self, batch: list[_Call]) -> list[tuple[bool, Any]]:
        fns = [fn for fn, _, _ in batch]
        store = self._store()
        results = self._run_on(store, fns, [a for _, _, a in batch if a is not None])
        if not self._transaction and store.is_broken():
            # The connection broke under these reads (the server restarted): reads change
            # nothing, so the failed ones are tried once more on a fresh connection.
            failed = [i for i, (ok, _) in enumerate(results) if not ok]
            retried = self._run_on(self._store(), [fns[i] for i in failed])
            for i, outcome in zip(failed, retried, strict=True):
                results[i] = outcome
        return results

    def _run_on(
        self, store: Store, fns: list[Callable[[Store], Any]], ahead: Sequence[AheadWrite] = ()
    ) -> list[tuple[bool, Any]]:
        if self._transaction:
            # data_version moves only when another connection commits: then what the poller
            # keeps in memory of the feeds (see poll.StateCache) may be stale.
            version = store.data_version()
            if self._data_version is not None and version != self._data_version:
                self.external_changes += 1
            self._data_version = version
        together = self._transaction and len(fns) > 1
        results: list[tuple[bool, Any]] = []
        try:
            with store.atomic() if together else contextlib.nullcontext():
                if together and len(ahead) > 1 and isinstance(store, WritesAhead):
                    # Each call makes its write itself if these cannot be made in one go.
                    with contextlib.suppress(StoreError):
                        store.write_ahead(ahead)
                try:
                    for fn in fns:
                        try:
                            results.append((True, fn(store)))
                        except Exception as e:  # handed to that caller alone
                            results.append((False, e))
                finally:
                    if ahead and isinstance(store, WritesAhead):
                        store.forget_ahead()
        except StoreError as e:  # the batch's commit failed: none of its calls stands
            return [(False, e) for _ in fns]
        return results

    @staticmethod
    def _deliver(
        batch: list[_Call],
        done: concurrent.futures.Future[list[tuple[bool, Any]]],
    ) -> None:
        error = done.exception()
        outcomes = [(False, error)] * len(batch) if error is not None else done.result()
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class StoreThreads:
    """The daemon's access to the database: a writer thread (`writers` of them on PostgreSQL,
    whose batches may commit side by side), a small pool of reader threads.

    Every call runs `fn(store)` on the right thread with that thread's own connection, so no
    connection ever crosses threads and the event loop never waits on SQLite.
    """

    def __init__(
        self,
        path: str | Path,
        readers: int = 2,
        opener: Callable[[], Store] | None = None,
        writers: int = 1,
    ) -> None:
        """`opener` opens one connection (each thread calls it at its first use, and again
        after its connection broke); by default an SqliteStore on the file at `path`.
        store/open.py's `store_threads` picks the opener a config's database needs."""
        self.path = path
        self._open: Callable[[], Store] = opener or (lambda: SqliteStore(path))
        self._local = threading.local()
        self._stores: list[Store] = []
        self._lock = threading.Lock()
        # Open (and migrate) once up front so a bad path fails at start, not at the first poll.
        # SQLite has one writer at a time; PostgreSQL may take `writers` (store_threads).
        self._writer = ThreadPoolExecutor(writers, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-reader")
        # Writes beside the writer's batches (PostgreSQL's claims), made at their first use.
        self._aside: ThreadPoolExecutor | None = None
        self._writer.submit(self._store).result()
        self._write_batches = _Batcher(
            self._writer, self._store, transaction=True, linger=WRITE_LINGER
        )
        self._read_batches = _Batcher(self._readers, self._store, transaction=False)

    def _store(self) -> Store:
        """This thread's connection, opened at its first use, and again after it broke (a
        PostgreSQL server restarted or unreachable): StoreError while it cannot be opened."""
        store: Store | None = getattr(self._local, "store", None)
        if store is not None and store.is_broken():
            self._drop(store)
            store = None
        if store is None:
            store = self._open()
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    def _drop(self, store: Store) -> None:
        """Forget this thread's broken connection; the next call opens another."""
        self._local.store = None
        with self._lock:
            if store in self._stores:
                self._stores.remove(store)
        with contextlib.suppress(Exception):  # it is broken: closing it may fail too
            store.close()

    def _read(self, fn: Callable[[Store], T]) -> T:
        store = self._store()
        try:
            return fn(store)
        except StoreError:
            if not store.is_broken():
                raise
            # As for batched reads: once more on a fresh connection (see _Batcher._run).
            return fn(self._store())

    async def write(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(self._store()))

    async def write_aside(self, fn: Callable[[Store], T]) -> T:
        """Like `write`, on a writer connection of its own, so that it neither waits for the
        polls' batches nor holds them up: for a PostgreSQL poller's claims and leases, whose
        row locks order them with the batches' commits. Not for SQLite (one writer at a
        time: the two would wait for each other's lock)."""
        if self._aside is None:
            self._aside = ThreadPoolExecutor(1, thread_name_prefix="store-aside")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._aside, lambda: fn(self._store()))

    async def read(self, fn: Callable[[Store], T], threads: Executor | None = None) -> T:
        """Run `fn` on a reader thread, or on one of `threads` (the renders' own, so a slow
        render never holds up the daemon's other reads); each thread has its connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(threads or self._readers, lambda: self._read(fn))

    @property
    def external_changes(self) -> int:
        """How many times the writer saw another connection's commit (a CLI run, say)."""
        return self._write_batches.external_changes

    async def write_batched(self, fn: Callable[[Store], T], ahead: AheadWrite | None = None) -> T:
        """Like `write`, for the many small writes of polls: those queued together commit in
        one transaction, each still all or nothing (its own savepoint). `ahead`: the write
        `fn` makes is that state-only write, which a store that WritesAhead may make with
        the batch's others before the calls run (then `fn` finds it made)."""
        return await self._write_batches.call(fn, ahead)

    async def read_batched(self, fn: Callable[[Store], T]) -> T:
        """Like `read`, with the reads queued together run in one hop to a reader thread."""
        return await self._read_batches.call(fn)

    async def aclose(self) -> None:
        """Send the batched calls still lingering, then close as `close` does (in a thread):
        a write queued before this call is committed, one queued after fails with StoreError."""
        loop = asyncio.get_running_loop()
        self._write_batches.flush_now(loop)
        self._read_batches.flush_now(loop)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Wait for queued writes to commit, then close every connection."""
        self._writer.shutdown(wait=True)
        if self._aside is not None:
            self._aside.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()
