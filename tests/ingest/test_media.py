"""Podcasts and media: enclosures, Media RSS and iTunes tags stored and republished in every
format, the same episode in two feeds merged, and what counts as an update of a file."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from test_publish_validity import check_html
from tests_support import DATA

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import Known, diff, identify
from aggregator.ingest.media import duration_seconds, media_of_feedparser
from aggregator.ingest.parse import parse_feed
from aggregator.models import Enclosure, PollRecord
from aggregator.outputs.plan import render_output
from aggregator.store.sqlite import SqliteStore as Store

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FEEDS = {"radio": "podcast.rss.xml", "sounds": "podcast.atom.xml"}
NSR_12 = "https://cdn.radio.example.net/audio/nsr-12.mp3"
# Every file of the two podcasts, by story title: what each output format must carry.
FILES = {
    "Field recording: foghorns at dawn": [
        "https://sounds.example.org/media/foghorns.ogg",
        "https://sounds.example.org/media/foghorns.mp3",
    ],
    "Episode 12: The lighthouse keepers": [NSR_12 + "?token=a1b2c3&expires=1704690000"],
    "A harbour timelapse": ["https://sounds.example.org/media/timelapse.webm"],
    "Episode 11: Night buses": [
        "https://cdn.radio.example.net/audio/nsr-11.mp3",
        "https://cdn.radio.example.net/video/nsr-11-720.mp4",
        "https://cdn.radio.example.net/video/nsr-11-360.mp4",
    ],
    "Trailer: season two": ["https://cdn.radio.example.net/audio/trailer-2.m4a"],
}


def parsed(filename: str, body: bytes | None = None) -> Any:
    url = f"https://feeds.example/{filename}"
    return parse_feed(filename, body or (DATA / filename).read_bytes(), {}, url)


def store_podcasts(path: Path) -> Store:
    """Both podcast fixtures polled into a real database, as the daemon stores them."""
    return fill_podcasts(Store(path))


def fill_podcasts(store: Any) -> Any:
    """Both podcast fixtures polled into `store` (either kind)."""
    for name, filename in FEEDS.items():
        feed = parsed(filename)
        new = tuple(identify(name, feed.entries, NOW))
        url = f"https://feeds.example/{filename}"
        store.record_poll(
            PollRecord(name, url, NOW, "ok", None, title=feed.title, link=feed.link, new=new)
        )
    return store


def config(**output: object) -> Config:
    return parse_config(
        {
            "aggregator": {"base_url": "https://agg.example"},
            "feeds": [
                {"name": name, "url": f"https://feeds.example/{f}"} for name, f in FEEDS.items()
            ],
            "outputs": [{"name": "pods", "title": "Pods", **output}],
        }
    )


@pytest.fixture
def store(store: Any) -> Any:
    """conftest's store (SQLite, then PostgreSQL) with both podcasts in it."""
    return fill_podcasts(store)


def render(store: Store, fmt: str) -> bytes:
    return render_output(store, config(), "pods", fmt).body  # type: ignore[arg-type]


