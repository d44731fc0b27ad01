"""poll_source(): the one orchestrator of fetch → parse → identify → store for one feed.

It owns the side effects of a poll; the stages it calls decide. A feed's failure is recorded on
that feed as a value and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime

from .config import FeedConfig
from .errors import FeedError
from .fetch import Fetcher
from .filters import Candidate
from .identity import KeyMode, diff, guids_unusable, identify, reconcile
from .models import Entry, NotModified, ParsedFeed, PollOutcome, PollRecord
from .parse import parse_feed
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


def parse_and_identify(
    name: str,
    body: bytes,
    headers: dict[str, str],
    url: str,
    now: datetime,
    mode: KeyMode = "guid",
) -> tuple[ParsedFeed, list[Entry], KeyMode]:
    """Parse a document and key its entries: the CPU part of a poll, run in a worker process.

    A feed keyed by guid switches to link keys, for good, the first time its guids prove
    unusable (missing, blank or repeated); the mode used is returned. The parsed entries are
    dropped from the returned ParsedFeed, so only the identified entries cross back to the
    event loop's process.
    """
    parsed = parse_feed(name, body, headers, url)
    if mode == "guid" and parsed.entries and guids_unusable(parsed.entries):
        mode = "link"
    return replace(parsed, entries=()), identify(name, parsed.entries, now, mode), mode


async def _parse(
    ctx: PollContext,
    name: str,
    body: bytes,
    headers: dict[str, str],
    url: str,
    now: datetime,
    mode: KeyMode,
) -> tuple[ParsedFeed, list[Entry], KeyMode]:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        ctx.parse_pool, parse_and_identify, name, body, headers, url, now, mode
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
                old_mode: KeyMode = (
                    "link" if state is not None and state.key_mode == "link" else "guid"
                )
                parsed, entries, mode = await _parse(
                    ctx, name, result.body, dict(result.headers), result.url, now, old_mode
                )
                feed = ctx.feed_config(name)
                if feed is not None:
                    # Entries a feed's own rules drop are never stored.
                    flt = feed.compiled_filter()
                    entries = [e for e in entries if flt.keeps(Candidate(e, parsed.language, now))]
                known = await ctx.store.read(lambda s: s.known_entries(name))
                entries = reconcile(entries, known)
                policy = feed.update_policy if feed is not None else "update"
                new, updated = diff(entries, known, policy, now)
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
                    new=tuple(new),
                    updated=tuple(updated),
                    language=parsed.language,
                    key_mode=mode if mode != old_mode else None,
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
