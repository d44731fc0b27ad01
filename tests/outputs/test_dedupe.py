"""Cross-feed dedupe: match keys, text fingerprints, grouping, and the merged output."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from conftest import DATA_DIR
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_support import TESTS

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import canonical_url, identify
from aggregator.ingest.parse import parse_feed
from aggregator.models import ParsedEntry, PollRecord, StoredEntry
from aggregator.outputs.dedupe import (
    DedupeSettings,
    exact_keys,
    fingerprint_text,
    group,
    match_key,
    resemblance,
    story_text,
)
from aggregator.outputs.plan import plan_output, render_output
from aggregator.outputs.publish import SOURCE_SCHEME
from aggregator.store.sqlite import SqliteStore as Store

T0 = datetime(2023, 9, 29, 19, 0, tzinfo=UTC)
SEED = DATA_DIR / "text" / "seed-article.txt"
SECTIONS = {
    "russia": "section-russia.rss.xml",
    "world": "section-world.rss.xml",
    "top": "top-stories.atom.xml",
}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://news.example/a/1", "https://news.example/a/1"),
        ("https://NEWS.example/a/1", "https://news.example/a/1/"),
        ("https://www.news.example/a/1?utm_source=x", "https://news.example/a/1"),
        ("http://NEWS.example/russia/583812-x?fbclid=1", "https://news.example/russia/583812-x/"),
    ],
)
def test_match_key_ignores_scheme_host_case_and_trailing_slash(a: str, b: str) -> None:
    assert match_key(a) == match_key(b)


def test_match_key_keeps_canonical_url_unchanged() -> None:
    # canonical_url (identity within a feed) still tells these apart; only match_key merges.
    assert canonical_url("http://a.example/x") != canonical_url("https://a.example/x/")
    assert match_key("https://a.example/x") != match_key("https://a.example/y")
    assert match_key("https://a.example/x?id=1") != match_key("https://a.example/x?id=2")


def _stored(
    feed: str,
    title: str,
    *,
    link: str | None = None,
    guid: str | None = None,
    content: str = "",
    first_seen: datetime = T0,
    published: datetime = T0,
) -> StoredEntry:
    parsed = ParsedEntry(
        guid=guid or f"{feed}:{title}",
        guid_is_permalink=False,
        link=link,
        title=title,
        summary="",
        content=content,
        author="",
        categories=(),
        published=published,
        updated=None,
    )
    [entry] = identify(feed, [parsed], T0 + timedelta(days=1))
    return StoredEntry(
        entry, first_seen, first_seen, feed.title(), f"https://{feed}.example/f", None
    )


STORY = (
    "<p>Moscow wants Latin America to be strong, independent and successful, and wishes to "
    "maintain and develop ties with every country in the region, the president said on Friday "
    "during the opening ceremony of a parliamentary conference in Moscow.</p>"
)
CHROME = (
    '<div class="icons">icon bookmark-bicon bookmarkicon cameraicon checkicon chevron downicon '
    "chevron lefticon chevron righticon closeicon downloadicon editicon fbicon fileicon</div>"
    "<p>29 Sep, 2023 18:28</p>"
)


def test_story_text_drops_the_icon_line_of_the_seed_article() -> None:
    text = story_text("", "", SEED.read_text(encoding="utf-8"))
    assert "bookmarkicon" not in text and "chevron" not in text and "18 28" not in text
    # The headline lines are short blocks: left out, the story's paragraphs are the print.
    assert text.startswith("countries in the region will play")
    assert text.endswith("maintaining international security for all")


def test_near_duplicates_with_page_chrome_and_new_headline_match() -> None:
    a = fingerprint_text(story_text("Russia wants strong Latin America", "", STORY))
    b = fingerprint_text(story_text("Putin: Latin America must be strong", "", CHROME + STORY))
    assert a is not None and b is not None
    assert resemblance(a, b) == 1.0


def test_different_story_with_a_similar_headline_does_not_match() -> None:
    other = (
        "<p>Brazil wants Latin America to trade in local currencies, its finance minister said on "
        "Monday after a meeting of regional central bank governors in Brasilia about payments.</p>"
    )
    a = fingerprint_text(story_text("Russia wants strong Latin America", "", STORY))
    b = fingerprint_text(story_text("Brazil wants strong Latin America", "", other))
    assert a is not None and b is not None
    assert resemblance(a, b) < 0.5


def test_short_texts_are_not_fingerprinted() -> None:
    assert fingerprint_text(story_text("Breaking", "", "<p>Live updates follow.</p>")) is None


def test_bare_guid_is_not_a_cross_feed_key_but_a_url_or_tag_guid_is() -> None:
    assert exact_keys(_stored("a", "x", guid="583812")) == frozenset()
    assert exact_keys(_stored("a", "x", guid="https://n.example/1/")) == {"link:n.example/1"}
    assert exact_keys(_stored("a", "x", guid="tag:n.example,2023:1")) == {
        "guid:tag:n.example,2023:1"
    }


def test_representative_is_earliest_first_seen_then_feed_order() -> None:
    link = "https://n.example/story"
    a = _stored("a", "A", link=link, first_seen=T0)
    b = _stored("b", "B", link=link, first_seen=T0 - timedelta(minutes=5))
    c = _stored("c", "C", link=link, first_seen=T0 - timedelta(minutes=5))
    [story] = group([a, b, c], DedupeSettings(), {"c": 0, "b": 1, "a": 2})
    assert story.item.entry.feed == "c"
    assert [s.entry.feed for s in story.merged] == ["b", "a"]


def test_modes() -> None:
    link = "https://n.example/story"
    a = _stored("a", "A", link=link, content=STORY)
    b = _stored("b", "B", link=link.replace("https", "http") + "/")
    c = _stored("c", "C", link="https://other.example/x", content=CHROME + STORY)
    assert len(group([a, b, c], DedupeSettings("off"))) == 3
    assert len(group([a, b, c], DedupeSettings("exact"))) == 2
    assert len(group([a, b, c], DedupeSettings("near"))) == 1
    later = T0 + timedelta(days=5)
    far = replace(c, entry=replace(c.entry, published=later), first_seen=later)
    assert len(group([a, b, far], DedupeSettings("near", window=timedelta(days=2)))) == 2


def test_window_compares_publisher_dates_not_first_seen_times() -> None:
    """`dedupe_window` is measured between publication dates. A feed added later first sees a
    story days after the others did, and its copy still merges; a backlog first seen all at
    once does not put posts of different weeks into one window."""
    window = DedupeSettings("near", window=timedelta(days=2))
    early = _stored("a", "A", link="https://a.example/1", content=STORY)
    late_subscriber = _stored(
        "b", "B", link="https://b.example/1", content=CHROME + STORY,
        first_seen=T0 + timedelta(days=10), published=T0 + timedelta(hours=1),
    )  # fmt: skip
    assert len(group([early, late_subscriber], window)) == 1
    weekly = _stored(
        "c", "C", link="https://c.example/1", content=STORY,
        first_seen=T0, published=T0 - timedelta(days=10),
    )  # fmt: skip
    assert len(group([early, weekly], window)) == 2


# --- properties ------------------------------------------------------------------------------

BODIES = [
    STORY,
    CHROME + STORY,
    "<p>The central bank raised its key rate by half a point on Thursday, the fourth increase "
    "this year, citing inflation that remains well above the target of two percent.</p>",
    "<p>Heavy rain is expected in the capital over the weekend, with forecasters warning of "
    "flooding in low-lying districts and disruption to public transport on Saturday.</p>",
]
items_strategy = st.lists(
    st.builds(
        lambda feed, n, body, minutes: _stored(
            feed,
            f"Story {n}",
            link=f"https://n.example/{n}" if n % 3 else None,
            content=body,
            first_seen=T0 + timedelta(minutes=minutes),
        ),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 6),
        st.sampled_from(BODIES),
        st.integers(0, 3),
    ),
    max_size=12,
    unique_by=lambda i: i.entry.uid,
)


@settings(max_examples=60, deadline=None)
@given(items_strategy, st.randoms(use_true_random=False))
def test_any_order_gives_the_same_stories(items: list[StoredEntry], rnd: object) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    order = {"a": 0, "b": 1, "c": 2}
    for mode in ("off", "exact", "near"):
        s = DedupeSettings(mode)  # type: ignore[arg-type]
        assert group(items, s, order) == group(shuffled, s, order)


# --- the three example section feeds, end to end through the store ---------------------------


def _config(tmp_path: Path, **output: object) -> Config:
    return parse_config(
        {
            "aggregator": {"database": str(tmp_path / "db.sqlite")},
            "feeds": [{"name": n, "url": f"https://n.example/{n}.xml"} for n in SECTIONS],
            "outputs": [{"name": "all", "title": "All", **output}],
        }
    )


def _load_sections(
    store: Store, now: datetime = T0, names: tuple[str, ...] = tuple(SECTIONS)
) -> None:
    for name in names:
        filename = SECTIONS[name]
        body = (DATA_DIR / filename).read_bytes()
        parsed = parse_feed(name, body, {}, f"https://n.example/{name}.xml")
        entries = identify(name, parsed.entries, now)
        store.record_poll(
            PollRecord(
                name,
                f"https://n.example/{name}.xml",
                now,
                "ok",
                None,
                title=parsed.title,
                link=parsed.link,
                new=tuple(entries),
                language=parsed.language,
            )
        )


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_three_section_feeds_give_one_story_naming_all_three_sources(
    tmp_path: Path, fmt: str
) -> None:
    config = _config(tmp_path)
    store = Store(config.aggregator.database.path)
    try:
        _load_sections(store)
        rendered = render_output(store, config, "all", fmt)  # type: ignore[arg-type]
    finally:
        store.close()
    # russia: story + rain; world: story + stocks; top: story → 3 stories.
    assert rendered.entries == 3
    instant = datetime(2023, 9, 29, 18, 28, tzinfo=UTC)
    if fmt == "json":
        doc = json.loads(rendered.body)
        [item] = [i for i in doc["items"] if "Putin" in i["title"]]
        assert datetime.fromisoformat(item["date_published"]) == instant
        assert [s["feed"] for s in item["_aggregator"]["sources"]] == ["russia", "world", "top"]
        return
    parsed = feedparser.parse(rendered.body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    [entry] = [e for e in parsed.entries if "Putin" in e.title]
    assert datetime(*entry.published_parsed[:6], tzinfo=UTC) == instant
    others = [t.term for t in entry.tags if t.get("scheme") == SOURCE_SCHEME]
    assert others == ["world", "top"]
    if fmt == "atom":
        assert entry.source.title == "News Example – Russia"
    else:
        assert entry.source.title == "News Example – Russia"


def test_representative_is_the_first_seen_copy(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.aggregator.database.path)
    try:
        # top is polled first; the sections an hour later.
        body = (DATA_DIR / SECTIONS["top"]).read_bytes()
        parsed = parse_feed("top", body, {}, "https://n.example/top.xml")
        store.record_poll(
            PollRecord(
                "top",
                "https://n.example/top.xml",
                T0 - timedelta(hours=1),
                "ok",
                None,
                new=tuple(identify("top", parsed.entries, T0)),
            )
        )
        _load_sections(store, names=("russia", "world"))
        plan = plan_output(store, config, "all", T0)
    finally:
        store.close()
    [story] = [s for s in plan.stories if "Putin" in s.item.entry.title]
    assert story.item.entry.feed == "top"
    assert [m.entry.feed for m in story.merged] == ["russia", "world"]


def test_dedupe_off_keeps_every_copy(tmp_path: Path) -> None:
    config = _config(tmp_path, dedupe="off")
    store = Store(config.aggregator.database.path)
    try:
        _load_sections(store)
        assert render_output(store, config, "all", "atom").entries == 5
    finally:
        store.close()


def _section_entries() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for name, filename in SECTIONS.items():
        parsed = parse_feed(
            name, (DATA_DIR / filename).read_bytes(), {}, f"https://n.example/{name}"
        )
        out.extend((name, e) for e in identify(name, parsed.entries, T0))
    return out


@settings(max_examples=12, deadline=None)
@given(st.permutations(range(5)), st.sampled_from(["atom", "rss", "json"]))
def test_the_same_entries_stored_in_any_order_render_the_same_bytes(
    order: list[int], fmt: str
) -> None:
    entries = _section_entries()
    bodies = []
    for sequence in (range(len(entries)), order):
        with tempfile.TemporaryDirectory() as tmp:
            config = _config(Path(tmp))
            store = Store(config.aggregator.database.path)
            try:
                for i in sequence:
                    name, entry = entries[i]
                    store.record_poll(
                        PollRecord(
                            name, f"https://n.example/{name}.xml", T0, "ok", None, new=(entry,)
                        )  # type: ignore[arg-type]
                    )
                bodies.append(render_output(store, config, "all", fmt).body)  # type: ignore[arg-type]
            finally:
                store.close()
    assert bodies[0] == bodies[1]


def test_fingerprints_are_the_same_in_every_process_and_packed() -> None:
    """Renders must not depend on PYTHONHASHSEED: the same text gives the same sketch in any
    process. Shingles are cached packed, 4 bytes each."""
    import os
    import subprocess
    import sys

    code = (
        "from aggregator.outputs.dedupe import fingerprint_text, story_text\n"
        "from test_dedupe import STORY\n"
        "fp = fingerprint_text(story_text('t', '', STORY))\n"
        "print(fp.sketch, len(fp.packed))\n"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), str(TESTS)]),
        }
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    fp = fingerprint_text(story_text("t", "", STORY))
    assert fp is not None
    assert fp.packed.itemsize == 4
    assert fp.shingles == frozenset(fp.packed)