def test_the_fixtures_are_read_with_every_file_and_tag() -> None:
    radio = {e.title: e for e in parsed("podcast.rss.xml").entries}
    ep12 = radio["Episode 12: The lighthouse keepers"].media
    assert [(f.url, f.type, f.length) for f in ep12.enclosures] == [
        (NSR_12 + "?token=a1b2c3&expires=1704690000", "audio/mpeg", 48213094)
    ]
    assert (ep12.duration, ep12.explicit, ep12.episode, ep12.season, ep12.episode_type) == (
        4000,
        True,
        12,
        2,
        "full",
    )
    assert ep12.image == "https://radio.example.net/art/nsr-12.jpg"
    ep11 = radio["Episode 11: Night buses"].media
    # The enclosure, then the media:group's two renditions, with size and duration.
    assert [(f.medium, f.length, f.duration) for f in ep11.enclosures] == [
        ("audio", 30111222, None),
        ("video", 220000000, 2475),
        ("video", 80000000, 2475),
    ]
    assert ep11.explicit is False and ep11.image.endswith("nsr-11-thumb.jpg")
    trailer = radio["Trailer: season two"].media
    assert (trailer.duration, trailer.episode_type, trailer.explicit) == (185, "trailer", None)
    authors = radio["Episode 12: The lighthouse keepers"].authors
    # dc:creator and <author> name one person: one author, with the address.
    assert [(a.name, a.email) for a in authors] == [("Ada Brook", "ada@radio.example.net")]
    sounds = {e.title: e for e in parsed("podcast.atom.xml").entries}
    foghorns = sounds["Field recording: foghorns at dawn"]
    assert [(a.name, a.email, a.url) for a in foghorns.authors] == [
        ("Mira Quay", "", "https://sounds.example.org/people/mira"),
        ("Tom Pier", "tom@sounds.example.org", ""),
    ]
    assert len(foghorns.media.enclosures) == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[("4215", 4215), ("01:10:15", 4215), ("70:15", 4215), ("3:05", 185), ("12.5", 12)],
        *[("", None), ("soon", None), ("-3", None), (61, 61)],
    ],
)
def test_durations(text: object, seconds: int | None) -> None:
    assert duration_seconds(text) == seconds


def test_media_content_pictures_are_the_image_not_a_file() -> None:
    media = media_of_feedparser(
        {
            "media_content": [
                {"url": "https://p.example/a.jpg", "medium": "image"},
                {"url": "https://p.example/b.mp4", "type": "video/mp4"},
            ]
        }
    )
    assert media.image == "https://p.example/a.jpg"
    assert [f.url for f in media.enclosures] == ["https://p.example/b.mp4"]


def test_files_survive_the_store(store: Store) -> None:
    stored = {i.entry.title: i.entry for i in store.iter_entries(list(FEEDS))}
    original = {e.title: e for e in parsed("podcast.rss.xml").entries}
    for title in ("Episode 12: The lighthouse keepers", "Episode 11: Night buses"):
        assert stored[title].media == original[title].media
        assert stored[title].authors == original[title].authors
    # Entries without media store nothing for it.
    assert all(
        not i.entry.media or i.entry.media.enclosures or i.entry.media.image
        for i in store.iter_entries(list(FEEDS))
    )


def test_the_same_episode_in_two_feeds_is_one_story(store: Store) -> None:
    doc = json.loads(render(store, "json"))
    titles = [item["title"] for item in doc["items"]]
    assert sorted(titles) == sorted(FILES)  # the guest spot is merged into episode 12
    ep12 = next(i for i in doc["items"] if i["title"].startswith("Episode 12"))
    assert [s["feed"] for s in ep12["_aggregator"]["sources"]] == ["radio", "sounds"]


def _files_by_title(fmt: str, body: bytes) -> dict[str, list[str]]:
    if fmt == "json":
        return {
            i["title"]: [a["url"] for a in i.get("attachments", [])]
            for i in json.loads(body)["items"]
        }
    result = feedparser.parse(body)
    assert not result.bozo, result.get("bozo_exception")
    out = {}
    for e in result.entries:
        if fmt == "atom":
            out[e.title] = [lk.href for lk in e.links if lk.rel == "enclosure"]
        else:  # the one <enclosure>, then every file as media:content
            assert [lk.href for lk in e.links if lk.rel == "enclosure"] == [
                e.media_content[0]["url"]
            ]
            out[e.title] = [c["url"] for c in e.media_content]
    return out


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_every_file_is_in_every_format(store: Store, fmt: str) -> None:
    assert _files_by_title(fmt, render(store, fmt)) == FILES


