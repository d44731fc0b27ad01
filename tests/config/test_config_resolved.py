"""The resolved config: feeds and outputs by name, everything a poll or a render needs worked
out once at load (policies, compiled filters, sources), frozen, and pydantic kept inside."""

from __future__ import annotations

import ast
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_filters import make_entry
from tests_support import REPO

import aggregator.config.rules
from aggregator.config.load import parse_config
from aggregator.config.reload import plan_reload
from aggregator.ingest.decide import PollPolicy
from aggregator.ingest.limits import Limits
from aggregator.outputs.dedupe import DedupeSettings
from aggregator.outputs.filters import Candidate

PACKAGE = REPO / "aggregator"
NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)

DOC: dict[str, Any] = {
    "aggregator": {
        "interval": "1h",
        "min_interval": "5m",
        "max_interval": "12h",
        "max_backoff": "6h",
        "host_concurrency": 2,
        "host_delay": "3s",
        "full_content": True,
        "max_nesting": 64,
        "listen": "[::1]:9000",
    },
    "feeds": [
        {"name": "zeta", "url": "https://z.example/f", "tags": ["news"], "interval": "10m"},
        {
            "name": "alpha",
            "url": "https://a.example/f",
            "tags": ["tech"],
            "adaptive": True,
            "host_delay": "0s",
            "full_content": False,
            "exclude": ["sport"],
            "update_policy": "republish",
        },
        {
            "name": "mid",
            "url": "https://m.example/f",
            "tags": ["tech", "news"],
            "host_concurrency": 4,
            "cookie": "session=abc123",
        },
    ],
    "outputs": [
        {"name": "tech", "title": "Tech", "tags": ["tech"], "max_per_feed": 3},
        {"name": "picked", "title": "Picked", "feeds": ["mid"], "tags": ["news"]},
        {"name": "all", "title": "All", "dedupe": "exact", "dedupe_window": "1d"},
    ],
}


def test_feeds_and_outputs_are_mappings_by_name_in_file_order() -> None:
    config = parse_config(DOC)
    assert list(config.feeds) == ["zeta", "alpha", "mid"]
    assert list(config.outputs) == ["tech", "picked", "all"]
    assert config.feeds["alpha"].url == "https://a.example/f"
    assert config.feeds.get("nope") is None
    with pytest.raises(KeyError):
        config.outputs["nope"]


def test_everything_is_frozen() -> None:
    config = parse_config(DOC)
    feed, output = config.feeds["zeta"], config.outputs["all"]
    for obj, attr in (
        (config, "feeds"),
        (config.aggregator, "interval"),
        (feed, "url"),
        (feed, "policy"),
        (output, "sources"),
    ):
        with pytest.raises(FrozenInstanceError):
            setattr(obj, attr, None)
    with pytest.raises(TypeError):
        config.feeds["new"] = feed  # type: ignore[index]
    with pytest.raises(TypeError):
        del config.outputs["all"]  # type: ignore[attr-defined]
    # Slotted: no attribute can be added on the side either.
    assert not hasattr(feed, "__dict__") and not hasattr(config, "__dict__")


def test_each_feed_carries_its_poll_policy_over_the_defaults() -> None:
    feeds = parse_config(DOC).feeds
    common = {
        "min_interval": timedelta(minutes=5),
        "max_interval": timedelta(hours=12),
        "max_backoff": timedelta(hours=6),
    }
    assert feeds["zeta"].policy == PollPolicy(
        interval=timedelta(minutes=10),
        adaptive=False,
        host_concurrency=2,
        host_delay=timedelta(seconds=3),
        **common,
    )
    assert feeds["alpha"].policy == PollPolicy(
        interval=timedelta(hours=1),
        adaptive=True,
        host_concurrency=2,
        host_delay=timedelta(0),  # an explicit 0s is kept, not taken for "unset"
        **common,
    )
    assert feeds["mid"].policy.host_concurrency == 4
    assert [f.interval for f in feeds.values()] == [
        timedelta(minutes=10),
        timedelta(hours=1),
        timedelta(hours=1),
    ]


