"""poll_source(): the one orchestrator of a poll of one feed: fetch, parse, identify, store.

It owns the side effects of a poll; the steps it calls decide: hosts.py whether it may run now,
decide.py when the next one is, feedstate.py the feed's next state, which is written whole. A
feed's failure is recorded on that feed as a value and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..config.secret import redact
from ..errors import FeedError, FetchError, error_kind
from ..ingest.context import Feed, PollContext, PollFeed
from ..ingest.decide import Decision, Signals, cache_signals, decide, entry_gap
from ..ingest.decide import retry_after as decide_retry_after
from ..ingest.digest import Digest, digest, digest_in
from ..ingest.feedstate import backoff_level, deferred, moved, next_state, poll_url
from ..ingest.hosts import HostWait, origin
from ..ingest.identity import KeyMode
from ..logs import fields
from ..models import Entry, FeedHints, FeedState, Fetched, NotModified, PollOutcome, PollRecord
from ..outputs.filters import Candidate, Filter
from ..store.protocol import AheadWrite, Store

__all__ = ["Digest", "Feed", "PollContext", "PollFeed", "digest", "poll_source"]

_NO_HINTS = FeedHints()

log = logging.getLogger("aggregator.poll")


async def poll_source(
    ctx: PollContext,
    feed: PollFeed,
    now: datetime,
    started: Callable[[], datetime] | None = None,
) -> PollOutcome:
    """Poll one feed once, decide its next poll, and commit both in one transaction.

    `now` is the poll's single notion of the current time (first-seen times, last_poll, the
    decision). No request is sent for a feed that is gone, nor to a host that is blocked by a
    Retry-After or whose `host_delay` has not passed: the poll is then "deferred" to the time
    it may run. A 304 or a byte-identical body stops early and parses nothing.

    `started`, when given, is called once the poll holds its slot of `ctx.work`, before
    anything else, and the time it returns is the poll's `now` instead: a poll that waited for
    a slot neither counts as under way nor dates itself from before the wait.
    """
    # A slot is held from the request until the poll's entries are committed: fetching outruns
    # parsing, and parsing can outrun the writer, so without this bound fetched bodies and
    # parsed entries would pile up in memory (the cold bench round reached 759 MB for 2000
    # feeds). A poll with no entries to write gives its slot back before its write.
    slot = _Slot(ctx.work)
    await slot.acquire()
    try:
        if started is not None:
            now = started()
        return await _poll(ctx, feed, now, slot)
    finally:
        slot.release()


async def _poll(ctx: PollContext, feed: PollFeed, now: datetime, slot: _Slot) -> PollOutcome:
    """The steps of a poll: state, host wait, attempt, decision, next state, one write."""
    started = time.monotonic()
    old = await _state(ctx, feed)
    if old is not None and old.gone:
        return PollOutcome(feed.name, "gone", reason=old.next_reason or "gone")
    url = poll_url(old, feed.url)
    host = origin(url)
    last_poll = old.last_poll if old is not None else None
    wait = ctx.hosts.wait(host, now, feed.name, last_poll, ctx.rng)
    if wait is not None:
        return await _defer(ctx, feed, old, wait)
    try:
        seen = await _attempt(ctx, feed, old, url, host, now)
    except _Blocked:
        wait = ctx.hosts.wait(host, now, feed.name, last_poll, ctx.rng)
        assert wait is not None  # the block just seen is still ahead of `now`
        return await _defer(ctx, feed, old, wait)
    decision, network_down = await _decide(ctx, feed, old, seen, host, now)
    # One replace for all that is known only now: dataclasses.replace is dear on this path.
    rec = replace(
        seen.rec,
        next_poll=decision.when,
        next_reason=decision.reason,
        next_kind=decision.kind,
        network_down=network_down,
    )
    await _save(ctx, old, rec, slot)
    outcome = PollOutcome(
        feed=feed.name,
        status=rec.status,
        new=len(rec.new),
        updated=len(rec.updated),
        error=rec.error,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        next_poll=decision.when,
        reason=decision.reason,
        error_kind=seen.error_kind if rec.status == "error" else None,
    )
    log_outcome(outcome, rec.warning)
    return outcome


async def _state(ctx: PollContext, feed: PollFeed) -> FeedState | None:
    """The feed's state as last written: from memory, else the poll's one read before its
    request. A state stored for another URL is that of a moved feed (see feedstate.moved)."""
    state = ctx.states.get(feed.name, ctx.store.external_changes)
    if state is None:
        name = feed.name
        state = await ctx.store.read_batched(lambda s: s.poll_state(name))
    return moved(state, feed.url) if state is not None else None


class _Blocked(Exception):
    """The host came under a Retry-After while this poll waited for its slot."""


async def _defer(
    ctx: PollContext, feed: PollFeed, old: FeedState | None, wait: HostWait
) -> PollOutcome:
    """Record that the poll waits until `wait.when`, without a request."""

    def step(base: FeedState | None) -> FeedState:
        return deferred(base or FeedState(feed.name, feed.url), wait.when, wait.reason, wait.kind)

    lease = ctx.lease

    def write(store: Store) -> FeedState:
        return _settle(store, feed.name, old, step, lease=lease)[1]

    ctx.states.put(await ctx.store.write_batched(write))
    return PollOutcome(feed.name, "deferred", next_poll=wait.when, reason=wait.reason)


def _settle(
    store: Store,
    name: str,
    old: FeedState | None,
    step: Callable[[FeedState | None], FeedState],
    new: tuple[Entry, ...] = (),
    updated: tuple[Entry, ...] = (),
    lease: str | None = None,
) -> tuple[int, FeedState]:
    """Write `step(old)` with the poll's entries (on the writer thread) while the feed's row
    still holds `old`; if another process (`aggregator fetch`, say) wrote the row after the
    poll read it, the same step over the row as that process left it, so that the whole-state
    write loses nothing of that write. The generation after the write, and the state written.
    With a `lease` (a claimed feed, PostgreSQL), LeaseLost when another poller holds it now."""
    base = old
    while True:
        state = step(base)
        generation = store.save_poll_if(base, state, new, updated, lease)
        if generation is not None:
            return generation, state
        base = store.poll_state(name)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What one attempt learnt: the poll's record (still without its decision) and what only
    the decision needs."""

    rec: PollRecord
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after: str | None = None  # the raw header of a failed response
    unreachable: bool = False  # failed without any HTTP answer: DNS, refused, timeout
    error_kind: str | None = None


