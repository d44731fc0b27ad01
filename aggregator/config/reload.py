"""Hot reload: what changed between two configs (pure) and a watcher of the config file (I/O).

The daemon applies a `ReloadPlan`; this module only decides. The watcher polls the file's
size, mtime and content hash every few seconds rather than using inotify: polling also sees a
config bind-mounted into a container and an editor's save by rename, and costs one stat() a tick.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..config.resolved import Config, Feed, Settings

# Settings read once at start (the database, the listening socket, the process pool and the
# fetcher are built from them); a change is logged as needing a restart.
RESTART_SETTINGS = (
    "database",
    "listen",
    "parse_workers",
    "user_agent",
    "timeout",
    "max_concurrency",
    "max_body_size",
)
CHECK_EVERY = 2.0  # seconds between two looks at the config file


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the running config and a new valid one, as actions."""

    added: tuple[Feed, ...]  # to schedule
    removed: tuple[str, ...]  # to unschedule; their entries stay until pruned
    rescheduled: tuple[Feed, ...]  # interval changed: keep the next poll time
    changed: tuple[str, ...]  # url, title or tags changed: picked up at the next poll
    outputs_changed: bool
    needs_restart: tuple[str, ...]  # settings that only a restart applies

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.rescheduled
            or self.changed
            or self.outputs_changed
            or self.needs_restart
        )

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} feed(s) added",
            f"{len(self.removed)} removed",
            f"{len(self.rescheduled)} rescheduled",
            f"{len(self.changed)} changed",
            "outputs changed" if self.outputs_changed else "outputs unchanged",
        ]
        return ", ".join(parts)


def _changed(old: Settings, new: Settings, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k for k in keys if getattr(old, k) != getattr(new, k))


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two valid configs feed by feed; intervals are compared as effective intervals,
    so a changed default reschedules exactly the feeds that use it."""
    old_feeds, new_feeds = old.feeds, new.feeds
    rescheduled: list[Feed] = []
    changed: list[str] = []
    for name, feed in new_feeds.items():
        before = old_feeds.get(name)
        if before is None:
            continue
        if before.interval != feed.interval:
            rescheduled.append(feed)
        if (before.url, before.title, before.tags) != (feed.url, feed.title, feed.tags):
            changed.append(name)
    return ReloadPlan(
        added=tuple(f for n, f in new_feeds.items() if n not in old_feeds),
        removed=tuple(n for n in old_feeds if n not in new_feeds),
        rescheduled=tuple(rescheduled),
        changed=tuple(changed),
        # In order: the index lists the outputs as the file does.
        outputs_changed=tuple(old.outputs.values()) != tuple(new.outputs.values()),
        needs_restart=_changed(old.aggregator, new.aggregator, RESTART_SETTINGS),
    )


class ConfigWatcher:
    """Tells whether the config file changed since the last look. Cheap when it did not:
    the content is hashed only when size or mtime moved, and an unchanged hash (a `touch`)
    is not a change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int] | None = None
        self._digest: str | None = None
        self.mark()

    def mark(self) -> None:
        """Remember the file as it is now: the version about to be loaded."""
        self._stat = self._stat_key()
        self._digest = self._hash()

    def _stat_key(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def _hash(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self) -> bool:
        key = self._stat_key()
        if key == self._stat or key is None:
            # A missing file (mid-rename, or deleted) is not a config: wait for it to return.
            return False
        self._stat = key
        digest = self._hash()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return True
