"""This process as one node of those sharing a store: its row in the `nodes` table (role, host,
pid, listen address, config hash), refreshed every NODE_EVERY by a job of the daemon and
deleted when it stops; and what /status shows of the live nodes. I/O through the store
threads (the job); `nodes_view` is pure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .config.fingerprint import SHOWN, config_hash
from .config.resolved import Config
from .errors import AggregatorError
from .jobs import Sleep
from .models import NodeRecord
from .store.protocol import Store
from .store.threads import StoreThreads

log = logging.getLogger("aggregator.daemon")
NODE_EVERY = timedelta(seconds=10)
# A node whose row is older than this missed three refreshes: it is not shown as live.
NODE_LIVE = timedelta(seconds=35)


@dataclass(slots=True)
class ThisNode:
    """Who this process is in the nodes table. `config_hash` follows the running config."""

    role: str
    listen: str
    started: datetime
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    # Host and pid name a node for people; the random part keeps a restarted process (the
    # same pid again in a container) from taking over its predecessor's row.
    node_id: str = ""
    config_hash: str = ""
    _hashed: Config | None = None

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = f"{self.host}-{self.pid}-{secrets.token_hex(3)}"

    async def follow(self, config: Config) -> None:
        """Hash the config when it is a new one (a reload); off the loop: a config of
        thousands of feeds takes a while to walk."""
        if config is not self._hashed:
            self.config_hash = await asyncio.to_thread(config_hash, config)
            self._hashed = config

    def record(self, now: datetime) -> NodeRecord:
        return NodeRecord(
            self.node_id,
            self.role,
            self.host,
            self.pid,
            self.listen,
            self.config_hash,
            self.started,
            now,
        )


async def refresh_node(
    store: StoreThreads, node: ThisNode, config: Callable[[], Config], sleep: Sleep
) -> None:
    """Record this node now and every NODE_EVERY (with the hash of the config it runs then,
    so a reload shows within one refresh); delete its row when the daemon stops. A store
    that cannot be written is logged once per outage, and the refresh goes on."""
    failing = False
    while True:
        await node.follow(config())
        record = node.record(datetime.now(UTC))
        try:
            await store.write(functools.partial(_record, record=record))
            if failing:
                log.info("node %s: recorded again in the nodes table", node.node_id)
            failing = False
        except AggregatorError as e:
            if not failing:
                log.warning("node %s: cannot record it in the nodes table: %s", node.node_id, e)
            failing = True
        if await sleep(NODE_EVERY.total_seconds()):
            break
    try:
        # Shielded: the daemon cancels its jobs soon after the stop, and the row must go.
        await asyncio.shield(store.write(lambda s: s.forget_node(node.node_id)))
    except AggregatorError as e:
        log.warning("node %s: its row stays in the nodes table: %s", node.node_id, e)


def _record(store: Store, record: NodeRecord) -> None:
    store.record_node(record)


def nodes_view(
    nodes: Sequence[NodeRecord], now: datetime, this: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The live nodes as /status shows them, and a warning when they run different configs
    (None when they agree)."""
    shown = [
        {
            "id": n.node_id,
            "role": n.role,
            "host": n.host,
            "pid": n.pid,
            "listen": n.listen,
            "config_hash": n.config_hash[:SHOWN],
            "started": n.started.isoformat(timespec="seconds"),
            "last_seen": n.last_seen.isoformat(timespec="seconds"),
            "seconds_since_seen": max(0, int((now - n.last_seen).total_seconds())),
            "this": n.node_id == this,
        }
        for n in nodes
    ]
    by_hash: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        by_hash[n.config_hash].append(n.node_id)
    if len(by_hash) < 2:
        return shown, None
    groups = "; ".join(
        f"{digest[:SHOWN]}: {', '.join(ids)}"
        for digest, ids in sorted(by_hash.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )
    return shown, f"the live nodes run {len(by_hash)} different configs ({groups})"
