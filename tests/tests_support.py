"""Constants and small helpers shared by test modules."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def in_transaction(store: Any) -> bool:
    """Whether the store's connection is inside a transaction (after a failed write, it must
    not be)."""
    conn = getattr(store, "conn", None)
    if conn is not None and hasattr(conn, "info"):  # psycopg
        import psycopg

        return bool(conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)
    return bool(store.db.conn.in_transaction)


# Where the tests and their fixture files are, for test modules in any subfolder of tests/.
TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REPO = TESTS.parent
