"""`[aggregator] database`: a path or a PostgreSQL URL, resolved; the password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config.database import Database, parse_database
from aggregator.config.load import parse_config
from aggregator.config.secret import redact
from aggregator.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "kind", "display"),
    [
        ("data/aggregator.db", "sqlite", "data/aggregator.db"),
        ("/var/lib/aggregator/a.db", "sqlite", "/var/lib/aggregator/a.db"),
        (
            "postgresql://agg:pw-1234@db.example:5432/agg",
            "postgresql",
            "postgresql://db.example:5432/agg",
        ),
        ("postgres://agg@db.example/agg", "postgresql", "postgres://db.example/agg"),
        ("POSTGRESQL://db.example/agg", "postgresql", "postgresql://db.example/agg"),
        (
            "postgresql://db.example/agg?password=pw-5678&sslmode=require",
            "postgresql",
            "postgresql://db.example/agg?sslmode=require",
        ),
        (
            "postgresql:///agg?host=/run/postgresql",
            "postgresql",
            "postgresql:///agg?host=/run/postgresql",
        ),
        ("postgresql:///?service=aggregator", "postgresql", "postgresql:///?service=aggregator"),
    ],
)
def test_a_path_or_a_url(value: str, kind: str, display: str) -> None:
    database = parse_database(value)
    assert database.kind == kind and database.display == display
    assert str(database) == display and repr(database) == f"Database({display!r})"
    if kind == "sqlite":
        assert database.path == Path(value) and database.url is None
    else:
        assert database.url == value and database.path is None and database.is_postgres


def test_the_password_is_remembered_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-the-env-9")
    config = parse_config({"aggregator": {"database": "postgresql://agg:in-the-url-7@h/agg"}})
    shown = repr(config.aggregator)
    assert "in-the-url-7" not in shown and "postgresql://h/agg" in shown
    # Any later message that quotes them (a driver's error, say) is blanked.
    assert redact("failed: in-the-url-7 and from-the-env-9") == "failed: *** and ***"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mysql://db.example/agg", "mysql:// is not supported"),
        ("sqlite:///data/a.db", "sqlite:// is not supported: give a file path"),
        ("postgresql://agg:pw-4321@db.example:port/agg", "not a valid postgresql:// URL"),
        ("", "database"),
    ],
)
def test_what_is_neither_is_a_config_error(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"aggregator": {"database": value}})
    message = str(caught.value)
    assert "aggregator.database" in message and problem in message
    assert "pw-4321" not in message


def test_the_default_is_the_sqlite_file() -> None:
    assert parse_config({}).aggregator.database == Database(path=Path("data/aggregator.db"))
