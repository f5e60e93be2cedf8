"""A migrations folder as yoyo may see it: docstatus SQL migrations only, never Python.

yoyo imports and runs every ``.py`` file of the folder it is given (its Python migrations and
``post-apply`` hooks). ``docstatus migrate --migrations-dir /tmp`` once ran an unrelated script
found there. So a folder is accepted only when every entry is ``NNNN_name.sql`` or
``NNNN_name.rollback.sql`` (each rollback beside its migration); anything else is refused with
one line naming it. yoyo then reads a private copy holding just those files, so nothing added
to the folder after the check is ever read, let alone executed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MIGRATION_FILE", "NotAMigrationsFolder", "private_copy", "sql_files"]

MIGRATION_FILE = re.compile(r"^(?P<id>\d{4}_[a-z0-9][a-z0-9_]*)(?P<rollback>\.rollback)?\.sql$")


class NotAMigrationsFolder(ValueError):
    """The folder holds something that is not a docstatus SQL migration."""


def sql_files(folder: Path) -> list[Path]:
    """The folder's migration files, or ``NotAMigrationsFolder`` naming the first entry that is not."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise NotAMigrationsFolder(f"cannot read the migrations folder {folder}: {exc.strerror or exc}") from exc
    forward: set[str] = set()
    rollbacks: dict[str, Path] = {}
    for entry in entries:
        match = MIGRATION_FILE.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_file():
            raise NotAMigrationsFolder(
                f"{folder} is not a docstatus migrations folder: {entry.name!r} is not a NNNN_name.sql or "
                "NNNN_name.rollback.sql file (nothing was applied)")
        if match["rollback"]:
            rollbacks[match["id"]] = entry
        else:
            forward.add(match["id"])
    orphans = sorted(set(rollbacks) - forward)
    if orphans:
        raise NotAMigrationsFolder(
            f"{folder} is not a docstatus migrations folder: {rollbacks[orphans[0]].name!r} has no migration "
            f"{orphans[0]}.sql (nothing was applied)")
    if not forward:
        raise NotAMigrationsFolder(f"{folder} holds no docstatus migration (NNNN_name.sql)")
    return entries


@contextmanager
def private_copy(folder: Path) -> Iterator[Path]:
    """A private temporary folder (mode 0700) with a copy of the folder's migration files only."""
    files = sql_files(folder)
    with tempfile.TemporaryDirectory(prefix="docstatus-migrations-") as private:
        for path in files:
            shutil.copyfile(path, Path(private) / path.name)
        yield Path(private)
