"""Every module imports on its own (catches import cycles early)."""

import importlib

import pytest

MODULES = [
    "models",
    "errors",
    "config",
    "fetch",
    "parse",
    "identity",
    "filters",
    "publish",
    "store",
    "poll",
    "schedule",
    "opml",
    "output",
    "server",
    "daemon",
    "cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(f"aggregator.{name}")
