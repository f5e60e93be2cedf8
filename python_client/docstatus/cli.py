"""The ``docstatus`` command line: the composition root.

``main`` is a click group: add a command with ``@main.command()`` here, or from another module
with ``main.lazy_commands`` (loaded on first use). The commands take their shared options from
``docstatus.options`` and never import this module.
"""

from __future__ import annotations

import click
import psycopg

from docstatus import __version__, migrations
from docstatus.connection_errors import postgres_unreachable_message
from docstatus.lazy_commands import LazyGroup
from docstatus.migrations_folder import NotAMigrationsFolder
from docstatus.options import dsn_option


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="docstatus")
def main() -> None:
    """docstatus: document statuses and jobs, kept in PostgreSQL."""


@main.command()
@dsn_option
@click.option("--rollback-all", is_flag=True, help="Roll back every applied migration instead.")
@click.option(
    "--migrations-dir",
    envvar=migrations.MIGRATIONS_DIR_ENV,
    type=click.Path(file_okay=False),
    default=None,
    show_envvar=True,
    help="Folder of docstatus SQL migrations, NNNN_name.sql and NNNN_name.rollback.sql only (anything "
         "else is refused; Python is never run) [default: the ones shipped with docstatus].",
)
def migrate(dsn: str, rollback_all: bool, migrations_dir: str | None) -> None:
    """Bring the database schema up to date (or all the way down)."""
    try:
        if rollback_all:
            done = migrations.rollback_all(dsn, migrations_dir)
        else:
            done = migrations.apply(dsn, migrations_dir)
    except (FileNotFoundError, NotAMigrationsFolder) as exc:
        # The message says what to fix; a traceback would only bury it.
        raise click.ClickException(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise click.ClickException(postgres_unreachable_message(dsn, exc)) from exc
    except psycopg.Error as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    verb = "rolled back" if rollback_all else "applied"
    for migration_id in done:
        click.echo(f"{verb} {migration_id}")
    if not done:
        click.echo("nothing to roll back" if rollback_all else "already up to date")


# Commands that load on first use: each needs only its own extra installed, and says which
# one when it is missing (docstatus.lazy_commands).
main.lazy_commands.update({
    "schema": ("docstatus.schema_command:schema", None),
    "diagram": ("docstatus.diagram.cli:diagram", None),
    "upload": ("docstatus.dms.cli:upload", "dms"),
    "worker": ("docstatus.pipeline.cli:worker", "worker"),
    "dashboard": ("docstatus.dashboard.command:dashboard", "dashboard"),
    **{name: (f"docstatus.ops.commands:{name}", "ops")  # status, show, jobs, ...: operations
       for name in ("status", "show", "jobs", "stuck", "failures", "retry", "watch", "reap", "metrics")},
})
