"""The hash of a resolved config's content, which every node records (store/nodes.py) so that
/status can warn when the nodes sharing a store run different configs. Pure.

It is taken of the resolved `Config` (after the environment's overrides, secrets read, rules
compiled), never of the file's bytes: two files that say the same thing (comments, order of
keys in a table, `"60m"` for `"1h"`) hash the same, and so do two machines whose files differ
only where the environment overrides them. What is each node's own by design is left out: its
listen address (`--listen`, one port per process on a machine). Secret values enter only as
their own SHA-256, so the hash shows no secret and still changes when one is rotated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum
from pathlib import PurePath
from typing import Any

from .resolved import Config
from .secret import Secret

# Settings that differ between the nodes of one cluster on purpose.
PER_NODE = frozenset({"listen", "host", "port"})
SHOWN = 12  # hex digits shown (on /status); the whole hash is compared


def _canonical(value: Any) -> Any:
    """A JSON-able, process-independent form of any value a resolved config holds. Every
    type is named: an object's repr may carry its memory address, which differs per process."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Secret):
        return {"secret": hashlib.sha256(value.value.encode()).hexdigest()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return {"seconds": value.total_seconds()}
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, Mapping):
        # In order: feed order decides ties between duplicates, so it is part of the content.
        return [[_canonical(k), _canonical(v)] for k, v in value.items()]
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, re.Pattern):  # a keyword rule
        return {"re": value.pattern, "flags": value.flags}
    pattern = getattr(value, "pattern", None)
    options = getattr(value, "options", None)
    if isinstance(pattern, str) and options is not None:  # an RE2 regexp (a regex rule)
        return {"re2": pattern, "case_sensitive": bool(options.case_sensitive)}
    raise TypeError(f"config_hash: no canonical form for {type(value).__name__}")


def config_hash(config: Config) -> str:
    """SHA-256 (hex) of the config's content; equal for configs that say the same thing."""
    settings = _canonical(config.aggregator)
    for key in PER_NODE:
        settings.pop(key, None)
    doc = {
        "aggregator": settings,
        "feeds": _canonical(config.feeds),
        "outputs": _canonical(config.outputs),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
