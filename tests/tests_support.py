"""Constants shared by test modules."""

from datetime import UTC, datetime

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
