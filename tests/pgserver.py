"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory, on a free
127.0.0.1 port, one per test session, with a fresh database for each test that asks. I/O.

The server binaries are found, in this order, in `$AGGREGATOR_PG_BINDIR`, in `pg_config
--bindir`, in Debian's `/usr/lib/postgresql/<version>/bin` (the newest version installed) and on
PATH. Without them every PostgreSQL test is skipped, with one reason that says how to get them
(`.ci/run` installs Debian's `postgresql` package, so CI always runs them).

initdb and postgres refuse to run as root, and tests here do run as root: then the cluster
belongs to the unprivileged `postgres` account (which Debian's package creates) and every server
command runs through `runuser -u postgres`.

Tests connect over TCP as the role `aggregator`, with a real password (scram-sha-256), so the
password path of the store and its redaction are exercised for real; the fixture itself
administers the cluster as the superuser `postgres` (trusted on loopback only).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

__all__ = ["PgServer", "pg_server", "pg_unavailable", "pg_url"]

# Deadlines, generous: the machine is shared and loaded.
_START_TIMEOUT = 120
_COMMAND_TIMEOUT = 120
ROLE = "aggregator"


def _has_initdb(bindir: str | os.PathLike[str]) -> bool:
    return (Path(bindir) / "initdb").is_file() and (Path(bindir) / "pg_ctl").is_file()


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin → (15,); 9.6 → (9, 6): the newest sorts last.
    version = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


@cache
def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when there is none."""
    override = os.environ.get("AGGREGATOR_PG_BINDIR")
    if override:
        return Path(override) if _has_initdb(override) else None
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        # Debian's /usr/bin/pg_config (libpq-dev) may name a bindir without a server in it.
        if out and _has_initdb(out):
            return Path(out)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for bindir in reversed(debian):
        if _has_initdb(bindir):
            return Path(bindir)
    initdb = shutil.which("initdb")
    if initdb and _has_initdb(Path(initdb).parent):
        return Path(initdb).parent
    return None


@cache
def pg_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if find_bindir() is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` "
            "package (.ci/run does) or set AGGREGATOR_PG_BINDIR"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` account to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and there is no `runuser` to run the server as `postgres`"
    return None


def describe() -> str:
    """One line for the test report's header: will the PostgreSQL tests run, and on what."""
    reason = pg_unavailable()
    if reason is not None:
        return f"postgresql: tests SKIPPED: {reason}"
    bindir = find_bindir()
    assert bindir is not None
    how = " as the `postgres` account" if os.geteuid() == 0 else ""
    return f"postgresql: tests run on a temporary server from {bindir}{how}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """One temporary cluster. `start()` it, `database()` as often as needed, then `stop()`."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(pg_unavailable())
        self.bindir = bindir
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        # Not under pytest's tmp_path: that is root's and mode 0700, which `postgres` cannot
        # enter. A directory of its own, handed to the account that runs the server.
        self.root = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=True,
                cwd=self.root,  # the server account may not enter the test's cwd
            )
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"{argv[0]} failed ({e.returncode}): {e.stderr.strip()}\n{self._log_tail()}"
            ) from e

    def _log_tail(self) -> str:
        try:
            return "server log:\n" + "".join(self.log.read_text().splitlines(True)[-20:])
        except OSError:
            return ""

    def start(self) -> None:
        # --no-locale: byte-order collation and ASCII-only lower(), as SQLite has them; UTF8
        # so every character a feed may carry can be stored.
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        hba = self.data / "pg_hba.conf"
        # The fixture's own superuser is trusted on loopback; everyone else gives a password.
        hba.write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n" + hba.read_text()
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            # Durability is not what these tests check: a crash loses a throwaway cluster.
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 32MB\nmax_connections = 200\n"
                "log_min_messages = warning\n"
            )
        for attempt in range(3):
            # The port is free when chosen; another process may take it before the server
            # binds, so a failed start tries another.
            self.port = _free_port()
            try:
                self.start_server()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")

    def start_server(self) -> None:
        """Start the cluster's server on its port (again, after `stop_server`)."""
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(_START_TIMEOUT),
            "-o",
            f"-p {self.port}",
        )

    def stop_server(self) -> None:
        """Stop the server as an operator would (fast: sessions are told and cut off), keeping
        the cluster: every connection to it breaks, and `start_server` brings it back."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    @contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped within, started again after (whatever the block raised)."""
        self.stop_server()
        try:
            yield
        finally:
            self.start_server()

    def restart(self) -> None:
        """Restart the server on the same port: every open connection breaks."""
        self.stop_server()
        self.start_server()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())

    def admin_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str, password: bool = True) -> str:
        """A URL as a user would write it: role, password, host, port, database."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{ROLE}{secret}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database owned by the test role; returns its name."""
        with self._lock:
            name = f"test_{next(self._names)}"
        # template0: nothing a test added to template1 can leak into the next database.
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
        return name

    def drop(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server, started on first use; skips when there can be none."""
    reason = pg_unavailable()
    if reason is not None:
        pytest.skip(f"PostgreSQL: {reason}")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A `postgresql://` URL (with the password) to a fresh database, dropped afterwards."""
    name = pg_server.database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop(name)
