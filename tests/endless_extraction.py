"""Preloaded into a parse worker by a test: there, extracting an article never ends, so only
the worker's deadline (parse_timeout) can stop it. Feed parsing in that worker is untouched."""

import time
from typing import Any

import aggregator.ingest.extract


def _endless(*args: Any, **kwargs: Any) -> None:
    time.sleep(3600)


# A job names its function by module and name: unpickled here, it finds this one.
aggregator.ingest.extract.extract_article = _endless  # type: ignore[assignment]
