"""Stored entries sanitised again, once, after the sanitiser's policy changed; in the background.
I/O: reads and writes the entries in batches through StoreThreads."""

from __future__ import annotations

import asyncio
import functools
import html
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor

from ..ingest.identity import clean_text
from ..ingest.limits import Limits, Tally, cut_html
from ..ingest.sanitize import SANITIZER_POLICY, sanitize_html
from ..ingest.workers import WorkerDied, WorkTimeout
from ..store.protocol import Sanitized, SanitizeRow, Store
from ..store.threads import StoreThreads

# Why: content is sanitised at ingest and stored sanitised, and renders never sanitise again (an
# entry of HTML nested 100,000 deep cost every render 33 s when they did). So a change of policy
# (a new SANITIZER_POLICY, or a different embed_hosts) is applied to the rows already stored by
# this pass: small batches by rowid, cleaned in the parse pool, written back with their hashes
# unchanged (what a reader sees did not change, so no entry becomes "updated"). Progress is kept
# in the meta table, so a restart resumes where it stopped. A stricter policy removes what it no
# longer allows; a looser one cannot bring back what an earlier one removed (raw HTML is not
# kept).
log = logging.getLogger("aggregator.resanitize")
BATCH_ROWS = 200
Row = SanitizeRow  # rowid, summary, content, link, content hash
Cleaned = Sanitized  # rowid, summary, content, content hash


def policy_of(embed_hosts: Iterable[str]) -> str:
    """What stored content was sanitised under: the sanitiser's rules and the allowed hosts."""
    return f"{SANITIZER_POLICY}; embed_hosts={','.join(sorted(embed_hosts))}"


def _batch(store: Store, after: int) -> list[Row]:
    return store.sanitize_batch(after, BATCH_ROWS)


def _write(store: Store, policy: str, cleaned: Sequence[Cleaned], last: int, done: bool) -> int:
    return store.write_sanitized(policy, cleaned, last, done)


def _clean(fragment: str, link: str | None, embed_hosts: frozenset[str], limits: Limits) -> str:
    if not fragment:
        return fragment
    cut = cut_html(fragment, limits, Tally(), "stored")
    return clean_text(sanitize_html(cut, link, embed_hosts))


def clean_rows(rows: Sequence[Row], embed_hosts: frozenset[str], limits: Limits) -> list[Cleaned]:
    """The rows whose summary or content the current policy changes, as they should be. Pure
    and CPU-bound: it runs in the parse pool, under its deadline."""
    out = []
    for rowid, summary, content, link, content_hash in rows:
        new = (
            _clean(summary, link, embed_hosts, limits),
            _clean(content, link, embed_hosts, limits),
        )
        if new != (summary, content):
            out.append((rowid, *new, content_hash))
    return out


def _as_text(row: Row) -> Cleaned:
    """A row the sanitiser could not finish within the deadline: kept, as escaped text."""
    return (row[0], html.escape(row[1], quote=False), html.escape(row[2], quote=False), row[4])


async def _cleaned(
    pool: Executor | None,
    rows: list[Row],
    hosts: frozenset[str],
    limits: Limits,
    retried: bool = False,
) -> list[Cleaned]:
    """The batch cleaned; WorkerDied when its worker died twice (the pass stops there)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(pool, clean_rows, rows, hosts, limits)
    except WorkerDied:
        # A dead worker says nothing about the rows (it may have failed to start, run out of
        # memory, or the pool be shutting down): the rows are not given up as text for it.
        # Once more with a fresh worker; a second death stops the pass, to resume later.
        if retried:
            raise
        return await _cleaned(pool, rows, hosts, limits, retried=True)
    except WorkTimeout:
        if len(rows) == 1:
            log.warning("re-sanitising entry rowid %d ran out of time: kept as text", rows[0][0])
            return [_as_text(rows[0])]
    out: list[Cleaned] = []
    for row in rows:  # one slow row must not hold back the rest of its batch
        out.extend(await _cleaned(pool, [row], hosts, limits))
    return out


async def resanitize(
    store: StoreThreads,
    pool: Executor | None,
    embed_hosts: frozenset[str],
    limits: Limits,
    on_write: Callable[[int], None] = lambda generation: None,
) -> int:
    """Bring every stored row to the current policy; returns how many rows changed."""
    policy = policy_of(embed_hosts)
    after = await store.read(lambda s: s.sanitize_resume(policy))
    if after is None:
        return 0
    log.info("re-sanitising stored entries for policy %r, from rowid %d", policy, after)
    changed = 0
    while True:
        rows = await store.read(functools.partial(_batch, after=after))
        try:
            cleaned = await _cleaned(pool, rows, embed_hosts, limits) if rows else []
        except WorkerDied as e:
            # The progress written so far stays: the next start resumes after rowid `after`.
            log.warning(
                "re-sanitising stopped after rowid %d (resumed at the next start): %s", after, e
            )
            return changed
        last = rows[-1][0] if rows else after
        done = len(rows) < BATCH_ROWS
        generation = await store.write(
            functools.partial(_write, policy=policy, cleaned=cleaned, last=last, done=done)
        )
        changed += len(cleaned)
        if cleaned:
            on_write(generation)
        if done:
            log.info("re-sanitising done: %d entries changed", changed)
            return changed
        after = last
