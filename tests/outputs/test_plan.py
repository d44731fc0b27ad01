"""An output's plan is shared by its formats and pages through the renderer's PlanCache, but
never outlives what it was made of: the store generation, the config object and the database.
On both stores (conftest's parametrised `store`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config.load import parse_config
from aggregator.config.resolved import Config
from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.outputs.plan import PageNotFound, PlanCache, render_output
from aggregator.store.sqlite import SqliteStore as Store

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


def titles(store: Store, cfg: Config, plans: PlanCache | None = None) -> list[str]:
    body = render_output(store, cfg, "o", "json", plans=plans).body
    return [item["title"] for item in json.loads(body)["items"]]


def test_formats_share_a_plan_until_the_store_changes(store: Store) -> None:
    plans = PlanCache()
    try:
        cfg = config()
        poll(store, entry(1, "Alpha"), entry(2, "Beta"))
        assert render_output(store, cfg, "o", "atom", plans=plans).entries == 2
        planned = plans.get(store, cfg, "o", store.generation())
        assert planned is not None and len(planned.stories) == 2
        assert titles(store, cfg, plans) == ["Alpha", "Beta"]
        # The second format was rendered from the same plan object: a hit, not a re-plan.
        assert plans.get(store, cfg, "o", store.generation()) is planned
        poll(store, entry(0, "Gamma"))  # a new generation: planned again
        assert plans.get(store, cfg, "o", store.generation()) is None
        assert titles(store, cfg, plans) == ["Gamma", "Alpha", "Beta"]
        assert render_output(store, cfg, "o", "rss", plans=plans).entries == 3
        # A reloaded config (a new object) with a rule is planned afresh at the same generation.
        assert titles(store, config(include=["Beta"]), plans) == ["Beta"]
    finally:
        store.close()


def test_without_a_cache_every_render_plans_afresh(store: Store) -> None:
    plans = PlanCache()
    try:
        cfg = config()
        poll(store, entry(1, "Alpha"))
        assert titles(store, cfg) == ["Alpha"]
        assert plans.get(store, cfg, "o", store.generation()) is None  # nothing shared
        # A search (narrow) or a given `now` is planned afresh, never kept.
        render_output(store, cfg, "o", "json", now=T0, plans=plans)
        assert plans.get(store, cfg, "o", store.generation()) is None
    finally:
        store.close()


def test_a_full_cache_starts_over(store: Store) -> None:
    plans = PlanCache(kept=2)
    try:
        cfg = config()
        for n in range(3):
            poll(store, entry(n, f"Story {n}"))
            titles(store, cfg, plans)
        # Two generations were kept, then the third miss found the cache full and cleared it.
        assert plans.get(store, cfg, "o", store.generation()) is not None
        assert plans.get(store, cfg, "o", store.generation() - 2) is None
    finally:
        store.close()


def test_databases_do_not_share_plans(tmp_path: Path) -> None:
    cfg = config()
    plans = PlanCache()
    first, second = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    try:
        poll(first, entry(1, "Alpha"))
        poll(second, entry(2, "Beta"))  # the same generation in another database
        assert titles(first, cfg, plans) == ["Alpha"]
        assert titles(second, cfg, plans) == ["Beta"]
    finally:
        first.close()
        second.close()


def test_the_subscribed_document_holds_the_outputs_limit(store: Store) -> None:
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
