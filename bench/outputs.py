"""Benchmark of the merged output: rendering it from the store, and serving it from the daemon's
cache beside a bare aiohttp handler, under a load generator on loopback. Prints figures.

Used by farm.py after the poll rounds, on the same database. Every server and load generator
runs in a process of its own; nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.models import OutputFormat
from aggregator.outputs.plan import PlanCache, render_output
from aggregator.store.sqlite import SqliteStore

OUTPUT = "all"
OUTPUT_LIMIT = 1000
RENDER_REPEATS = 3
SERVE_FORMAT: OutputFormat = "atom"
MB = 1024 * 1024


def output_config(database: Path, feeds: Sequence[tuple[str, str]]) -> Config:
    """One output over every feed, its newest OUTPUT_LIMIT entries."""
    return parse_config(
        {
            "aggregator": {"database": str(database)},
            "feeds": [{"name": n, "url": u} for n, u in feeds],
            "outputs": [{"name": OUTPUT, "title": "Every farm feed", "limit": OUTPUT_LIMIT}],
        }
    )


# --- rendering --------------------------------------------------------------------------------


def render_figures(database: Path, feeds: Sequence[tuple[str, str]]) -> None:
    """Time render_output for each format on a plain SqliteStore, in this process (one core)."""
    config = output_config(database, feeds)
    store = SqliteStore(database)
    plans = PlanCache()  # as the server's: the formats share the first render's plan
    print()
    print(
        f"rendering output {OUTPUT!r}: {len(feeds)} feeds, limit {OUTPUT_LIMIT}, "
        f"render_output on one core, then each format's best and median of {RENDER_REPEATS}"
    )
    try:
        # The first render after a store change plans the output (reads the newest entries,
        # filters, groups duplicate stories with near-dedupe); later formats and pages reuse it.
        rss = rss_now_mb()
        started = time.perf_counter()
        r = render_output(store, config, OUTPUT, "atom", plans=plans)
        first = time.perf_counter() - started
        print(
            f"  first render, planning included: {first * 1000:,.0f} ms "
            f"({r.entries} entries on the page); RSS {rss:.0f} -> {rss_now_mb():.0f} MB"
        )
        print(
            f"  {'format':<6} {'entries':>7} {'best ms':>8} {'median ms':>9} {'KB':>8} "
            f"{'entries/s':>9}"
        )
        for fmt in ("atom", "rss", "json"):
            times = []
            try:
                for _ in range(RENDER_REPEATS):
                    started = time.perf_counter()
                    r = render_output(store, config, OUTPUT, fmt, plans=plans)
                    times.append(time.perf_counter() - started)
            except Exception as e:  # a bug in the package: print it, measure the rest
                print(f"  {fmt:<6} FAILED: {type(e).__name__}: {e}")
                continue
            best = min(times)
            print(
                f"  {fmt:<6} {r.entries:>7} {best * 1000:>8.0f} "
                f"{statistics.median(times) * 1000:>9.0f} {len(r.body) / 1024:>8.0f} "
                f"{r.entries / best:>9,.0f}"
            )
    finally:
        store.close()


def rss_now_mb() -> float:
    """This process's resident set now (Linux), else its peak: 'flat over churn' needs now."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return rss_peak_mb()


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_daemon_config(
    path: Path, database: Path, port: int, feeds: Sequence[tuple[str, str]]
) -> None:
    """A config for the real daemon over the bench database. The interval is long and every
    stored next poll is in the future, so it polls nothing while it is measured."""
    lines = [
        "[aggregator]",
        f"database = {_toml_string(str(database))}",
        f'listen = "127.0.0.1:{port}"',
        f'base_url = "http://127.0.0.1:{port}"',
        'interval = "1d"',
        "parse_workers = 1",
        'log_level = "warning"',
        "",
    ]
    for name, url in feeds:
        lines += ["[[feeds]]", f"name = {_toml_string(name)}", f"url = {_toml_string(url)}", ""]
    lines += [
        "[[outputs]]",
        f'name = "{OUTPUT}"',
        'title = "Every farm feed"',
        f"limit = {OUTPUT_LIMIT}",
        "",
    ]
    path.write_text("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Served:
    body: bytes
    headers: dict[str, str]  # the response headers a subscriber relies on


async def _wait_healthy(base: str, daemon: subprocess.Popen[bytes], deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with status {daemon.returncode}")
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the daemon did not answer /healthz in time")


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


def _bare_main(conn: Connection, body: bytes, headers: dict[str, str]) -> None:
    """A bare aiohttp.web handler: the same bytes and headers, 304 on a matching If-None-Match."""
    etag = headers["ETag"]
    not_modified = {k: v for k, v in headers.items() if k != "Content-Type"}

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=not_modified)
        return web.Response(body=body, headers=headers)

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        conn.send(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        with contextlib.suppress(EOFError):  # any message, or EOF, stops it
            await loop.run_in_executor(None, conn.recv)
        await runner.cleanup()

    asyncio.run(serve())


# --- load generators --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    requests: int
    seconds: float
    received: int  # bytes, as the generator counts them
    statuses: Counter[str]  # wrk only tells the responses that were not 2xx or 3xx

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_BYTES = re.compile(r"requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read")
_WRK_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_SIZES = {"B": 1, "KB": 1024, "MB": MB, "GB": 1024 * MB, "TB": 1024 * 1024 * MB}


def _wrk(url: str, headers: dict[str, str], connections: int, seconds: float) -> Load:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    m = _WRK_REQUESTS.search(out)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    b = _WRK_BYTES.search(out)
    bad = _WRK_BAD.search(out)
    requests = int(m.group(1))
    return Load(
        requests=requests,
        seconds=float(m.group(2)) * _UNITS[m.group(3)],
        received=int(float(b.group(1)) * _SIZES[b.group(2)]) if b else 0,
        statuses=Counter({"not 2xx/3xx": int(bad.group(1))} if bad else {}),
    )


async def _hammer(
    url: str, headers: dict[str, str], connections: int, seconds: float
) -> tuple[int, float, int, Counter[str]]:
    statuses: Counter[str] = Counter()
    received = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal received
            while time.perf_counter() < deadline:
                async with session.get(url, headers=headers) as resp:
                    body = await resp.read()
                    received += len(body)  # after the await: += across it would lose updates
                    statuses[str(resp.status)] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return sum(statuses.values()), elapsed, received, statuses


def _python_load_main(
    conn: Connection, url: str, headers: dict[str, str], connections: int, seconds: float
) -> None:
    conn.send(asyncio.run(_hammer(url, headers, connections, seconds)))


def _python_load(url: str, headers: dict[str, str], connections: int, seconds: float) -> Load:
    """Our own generator in a process of its own: `connections` aiohttp clients in a loop."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(
        target=_python_load_main, args=(theirs, url, headers, connections, seconds), name="load"
    )
    proc.start()
    theirs.close()
    try:
        if not ours.poll(seconds + 60):
            raise RuntimeError("the load generator did not finish in time")
        requests, elapsed, received, statuses = ours.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    return Load(requests, elapsed, received, statuses)


def pick_generator(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def load(
    generator: str, url: str, headers: dict[str, str], connections: int, seconds: float
) -> Load:
    if generator == "wrk":
        return _wrk(url, headers, connections, seconds)
    return _python_load(url, headers, connections, seconds)


# --- serving ----------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set of another process (Linux), before it exits."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def serve_figures(
    tmp: Path,
    database: Path,
    feeds: Sequence[tuple[str, str]],
    generator_choice: str,
    connections: int,
    seconds: float,
) -> dict[str, float]:
    """Start the real daemon over the bench database and a bare handler serving the same bytes,
    load each with 200s and 304s, print req/s; returns ours/bare per kind."""
    generator = pick_generator(generator_choice)
    port = _free_port()
    config_path = tmp / "daemon.toml"
    write_daemon_config(config_path, database, port, feeds)
    log_path = tmp / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    print()
    print(
        f"serving /outputs/{OUTPUT}.{SERVE_FORMAT} (limit {OUTPUT_LIMIT}) from the daemon's cache "
        f"beside a bare aiohttp handler with the same bytes and headers;"
    )
    print(
        f"  load generator: {generator}, {connections} connections, {seconds:g} s a measurement, "
        "one after another"
    )
    ratios: dict[str, float] = {}
    mp = multiprocessing.get_context("spawn")
    bare_conn, bare_theirs = mp.Pipe()
    bare: Any = None
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        try:
            asyncio.run(_wait_healthy(base, daemon, time.monotonic() + 120))
            up = time.perf_counter() - started
            url = f"{base}/outputs/{OUTPUT}.{SERVE_FORMAT}"
            started = time.perf_counter()
            status, body, resp_headers = asyncio.run(_get(url))
            first = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"GET {url} answered {status}")
            keep = ("ETag", "Last-Modified", "Cache-Control", "Content-Type")
            headers = {k: resp_headers[k] for k in keep if k in resp_headers}
            print(
                f"  daemon pid {daemon.pid}: healthy in {up:.1f}s; first GET (renders) "
                f"{first * 1000:.0f} ms, {len(body) / 1024:.0f} KB, ETag {headers.get('ETag')}"
            )
            bare = mp.Process(
                target=_bare_main, args=(bare_theirs, body, headers), name="bare-handler"
            )
            bare.start()
            bare_theirs.close()
            bare_url = f"http://127.0.0.1:{bare_conn.recv()}/outputs/{OUTPUT}.{SERVE_FORMAT}"
            conditional = {"If-None-Match": headers["ETag"]}
            for name, target in (("ours", url), ("bare", bare_url)):
                got = asyncio.run(_get(target, conditional))[0]
                if got != 304:
                    print(f"  warning: {name} answered {got} to If-None-Match, not 304")
            print(
                f"  {'server':<6} {'kind':<4} {'requests':>9} {'req/s':>8} {'MB/s':>8}  "
                "ours/bare  statuses"
            )
            for kind, hdrs in (("200", {}), ("304", conditional)):
                rates = {}
                for name, target in (("ours", url), ("bare", bare_url)):
                    r = load(generator, target, hdrs, connections, seconds)
                    rates[name] = r.rate
                    ratio = ""
                    if name == "bare" and r.rate:
                        ratios[kind] = rates["ours"] / r.rate
                        ratio = f"{ratios[kind]:>8.0%}"
                    statuses = " ".join(f"{k}={v}" for k, v in sorted(r.statuses.items())) or "-"
                    print(
                        f"  {name:<6} {kind:<4} {r.requests:>9} {r.rate:>8,.0f} "
                        f"{r.received / MB / r.seconds:>8.1f}  {ratio:>9}  {statuses}"
                    )
            hwm = _vm_hwm_mb(daemon.pid)
            if hwm is not None:
                print(f"  daemon peak RSS (VmHWM) {hwm:.1f} MB")
        finally:
            if bare is not None:
                bare_conn.close()
                bare.join(timeout=10)
                if bare.is_alive():
                    bare.terminate()
                    bare.join()
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
    if daemon.returncode not in (0, -signal.SIGTERM):
        print(f"  daemon exited with status {daemon.returncode}; its log:", file=sys.stderr)
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
    elif log_path.stat().st_size:
        print(f"  daemon log ({log_path.stat().st_size} bytes), last lines:")
        for line in log_path.read_text(errors="replace").splitlines()[-5:]:
            print(f"    {line}")
    return ratios
