"""Environment variables over the [aggregator] table: `AGGREGATOR_<KEY>` for every key. Pure.

Containers and systemd units set a listen address or a database path without editing the
file. A variable wins over the file; an empty one is ignored. List keys (`embed_hosts`) take
comma-separated values. Problems name the variable, since the file is not where the value is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "AGGREGATOR_"
LIST_KEYS = frozenset({"embed_hosts"})


def env_name(key: str) -> str:
    return PREFIX + key.upper()


def apply_env(
    data: dict[str, Any], keys: Iterable[str], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """`data` with the [aggregator] keys that have a variable set replaced by its value, and
    which keys came from which variable."""
    table = data.get("aggregator")
    settings = dict(table) if isinstance(table, dict) else {}
    used: dict[str, str] = {}
    for key in keys:
        raw = environ.get(env_name(key), "").strip()
        if not raw:
            continue
        used[key] = env_name(key)
        settings[key] = (
            [v.strip() for v in raw.split(",") if v.strip()] if key in LIST_KEYS else raw
        )
    if not used:
        return data, used
    return {**data, "aggregator": settings}, used


def name_variables(problems: Iterable[str], used: Mapping[str, str]) -> list[str]:
    """Problem lines about overridden keys, saying which variable set them."""
    out = []
    for line in problems:
        for key, var in used.items():
            prefix = f"aggregator.{key}:"
            if line.startswith(prefix):
                line = f"aggregator.{key} (from ${var}):{line[len(prefix) :]}"
                break
        out.append(line)
    return out
