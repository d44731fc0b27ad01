"""README.md documents every CLI command, config key and endpoint the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config.schema import FeedTable, OutputTable
from aggregator.config.settings import AggregatorTable
from aggregator.metrics import Metrics
from aggregator.server import OutputServer
from aggregator.store.threads import StoreThreads

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(main.commands))  # type: ignore[attr-defined]
def test_every_command_is_documented(command: str) -> None:
    assert f"`aggregator {command}" in README


@pytest.mark.parametrize(
    "key",
    sorted(
        {*AggregatorTable.model_fields, *FeedTable.model_fields, *OutputTable.model_fields},
    ),
)
def test_every_config_key_is_documented(key: str) -> None:
    assert re.search(rf"^\| `{key}` \|", README, re.MULTILINE), key


def test_every_endpoint_is_documented(tmp_path: Path) -> None:
    # Build the real application and read its routes, so a new route cannot go undocumented.
    store = StoreThreads(tmp_path / "db.sqlite")
    try:
        app = OutputServer(store, lambda: None, lambda: 0, lambda: True, Metrics()).app()  # type: ignore[arg-type,return-value]
        paths = {r.canonical for r in app.router.resources()}
    finally:
        store.close()
    assert "/healthz" in paths
    for path in paths:
        spelled = path.replace("{name}", "<name>").replace("{fmt}", "atom")
        assert f"`GET {spelled}`" in README, path


def _readme_metrics() -> set[tuple[str, str, tuple[str, ...]]]:
    section = README.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        m = re.match(r"^\| `(aggregator_\w+)` \| (\w+) \|([^|]*)\|", line)
        if m:
            labels = tuple(sorted(re.findall(r"`(\w+)`", m.group(3))))
            rows.add((m.group(1), m.group(2), labels))
    return rows


def test_readme_lists_exactly_the_exported_metrics() -> None:
    # A real daemon's metrics object, with one feed on its board so the per-feed series exist,
    # parsed from the text a scrape returns: names, types and labels must match the README.
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    metrics.board.reset(["some-feed"], {})
    metrics.fetch_seconds.observe(0.1)
    exported = set()
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exported.add((name, family.type, tuple(sorted(labels))))
    assert exported == _readme_metrics()


@pytest.mark.parametrize("key", sorted(AggregatorTable.model_fields))
def test_every_aggregator_key_has_its_environment_variable_documented(key: str) -> None:
    from aggregator.config.env import env_name

    assert re.search(rf"^\| `{key}` \| `{env_name(key)}` \|", README, re.MULTILINE), key
