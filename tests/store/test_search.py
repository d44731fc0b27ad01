"""FTS5 search kept by the store (both stores), query outputs, and the preview and search
commands."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dedupe import SECTIONS, T0, _load_sections

from aggregator.cli import main
from aggregator.config.load import parse_config
from aggregator.errors import ConfigError
from aggregator.models import PollRecord
from aggregator.outputs.plan import plan_output
from aggregator.store.search import check_query, to_fts
from aggregator.store.sqlite import SqliteStore as Store


@pytest.fixture
def store(store: Store) -> Store:
    """conftest's store (SQLite, then PostgreSQL) with the section feeds in it."""
    _load_sections(store)
    return store


def test_search_finds_by_title_summary_and_content(store: Store) -> None:
    try:
        titles = {i.entry.title for i in store.search("putin")}
        assert titles == {"Russia wants ‘strong’ Latin America – Putin"}
        assert len(store.search("putin")) == 3  # one per feed that carries it
        assert store.search("forecasters")[0].entry.feed == "russia"  # summary
        assert store.search("duma")  # only in the content
        assert store.search("nothingmatches") == []
    finally:
        store.close()


@pytest.mark.sqlite_only("deletes rows with SQL of its own to see the FTS5 trigger at work")
def test_the_index_follows_updates(store: Store) -> None:
    try:
        [rain] = [i.entry for i in store.iter_entries(["russia"]) if "rain" in i.entry.title]
        edited = replace(rain, title="Snow expected in the capital", content_hash="x")
        store.record_poll(
            PollRecord("russia", "https://n.example/russia.xml", T0, "ok", None, updated=(edited,))
        )
        assert not [i for i in store.search("rain") if i.entry.key == rain.key]
        assert [i.entry.key for i in store.search("snow")] == [rain.key]
        # Deleting a row (pruning) removes it from the index through the trigger.
        store.db.execute("DELETE FROM entries WHERE feed = 'russia'")
        assert store.search("snow") == []
    finally:
        store.close()


@pytest.mark.parametrize("query", ["latin america NOT sport", '"latin america"', "putin OR rain"])
def test_valid_queries(query: str) -> None:
    assert check_query(query) == query


@pytest.mark.parametrize("query", ["", "NOT", "AND putin", '"unbalanced'])
def test_invalid_queries_are_caught_at_load(query: str) -> None:
    with pytest.raises(ConfigError, match=r"outputs\[0\].query: "):
        parse_config({"outputs": [{"name": "o", "title": "O", "query": query}]})


def _config(tmp_path: Path, **output: object) -> dict[str, object]:
    return {
        "aggregator": {"database": str(tmp_path / "x.db")},
        "feeds": [{"name": n, "url": f"https://n.example/{n}.xml"} for n in SECTIONS],
        "outputs": [{"name": "o", "title": "O", **output}],
    }


def test_query_output(store: Store, tmp_path: Path) -> None:
    try:
        config = parse_config(_config(tmp_path, query="latin america NOT sport"))
        plan = plan_output(store, config, "o", T0)
        assert [s.item.entry.title for s in plan.stories] == [
            "Russia wants ‘strong’ Latin America – Putin"
        ]
        assert len(plan.stories[0].merged) == 2
    finally:
        store.close()


def _write(tmp_path: Path, store: Store, **output: object) -> Path:
    """A config file on the store's own database: its file, or its URL (with the password)."""
    data = _config(tmp_path, **output)
    database = getattr(store, "url", None) or str(store.path)
    lines = [f"[aggregator]\ndatabase = {json.dumps(database)}\n"]
    for f in data["feeds"]:  # type: ignore[attr-defined]
        lines.append(f'[[feeds]]\nname = "{f["name"]}"\nurl = "{f["url"]}"\n')
    lines.append('[[outputs]]\nname = "o"\ntitle = "O"\n')
    for k, v in output.items():
        lines.append(f"{k} = {json.dumps(v)}\n")
    path = tmp_path / "c.toml"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_preview_names_merges_and_dropping_rules(store: Store, tmp_path: Path) -> None:
    store.close()
    path = _write(tmp_path, store, exclude=["stock"])
    result = CliRunner().invoke(main, ["preview", "o", "--config", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "o: 2 stories (2 duplicates merged)" in out
    assert "= merged: world: Russia wants" in out and "= merged: top: Russia wants" in out
    assert "Moscow stock exchange closes higher  [exclude[0] 'stock']" in out
    assert CliRunner().invoke(main, ["preview", "nope", "--config", str(path)]).exit_code == 2


def test_search_command(store: Store, tmp_path: Path) -> None:
    store.close()
    path = _write(tmp_path, store)
    result = CliRunner().invoke(main, ["search", "forecasters", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "Heavy rain expected in the capital" in result.output
    # What people type: never an SQL error, plain words when it is not FTS syntax.
    for typed in ("iOS 15.5", "C#", "wildfly-10", "AND", "(unbalanced", "don't", 'say "hi'):
        typed_result = CliRunner().invoke(main, ["search", typed, "--config", str(path)])
        assert typed_result.exit_code == 0, (typed, typed_result.output)
        assert "error" not in typed_result.output, typed
    rain = CliRunner().invoke(main, ["search", "rain-expected", "--config", str(path)])
    assert "Heavy rain expected in the capital" in rain.output
    bad = CliRunner().invoke(main, ["search", "#!?", "--config", str(path)])
    assert bad.exit_code == 2 and "nothing to search for" in bad.output


@pytest.mark.parametrize(
    ("typed", "fts"),
    [
        ("iOS 15.5", '"iOS" "15.5"'),
        ("C#", '"C#"'),
        ("wildfly-10", '"wildfly-10"'),
        ('"climate summit"', '"climate summit"'),
        ("title:putin OR kremlin", "title:putin OR kremlin"),
        ("sport NOT football", "sport NOT football"),
        ("a AND", '"a" "AND"'),
        ('say "hi', '"say" """hi"'),
        ("#", None),
        ("   ", None),
    ],
)
def test_to_fts(typed: str, fts: str | None) -> None:
    assert to_fts(typed) == fts


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_typed_text_searches_without_an_sql_error(typed: str) -> None:
    fts = to_fts(typed)
    if fts is not None:
        check_query(fts)  # raises ValueError on any FTS5 syntax error
