"""Identity within a feed under hostile publishers, through the real poller on loopback:
unusable guids, a mass guid change, volatile-only edits, update_policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feedserver import FeedServer
from test_poll import T0, entries_of, poll, run_polls, state_of

from aggregator.config.load import parse_config
from aggregator.config.resolved import Feed
from aggregator.ingest.decide import PollPolicy
from aggregator.ingest.identity import guids_unusable, stable_hash
from aggregator.ingest.poll import PollContext, poll_source
from aggregator.models import ParsedEntry


def one_feed(**keys: object) -> Feed:
    """Feed "f" as the config resolves it, with `keys` in its table."""
    return parse_config({"feeds": [{"name": "f", "url": "https://t.example/f", **keys}]}).feeds["f"]


def rss(*items: tuple[str | None, str, str, str]) -> bytes:
    """An RSS 2.0 document of (guid, link, title, description) items."""
    parts = []
    for n, (guid, link, title, desc) in enumerate(items):
        g = "" if guid is None else f"<guid isPermaLink='false'>{guid}</guid>"
        date = (datetime(2024, 3, 1, tzinfo=UTC) - timedelta(hours=n)).strftime(
            "%a, %d %b %Y %H:%M:%S GMT"
        )
        parts.append(
            f"<item>{g}<link>{link}</link><title>{title}</title>"
            f"<description>{desc}</description><pubDate>{date}</pubDate></item>"
        )
    return (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>"
        "<link>https://t.example/</link><description>d</description>"
        + "".join(parts)
        + "</channel></rss>"
    ).encode()


ITEMS = [
    ("a-1", "https://t.example/1", "One", "First story body."),
    ("a-2", "https://t.example/2", "Two", "Second story body."),
    ("a-3", "https://t.example/3", "Three", "Third story body."),
]


def _polls(
    feed_server: FeedServer,
    db: Path,
    docs: list[bytes],
    feed: Feed | None = None,
) -> list[tuple[int, int]]:
    """Serve each document in turn and poll it; (new, updated) of every poll."""
    url = feed_server.url("/f.xml")

    async def go(ctx: PollContext) -> list[tuple[int, int]]:
        out = []
        for i, doc in enumerate(docs):
            feed_server.serve_bytes("/f.xml", doc, etag=False, last_modified=False)
            now = T0 + timedelta(hours=i)
            if feed is None:
                o = await poll(ctx, "f", url, now)
            else:
                policy = PollPolicy(timedelta(hours=1), jitter=False)
                o = await poll_source(ctx, replace(feed, url=url, policy=policy), now)
            assert o.status == "ok", o.error
            out.append((o.new, o.updated))
        return out

    return run_polls(db, go)


def test_mass_guid_change_does_not_flood(feed_server: FeedServer, tmp_path: Path) -> None:
    rekeyed = [(f"b-{g}", link, t, d) for g, link, t, d in ITEMS]
    db = tmp_path / "x.db"
    assert _polls(feed_server, db, [rss(*ITEMS), rss(*rekeyed)]) == [(3, 0), (0, 0)]
    assert len(entries_of(db, "f")) == 3


def test_missing_guids_switch_the_feed_to_link_keys_for_good(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    db = tmp_path / "x.db"
    blank = [(None, *ITEMS[0][1:]), *ITEMS[1:]]
    new_item = ("a-4", "https://t.example/4", "Four", "Fourth story body.")
    counts = _polls(feed_server, db, [rss(*ITEMS), rss(*blank), rss(*ITEMS, new_item)])
    # The switch re-keys nothing visible: stored entries are matched by link.
    assert counts == [(3, 0), (0, 0), (1, 0)]
    assert state_of(db, "f").key_mode == "link"
    keys = {e.entry.key for e in entries_of(db, "f")}
    assert "link:https://t.example/4" in keys  # later entries get link keys, guids notwithstanding


def test_repeated_guids_are_unusable() -> None:
    def p(guid: str | None) -> ParsedEntry:
        return ParsedEntry(guid, False, None, "t", "", "", "", (), None, None)

    assert not guids_unusable([p("a"), p("b")])
    assert guids_unusable([p("a"), p("a")])
    assert guids_unusable([p("a"), p("  ")])
    assert guids_unusable([p(None)])


@pytest.mark.parametrize(
    ("before", "after", "volatile"),
    [
        ("Read 1,204 views so far.", "Read 1,391 views so far.", True),
        ("Updated 10:02 GMT. Rain.", "Updated 11:47 GMT. Rain.", True),
        ("As of 2024-03-01T10:00:00Z.", "As of 2024-03-01T12:30:00Z.", True),
        ("Posted 5 minutes ago.", "Posted 2 hours ago.", True),
        (
            '<a href="https://x.example/a?utm_source=rss">x</a>',
            '<a href="https://x.example/a?utm_source=mail">x</a>',
            True,
        ),
        ("12 comments", "15 comments", True),
        ("The rate rose to 5 percent.", "The rate rose to 6 percent.", False),
        ("Rain expected.", "Heavy rain expected.", False),
    ],
)
def test_volatile_parts_do_not_change_the_stable_hash(
    before: str, after: str, volatile: bool
) -> None:
    def p(text: str) -> ParsedEntry:
        return ParsedEntry("g", False, "https://t.example/1", "T", text, "", "", (), None, None)

    assert (stable_hash(p(before)) == stable_hash(p(after))) is volatile


def test_volatile_only_edit_is_not_an_update(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    v1 = [(g, link, t, d + " 10 views") for g, link, t, d in ITEMS]
    v2 = [(g, link, t, d + " 250 views") for g, link, t, d in ITEMS]
    v3 = [(g, link, t + " (corrected)", d + " 260 views") for g, link, t, d in ITEMS]
    assert _polls(feed_server, db, [rss(*v1), rss(*v2), rss(*v3)]) == [(3, 0), (0, 0), (0, 3)]


@pytest.mark.parametrize(
    ("policy", "updated", "title"), [("update", 1, "One!"), ("ignore", 0, "One")]
)
def test_update_policy(
    feed_server: FeedServer, tmp_path: Path, policy: str, updated: int, title: str
) -> None:
    db = tmp_path / "x.db"
    feed = one_feed(update_policy=policy)
    edited = [("a-1", "https://t.example/1", "One!", "First story body."), *ITEMS[1:]]
    assert _polls(feed_server, db, [rss(*ITEMS), rss(*edited)], feed) == [(3, 0), (0, updated)]
    assert {e.entry.title for e in entries_of(db, "f")} == {title, "Two", "Three"}


def test_republish_dates_the_edit_at_the_poll(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed = one_feed(update_policy="republish")
    edited = [*ITEMS[:2], ("a-3", "https://t.example/3", "Three!", "Third story body.")]
    _polls(feed_server, db, [rss(*ITEMS), rss(*edited)], feed)
    first = entries_of(db, "f")[0]
    assert first.entry.title == "Three!"
    assert first.entry.published == T0 + timedelta(hours=1)


def test_feed_filters_drop_entries_before_storing(feed_server: FeedServer, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    feed = one_feed(exclude=["second"])
    assert _polls(feed_server, db, [rss(*ITEMS)], feed) == [(2, 0)]
    assert {e.entry.title for e in entries_of(db, "f")} == {"One", "Three"}
