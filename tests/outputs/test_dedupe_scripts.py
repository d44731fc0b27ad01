"""Stories in Urdu and Chinese from four real feed files, through parse, identity, the store and
every output format: one story carried by two sites is one entry, different stories of one
site inside the same chrome stay apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from conftest import DATA_DIR

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import identify
from aggregator.ingest.parse import parse_feed
from aggregator.models import PollRecord
from aggregator.outputs.plan import render_output
from aggregator.store.sqlite import SqliteStore as Store

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
FEEDS = {
    "misal": "urdu-misal.rss.xml",
    "akhbar": "urdu-akhbar.atom.xml",
    "ribao": "chinese-ribao.rss.xml",
    "wanbao": "chinese-wanbao.atom.xml",
}


def _config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "aggregator": {"database": str(tmp_path / "db.sqlite")},
            "feeds": [{"name": n, "url": f"https://feeds.example/{n}.xml"} for n in FEEDS],
            "outputs": [{"name": "world", "title": "World", "dedupe": "near"}],
        }
    )


def _load(store: Store) -> None:
    for name, filename in FEEDS.items():
        url = f"https://feeds.example/{name}.xml"
        parsed = parse_feed(name, (DATA_DIR / "world" / filename).read_bytes(), {}, url)
        assert len(parsed.entries) >= 1
        entries = identify(name, parsed.entries, NOW)
        store.record_poll(
            PollRecord(name, url, NOW, "ok", None, title=parsed.title, new=tuple(entries))
        )


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_urdu_and_chinese_stories_are_merged_only_when_they_are_one_story(
    tmp_path: Path, fmt: str
) -> None:
    config = _config(tmp_path)
    store = Store(config.aggregator.database.path)
    try:
        _load(store)
        rendered = render_output(store, config, "world", fmt)  # type: ignore[arg-type]
    finally:
        store.close()
    # Urdu: the floods (both sites), the cricket, the power prices; Chinese: the rain (both
    # sites), the metro line. Seven entries, five stories.
    assert rendered.entries == 5
    if fmt == "json":
        doc = json.loads(rendered.body)
        titles = [i["title"] for i in doc["items"]]
        sources = {
            i["title"]: [s["feed"] for s in i["_aggregator"]["sources"]] for i in doc["items"]
        }
        assert sources["لاہور میں سیلاب، ہزاروں افراد گھروں سے محروم"] == ["misal", "akhbar"]
        assert sources["成都暴雨成灾 数千人紧急转移"] == ["ribao", "wanbao"]
        assert sources["قومی ٹیم نے سیریز جیت لی"] == ["misal"]
        assert sources["بجلی کی قیمتوں میں اضافہ"] == ["akhbar"]
        assert "西安地铁新线开通" in titles
        return
    parsed = feedparser.parse(rendered.body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    titles = sorted(e.title for e in parsed.entries)
    assert titles == sorted(
        [
            "لاہور میں سیلاب، ہزاروں افراد گھروں سے محروم",
            "قومی ٹیم نے سیریز جیت لی",
            "بجلی کی قیمتوں میں اضافہ",
            "成都暴雨成灾 数千人紧急转移",
            "西安地铁新线开通",
        ]
    )
