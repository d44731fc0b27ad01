"""README.md documents every CLI command, config key and endpoint the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config import FeedConfig, OutputConfig, Settings
from aggregator.server import Metrics, OutputServer
from aggregator.store import StoreThreads

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(main.commands))  # type: ignore[attr-defined]
def test_every_command_is_documented(command: str) -> None:
    assert f"`aggregator {command}" in README


@pytest.mark.parametrize(
    "key",
    sorted(
        {*Settings.model_fields, *FeedConfig.model_fields, *OutputConfig.model_fields},
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
