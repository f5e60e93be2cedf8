"""Apply or roll back the yoyo SQL migrations in ``database/migrations``.

The SQL files are the product, so they stay where the SQL author keeps them
(``database/migrations`` at the repository root) instead of being copied into
the package.  From a checkout (including ``pip install -e``) that folder is
found next to the package; anywhere else, point ``DOCSTATUS_MIGRATIONS_DIR``
(or the ``migrations_dir`` argument) at it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode

import psycopg.conninfo
import yoyo

MIGRATIONS_DIR_ENV = "DOCSTATUS_MIGRATIONS_DIR"

# python_client/docstatus/migrations.py -> parents[2] is the repository root.
_CHECKOUT_MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "database" / "migrations"


def find_migrations_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the migrations folder: argument, then env var, then the checkout."""
    candidate = override or os.environ.get(MIGRATIONS_DIR_ENV) or _CHECKOUT_MIGRATIONS_DIR
    path = Path(candidate)
    if not path.is_dir():
        raise FileNotFoundError(
            f"migrations folder {path} not found; run from a docstatus checkout or set "
            f"{MIGRATIONS_DIR_ENV} to the database/migrations folder"
        )
    return path


def yoyo_url(dsn: str) -> str:
    """Turn a libpq DSN (``key=value`` or ``postgresql://`` URL) into a yoyo URL.

    Every libpq parameter goes into the query string: yoyo's psycopg backend
    passes query arguments straight to ``psycopg.connect``, so Unix-socket
    hosts, ``sslmode`` and friends survive, and nothing needs URL-escaping
    rules that yoyo does not undo (it does not unquote the database path).
    An empty DSN means "libpq defaults" (PGHOST, PGDATABASE, ...).
    """
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return "postgresql+psycopg:///?" + urlencode({k: str(v) for k, v in params.items()})


def _backend(dsn: str):
    return yoyo.get_backend(yoyo_url(dsn))


def _run(dsn: str, migrations_dir: str | os.PathLike[str] | None, rollback: bool) -> list[str]:
    """Apply the pending migrations (or roll back the applied ones) under yoyo's lock."""
    migrations = yoyo.read_migrations(str(find_migrations_dir(migrations_dir)))
    backend = _backend(dsn)
    try:
        with backend.lock():
            if rollback:
                chosen = backend.to_rollback(migrations)
                backend.rollback_migrations(chosen)
            else:
                chosen = backend.to_apply(migrations)
                backend.apply_migrations(chosen)
        return [m.id for m in chosen]
    finally:
        backend.connection.close()


def apply(dsn: str, migrations_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied, in order."""
    return _run(dsn, migrations_dir, rollback=False)


def rollback_all(dsn: str, migrations_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Roll back every applied migration, newest first; return the ids rolled back."""
    return _run(dsn, migrations_dir, rollback=True)
