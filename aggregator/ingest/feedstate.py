"""A feed's next polling state from its last one and what a poll saw: the only place the rules
of a feed's state live (errors, backoff, redirects, gone, what is kept). Pure: no I/O, no clock.

Every store writes the state these functions return as it is, and the poller keeps the same
object in memory; so the rules below are all there is to know about how a feed's row changes.
Times are whole seconds in UTC, as every store keeps them, so what a poller holds in memory is
exactly what a later read gives back.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from ..models import FeedHints, FeedState, NextKind, PollRecord, PollStatus, Validators

FAILED: frozenset[PollStatus] = frozenset({"error", "gone"})  # count as errors, keep last_ok
_NO_VALIDATORS = Validators()
_NO_HINTS = FeedHints()


def second(when: datetime) -> datetime:
    """`when` as a stored time: UTC, whole seconds."""
    return when.astimezone(UTC).replace(microsecond=0)


def moved(state: FeedState, url: str) -> FeedState:
    """The state of a feed whose configured URL changed to `url`.

    Another URL is another resource: the old one's validators and body hash would make the
    first poll of the new one send the old ETag and compare against the old body; its
    redirect, "gone", hints and backoff concerned the old URL too. Everything people need to
    see of the feed's history (last poll, errors, title, key mode) is kept.
    """
    if state.url == url:
        return state
    return replace(
        state,
        url=url,
        validators=_NO_VALIDATORS,
        body_hash=None,
        backoff_level=0,
        redirect_url=None,
        redirect_count=0,
        gone=False,
        hints=_NO_HINTS,
    )


def poll_url(state: FeedState | None, url: str) -> str:
    """The URL a poll requests: where a permanent redirect said the feed moved, else its own
    (a state of another URL says nothing: see `moved`)."""
    if state is not None and state.url == url and state.redirect_url:
        return state.redirect_url
    return url


def backoff_level(old: FeedState | None, status: PollStatus, network_down: bool) -> int:
    """Consecutive errors that count for backoff, this poll included. An error while the whole
    network is down is not the feed's fault and keeps the level; anything but an error (a 410
    included: it is never retried) ends the run."""
    if status != "error":
        return 0
    level = old.backoff_level if old is not None else 0
    return level if network_down else level + 1


def _redirect(old: FeedState, rec: PollRecord) -> tuple[str | None, int]:
    """The redirect a poll leaves: a new 301/308 target starts counting at 1, each further good
    poll of the same target counts one more; a 302/307 changes nothing; a failed poll proves
    nothing either way and keeps what there was."""
    if rec.status in FAILED:
        return old.redirect_url, old.redirect_count
    moved_to = rec.permanent_url
    if moved_to is not None and moved_to != rec.url:
        return moved_to, old.redirect_count + 1 if moved_to == old.redirect_url else 1
    if moved_to is None and old.redirect_url and old.redirect_url != rec.url:
        # The poll went to the redirect target (poll_url), which answered without moving on.
        return old.redirect_url, old.redirect_count + 1
    return None, 0


def next_state(old: FeedState | None, rec: PollRecord) -> FeedState:
    """The feed's state after the poll `rec` (None: a feed with no state yet).

    - error_count: +1 for an error or a 410, 0 after anything else; last_error likewise.
    - failing_since: the time of the first error of the current run, kept through later
      errors, cleared by any poll that is not an error; last_ok: every poll that is not one.
    - backoff_level: see `backoff_level`; redirect: see `_redirect`; gone: a 410.
    - validators, body hash, title, link, hints, key mode, HTTP status: kept when the poll
      gave none (a 304 has no body, an error has no document).
    - language and warning: those of the last document parsed, changed only by one.
    - next poll, its kind and its reason: the poll's decision, as decided.

    Built directly rather than with dataclasses.replace: this runs once per poll, and replace
    cost a tenth of a 304's time.
    """
    now = second(rec.now)
    base = FeedState(rec.feed, rec.url) if old is None else moved(old, rec.url)
    failed = rec.status in FAILED
    ok = rec.status == "ok"
    redirect_url, redirect_count = _redirect(base, rec)
    return FeedState(
        name=base.name,
        url=rec.url,
        title=rec.title if rec.title is not None else base.title,
        link=rec.link if rec.link is not None else base.link,
        validators=rec.validators if rec.validators is not None else base.validators,
        body_hash=rec.body_hash if rec.body_hash is not None else base.body_hash,
        last_poll=now,
        last_ok=base.last_ok if failed else now,
        last_status=rec.status,
        http_status=rec.http_status if rec.http_status is not None else base.http_status,
        error_count=base.error_count + 1 if failed else 0,
        last_error=rec.error if failed else None,
        next_poll=second(rec.next_poll) if rec.next_poll is not None else None,
        warning=rec.warning if ok else base.warning,
        language=rec.language if ok else base.language,
        key_mode=rec.key_mode if rec.key_mode is not None else base.key_mode,
        next_reason=rec.next_reason,
        next_kind=rec.next_kind,
        backoff_level=backoff_level(base, rec.status, rec.network_down),
        failing_since=(base.failing_since or now) if failed else None,
        redirect_url=redirect_url,
        redirect_count=redirect_count,
        gone=rec.status == "gone",
        hints=rec.hints if rec.hints is not None else base.hints,
    )


def deferred(
    state: FeedState, when: datetime, reason: str, kind: NextKind = NextKind.HOST_DELAY
) -> FeedState:
    """The state of a feed whose poll was put off to `when` without a request (its host asked
    us to wait, or its host_delay had not passed): only the next poll moves."""
    return replace(state, next_poll=second(when), next_reason=reason, next_kind=kind)
