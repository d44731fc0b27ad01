"""The `nodes` table on both stores: each running aggregator process records itself (role,
host, pid, listen address, config hash) and refreshes its `last_seen`; /status lists the live
ones. One SQL text for both dialects (`%s` placeholders; SQLite's `?` swapped in). I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..models import NodeRecord
from .rows import _dt

# A node that has not refreshed its row for this long is gone (killed, or its machine is):
# its row is deleted at the next node's refresh, so the table never grows with old restarts.
FORGET_AFTER = timedelta(days=1)
COLUMNS = ("node_id", "role", "host", "pid", "listen", "config_hash", "started", "last_seen")

_UPSERT = (
    f"INSERT INTO nodes ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (node_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
)


def _node(row: Mapping[str, Any]) -> NodeRecord:
    started, seen = _dt(row["started"]), _dt(row["last_seen"])
    assert started is not None and seen is not None  # NOT NULL columns
    return NodeRecord(
        node_id=row["node_id"],
        role=row["role"],
        host=row["host"],
        pid=int(row["pid"]),
        listen=row["listen"],
        config_hash=row["config_hash"],
        started=started,
        last_seen=seen,
    )


class _Dialect(Protocol):
    """What the mixin needs of the store's connection class (connection.py and
    postgres_connection.py)."""

    def atomic(self) -> AbstractContextManager[Any]: ...
    def _run(self, sql: str, params: Sequence[Any]) -> Sequence[Mapping[str, Any]]: ...
    def _stamp(self, when: datetime) -> Any: ...


class NodeTable:
    """Mixed into each store, whose connection class supplies `_run` (one statement, its
    rows back) and `_stamp` (a time as its dialect stores it); the contracts are in
    protocol.Store."""

    def record_node(self: _Dialect, node: NodeRecord) -> None:
        """Insert or refresh this node's row, and forget nodes silent for FORGET_AFTER."""
        values = [getattr(node, c) for c in COLUMNS]
        values[6:] = [self._stamp(node.started), self._stamp(node.last_seen)]
        with self.atomic():
            self._run(_UPSERT, values)
            self._run(
                "DELETE FROM nodes WHERE last_seen < %s",
                [self._stamp(node.last_seen - FORGET_AFTER)],
            )

    def nodes(self: _Dialect, seen_since: datetime) -> list[NodeRecord]:
        """The nodes whose row was refreshed at or after `seen_since`, oldest first."""
        rows = self._run(
            f"SELECT {', '.join(COLUMNS)} FROM nodes WHERE last_seen >= %s "
            "ORDER BY started, node_id",
            [self._stamp(seen_since)],
        )
        return [_node(r) for r in rows]

    def forget_node(self: _Dialect, node_id: str) -> None:
        """Delete a node's row (it stops cleanly)."""
        self._run("DELETE FROM nodes WHERE node_id = %s", [node_id])
