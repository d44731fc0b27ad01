"""One daemon per SQLite database: an exclusive lock on `<database>.lock` holding the daemon's
PID. I/O.

The lock is an fcntl.flock, so the kernel drops it when the process dies, however it dies; a stale
file never blocks a restart. The PID inside lets `aggregator reload` signal the daemon.
A PostgreSQL database has no lock: any number of nodes share it on purpose.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..config.database import Database
from ..errors import LockError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DaemonLock:
    """Held for the life of a daemon: `acquire()` at start, `release()` at exit. On
    PostgreSQL (`path` None) both do nothing."""

    def __init__(self, database: Database) -> None:
        self.path = None if database.is_postgres else lock_path(database.sqlite_path())
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockError naming the daemon that has it."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_pid(self.path)
            who = f"pid {pid}" if pid else "another process"
            raise LockError(
                f"another daemon ({who}) is already running on this database; lock file {self.path}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: removing it would race with a daemon starting at the same moment.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def running_daemon(database: Database) -> int:
    """The PID of the daemon running on `database`, or LockError if none is (or, on
    PostgreSQL, LockError saying how to reach the nodes: no file names them)."""
    if database.is_postgres:
        raise LockError(
            f"the database is PostgreSQL ({database.display}): several nodes may share it, so "
            "none is found from here; send SIGHUP to each node's process (kill -HUP <pid>, "
            "or systemctl reload <its unit>), or edit the config file: each node reloads it "
            "within seconds"
        )
    path = lock_path(database.sqlite_path())
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise LockError(f"no daemon is running on {database} (no lock file {path})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = read_pid(path)
        if pid is None:
            raise LockError(f"a daemon holds {path} but its PID is unreadable") from None
        return pid
    finally:
        os.close(fd)
    raise LockError(f"no daemon is running on {database} (lock file {path} is free)")
