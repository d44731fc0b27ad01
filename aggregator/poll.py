"""poll_source(): the one orchestrator of fetch → parse → identify → store for one feed.

It owns the side effects of a poll; the stages it calls decide. A feed's failure is recorded on
that feed as a value and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime

from .config import FeedConfig
from .errors import FeedError
from .fetch import Fetcher
from .filters import Candidate
from .identity import (
    KeyMode,
    Known,
    UpdatePolicy,
    clean_text,
    diff,
    guids_unusable,
    identify,
    reconcile,
)
from .models import Entry, NotModified, ParsedFeed, PollOutcome, PollRecord
from .parse import parse_feed
from .sanitize import sanitize_html
from .store import Store, StoreThreads

log = logging.getLogger("aggregator.poll")


@dataclass(frozen=True, slots=True)
class PollContext:
    """The shared machinery a poll uses. `parse_pool` runs parse_feed off the event loop
    (a process pool in the daemon); `on_write` hears the store generation after each commit;
    `feed_config` gives a feed's current settings (filters, update policy) by name."""

    fetcher: Fetcher
    store: StoreThreads
    parse_pool: Executor | None
    on_write: Callable[[int], None] = lambda generation: None
    feed_config: Callable[[str], FeedConfig | None] = lambda name: None


@dataclass(frozen=True, slots=True)
class Digest:
    """What the worker process sends back: the feed's own metadata and only the entries that
    are new or changed, already sanitised."""

    feed: ParsedFeed  # without entries
    new: tuple[Entry, ...]
    updated: tuple[Entry, ...]
    seen: int  # entries in the document
    key_mode: KeyMode = "guid"  # how the entries were keyed


def _sanitized(entry: Entry) -> Entry:
    # clean_text again after sanitising: the sanitiser decodes character references, and one
    # such as "&#8;" would otherwise put a character XML forbids into every output.
    return replace(
        entry,
        summary=clean_text(sanitize_html(entry.summary, entry.base)),
        content=clean_text(sanitize_html(entry.content, entry.base)),
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
) -> Digest:
    """Parse a document, key its entries, keep those that are new or changed against `known`
    (key → what the store has, or just its content hash), and sanitise only those: the CPU part
    of a poll, run in a worker.

    A feed keyed by guid switches to link keys, for good, the first time its guids prove
    unusable (missing, blank or repeated); `Digest.key_mode` says which mode was used. New keys
    are reconciled with stored entries by link (a mass guid change is not new entries), and
    `policy` decides what an edit does (see `identity.diff`).
    """
    parsed = parse_feed(name, body, headers, url)
    if mode == "guid" and parsed.entries and guids_unusable(parsed.entries):
        mode = "link"
    stored = {k: v if isinstance(v, Known) else Known("", v, None, None) for k, v in known.items()}
    entries = reconcile(identify(name, parsed.entries, now, mode), stored)
    new, updated = diff(entries, stored, policy, now)
    return Digest(
        replace(parsed, entries=()),
        tuple(_sanitized(e) for e in new),
        tuple(_sanitized(e) for e in updated),
        len(entries),
        mode,
    )


async def _digest(
    ctx: PollContext,
    name: str,
    body: bytes,
    headers: dict[str, str],
    url: str,
    now: datetime,
    known: dict[str, Known],
    mode: KeyMode,
    policy: UpdatePolicy,
) -> Digest:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        ctx.parse_pool, digest, name, body, headers, url, now, known, mode, policy
    )


async def poll_source(
    ctx: PollContext, name: str, url: str, now: datetime, next_poll: datetime | None
) -> PollOutcome:
    """Poll one feed once and commit the result in one transaction.

    A 304 or a byte-identical body stops early and parses nothing. `now` is the poll's single
    notion of the current time (first-seen times, last_poll); `next_poll` is stored as when
    the feed is due again.
    """
    started = time.monotonic()
    state = await ctx.store.read(lambda s: s.feed_state(name))
    # A changed URL is a different resource: its validators and body hash do not apply.
    same_url = state is not None and state.url == url
    validators = state.validators if state is not None and same_url else None
    rec: PollRecord
    http_status: int | None = None  # of a 200 whose body then failed to parse
    try:
        result = await ctx.fetcher.fetch(name, url, validators)
        if isinstance(result, NotModified):
            rec = PollRecord(name, url, now, "not_modified", next_poll, http_status=304)
        else:
            body_hash = hashlib.sha256(result.body).hexdigest()
            if same_url and state is not None and state.body_hash == body_hash:
                rec = PollRecord(
                    name,
                    url,
                    now,
                    "unchanged",
                    next_poll,
                    http_status=result.status,
                    validators=result.validators,
                )
            else:
                http_status = result.status
                linked = state is not None and state.key_mode == "link"
                old_mode: KeyMode = "link" if linked else "guid"
                feed = ctx.feed_config(name)
                policy: UpdatePolicy = feed.update_policy if feed is not None else "update"
                known = await ctx.store.read(lambda s: s.known_entries(name))
                d = await _digest(
                    ctx,
                    name,
                    result.body,
                    dict(result.headers),
                    result.url,
                    now,
                    known,
                    old_mode,
                    policy,
                )
                parsed = d.feed
                new, updated = d.new, d.updated
                if feed is not None:
                    # Entries a feed's own rules drop are never stored.
                    flt = feed.compiled_filter()
                    new = tuple(e for e in new if flt.keeps(Candidate(e, parsed.language, now)))
                    updated = tuple(
                        e for e in updated if flt.keeps(Candidate(e, parsed.language, now))
                    )
                rec = PollRecord(
                    name,
                    url,
                    now,
                    "ok",
                    next_poll,
                    http_status=result.status,
                    validators=result.validators,
                    body_hash=body_hash,
                    title=parsed.title or None,
                    link=parsed.link,
                    warning=parsed.warning,
                    new=new,
                    updated=updated,
                    language=parsed.language,
                    key_mode=d.key_mode if d.key_mode != old_mode else None,
                )
    except FeedError as e:
        rec = PollRecord(
            name,
            url,
            now,
            "error",
            next_poll,
            http_status=getattr(e, "status", http_status),
            error=e.message,
        )

    def write(store: Store) -> int:
        return store.record_poll(rec)

    generation = await ctx.store.write(write)
    ctx.on_write(generation)
    outcome = PollOutcome(
        feed=name,
        status=rec.status,
        new=len(rec.new),
        updated=len(rec.updated),
        error=rec.error,
        elapsed_ms=int((time.monotonic() - started) * 1000),
    )
    log_outcome(outcome, rec.warning)
    return outcome


def log_outcome(outcome: PollOutcome, warning: str | None = None) -> None:
    """One line per poll: feed, status, new, updated, milliseconds (and the error, if any)."""
    level = logging.WARNING if outcome.status == "error" else logging.INFO
    extra = f" error={outcome.error!r}" if outcome.error else ""
    if warning:
        extra += f" warning={warning!r}"
    log.log(
        level,
        "poll feed=%s status=%s new=%d updated=%d ms=%d%s",
        outcome.feed,
        outcome.status,
        outcome.new,
        outcome.updated,
        outcome.elapsed_ms,
        extra,
    )
