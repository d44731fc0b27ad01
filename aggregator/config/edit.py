"""Adding and removing [[feeds]] in a config file without disturbing it. I/O: reads and
rewrites the file.

New tables are rendered by tomlkit (so every value is quoted correctly) and appended after the
existing text, which stays byte for byte as it was, comments included. A removal edits the
tomlkit document, which keeps every other table and comment as it was. The result is
validated as a whole before it replaces the file, so an edit never leaves an invalid config.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

import tomlkit

from ..config.load import parse_config
from ..errors import ConfigError
from ..outputs.opml import Subscription


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


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [f"cannot read: {e.strerror}"]) from e


def _replace(path: Path, text: str, what: str) -> None:
    """Validate `text` as a whole config, then put it in place of the file atomically."""
    try:
        parse_config(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [f"not valid TOML after {what}: {e}"]) from e
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


def append_feeds(path: Path, feeds: Sequence[Subscription], header: str = "") -> None:
    """Append `feeds` to the config at `path`, atomically, if the result is a valid config."""
    original = _read(path)
    _replace(path, original.rstrip("\n") + "\n\n" + feeds_toml(feeds, header), "the import")


_HEADER = re.compile(r"^\s*\[")
_FEEDS_HEADER = re.compile(r"^\s*\[\[\s*feeds\s*\]\]\s*(#.*)?$")


def _without_table(text: str, index: int) -> str:
    """`text` without its `index`-th [[feeds]] table: from its header to the next header,
    less the comments and blank lines at its end, which introduce the next table."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _FEEDS_HEADER.match(line)]
    start = starts[index]
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip()[0] == "#"):
        end -= 1
    return "".join(lines[:start] + lines[end:])


def remove_feed(path: Path, name: str) -> list[str]:
    """Remove the [[feeds]] table named `name`, and the name from outputs' `feeds` lists.

    Returns the outputs whose lists were edited. Refuses (ConfigError) when that would leave
    an output's list empty: an output with no `feeds` and no `tags` merges every feed.
    Comments are kept, also those above the next table (tomlkit would count them as the
    removed table's own), so the table is cut out of the text and only the outputs' lists
    are edited through tomlkit.
    """
    original = _read(path)
    try:
        names = [str(f.get("name")) for f in tomllib.loads(original).get("feeds", [])]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [f"not valid TOML: {e}"]) from e
    if name not in names:
        raise ConfigError(str(path), [f"no feed named {name!r}"])
    doc = tomlkit.parse(_without_table(original, names.index(name)))
    left = [str(t.get("name")) for t in doc.get("feeds", [])]
    if left != [n for n in names if n != name]:  # a header the line scan misread
        raise ConfigError(str(path), [f"cannot remove {name!r} safely: edit the file by hand"])
    edited = []
    for out in doc.get("outputs") or []:
        listed = out.get("feeds")
        if listed is None or name not in listed:
            continue
        if len(listed) == 1 and not out.get("tags"):
            raise ConfigError(
                str(path),
                [
                    f"output {out.get('name')!r} merges only {name!r}: remove or change that "
                    "output first (with no feeds it would merge every feed)"
                ],
            )
        listed.remove(name)
        edited.append(str(out.get("name")))
    _replace(path, tomlkit.dumps(doc), "the removal")
    return edited
