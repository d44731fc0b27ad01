"""Shared fixtures: the loopback feed server, config files in tmp_path, free ports."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from feedserver import DATA_DIR, FeedServer, feed_server
from pgserver import describe as describe_pg
from pgserver import pg_server, pg_url

__all__ = ["DATA_DIR", "FeedServer", "feed_server", "pg_server", "pg_url"]


def pytest_report_header() -> str:
    # One line up front: whether the PostgreSQL store's tests run here, and if not, why.
    return describe_pg()


# The behavioural store tests run once per store: the same test, not a copy of it.
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, migrated store: SQLite in tmp_path, then PostgreSQL on the test server."""
    from aggregator.store.postgres import PostgresStore
    from aggregator.store.sqlite import SqliteStore

    if request.param == "sqlite":
        s: Any = SqliteStore(tmp_path / "x.db")
    else:
        # A test that reads SQLite's own internals (PRAGMAs, the FTS5 tables, the file) says
        # so with @pytest.mark.sqlite_only("why"), and that is all it says on PostgreSQL.
        only = request.node.get_closest_marker("sqlite_only")
        if only is not None:
            pytest.skip(f"SQLite only: {only.args[0]}")
        s = PostgresStore(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file: the [aggregator] table points at a database in tmp_path.

    Call as write_config(feeds_and_outputs_toml, **aggregator_settings); returns the path.
    """

    def write(body: str = "", name: str = "aggregator.toml", **settings: object) -> Path:
        values: dict[str, object] = {
            "database": str(tmp_path / "data" / "aggregator.db"),
            "interval": "1h",
            # Tests poll every few seconds; the daemon's default floor is a polite minute.
            "min_interval": "5s",
        }
        values.update(settings)
        lines = ["[aggregator]"]
        for key, value in values.items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n\n" + body, encoding="utf-8")
        return path

    return write