def test_rss_carries_what_a_podcast_app_plays(store: Store) -> None:
    result = feedparser.parse(render(store, "rss"))
    assert not result.bozo
    assert result.feed.link == "https://agg.example/outputs/pods.html"
    assert result.feed.author == "Pods"
    ep12 = next(e for e in result.entries if e.title.startswith("Episode 12"))
    assert ep12.enclosures[0].type == "audio/mpeg" and ep12.enclosures[0].length == "48213094"
    assert ep12.itunes_duration == "01:06:40"
    assert ep12.itunes_explicit is True
    assert (ep12.itunes_episode, ep12.itunes_season, ep12.itunes_episodetype) == ("12", "2", "full")
    assert ep12.image.href == "https://radio.example.net/art/nsr-12.jpg"
    assert ep12.media_thumbnail[0]["url"] == "https://radio.example.net/art/nsr-12.jpg"
    # Names as dc:creator, the address in <author>.
    assert ep12.author_detail.get("email") == "ada@radio.example.net"
    assert {a.get("name") for a in ep12.authors} == {"Ada Brook"}
    foghorns = next(e for e in result.entries if e.title.startswith("Field"))
    assert foghorns.itunes_duration == "00:12:31"


def test_atom_and_json_keep_several_authors(store: Store) -> None:
    atom = feedparser.parse(render(store, "atom"))
    foghorns = next(e for e in atom.entries if e.title.startswith("Field"))
    assert [(a.get("name"), a.get("email"), a.get("href")) for a in foghorns.authors] == [
        ("Mira Quay", None, "https://sounds.example.org/people/mira"),
        ("Tom Pier", "tom@sounds.example.org", None),
    ]
    doc = json.loads(render(store, "json"))
    item = next(i for i in doc["items"] if i["title"].startswith("Field"))
    assert item["authors"] == [
        {"name": "Mira Quay", "url": "https://sounds.example.org/people/mira"},
        {"name": "Tom Pier", "url": "mailto:tom@sounds.example.org"},
    ]
    assert item["image"] == "https://sounds.example.org/media/foghorns.jpg"
    assert item["attachments"][0] == {
        "url": "https://sounds.example.org/media/foghorns.ogg",
        "mime_type": "audio/ogg",
        "size_in_bytes": 9120334,
        "duration_in_seconds": 751,
    }


def test_html_page_plays_the_files(store: Store) -> None:
    body = render(store, "html")
    checker = check_html(body)
    audio = [a["src"] for t, a in checker.tags if t == "audio"]
    video = [a["src"] for t, a in checker.tags if t == "video"]
    assert NSR_12 + "?token=a1b2c3&expires=1704690000" in audio
    assert "https://cdn.radio.example.net/video/nsr-11-720.mp4" in video
    assert all("controls" in a for t, a in checker.tags if t in ("audio", "video"))
    text = body.decode()
    # The episode's itunes:duration is its first file's; an unknown length is left out.
    assert "nsr-12.mp3 (audio/mpeg, 48.2 MB, 1:06:40)" in text
    assert "trailer-2.m4a (audio/x-m4a, 3:05)" in text


def _known(entries: Any) -> dict[str, Known]:
    return {e.key: Known(e.uid, e.content_hash, e.stable_hash, e.link) for e in entries}


def _edited(old: str, new: str) -> Any:
    body = (DATA / "podcast.rss.xml").read_bytes().replace(old.encode(), new.encode())
    return identify("radio", parsed("podcast.rss.xml", body).entries, NOW)


def test_a_new_signature_in_a_file_url_is_not_an_update() -> None:
    before = identify("radio", parsed("podcast.rss.xml").entries, NOW)
    after = _edited("token=a1b2c3&amp;expires=1704690000", "token=ff00&amp;expires=1704999999")
    assert diff(after, _known(before), "update", NOW) == ([], [])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('length="48213094"', 'length="48213095"'),  # re-encoded
        ("audio/nsr-12.mp3", "audio/nsr-12-fixed.mp3"),  # replaced
    ],
)
def test_a_new_file_or_length_is_an_update(old: str, new: str) -> None:
    before = identify("radio", parsed("podcast.rss.xml").entries, NOW)
    new_entries, updated = diff(_edited(old, new), _known(before), "update", NOW)
    assert new_entries == []
    assert [e.title for e in updated] == ["Episode 12: The lighthouse keepers"]
    assert isinstance(updated[0].media.enclosures[0], Enclosure)


