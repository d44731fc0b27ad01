"""Adding [[feeds]] to a config file without disturbing it. I/O: reads and rewrites the file.

New tables are rendered by tomlkit (so every value is quoted correctly) and appended after the
existing text, which stays byte for byte as it was, comments included. The result is validated
as a whole before it replaces the file, so an import never leaves an invalid config behind.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

import tomlkit

from .config import parse_config
from .errors import ConfigError
from .opml import Subscription


def feeds_toml(feeds: Sequence[Subscription], header: str = "") -> str:
    """`[[feeds]]` tables for `feeds`, preceded by a comment line when `header` is given."""
    aot = tomlkit.aot()
    for feed in feeds:
        table = tomlkit.table()
        table.add("name", feed.name)
        table.add("url", feed.url)
        if feed.title:
            table.add("title", feed.title)
        if feed.tags:
            table.add("tags", list(feed.tags))
        aot.append(table)
    doc = tomlkit.document()
    if header:
        doc.add(tomlkit.comment(header))
    doc.append("feeds", aot)
    return tomlkit.dumps(doc)


def append_feeds(path: Path, feeds: Sequence[Subscription], header: str = "") -> None:
    """Append `feeds` to the config at `path`, atomically, if the result is a valid config."""
    try:
        original = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [f"cannot read: {e.strerror}"]) from e
    text = original.rstrip("\n") + "\n\n" + feeds_toml(feeds, header)
    try:
        parse_config(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [f"not valid TOML after the import: {e}"]) from e
    # Written beside the file and renamed over it: a watching daemon never reads half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(str(path), [f"cannot write: {e.strerror}"]) from e
