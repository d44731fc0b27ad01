"""Each store implements the whole Store protocol (store/protocol.py), with the same parameters:
mypy checks the SQLite store where it is used as a Store; this checks every store, used or not."""

from __future__ import annotations

import inspect

import pytest

from aggregator.store.protocol import Store
from aggregator.store.sqlite import SqliteStore


def _operations() -> dict[str, inspect.Signature | None]:
    ops: dict[str, inspect.Signature | None] = {}
    for name, value in vars(Store).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            ops[name] = None  # an attribute: any value will do
        elif inspect.isfunction(value):
            ops[name] = inspect.signature(value)
    return ops


def _implementations() -> list[type]:
    from aggregator.store.postgres import PostgresStore

    return [SqliteStore, PostgresStore]


def test_the_protocol_names_the_operations_callers_use() -> None:
    ops = _operations()
    for name in ("feed_states", "iter_entries", "search", "prune", "vacuum", "check_writable"):
        assert name in ops
    assert "known_hashes" not in ops  # dead: known_entries says the same and more
    assert all(inspect.getdoc(getattr(Store, name)) for name in ops), (
        "every operation says what it returns and guarantees"
    )


@pytest.mark.parametrize("impl", _implementations(), ids=lambda c: c.__name__)
def test_a_store_has_every_operation_with_the_protocol_parameters(impl: type) -> None:
    for name, wanted in _operations().items():
        if wanted is None:
            continue  # an attribute, set by __init__
        assert hasattr(impl, name), f"{impl.__name__} lacks {name}"
        got = inspect.signature(getattr(impl, name))  # follows functools.wraps
        shape = [(p.name, p.kind) for p in got.parameters.values()]
        want = [(p.name, p.kind) for p in wanted.parameters.values()]
        assert shape == want, f"{impl.__name__}.{name}{got} is not {name}{wanted}"
        for p in wanted.parameters.values():
            if p.default is not inspect.Parameter.empty:
                assert got.parameters[p.name].default == p.default, f"{impl.__name__}.{name}"
