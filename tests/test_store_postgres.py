"""Tests of the PostgreSQL side of the store, against the real server of tests/pgserver.py."""

from __future__ import annotations

import psycopg
import pytest
from pgserver import PgServer

pytestmark = pytest.mark.postgres


def test_the_test_server_takes_the_role_and_its_password(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT current_user, current_database(), version()").fetchone()
    assert row is not None
    assert row[0] == "aggregator"
    assert row[1].startswith("test_")
    assert row[2].startswith("PostgreSQL")
    wrong = pg_url.replace(pg_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()
