"""Where the SQL product is: the migrations and ``schema.sql``, installed or in a checkout.

``database/`` at the repository root is the one source. Building a wheel copies it into the
package as ``docstatus/_database/`` (see setup.py), so an installed docstatus finds the SQL
among its own resources, with no checkout and no environment variable. A checkout or an
editable install has no copy and reads the repository's folder instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGED_NAME = "_database"  # setup.py: DATABASE_IN_PACKAGE

# python_client/docstatus/database_files.py -> parents[2] is the repository root.
_CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "database"


def database_dir() -> Path:
    """The folder holding ``migrations/`` and ``schemas/schema.sql``."""
    # pip installs unpack wheels, so the resource is a real folder that yoyo and psql can read.
    packaged = Path(str(resources.files("docstatus") / PACKAGED_NAME))
    for candidate in (packaged, _CHECKOUT_DIR):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"the docstatus SQL is missing: neither {packaged} (an installed wheel) nor {_CHECKOUT_DIR} "
        "(a checkout) exists; reinstall docstatus"
    )


def migrations_dir() -> Path:
    """``database/migrations``: the yoyo migrations, ``NNNN_slug.sql`` and ``.rollback.sql``."""
    return database_dir() / "migrations"


def schema_sql_path() -> Path:
    """``database/schemas/schema.sql``: the whole current schema, for a fresh install."""
    return database_dir() / "schemas" / "schema.sql"
