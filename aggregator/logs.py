"""Logging set-up (text or one JSON object per line) and the daemon's periodic poll summary.

`setup_logging` configures the root logger (I/O: stderr); `PollTally` is a plain counter.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import PollOutcome
from .secret import RedactingFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:  # set by RedactingFilter, already formatted and blanked
            doc["exception"] = record.exc_text
        elif record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Send every log line to stderr at `level`, as text or JSON. Safe to call again (reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())  # no secret reaches a log line, whoever logs it
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # APScheduler logs every job run at INFO; our own poll line says more, once.
    logging.getLogger("apscheduler").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper()))
    )


@dataclass(slots=True)
class PollTally:
    """Polls since the last summary line: counts by status and entries written."""

    statuses: Counter[str] = field(default_factory=Counter)
    new: int = 0
    updated: int = 0

    def add(self, outcome: PollOutcome) -> None:
        self.statuses[outcome.status] += 1
        self.new += outcome.new
        self.updated += outcome.updated

    def line(self, feeds: int) -> str:
        """The summary, as key=value pairs in a fixed order."""
        s = self.statuses
        return (
            f"summary polls={sum(s.values())} ok={s['ok']} not_modified={s['not_modified']} "
            f"unchanged={s['unchanged']} error={s['error']} new={self.new} "
            f"updated={self.updated} feeds={feeds}"
        )