def test_entries_without_files_keep_their_hashes() -> None:
    """Storing media must not make every stored entry look edited after an upgrade."""
    rss20 = identify("f", parsed("rss20.xml").entries, NOW)
    assert all(not e.media.enclosures for e in rss20)
    # Golden hashes of rss20.xml entries, as stored by the versions before media.
    golden = json.loads((DATA / "golden" / "rss20.xml.json").read_text())
    by_key = {g["key"]: g for g in golden}
    assert len(by_key) == len(rss20)
    for e in rss20:
        assert (e.content_hash, e.stable_hash) == (
            by_key[e.key]["content_hash"],
            by_key[e.key].get("stable_hash", e.stable_hash),
        )


def test_odd_types_and_mediums_are_normalised() -> None:
    media = media_of_feedparser(
        {
            "enclosures": [
                {"href": "https://p.example/a.mp3", "type": "Audio/MPEG; codecs=mp3"},
                {"href": "https://p.example/b.bin", "type": "not a type\x0b", "length": "x"},
            ],
            "media_content": [{"url": "https://p.example/c.ogg", "medium": "<script>"}],
        }
    )
    assert [(f.type, f.medium, f.length) for f in media.enclosures] == [
        ("audio/mpeg", "audio", 0),
        ("", "", 0),
        ("", "", 0),
    ]


def test_rows_stored_before_authors_were_kept_name_their_author() -> None:
    from aggregator.models import StoredEntry
    from aggregator.outputs.extensions import people

    [entry] = identify("r", parsed("rss20.xml").entries[:1], NOW)
    old = replace(entry, authors=(), author="jo@blog.example.com (Jo Writer)")
    item = StoredEntry(old, NOW, NOW, "Blog", "https://blog.example.com/feed", None)
    assert [(p.name, p.email) for p in people(item)] == [("Jo Writer", "jo@blog.example.com")]
    plain = StoredEntry(replace(old, author="Jo"), NOW, NOW, "Blog", "https://b.example/", None)
    assert [(p.name, p.email) for p in people(plain)] == [("Jo", "")]


def test_episodes_stored_before_files_get_them_without_being_republished(tmp_path: Path) -> None:
    """An upgrade from a version that stored no files: each episode's files are filled in on
    its next poll, counted as written but never redated, even under "republish"; an entry
    without files is unchanged; the poll after that finds nothing to do."""
    from aggregator.ingest.identity import stable_hash
    from aggregator.models import Media

    path = tmp_path / "old.db"
    store = store_podcasts(path)
    # Make the rows what the version before files wrote: no media, a text-only stable hash.
    for p in parsed("podcast.rss.xml").entries:
        e = identify("radio", [p], NOW)[0]
        store.db.execute(
            "UPDATE entries SET media = NULL, stable_hash = ?, content_hash = ? "
            "WHERE feed = 'radio' AND key = ?",
            [stable_hash(replace(p, media=Media())), "old-" + e.content_hash, e.key],
        )
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_text_only_hashes'")
    store.close()
    store = Store(path)  # applies m011 again, to the rows as an older version left them

    later = datetime(2024, 3, 1, tzinfo=UTC)
    known = store.known_entries("radio")
    entries = identify("radio", parsed("podcast.rss.xml").entries, later, "guid", known)
    new, updated = diff(entries, known, "republish", later)
    with_files = {e.title for e in entries if e.media.enclosures}
    assert new == []
    assert {e.title for e in updated} == with_files
    assert all(e.published < later for e in updated)  # not redated
    store.record_poll(
        PollRecord(
            "radio",
            "https://feeds.example/podcast.rss.xml",
            later,
            "ok",
            None,
            updated=tuple(updated),
        )
    )
    known = store.known_entries("radio")
    again = identify("radio", parsed("podcast.rss.xml").entries, later, "guid", known)
    assert diff(again, known, "republish", later) == ([], [])
    # A real edit after the upgrade is still an update, and republished.
    edited = _edited("audio/nsr-12.mp3", "audio/nsr-12-fixed.mp3")
    _, updated = diff(edited, store.known_entries("radio"), "republish", later)
    assert [e.title for e in updated] == ["Episode 12: The lighthouse keepers"]
    assert updated[0].published == later
    store.close()
