"""Every module of the package imports (found by walking the package, so none is forgotten)."""

import importlib
import pkgutil

import pytest

import aggregator

# __main__ runs the CLI when imported, so it is left out.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(aggregator.__path__, "aggregator.")
    if m.name != "aggregator.__main__"
)


def test_every_stage_folder_is_found() -> None:
    for sub in ("config", "ingest", "store", "outputs"):
        assert f"aggregator.{sub}" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
