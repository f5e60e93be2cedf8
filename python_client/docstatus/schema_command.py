"""``docstatus schema``: the SQL that ships with docstatus, for teams that apply it themselves.

``docstatus schema`` prints ``schema.sql``, the whole current schema, to apply with psql,
Flyway, Liquibase or another migration tool (``docstatus schema | psql "$DSN"``).
``docstatus schema --migrations`` lists the migrations this docstatus ships and which of
them the database at ``--dsn`` has applied: the database's own record of its version.
"""

from __future__ import annotations

import click
import psycopg

from docstatus import database_files, migrations
from docstatus.options import dsn_option


@click.command()
@click.option("--migrations", "list_migrations", is_flag=True,
              help="List the migrations and which are applied on --dsn, instead of printing schema.sql.")
@dsn_option
def schema(list_migrations: bool, dsn: str) -> None:
    """Print schema.sql, or list the migrations and which are applied.

    schema.sql is the whole current schema, for psql or your own migration tool: on an empty
    database, `docstatus schema | psql "$DSN"` builds what `docstatus migrate` builds, without
    the migration record, so later upgrades stay with your tool.
    With --migrations: each migration shipped with this docstatus, 'applied' or 'pending' on
    the database at --dsn.
    """
    if not list_migrations:
        click.echo(database_files.schema_sql_path().read_text(encoding="utf-8"), nl=False)
        return
    try:
        states, unknown = migrations.applied_status(dsn)
    except (FileNotFoundError, psycopg.Error) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc  # libpq's lines as one
    for migration_id, applied in states:
        click.echo(f"{'applied' if applied else 'pending'}  {migration_id}")
    if unknown:
        click.echo(f"applied  ({unknown} more that this docstatus does not ship: "
                   "a newer release migrated this database)")
