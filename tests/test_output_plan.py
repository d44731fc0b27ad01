"""An output's plan is shared by its formats and pages, but never outlives what it was made of:
the store generation, the config object and the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.outputs.plan import PageNotFound, render_output
from aggregator.store.sqlite import Store

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def entry(n: int, title: str) -> ParsedEntry:
    return ParsedEntry(
        guid=f"g{n}",
        guid_is_permalink=False,
        link=f"https://f.example/{n}",
        title=title,
        summary=f"Summary {n}",
        content=f"<p>Entry number {n} about {title}</p>",
        author="",
        categories=(),
        published=T0 - timedelta(hours=n),
        updated=None,
    )


def poll(store: Store, *items: ParsedEntry) -> None:
    new = tuple(identify("f", items, T0))
    store.record_poll(PollRecord("f", "https://f.example/feed", T0, "ok", None, new=new))


def config(**output: object) -> Config:
    return parse_config(
        {
            "feeds": [{"name": "f", "url": "https://f.example/feed"}],
            "outputs": [{"name": "o", "title": "O", **output}],
        }
    )


def titles(store: Store, cfg: Config) -> list[str]:
    body = render_output(store, cfg, "o", "json").body
    return [item["title"] for item in json.loads(body)["items"]]


def test_formats_share_a_plan_until_the_store_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    try:
        cfg = config()
        poll(store, entry(1, "Alpha"), entry(2, "Beta"))
        assert render_output(store, cfg, "o", "atom").entries == 2
        assert titles(store, cfg) == ["Alpha", "Beta"]
        poll(store, entry(0, "Gamma"))  # a new generation: planned again
        assert titles(store, cfg) == ["Gamma", "Alpha", "Beta"]
        assert render_output(store, cfg, "o", "rss").entries == 3
        # A reloaded config (a new object) with a rule is planned afresh at the same generation.
        assert titles(store, config(include=["Beta"])) == ["Beta"]
    finally:
        store.close()


def test_databases_do_not_share_plans(tmp_path: Path) -> None:
    cfg = config()
    first, second = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    try:
        poll(first, entry(1, "Alpha"))
        poll(second, entry(2, "Beta"))  # the same generation in another database
        assert titles(first, cfg) == ["Alpha"]
        assert titles(second, cfg) == ["Beta"]
    finally:
        first.close()
        second.close()


def test_the_subscribed_document_holds_the_outputs_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    try:
        poll(store, *(entry(n, f"Story {n}") for n in range(130)))
        big = config(limit=500)
        assert render_output(store, big, "o", "json").entries == 130  # not 100
        assert render_output(store, big, "o", "html").entries == 100  # the page pages
        paged = config(limit=500, page_size=50)
        first = render_output(store, paged, "o", "atom")
        assert (first.entries, first.pages) == (50, 3)
        assert render_output(store, paged, "o", "atom", page=3).entries == 30
        assert render_output(store, paged, "o", "atom", per_page=100, page=2).entries == 30
        assert render_output(store, paged, "o", "rss", whole=True).entries == 130
        with pytest.raises(PageNotFound):
            render_output(store, paged, "o", "atom", page=4)
        with pytest.raises(PageNotFound):
            render_output(store, big, "o", "json", page=2)
        # An empty output still has its first page.
        assert render_output(store, config(query="nothingmatches"), "o", "json").entries == 0
    finally:
        store.close()