async def _attempt(
    ctx: PollContext, feed: PollFeed, old: FeedState | None, url: str, host: str, now: datetime
) -> _Seen:
    """The request and, when the body is new, its parse: a 304 and a body of the hash last
    seen stop before the parse; a failure is a record too."""
    try:
        async with ctx.hosts.slot(host):
            if ctx.hosts.blocked_until(host, now) is not None:
                # A poll of the host answered Retry-After while this one queued for its slot.
                raise _Blocked
            validators = old.validators if old is not None else None
            sent = await ctx.hosts.pace(host)
            result = await ctx.fetcher.fetch(
                feed.name, url, validators, feed.request_options, sent=sent
            )
    except FeedError as e:
        return _failed(feed, now, e, e.status if isinstance(e, FetchError) else None)
    headers = result.headers
    if isinstance(result, NotModified):
        rec = PollRecord(
            feed.name,
            feed.url,
            now,
            "not_modified",
            None,
            http_status=304,
            permanent_url=result.permanent_url,
        )
        return _Seen(rec, headers)
    body_hash = hashlib.sha256(result.body).hexdigest()
    if old is not None and old.body_hash == body_hash:
        rec = PollRecord(
            feed.name,
            feed.url,
            now,
            "unchanged",
            None,
            http_status=result.status,
            validators=result.validators,
            permanent_url=result.permanent_url,
        )
        return _Seen(rec, headers)
    try:
        return _Seen(await _parsed(ctx, feed, old, result, body_hash, now), headers)
    except FeedError as e:
        return _failed(feed, now, e, result.status)


async def _parsed(
    ctx: PollContext,
    feed: PollFeed,
    old: FeedState | None,
    result: Fetched,
    body_hash: str,
    now: datetime,
) -> PollRecord:
    """The record of a new body: parsed and keyed in a worker against the known entries (read
    only now, when they are needed), then filtered by the feed's own rules."""
    old_mode: KeyMode = "link" if old is not None and old.key_mode == "link" else "guid"
    name = feed.name
    known = await ctx.store.read_batched(lambda s: s.known_entries(name))
    d = await digest_in(
        ctx.parse_pool,
        name,
        result.body,
        dict(result.headers),
        result.url,
        now,
        known,
        old_mode,
        feed.update_policy,
        ctx.embed_hosts,
        ctx.limits,
    )
    parsed = d.feed
    return PollRecord(
        name,
        feed.url,
        now,
        "ok",
        None,
        http_status=result.status,
        validators=result.validators,
        body_hash=body_hash,
        title=parsed.title or None,
        link=parsed.link,
        warning=parsed.warning,
        new=kept(feed.filter, d.new, parsed.language, now),
        updated=kept(feed.filter, d.updated, parsed.language, now),
        language=parsed.language,
        key_mode=d.key_mode if d.key_mode != old_mode else None,
        hints=parsed.hints,
        permanent_url=result.permanent_url,
    )


