"""A process pool whose tasks have a deadline: a worker that runs past it is killed and replaced.
Runs worker processes (I/O: pipes, kills)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

# Why not ProcessPoolExecutor: it cannot stop one task, and killing its worker breaks the whole
# pool, failing every task in it. Here each worker process has a thread of the parent that hands
# it one task at a time over a pipe and waits at most `deadline` seconds for the answer; past
# that only that worker is killed, its task fails with WorkTimeout, a fresh worker takes its
# place, and the tasks of the other workers never notice.
log = logging.getLogger("aggregator.workers")
T = TypeVar("T")
START_TIMEOUT = 60.0  # seconds for a new worker to import its modules (a loaded machine is slow)
STOP_TIMEOUT = 5.0
POLL_STEP = 0.25  # seconds between two looks at a shutdown while a task runs


class WorkTimeout(Exception):
    """A task ran past the pool's deadline; its worker was killed and replaced."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(f"ran past its deadline of {deadline:g} s")

    def __reduce__(self) -> tuple[type[WorkTimeout], tuple[float]]:
        return (type(self), (self.deadline,))


class WorkerDied(Exception):
    """The worker process ended (killed, out of memory) before it answered."""


def _serve(conn: Connection, preload: Sequence[str]) -> None:
    """A worker's life: import `preload`, say so, then run tasks until told to stop."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in preload:
        importlib.import_module(name)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args, kwargs = message
        try:
            answer: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except BaseException as e:  # every failure goes back to the caller
            answer = (False, e)
        try:
            conn.send(answer)
        except Exception as e:  # an answer that does not pickle
            conn.send((False, RuntimeError(f"the worker's answer could not be sent: {e!r}")))


@dataclass(slots=True)
class _Task:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(
        self, context: BaseContext, preload: Sequence[str], abandoned: Callable[[], bool]
    ) -> None:
        """Start the process and wait until it is ready; WorkerDied if it cannot start (fork
        fails, a preload import fails, it dies), is not ready in START_TIMEOUT, or `abandoned()`
        turns true meanwhile (the pool shuts down: its slot must not wait a minute for it)."""
        parent, child = context.Pipe()
        self.conn = parent
        self.proc: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child, tuple(preload)), daemon=True, name="parse-worker"
        )
        try:
            self.proc.start()
        except Exception as e:  # fork's EAGAIN, out of memory, the fork server gone
            parent.close()
            child.close()
            raise WorkerDied(f"a worker could not be started: {e!r}") from e
        child.close()
        try:
            ready = self._ready(abandoned)
        except Exception as e:  # it ended before saying "ready": a preload import failed
            self.kill()
            raise WorkerDied(
                f"a worker ended while starting (exit code {self.proc.exitcode}): {e!r}"
            ) from e
        if not ready:
            self.kill()
            if abandoned():
                raise WorkerDied("the pool shut down while a worker started")
            raise WorkerDied(f"a worker did not start within {START_TIMEOUT:g} s")

    def _ready(self, abandoned: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while (left := deadline - time.monotonic()) > 0 and not abandoned():
            if self.conn.poll(min(left, POLL_STEP)):
                return bool(self.conn.recv() == "ready")
        return False

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.join(STOP_TIMEOUT)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(STOP_TIMEOUT)
        self.kill()


class DeadlinePool(Executor):
    """`workers` processes (started on first use); each task may run `deadline` seconds.

    `preload` names modules every worker imports before its first task, so that a fresh
    worker's imports never count against a task's deadline. A task that runs past the deadline
    fails with WorkTimeout, one whose worker dies with WorkerDied; either way the worker is
    replaced. `replaced` counts replacements (for metrics and tests).
    """

    def __init__(
        self,
        workers: int,
        deadline: float,
        preload: Sequence[str] = (),
        context: BaseContext | None = None,
    ) -> None:
        self.deadline = deadline
        self.replaced = 0
        self._preload = tuple(preload)
        # forkserver, not fork: forking a process that runs an event loop and threads can
        # deadlock.
        self._context = context or multiprocessing.get_context("forkserver")
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._closed = False
        self._abandon = False  # shut down with cancel_futures: running tasks are given up
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"parse-slot-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that is shut down")
            future: Future[T] = Future()
            self._queue.put(_Task(future, fn, args, kwargs))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers once the queue is done; with `cancel_futures`, queued tasks are
        cancelled and running ones given up at once (their workers killed)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._abandon = cancel_futures
                if cancel_futures:
                    while True:
                        try:
                            task = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if task is not None:
                            task.future.cancel()
                for _ in self._threads:
                    self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _run(self) -> None:
        worker: _Worker | None = None
        try:
            while (task := self._queue.get()) is not None:
                if not task.future.set_running_or_notify_cancel():
                    continue
                try:
                    worker = self._one(worker, task)
                except BaseException as e:
                    # A safety net: a slot that died here would leave its task RUNNING forever
                    # and its caller waiting on it; fail the task, start afresh, go on.
                    log.exception("a parse slot failed")
                    if worker is not None:
                        worker.kill()
                        worker = None
                    if not task.future.done():
                        failure = WorkerDied(f"the pool failed to run the task: {e!r}")
                        failure.__cause__ = e
                        task.future.set_exception(failure)
        finally:
            if worker is not None:
                worker.stop()

    def _answered(self, worker: _Worker) -> bool:
        """Wait for the worker's answer until the deadline, or until a shutdown abandons it."""
        deadline = time.monotonic() + self.deadline
        while (left := deadline - time.monotonic()) > 0:
            if worker.conn.poll(min(left, POLL_STEP)):
                return True
            if self._abandon:
                return False
        return False

    def _one(self, worker: _Worker | None, task: _Task) -> _Worker | None:
        """Run one task; returns the worker to use next (None: start one for the next task)."""
        if worker is None:
            try:
                worker = _Worker(self._context, self._preload, lambda: self._abandon)
            except WorkerDied as e:
                task.future.set_exception(e)
                return None
        try:
            worker.conn.send((task.fn, task.args, task.kwargs))
        except (OSError, EOFError) as e:
            worker.kill()
            task.future.set_exception(WorkerDied(f"the worker could not take the task: {e}"))
            return None
        except Exception as e:  # the task's arguments did not pickle
            task.future.set_exception(e)
            return worker
        if not self._answered(worker):
            worker.kill()
            if self._abandon:
                task.future.set_exception(WorkerDied("the pool shut down before the answer"))
                return None
            # Only this worker's process is killed; a new one replaces it for the next task.
            self.replaced += 1
            log.warning("a parse worker ran past %g s and was replaced", self.deadline)
            task.future.set_exception(WorkTimeout(self.deadline))
            return None
        try:
            ok, value = worker.conn.recv()
        except (EOFError, OSError) as e:
            worker.kill()
            self.replaced += 1
            code = worker.proc.exitcode
            task.future.set_exception(WorkerDied(f"the worker ended (exit code {code}): {e}"))
            return None
        except Exception as e:
            # The answer came but does not unpickle (an exception class whose __init__ wants
            # other arguments than it pickled): fail the task, and start a fresh worker rather
            # than trust the state of this one.
            worker.kill()
            self.replaced += 1
            task.future.set_exception(WorkerDied(f"the worker's answer could not be read: {e!r}"))
            return None
        if ok:
            task.future.set_result(value)
        else:
            task.future.set_exception(value)
        return worker
