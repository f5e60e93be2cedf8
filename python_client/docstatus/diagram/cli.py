"""``docstatus diagram``: the state machine as Mermaid or Graphviz, read from the database."""

from __future__ import annotations

import click
import psycopg

from docstatus.client import Client
from docstatus.diagram.render import FORMATS, state_diagram
from docstatus.errors import DocStatusError
from docstatus.options import dsn_option

# libpq waits forever for a host that drops packets; a command should say so within seconds.
CONNECT_TIMEOUT = 10


@click.command()
@dsn_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="mermaid", show_default=True,
              help="mermaid: a stateDiagram-v2 block for Markdown; dot: Graphviz (dot -Tsvg).")
def diagram(dsn: str, fmt: str) -> None:
    """Print the document and job state machines, from docstatus.document_states and
    docstatus.status_transitions.

    The README's diagram is this output: `docstatus diagram > states.mmd`, or
    `docstatus diagram --format dot | dot -Tsvg > states.svg`.
    """
    try:
        with Client.connect(dsn, connect_timeout=CONNECT_TIMEOUT) as client:
            text = state_diagram(client, fmt)
    except (psycopg.Error, DocStatusError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    click.echo(text, nl=False)
