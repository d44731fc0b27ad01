"""poll_source(): the one orchestrator of fetch → parse → identify → store for one feed.

It owns the side effects of a poll; the stages it calls decide. A feed's failure is recorded on
that feed as a value and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..config.resolved import Feed
from ..config.secret import redact
from ..errors import FeedError, FetchError, ParseError, error_kind
from ..ingest.decide import PollPolicy, Signals, cache_signals, decide, entry_gap, jitter
from ..ingest.decide import retry_after as decide_retry_after
from ..ingest.fetch import Fetcher
from ..ingest.hosts import HostGates, NetworkWatch, origin
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
from ..logs import fields
from ..models import (
    Entry,
    FeedHints,
    FeedState,
    Fetched,
    NotModified,
    ParsedFeed,
    PollOutcome,
    PollRecord,
)
from ..outputs.filters import Candidate
from ..store.protocol import Store
from ..store.sqlite import state_after_defer, state_after_poll
from ..store.threads import StoreThreads

if TYPE_CHECKING:
    from ..ingest.articles import ArticleQueue

DEFAULT_WAIT = timedelta(minutes=30)

log = logging.getLogger("aggregator.poll")


class StateCache:
    """Each feed's polling state as this process last wrote it, so that a poll reads nothing
    before its request (the read was a third of a 304's cost). Trusted only while no other
    process has committed to the database (`StoreThreads.external_changes`); cleared whenever
    the daemon rewrites feed rows itself (a reload's sync_feeds)."""

    def __init__(self) -> None:
        self._states: dict[str, FeedState] = {}
        self._seen = 0

    def get(self, name: str, external_changes: int) -> FeedState | None:
        if external_changes != self._seen:
            self._states.clear()
            self._seen = external_changes
        return self._states.get(name)

    def put(self, state: FeedState) -> None:
        self._states[state.name] = state

    def drop(self, name: str) -> None:
        self._states.pop(name, None)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


@dataclass(frozen=True, slots=True)
class PollContext:
    """The shared machinery a poll uses. `parse_pool` runs parse_feed off the event loop
    (a process pool in the daemon); `on_write` hears the store generation after each commit;
    `feed_config` gives a feed's current settings (filters, update policy) by name."""

    fetcher: Fetcher
    store: StoreThreads
    parse_pool: Executor | None
    on_write: Callable[[int], None] = lambda generation: None
    feed_config: Callable[[str], Feed | None] = lambda name: None
    hosts: HostGates = field(default_factory=HostGates)
    network: NetworkWatch = field(default_factory=NetworkWatch)
    rng: random.Random = field(default_factory=random.Random)
    # Polls between request and parsed body; the daemon sizes it to max_concurrency.
    work: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))
    # Hosts whose https iframes (video players) survive sanitising; see sanitize.py.
    embed_hosts: frozenset[str] = frozenset()
    states: StateCache = field(default_factory=StateCache)
    # Queues the article pages of new entries of feeds with full_content (see articles.py).
    articles: ArticleQueue | None = None
    # What one document may make a parse do (see limits.py).
    limits: Limits = DEFAULT_LIMITS


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
    try:
        return await loop.run_in_executor(
            ctx.parse_pool,
            digest,
            name,
            body,
            headers,
            url,
            now,
            known,
            mode,
            policy,
            ctx.embed_hosts,
            ctx.limits,
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


async def poll_source(
    ctx: PollContext,
    name: str,
    url: str,
    now: datetime,
    next_poll: datetime | None = None,
    *,
    policy: PollPolicy | None = None,
) -> PollOutcome:
    """Poll one feed once, decide its next poll, and commit both in one transaction.

    `now` is the poll's single notion of the current time (first-seen times, last_poll, the
    decision). `policy` says how often the feed may be polled; without one, the interval is
    `next_poll - now` with no jitter (for one-off polls and older callers).

    No request is sent for a feed that is gone, nor to a host that is blocked by a Retry-After
    or whose `host_delay` has not passed: the poll is then "deferred" to the time it may run.
    A 304 or a byte-identical body stops early and parses nothing.
    """
    # A slot is held from the request until the poll's entries are committed: fetching outruns
    # parsing, and parsing can outrun the writer, so without this bound fetched bodies and
    # parsed entries would pile up in memory (the cold bench round reached 759 MB for 2000
    # feeds). A poll with no entries to write gives its slot back before its write.
    slot = _Slot(ctx.work)
    await slot.acquire()
    try:
        return await _poll_source(ctx, name, url, now, next_poll, policy=policy, slot=slot)
    finally:
        slot.release()


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


async def _poll_source(
    ctx: PollContext,
    name: str,
    url: str,
    now: datetime,
    next_poll: datetime | None = None,
    *,
    policy: PollPolicy | None = None,
    slot: _Slot | None = None,
) -> PollOutcome:
    if policy is None:
        interval = next_poll - now if next_poll is not None and next_poll > now else DEFAULT_WAIT
        policy = PollPolicy(interval=interval, jitter=False)
    started = time.monotonic()
    state = ctx.states.get(name, ctx.store.external_changes)
    if state is None:
        state = await ctx.store.read_batched(lambda s: s.feed_state(name, count_entries=False))
    # A changed URL is a different resource: its validators, body hash and redirect do not apply.
    same_url = state is not None and state.url == url
    if state is not None and same_url and state.gone:
        return PollOutcome(name, "gone", reason=state.next_reason or "gone")
    target = state.redirect_url if state is not None and same_url and state.redirect_url else url
    host = origin(target)
    last_poll = state.last_poll if state is not None else None
    deferred = _host_wait(ctx, name, host, now, last_poll)
    if deferred is not None:
        return await _defer(ctx, name, state, *deferred)

    validators = state.validators if state is not None and same_url else None
    old_hints = state.hints if state is not None and same_url else FeedHints()
    rec: PollRecord
    result: Fetched | NotModified | None = None
    http_status: int | None = None  # of a 200 whose body then failed to parse
    headers: dict[str, str] = {}
    redirect: dict[str, Any] = {}
    hints: FeedHints | None = None
    new: tuple[Entry, ...] = ()
    unreachable = False  # failed without any HTTP answer: DNS, refused, timeout
    retry_raw: str | None = None
    kind: str | None = None
    feed = ctx.feed_config(name)
    try:
        options = feed.request_options if feed is not None else None
        async with ctx.hosts.slot(host):
            if ctx.hosts.blocked_until(host, now) is not None:
                # A poll of the host answered Retry-After while this one queued for its slot.
                raise _Blocked
            result = await ctx.fetcher.fetch(name, target, validators, options)
        headers = dict(result.headers)
        if isinstance(result, NotModified):
            rec = PollRecord(name, url, now, "not_modified", None, http_status=304)
        else:
            body_hash = hashlib.sha256(result.body).hexdigest()
            if same_url and state is not None and state.body_hash == body_hash:
                rec = PollRecord(
                    name,
                    url,
                    now,
                    "unchanged",
                    None,
                    http_status=result.status,
                    validators=result.validators,
                )
            else:
                http_status = result.status
                linked = state is not None and state.key_mode == "link"
                old_mode: KeyMode = "link" if linked else "guid"
                update_policy: UpdatePolicy = feed.update_policy if feed is not None else "update"
                known = await ctx.store.read_batched(lambda s: s.known_entries(name))
                d = await _digest(
                    ctx,
                    name,
                    result.body,
                    headers,
                    result.url,
                    now,
                    known,
                    old_mode,
                    update_policy,
                )
                parsed = d.feed
                hints = parsed.hints
                new, updated = d.new, d.updated
                if feed is not None:
                    # Entries a feed's own rules drop are never stored.
                    flt = feed.filter
                    new = tuple(e for e in new if flt.keeps(Candidate(e, parsed.language, now)))
                    updated = tuple(
                        e for e in updated if flt.keeps(Candidate(e, parsed.language, now))
                    )
                rec = PollRecord(
                    name,
                    url,
                    now,
                    "ok",
                    None,
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
                    hints=hints,
                )
        redirect = _redirect(state if same_url else None, url, target, result)
    except _Blocked:
        blocked = _host_wait(ctx, name, host, now, last_poll)
        assert blocked is not None  # the block just seen is still ahead of `now`
        return await _defer(ctx, name, state, *blocked)
    except FeedError as e:
        status = e.status if isinstance(e, FetchError) else http_status
        unreachable = isinstance(e, FetchError) and e.status is None
        retry_raw = e.retry_after if isinstance(e, FetchError) else None
        kind = error_kind(e)
        # Stored and shown everywhere: blank any secret a library's message may have quoted.
        error = redact(e.message)
        rec = PollRecord(name, url, now, "error", None, http_status=status, error=error)
        if state is not None and same_url:
            rec = replace(rec, redirect_url=state.redirect_url, redirect_count=state.redirect_count)
        if status == 410:
            rec = replace(rec, status="gone", gone=True)
    result = None  # the body is not needed past this point: let it go before the write

    signals = await _signals(
        ctx, name, host, now, rec, headers, hints or old_hints, new, policy, unreachable, retry_raw
    )
    backoff_level = 0
    if rec.status == "error":
        old_level = state.backoff_level if state is not None else 0
        backoff_level = old_level if signals.network_down else old_level + 1
        signals = replace(signals, backoff_level=backoff_level)
    decision = decide(policy, now, signals, ctx.rng)
    # One replace for all that is known only now: dataclasses.replace is dear on this path.
    rec = replace(
        rec,
        next_poll=decision.when,
        next_reason=decision.reason,
        backoff_level=backoff_level,
        **redirect,
    )
    final = rec

    articles = ctx.articles

    def write(store: Store) -> int:
        generation = store.record_poll(final)
        if articles is not None:
            generation = articles.mark(store, final) or generation
        return generation

    if slot is not None and not final.new and not final.updated:
        # Nothing big is held any more (the body is gone): the write of a 304, an unchanged
        # body or an error must not keep a fetch waiting while the batch lingers.
        slot.release()
    try:
        generation = await ctx.store.write_batched(write)
    except BaseException:
        ctx.states.drop(name)
        raise
    ctx.states.put(state_after_poll(state, final))
    ctx.on_write(generation)
    if articles is not None and (final.new or final.updated):
        articles.wake()
    outcome = PollOutcome(
        feed=name,
        status=rec.status,
        new=len(rec.new),
        updated=len(rec.updated),
        error=rec.error,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        next_poll=decision.when,
        reason=decision.reason,
        error_kind=kind if rec.status == "error" else None,
    )
    log_outcome(outcome, rec.warning)
    return outcome


class _Blocked(Exception):
    """The host came under a Retry-After while this poll waited for its slot."""


async def _defer(
    ctx: PollContext, name: str, state: FeedState | None, when: datetime, why: str
) -> PollOutcome:
    """Record that the poll waits until `when` (for `why`), without a request."""
    await ctx.store.write_batched(lambda s: s.defer_poll(name, when, why))
    if state is not None:
        ctx.states.put(state_after_defer(state, when, why))
    return PollOutcome(name, "deferred", next_poll=when, reason=why)


def _host_wait(
    ctx: PollContext, name: str, host: str, now: datetime, last_poll: datetime | None
) -> tuple[datetime, str] | None:
    """When a poll of `host` may run instead of now, and why; None when it may run now."""
    blocked = ctx.hosts.blocked_until(host, now)
    if blocked is not None:
        # Spread the host's waiting feeds after its Retry-After, those waiting longest first:
        # queueing them in the same order each time starves the last ones of a busy host.
        spread = jitter(blocked - now)
        age = now - last_poll if last_poll is not None else None
        share = min(1.0, (blocked - now) / age) if age else 0.0
        offset = spread * share * ctx.rng.uniform(0.9, 1.0) + spread * ctx.rng.uniform(0, 0.05)
        return blocked + offset, f"Retry-After of {host}"
    free = ctx.hosts.reserve(host, now, name)
    if free is not None:
        return free, f"host_delay of {host}"
    return None


def _redirect(
    state: FeedState | None, url: str, target: str, result: Fetched | NotModified
) -> dict[str, Any]:
    """The redirect a good poll confirms: a new 301/308 target starts counting at 1; each
    further good poll of the same target counts one more. A 302/307 changes nothing."""
    moved = result.permanent_url
    old_url = state.redirect_url if state is not None else None
    old_count = state.redirect_count if state is not None else 0
    if moved is not None and moved != url:
        count = old_count + 1 if moved == old_url else 1
        return {"redirect_url": moved, "redirect_count": count}
    if moved is None and target != url:
        return {"redirect_url": target, "redirect_count": old_count + 1}
    return {"redirect_url": None, "redirect_count": 0}


async def _signals(
    ctx: PollContext,
    name: str,
    host: str,
    now: datetime,
    rec: PollRecord,
    headers: dict[str, str],
    hints: FeedHints,
    new: Sequence[Entry],
    policy: PollPolicy,
    unreachable: bool,
    retry_raw: str | None,
) -> Signals:
    """What this poll tells the decision, and the host-wide and network-wide bookkeeping."""
    ctx.network.record(now, host, unreachable)
    if rec.status == "gone":
        return Signals("gone")
    if rec.status == "error":
        retry = decide_retry_after(retry_raw, now)
        if retry is not None:
            # A 429 or 503 speaks for the whole host: every feed on it waits.
            ctx.hosts.block(host, retry)
        network_down = unreachable and ctx.network.down(now)
        return Signals("error", hints, retry_after=retry, network_down=network_down)
    max_age, expires = cache_signals(headers, now)
    gap = None
    if policy.adaptive:
        stored = await ctx.store.read(lambda s: s.recent_published(name))
        fresh = [e.published for e in new if e.date_known]
        gap = entry_gap(sorted([*stored, *fresh], reverse=True)[:20], now)
    return Signals("ok", hints, max_age=max_age, expires=expires, entry_gap=gap)


def log_outcome(outcome: PollOutcome, warning: str | None = None) -> None:
    """One line per poll: feed, status, new, updated, milliseconds (and the error, if any);
    in JSON logs each of them is a key."""
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
        extra=fields(
            "poll",
            feed=outcome.feed,
            status=outcome.status,
            new=outcome.new,
            updated=outcome.updated,
            ms=outcome.elapsed_ms,
            error=outcome.error,
            error_kind=outcome.error_kind,
            warning=warning,
        ),
    )