def kept(
    rules: Filter | None, entries: tuple[Entry, ...], language: str | None, now: datetime
) -> tuple[Entry, ...]:
    """The entries a feed's own rules keep (those they drop are never stored). Pure."""
    if rules is None:
        return entries
    return tuple(e for e in entries if rules.keeps(Candidate(e, language, now)))


def _failed(feed: PollFeed, now: datetime, e: FeedError, status: int | None) -> _Seen:
    """The record of a failed poll (`status`: the HTTP status, if any answer came)."""
    rec = PollRecord(
        feed.name,
        feed.url,
        now,
        "gone" if status == 410 else "error",
        None,
        http_status=status,
        # Stored and shown everywhere: blank any secret a library's message may have quoted.
        error=redact(e.message),
    )
    fetch = e if isinstance(e, FetchError) else None
    return _Seen(
        rec,
        retry_after=fetch.retry_after if fetch is not None else None,
        unreachable=fetch is not None and fetch.status is None,
        error_kind=error_kind(e),
    )


async def _decide(
    ctx: PollContext, feed: PollFeed, old: FeedState | None, seen: _Seen, host: str, now: datetime
) -> tuple[Decision, bool]:
    """The next poll (decide.py) from what the attempt saw, with the host-wide and
    network-wide bookkeeping; and whether the network was down (no backoff then)."""
    rec = seen.rec
    ctx.network.record(now, host, seen.unreachable)
    hints = rec.hints if rec.hints is not None else old.hints if old is not None else _NO_HINTS
    signals: Signals
    network_down = False
    if rec.status == "gone":
        signals = Signals("gone")
    elif rec.status == "error":
        retry = decide_retry_after(seen.retry_after, now)
        if retry is not None:
            # A 429 or 503 speaks for the whole host: every feed on it waits.
            ctx.hosts.block(host, retry)
        network_down = seen.unreachable and ctx.network.down(now)
        level = backoff_level(old, "error", network_down)
        signals = Signals(
            "error", hints, retry_after=retry, backoff_level=level, network_down=network_down
        )
    else:
        max_age, expires = cache_signals(seen.headers, now)
        gap = None
        if feed.policy.adaptive:
            name = feed.name
            stored = await ctx.store.read(lambda s: s.recent_published(name))
            fresh = [e.published for e in rec.new if e.date_known]
            gap = entry_gap(sorted([*stored, *fresh], reverse=True)[:20], now)
        signals = Signals("ok", hints, max_age, expires, entry_gap=gap)
    return decide(feed.policy, now, signals, ctx.rng), network_down


async def _save(ctx: PollContext, old: FeedState | None, rec: PollRecord, slot: _Slot) -> None:
    """The poll's one write: the feed's next state (feedstate.next_state), whole, with its new
    and updated entries (and their article pages queued), in one transaction; then the cache
    holds what was written."""
    articles, lease = ctx.articles, ctx.lease

    def write(store: Store) -> tuple[int, FeedState]:
        step = functools.partial(next_state, rec=rec)
        generation, state = _settle(store, rec.feed, old, step, rec.new, rec.updated, lease)
        if articles is not None:
            generation = articles.mark(store, rec) or generation
        return generation, state

    if not rec.new and not rec.updated:
        # Nothing big is held any more (the body is gone): the write of a 304, an unchanged
        # body or an error must not keep a fetch waiting while the batch lingers.
        slot.release()
    # A claimed feed's state-only write may be made with the batch's others (postgres_ahead).
    ahead = None
    if lease is not None and old is not None and not rec.new and not rec.updated:
        ahead = AheadWrite(old, rec, lease)
    try:
        generation, state = await ctx.store.write_batched(write, ahead)
    except BaseException:
        ctx.states.drop(rec.feed)
        raise
    ctx.states.put(state)
    ctx.on_write(generation)
    if articles is not None and (rec.new or rec.updated):
        articles.wake()


class _Slot:
    """One hold on a semaphore, released at most once."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = False

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


def log_outcome(outcome: PollOutcome, warning: str | None = None) -> None:
    """One line per poll: feed, status, new, updated, milliseconds (and the error, if any);
    in JSON logs each of them is a key."""
    level = logging.WARNING if outcome.status == "error" else logging.INFO
    extra = f" error={outcome.error!r}" if outcome.error else ""
    if warning:
        extra += f" warning={warning!r}"
    # The line's values, in its order; a JSON log has them as keys, and the error's too.
    shown: dict[str, Any] = {
        "feed": outcome.feed,
        "status": outcome.status,
        "new": outcome.new,
        "updated": outcome.updated,
        "ms": outcome.elapsed_ms,
    }
    log.log(
        level,
        "poll feed=%s status=%s new=%d updated=%d ms=%d%s",
        *shown.values(),
        extra,
        extra=fields(
            "poll", **shown, error=outcome.error, error_kind=outcome.error_kind, warning=warning
        ),
    )
