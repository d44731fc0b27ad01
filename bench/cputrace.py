"""CPU seconds of process trees and of the whole machine, sampled on a thread, so a bench
round's CPU is read over the round itself (its first request to its last answer), not over a
process's life with its start-up. Linux /proc only.

A tree is a process and every descendant (the parse workers are children of a forkserver
child of the daemon), the live ones and the reaped (a parent's cutime/cstime). Times are
`time.perf_counter()`, which on Linux is the system-wide monotonic clock: the farm's request
log, stamped in another process with the same clock, can bound the window.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
EVERY = 0.1  # seconds between samples
RESCAN = 1.0  # seconds between walks of /proc for the trees' new descendants


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from one walk of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes, with their reaped children's."""
    total = 0
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            total += sum(int(f) for f in fields[11:15])
    return total / TICK


def machine_busy() -> float:
    """CPU seconds every core has spent on anything but idling, since boot."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / TICK


class CpuTrace:
    """Samples the trees of `roots` (a name → the root pids of that group, asked again at
    each rescan: a round's process may be new) and the machine, from `start` to `stop`."""

    def __init__(self, roots: dict[str, Callable[[], list[int]]]) -> None:
        self._roots = roots
        self._times: list[float] = []
        self._series: dict[str, list[float]] = {name: [] for name in [*roots, "machine"]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CpuTrace:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        trees: dict[str, list[int]] = {}
        scanned = 0.0
        while True:
            now = time.perf_counter()
            if now - scanned >= RESCAN:
                trees = {
                    name: [p for root in roots() for p in descendants(root)]
                    for name, roots in self._roots.items()
                }
                scanned = now
            for name, pids in trees.items():
                self._add(name, tree_cpu(pids))
            self._add("machine", machine_busy())
            self._times.append(now)
            if self._stop.wait(EVERY):
                return

    def _add(self, name: str, value: float) -> None:
        # A process that ended (not yet reaped by its parent) takes its seconds with it: a
        # tree's count never goes back.
        series = self._series[name]
        series.append(max(value, series[-1]) if series else value)

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds of each group, and of the machine ("machine"), from `start` to `end`
        (perf_counter times), interpolated between the samples around them."""
        return {
            name: self._at(series, end) - self._at(series, start)
            for name, series in self._series.items()
        }

    def _at(self, series: list[float], when: float) -> float:
        times = self._times
        if not times:
            return 0.0
        i = bisect.bisect_left(times, when)
        if i == 0:
            return series[0]
        if i >= len(times):
            return series[-1]
        t0, t1 = times[i - 1], times[i]
        return series[i - 1] + (series[i] - series[i - 1]) * (when - t0) / (t1 - t0)
