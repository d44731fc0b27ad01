"""digest(): the CPU part of a poll, run in a parse worker: parse a document, key its entries,
keep the new and changed ones and sanitise only those. No I/O; `digest_in` runs it in a pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime

from ..errors import ParseError
from ..ingest.identity import (
    KeyMode,
    Known,
    UpdatePolicy,
    clean_text,
    diff,
    guids_unusable,
    identify,
    reconcile,
)
from ..ingest.limits import DEFAULT_LIMITS, Limits
from ..ingest.parse import parse_feed
from ..ingest.sanitize import sanitize_html
from ..ingest.workers import WorkerDied, WorkTimeout
from ..models import Entry, ParsedFeed


@dataclass(frozen=True, slots=True)
class Digest:
    """What the worker process sends back: the feed's own metadata and only the entries that
    are new or changed, already sanitised."""

    feed: ParsedFeed  # without entries
    new: tuple[Entry, ...]
    updated: tuple[Entry, ...]
    seen: int  # entries in the document
    key_mode: KeyMode = "guid"  # how the entries were keyed


def _sanitized(entry: Entry, embed_hosts: frozenset[str]) -> Entry:
    # clean_text again after sanitising: the sanitiser decodes character references, and one
    # such as "&#8;" would otherwise put a character XML forbids into every output.
    return replace(
        entry,
        summary=clean_text(sanitize_html(entry.summary, entry.base, embed_hosts)),
        content=clean_text(sanitize_html(entry.content, entry.base, embed_hosts)),
        base=None,
    )


def digest(
    name: str,
    body: bytes,
    headers: dict[str, str],
    url: str,
    now: datetime,
    known: Mapping[str, str | Known],
    mode: KeyMode = "guid",
    policy: UpdatePolicy = "update",
    embed_hosts: frozenset[str] = frozenset(),
    limits: Limits = DEFAULT_LIMITS,
) -> Digest:
    """Parse a document, key its entries, keep those that are new or changed against `known`
    (key → what the store has, or just its content hash), and sanitise only those: the CPU part
    of a poll, run in a worker.

    A feed keyed by guid switches to link keys, for good, the first time its guids prove
    unusable (missing, blank or repeated); `Digest.key_mode` says which mode was used. New keys
    are reconciled with stored entries by link (a mass guid change is not new entries), and
    `policy` decides what an edit does (see `identity.diff`).
    """
    parsed = parse_feed(name, body, headers, url, limits)
    if mode == "guid" and parsed.entries and guids_unusable(parsed.entries):
        mode = "link"
    stored = {k: v if isinstance(v, Known) else Known("", v, None, None) for k, v in known.items()}
    entries = reconcile(identify(name, parsed.entries, now, mode, stored), stored)
    new, updated = diff(entries, stored, policy, now)
    return Digest(
        replace(parsed, entries=()),
        tuple(_sanitized(e, embed_hosts) for e in new),
        tuple(_sanitized(e, embed_hosts) for e in updated),
        len(entries),
        mode,
    )


async def digest_in(
    pool: Executor | None,
    name: str,
    body: bytes,
    headers: dict[str, str],
    url: str,
    now: datetime,
    known: dict[str, Known],
    mode: KeyMode,
    policy: UpdatePolicy,
    embed_hosts: frozenset[str],
    limits: Limits,
) -> Digest:
    """`digest` in `pool` (None: the loop's default executor); what goes wrong in the worker
    is this feed's ParseError."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            pool,
            digest,
            name,
            body,
            headers,
            url,
            now,
            known,
            mode,
            policy,
            embed_hosts,
            limits,
        )
    except WorkTimeout as e:
        raise ParseError(
            name, f"parsing took longer than {e.deadline:g} s (parse_timeout); stopped"
        ) from e
    except WorkerDied as e:
        raise ParseError(name, f"the parse worker failed: {e}") from e
    except (RecursionError, MemoryError) as e:
        # Limits keep documents far from these; should one still happen, it is this feed's.
        raise ParseError(name, f"the document is too complex to parse ({type(e).__name__})") from e