def test_each_feed_carries_its_other_settings_resolved() -> None:
    feeds = parse_config(DOC).feeds
    assert [f.full_content for f in feeds.values()] == [True, False, True]
    assert [f.update_policy for f in feeds.values()] == ["update", "republish", "update"]
    assert feeds["zeta"].request_options is None  # public: the cheapest case
    options = feeds["mid"].request_options
    assert options is not None and options.credentials == {"Cookie": "session=abc123"}
    assert feeds["zeta"].filter.checks == ()
    alpha = feeds["alpha"].filter
    assert not alpha.keeps(Candidate(make_entry("Sport tonight"), None, NOW))
    assert alpha.keeps(Candidate(make_entry("Budget vote"), None, NOW))


def test_outputs_carry_their_sources_with_tags_expanded() -> None:
    config = parse_config(DOC)
    names = {o.name: [f.name for f in o.sources] for o in config.outputs.values()}
    # In config order, whatever order the output names them in.
    assert names == {"tech": ["alpha", "mid"], "picked": ["zeta", "mid"], "all": list(config.feeds)}
    # The very feed objects of config.feeds: one resolution per feed.
    assert config.outputs["tech"].sources[1] is config.feeds["mid"]


def test_outputs_carry_their_rules_dedupe_and_max_age() -> None:
    outputs = parse_config(DOC).outputs
    assert outputs["tech"].filter.max_per_feed == 3
    assert outputs["all"].dedupe == DedupeSettings("exact", 0.8, timedelta(days=1))
    assert outputs["tech"].dedupe == DedupeSettings()
    # The shortest poll interval of the sources: nothing in the output changes sooner.
    assert outputs["picked"].max_age == 600
    assert outputs["tech"].max_age == 3600
    empty = parse_config({"aggregator": {"interval": "2h"}, "outputs": [DOC["outputs"][2]]})
    assert empty.outputs["all"].max_age == 7200  # no feed at all: the daemon's interval


def test_settings_are_resolved() -> None:
    s = parse_config(DOC).aggregator
    assert (s.host, s.port, s.base_url) == ("::1", 9000, "http://[::1]:9000")
    assert s.limits == Limits(max_nesting=64)
    assert s.interval == timedelta(hours=1)


def test_rules_are_compiled_at_load_and_never_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    compile_rule = aggregator.config.rules.compile_rule

    def counted(rule: str) -> Any:
        calls.append(rule)
        return compile_rule(rule)

    monkeypatch.setattr(aggregator.config.rules, "compile_rule", counted)
    doc = {
        "feeds": [{"name": "a", "url": "https://a.example/f", "include": ["budget", "/vote/i"]}],
        "outputs": [{"name": "o", "title": "O", "exclude": ["sport"]}],
    }
    config = parse_config(doc)
    at_load = len(calls)
    assert at_load >= 3
    feed, output = config.feeds["a"], config.outputs["o"]
    for _ in range(5):
        assert feed.filter is config.feeds["a"].filter
        feed.filter.keeps(Candidate(make_entry("Budget vote"), None, NOW))
        output.filter.keeps(Candidate(make_entry("Sport"), None, NOW))
    assert len(calls) == at_load


def test_equal_files_resolve_to_equal_configs() -> None:
    # What a reload compares: compiled rules compare by what they were compiled from.
    assert parse_config(DOC) == parse_config(DOC)
    assert plan_reload(parse_config(DOC), parse_config(DOC)).empty
    changed = {**DOC, "outputs": [{**DOC["outputs"][0], "exclude": ["x"]}, *DOC["outputs"][1:]]}
    assert plan_reload(parse_config(DOC), parse_config(changed)).outputs_changed
    swapped = {**DOC, "outputs": list(reversed(DOC["outputs"]))}
    assert plan_reload(parse_config(DOC), parse_config(swapped)).outputs_changed


def test_nothing_outside_config_imports_pydantic() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            bad = [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")]
            bad += [m for m in modules if m.endswith(("config.schema", "config.settings"))]
            bad += [m for m in modules if m.endswith("config.rules")]
            found += [f"{path.relative_to(PACKAGE)}: {m}" for m in bad]
    assert found == []
