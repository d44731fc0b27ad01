"""Benchmark: pollers sharing one PostgreSQL store beside the single SQLite process, on a
loopback farm of many hosts. Prints figures; asserts nothing.

    .venv/bin/python bench/farm.py --database postgresql://… --pollers 1,2,4 [--feeds 2000]
    .venv/bin/python bench/cluster.py --database temp --pollers 1,2 [--hosts 100]

The farm (farm.py's RSS documents) answers on `--hosts` loopback addresses (127.0.1.1, …), one
origin each, and logs every request: which feed, on which host, when it started and ended.
Every process is the real program: the SQLite figures come from `aggregator fetch` (a round
of every feed, on the daemon's own wiring), the PostgreSQL ones from `aggregator run --role
poller` processes sharing one database, a round started by making every feed due at once
(`UPDATE feeds SET next_poll = now()`) and ended when every feed's poll is stored; both
are timed from a round's first request to its last answer in the farm's log (the time to
every poll stored is printed too). Before each PostgreSQL round the feeds and hosts tables
are vacuumed, as autovacuum would have between two rounds half an hour apart. Rounds:
cold (every feed new), warm (every feed answers 304), unchanged (200, the same bytes, no
validators) and churn (10% of the feeds gained entries). Per round: feeds/s, duplicate polls
(a feed fetched more than once in one round) and politeness violations in the farm's own log
(a host over `host_concurrency`, two starts on one host under `host_delay` apart); then the
entries stored against the farm's, and the database's size per million entries.

`--database temp` starts a throwaway server of the tests' own (tests/pgserver.py, fsync off,
so its writes cost less than a real server's); a URL is used as given, and each run gets a
database of its own made next to it (`<name>_bench_<n>`: the role needs CREATEDB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# After bench/ itself: tests/ has a farm.py of its own.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg
from aiohttp import web
from cputrace import CpuTrace
from farm import CHURN_ENTRIES, CHURN_FRACTION, Farm
from psycopg.conninfo import conninfo_to_dict

HOST_DELAY = 0.01  # seconds between two request starts on one host
HOST_CONCURRENCY = 2
SLACK = 0.002  # seconds of clock and scheduling granularity allowed on a host_delay gap
ROUNDS = ("cold", "warm", "unchanged", "churn")

# --- the farm, on many loopback hosts, with its request log ------------------------------------


class LoggedFarm(Farm):
    """farm.Farm on several hosts; every request is logged as (host, feed, start, end)."""

    def __init__(self, feeds: int, entries: int, seed: int) -> None:
        super().__init__(feeds, entries, seed)
        self.log: list[tuple[str, int, float, float]] = []
        self.lag = 0.0  # the farm's own longest loop stall since the log was taken

    async def watch_lag(self) -> None:
        """How late the farm's loop runs a 5 ms timer: a request is stamped when its handler
        runs, so two requests stamped closer than host_delay by less than this may have
        arrived host_delay apart."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lag = max(self.lag, time.perf_counter() - start - 0.005)

    async def logged(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        response = await self.handle(request)
        self.log.append((request.host, int(request.match_info["n"]), start, time.perf_counter()))
        return response


async def _serve(conn: Connection, feeds: int, entries: int, seed: int, hosts: int) -> None:
    farm = LoggedFarm(feeds, entries, seed)
    app = web.Application()
    app.router.add_get(r"/feed/{n:\d+}.xml", farm.logged)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    first = web.TCPSite(runner, "127.0.1.1", 0)
    await first.start()
    port = runner.addresses[0][1]
    for k in range(2, hosts + 1):
        await web.TCPSite(runner, f"127.0.1.{k}", port).start()
    conn.send(("ready", port))
    loop = asyncio.get_running_loop()
    watch = asyncio.ensure_future(farm.watch_lag())
    try:
        while True:
            try:
                msg = await loop.run_in_executor(None, conn.recv)
            except EOFError:
                break
            if msg[0] == "log":
                conn.send((farm.log, farm.lag))
                farm.log, farm.lag = [], 0.0
            elif msg[0] == "validators":
                farm.validators = msg[1]
                conn.send(True)
            elif msg[0] == "churn":
                conn.send(farm.churn(msg[1], msg[2]))
            elif msg[0] == "entries":
                conn.send(sum(farm.totals))
            else:
                break
    finally:
        watch.cancel()
        await runner.cleanup()


def _farm_main(conn: Connection, feeds: int, entries: int, seed: int, hosts: int) -> None:
    # Ahead of the pollers on the CPU where allowed: the log stamps a request when its handler
    # runs, and a farm kept waiting by the OS would stamp two requests together that came
    # host_delay apart.
    with contextlib.suppress(OSError):
        os.nice(-10)
    asyncio.run(_serve(conn, feeds, entries, seed, hosts))


def ask(conn: Connection, *msg: Any) -> Any:
    conn.send(msg)
    return conn.recv()


@dataclass(frozen=True, slots=True)
class Politeness:
    duplicates: int  # requests for a feed beyond its first in the round
    over_concurrency: int  # requests that started while the host had its limit in flight
    under_delay: int  # request starts closer than host_delay to the previous one on the host
    min_gap_ms: float
    farm_lag_ms: float  # the farm's longest stall: the error of its stamps


def politeness(log: Sequence[tuple[str, int, float, float]], lag: float) -> Politeness:
    """Duplicates and violations in a round's log. A gap counts as under host_delay only by
    more than the farm's own stamping error (its longest loop stall, at least SLACK)."""
    slack = max(SLACK, lag)
    per_feed = Counter(n for _, n, _, _ in log)
    by_host: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for host, _, start, end in log:
        by_host[host].append((start, end))
    over = under = 0
    min_gap = float("inf")
    for spans in by_host.values():
        spans.sort()
        ends: list[float] = []
        for i, (start, end) in enumerate(spans):
            ends = [e for e in ends if e > start]
            over += len(ends) >= HOST_CONCURRENCY
            ends.append(end)
            if i:
                gap = start - spans[i - 1][0]
                min_gap = min(min_gap, gap)
                under += gap < HOST_DELAY - slack
    dups = sum(c - 1 for c in per_feed.values())
    return Politeness(dups, over, under, min_gap * 1000 if log else 0.0, lag * 1000)


# --- the processes ------------------------------------------------------------------------------


def write_config(
    path: Path, database: str, port: int, feeds: int, hosts: int, concurrency: int
) -> None:
    lines = [
        "[aggregator]",
        f'database = "{database}"',
        'interval = "30m"',
        'timeout = "30s"',
        f"max_concurrency = {concurrency}",
        f"host_concurrency = {HOST_CONCURRENCY}",
        f"host_delay = {HOST_DELAY}",
        'log_level = "warning"',
        "",
    ]
    for i in range(feeds):
        url = f"http://127.0.1.{1 + i % hosts}:{port}/feed/{i}.xml"
        lines += ["[[feeds]]", f'name = "f{i:05d}"', f'url = "{url}"', ""]
    lines += ["[[outputs]]", 'name = "all"', 'title = "All"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def aggregator(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


@dataclass(frozen=True, slots=True)
class Round:
    name: str
    feeds: int
    seconds: float
    polite: Politeness
    # CPU seconds within the round (its first request to its last answer), cputrace.py:
    cpu: dict[str, float]  # "ours" (the pollers, or SQLite's process, with their parse
    # workers), "db" (a temporary server's processes), "farm", "machine" (every core)
    stored: float | None = None  # PostgreSQL: seconds from the round's start to every poll stored

    def line(self) -> str:
        p = self.polite
        stored = f"  all stored {self.stored:6.2f} s" if self.stored is not None else ""
        per_feed = "  ".join(
            f"{name} {self.cpu[name] / self.feeds * 1000:.2f}"
            for name in ("ours", "db", "farm")
            if name in self.cpu
        )
        busy = self.cpu["machine"] / ((os.cpu_count() or 1) * self.seconds)
        return (
            f"  {self.name:<10} {self.feeds / self.seconds:9,.0f} feeds/s  {self.seconds:6.2f} s"
            f"{stored}  CPU ms a feed: {per_feed}; machine {busy:.0%} busy  "
            f"duplicates {p.duplicates}  over host_concurrency {p.over_concurrency}  "
            f"under host_delay {p.under_delay} (closest {p.min_gap_ms:.1f} ms, "
            f"farm stamps within {max(p.farm_lag_ms, SLACK * 1000):.1f} ms)"
        )


def prepare_round(farm: Connection, name: str) -> None:
    """The farm's state for a round, set once for every store's run of it."""
    if name == "unchanged":
        ask(farm, "validators", False)
    elif name == "churn":
        ask(farm, "validators", True)
        ask(farm, "churn", CHURN_FRACTION, CHURN_ENTRIES)


# --- SQLite: `aggregator fetch`, one process ---------------------------------------------------


class SqliteRuns:
    """The single SQLite process: `aggregator fetch` (every feed once) for each round."""

    label = "SQLite"

    def __init__(self, farm: Connection, tmp: Path, port: int, args: argparse.Namespace):
        self.farm, self.tmp, self.args = farm, tmp, args
        self.config = tmp / "sqlite" / "aggregator.toml"
        self.config.parent.mkdir()
        write_config(
            self.config,
            str(self.config.parent / "bench.db"),
            port,
            args.feeds,
            args.hosts,
            args.concurrency,
        )

    def round(self, name: str) -> Round:
        ask(self.farm, "log")  # the requests before are not this round's
        proc = aggregator(self.config, "fetch", log=self.tmp / "sqlite.log")
        trace = CpuTrace({"ours": lambda: [proc.pid], "farm": lambda: [self.args.farm_pid]})
        trace.start()
        proc.wait()
        trace.stop()
        log, lag = ask(self.farm, "log")
        if proc.returncode != 0 or not log:
            sys.exit(f"aggregator fetch failed ({proc.returncode}): see {self.tmp / 'sqlite.log'}")
        # From the first request to the last answer: the process's start-up is not the round.
        start, end = _bounds(log)
        cpu = trace.between(start, end)
        return Round(name, self.args.feeds, end - start, politeness(log, lag), cpu)

    def finish(self) -> None:
        db = self.config.parent / "bench.db"
        _print_store(self.label, _sqlite_entries(db), ask(self.farm, "entries"), db.stat().st_size)


def _bounds(log: Sequence[tuple[str, int, float, float]]) -> tuple[float, float]:
    """A round's first request and last answer, on the farm's clock (perf_counter)."""
    return min(s for _, _, s, _ in log), max(e for *_, e in log)


def _sqlite_entries(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        return count


def _print_store(kind: str, stored: int, published: int, size: int) -> None:
    per_million = size / max(stored, 1) * 1e6 / 1024**3
    print(
        f"  entries stored {stored:,} of {published:,} published "
        f"({'each once' if stored == published else 'MISMATCH'}); "
        f"{kind} size {size / 1024**2:,.0f} MB, {per_million:.2f} GB per million entries"
    )


# --- PostgreSQL: N poller processes over one database -----------------------------------------


@contextmanager
def fresh_database(url: str, n: int) -> Iterator[str]:
    """A new database next to the one `url` names, dropped afterwards; its URL."""
    name = f"{conninfo_to_dict(url).get('dbname', 'postgres')}_bench_{n}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        parts = urlsplit(url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        _drop(url, name)


def _drop(url: str, name: str) -> None:
    # FORCE may not end a backend of another role (autovacuum's, say): wait for it instead.
    for attempt in range(10):
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                force = " WITH (FORCE)" if attempt == 0 else ""
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}'.encode())
                return
        except psycopg.Error as e:
            error = e
            time.sleep(1.0)
    print(f"  (the bench database {name} is left behind: {error})")


def _wait(
    check: Callable[[], bool], what: str, deadline: float = 600.0, logs: Path | None = None
) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            for log in sorted(logs.glob("*.log")) if logs is not None else ():
                print(f"--- the end of {log.name}:", *log.read_text().splitlines()[-15:], sep="\n")
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)


class PostgresRuns:
    """`pollers` processes of `aggregator run --role poller` on a database of their own, alive
    from the first round to the last and stopped (SIGSTOP) while other stores run theirs: an
    idle poller still claims every second, which would count in the others' figures."""

    def __init__(
        self,
        farm: Connection,
        tmp: Path,
        port: int,
        url: str,
        pollers: int,
        args: argparse.Namespace,
    ):
        from aggregator.store.postgres import PostgresStore

        self.farm, self.args, self.pollers = farm, args, pollers
        self.label = f"PostgreSQL, {pollers} poller(s)"
        self.where = tmp / f"pg{pollers}"
        self.where.mkdir()
        config = self.where / "aggregator.toml"
        write_config(config, url, port, args.feeds, args.hosts, args.concurrency)
        self.store = PostgresStore(url)
        names = [
            (f"f{i:05d}", f"http://127.0.1.{1 + i % args.hosts}:{port}/feed/{i}.xml")
            for i in range(args.feeds)
        ]
        self.store.sync_feeds(names)
        # Nothing due until the round starts: the pollers start at leisure.
        self.store.conn.execute("UPDATE feeds SET next_poll = now() + interval '1 day'")
        self.procs: list[subprocess.Popen[bytes]] = []
        for k in range(pollers):
            listen = f"127.0.0.1:{_free_port()}"
            self.procs.append(
                aggregator(
                    config,
                    "run",
                    "--role",
                    "poller",
                    "--listen",
                    listen,
                    log=self.where / f"poller{k}.log",
                )
            )

    def ready(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                sys.exit(f"a poller exited ({p.returncode}): see {self.where}")
        self._signal(signal.SIGSTOP)

    def _signal(self, sig: signal.Signals) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)

    def round(self, name: str) -> Round:
        store, args = self.store, self.args
        ask(self.farm, "log")  # the requests before are not this round's
        # A round here is half an hour of polls in seconds: autovacuum (every minute) would
        # have tidied the previous one's row versions by the next in production.
        store.conn.execute(b"VACUUM (ANALYZE) feeds, hosts")
        self._signal(signal.SIGCONT)
        time.sleep(0.5)  # each catches up with the ticks it missed
        roots = {"ours": lambda: [p.pid for p in self.procs], "farm": lambda: [args.farm_pid]}
        if args.postmaster is not None:
            roots["db"] = lambda: [args.postmaster]
        trace = CpuTrace(roots).start()
        row = store.conn.execute("SELECT now() AS t").fetchone()
        assert row is not None
        mark = row["t"]
        # In whole seconds, as every poll writes it (the pollers' guarded writes compare the
        # row with the state they claimed, kept in whole seconds).
        store.conn.execute("UPDATE feeds SET next_poll = date_trunc('second', now())")
        started = time.perf_counter()

        def done() -> bool:
            # Polled: its next poll decided, half an hour on (last_poll is kept in whole
            # seconds, so it cannot tell this round's polls from a second ago's).
            row = store.conn.execute(
                "SELECT count(*) AS n FROM feeds WHERE next_poll > %s + interval '1 minute'",
                [mark],
            ).fetchone()
            return row is not None and row["n"] >= args.feeds

        _wait(done, f"round {name} with {self.pollers} poller(s)", logs=self.where)
        stored = time.perf_counter() - started
        trace.stop()
        log, lag = ask(self.farm, "log")
        self._signal(signal.SIGSTOP)
        # As for SQLite, from the first request to the last answer: the wait for the next
        # claim tick (up to a second) is not the round's, nor the last write's commit.
        start, end = _bounds(log)
        cpu = trace.between(start, end)
        return Round(name, args.feeds, end - start, politeness(log, lag), cpu, stored)

    def finish(self) -> None:
        row = self.store.conn.execute(
            "SELECT count(*) AS n, pg_database_size(current_database()) AS size FROM entries"
        ).fetchone()
        assert row is not None
        _print_store("database", row["n"], ask(self.farm, "entries"), row["size"])

    def close(self) -> None:
        self._signal(signal.SIGCONT)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- main ---------------------------------------------------------------------------------------


def _summary(sqlite: list[Round], pg: dict[int, list[Round]]) -> None:
    print("\nratio to the single SQLite process (feeds/s), each round against SQLite's run of it")
    print("just before (the machine's speed drifts over minutes; a pair shares its moment):")
    for n, rounds in pg.items():
        ratios = "  ".join(
            f"{r.name} {r.feeds / r.seconds / (b.feeds / b.seconds):.2f}x"
            for r, b in zip(rounds, sqlite, strict=True)
        )
        print(f"  {n} poller(s): {ratios}")
    warm = {n: [r for r in rounds if r.name == "warm"] for n, rounds in pg.items()}
    for n, r in ((n, rs[-1]) for n, rs in warm.items() if rs):
        rate = r.feeds / r.seconds
        print(
            f"  {n} poller(s): {rate * 1800 / n:,.0f} feeds per poller at a 30-minute interval "
            f"(warm rate x 1800 s / pollers)"
        )


def run(args: argparse.Namespace) -> None:
    # SIGTERM unwinds like an error: the pollers, the farm and a temporary server stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    server = None
    args.postmaster = None
    url = args.database
    if url == "temp":
        from pgserver import PgServer, pg_unavailable

        if (reason := pg_unavailable()) is not None:
            sys.exit(f"no PostgreSQL to bench: {reason}")
        server = PgServer()
        server.start()
        server.admin("ALTER ROLE aggregator CREATEDB")
        args.postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        url = server.url(server.database())
    parent, child = multiprocessing.Pipe()
    farm = multiprocessing.Process(
        target=_farm_main, args=(child, args.feeds, args.entries, args.seed, args.hosts)
    )
    farm.start()
    args.farm_pid = farm.pid
    try:
        _, port = parent.recv()
        print(
            f"farm: {args.feeds} feeds x {args.entries} entries on {args.hosts} hosts; "
            f"host_concurrency {HOST_CONCURRENCY}, host_delay {HOST_DELAY * 1000:.0f} ms; "
            f"max_concurrency {args.concurrency}; "
            f"{os.cpu_count()} cores"
        )
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            sqlite = SqliteRuns(parent, Path(tmp), port, args)
            clusters: dict[int, PostgresRuns] = {}
            for n in args.pollers:
                db = stack.enter_context(fresh_database(url, n))
                clusters[n] = PostgresRuns(parent, Path(tmp), port, db, n, args)
                stack.callback(clusters[n].close)
            time.sleep(3.0)  # their parse pools up (a round does not wait for a start-up)
            for cluster in clusters.values():
                cluster.ready()
            # Round by round, every store in turn on the farm in the same state: a store's
            # figure and SQLite's just before it were taken at the same speed of the machine.
            runs: list[SqliteRuns | PostgresRuns] = [sqlite, *clusters.values()]
            results: dict[str, list[Round]] = {r.label: [] for r in runs}
            for name in args.rounds:
                prepare_round(parent, name)
                for r in runs:
                    results[r.label].append(r.round(name))
                    print(f"{r.label:<26}{results[r.label][-1].line()}", flush=True)
            print()
            for r in runs:
                print(r.label)
                r.finish()
        _summary(results[sqlite.label], {n: results[c.label] for n, c in clusters.items()})
    finally:
        parent.send(("stop",))
        farm.join(timeout=10)
        if server is not None:
            server.stop()


def _rounds(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or names[0] != "cold" or any(n not in ROUNDS for n in names):
        raise argparse.ArgumentTypeError(f"rounds are {', '.join(ROUNDS)}, the first cold")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=100, help="loopback hosts of the farm (100)")
    parser.add_argument(
        "--rounds",
        type=_rounds,
        default=list(ROUNDS),
        help="rounds, comma-separated, cold first, repeats allowed (cold,warm,unchanged,churn)",
    )
    parser.add_argument(
        "--pollers",
        type=lambda s: [int(n) for n in s.split(",") if int(n) > 0],
        default=[1, 2],
        help="poller processes per PostgreSQL run, comma-separated (1,2)",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="temp", help="a postgresql:// URL, or temp")
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="max_concurrency of every process (32)"
    )
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
