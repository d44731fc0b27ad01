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

from .config.secret import RedactingFilter
from .models import PollOutcome

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields(event: str, **values: Any) -> dict[str, Any]:
    """`extra=` for a log call whose values a JSON log carries as keys of their own: the text
    line stays as it is, the JSON object gets `"message": event` and one key per value."""
    return {"event": event, "fields": values}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the event's own fields
    as keys (see `fields`), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        values = getattr(record, "fields", None)
        if isinstance(values, dict):
            doc["message"] = str(getattr(record, "event", doc["message"]))
            doc.update((k, v) for k, v in values.items() if k not in doc and v is not None)
        if record.exc_text:  # set by RedactingFilter, already formatted and blanked
            doc["exception"] = record.exc_text
        elif record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class BarAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that, while a progress bar is drawn on a terminal, clears the bar's
    line before each log line and redraws the bar after it, so neither overwrites the other."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.bar: Any = None  # a click ProgressBar while `aggregator fetch` runs

    def emit(self, record: logging.LogRecord) -> None:
        bar = self.bar
        if bar is None or not self.stream.isatty():
            super().emit(record)
            return
        self.acquire()
        try:
            self.stream.write("\r\x1b[2K")  # back to the line's start, erase the bar
            super().emit(record)
            bar.render_progress()
        finally:
            self.release()


def setup_logging(level: str, fmt: str = "text") -> BarAwareHandler:
    """Send every log line to stderr at `level`, as text or JSON. Safe to call again (reload)."""
    handler = BarAwareHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())  # no secret reaches a log line, whoever logs it
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # APScheduler logs every job run at INFO; our own poll line says more, once.
    logging.getLogger("apscheduler").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper()))
    )
    return handler


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

    def fields(self, feeds: int) -> dict[str, Any]:
        """The summary's counts, for a JSON log."""
        s = self.statuses
        counts = {k: s[k] for k in ("ok", "not_modified", "unchanged", "error")}
        return fields(
            "summary",
            polls=sum(s.values()),
            **counts,
            new=self.new,
            updated=self.updated,
            feeds=feeds,
        )

    def line(self, feeds: int) -> str:
        """The summary, as key=value pairs in a fixed order."""
        s = self.statuses
        return (
            f"summary polls={sum(s.values())} ok={s['ok']} not_modified={s['not_modified']} "
            f"unchanged={s['unchanged']} error={s['error']} new={self.new} "
            f"updated={self.updated} feeds={feeds}"
        )
