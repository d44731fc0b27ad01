"""`aggregator backup`: a consistent copy of the database while the daemon runs. I/O.

Not a Store method: it needs no migrated connection of ours, only SQLite's online backup API.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import StoreError


def backup_database(source: Path, dest: Path) -> None:
    """Copy the database at `source` to `dest` through SQLite's online backup API.

    The copy is one step, so it is a single consistent snapshot even while the daemon writes
    (WAL lets the writer carry on). It is written beside `dest`, checked with
    `PRAGMA integrity_check`, switched out of WAL so that it is one self-contained file, and only
    then renamed into place: a failed backup never leaves a half-written file at `dest`.
    """
    if not source.is_file():
        raise StoreError(f"no database at {source}")
    partial = dest.with_name(dest.name + ".partial")
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        if check != "ok":
            raise StoreError(f"backup of {source} failed its integrity check: {check}")
        os.replace(partial, dest)
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"backup of {source} to {dest} failed: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
