"""``docstatus dashboard``: serves the operator dashboard with uvicorn."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, cast

import click

from docstatus.dashboard.settings import TOKEN_ENV, DashboardSettings
from docstatus.options import blob_connection_string_option, dsn_option

if TYPE_CHECKING:
    from starlette.applications import Starlette

# Seconds uvicorn waits for open event streams on shutdown before it closes them.
GRACEFUL_SHUTDOWN = 2


@click.command()
@dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--allow-actions", is_flag=True,
              help=f"Offer retry, retry by error pattern, validate again and reap; operators sign in with "
                   f"the token in ${TOKEN_ENV}. Connect as a member of docstatus_operator.")
@blob_connection_string_option
def dashboard(dsn: str, host: str, port: int, allow_actions: bool, blob_connection_string: str | None) -> None:
    """A live web dashboard: counts, stuck documents, failures, documents, the state machine.

    Read-only unless --allow-actions; then connect (--dsn) as a login role that is a member of
    docstatus_operator, otherwise of docstatus_reader.
    """
    import uvicorn

    from docstatus.dashboard.app import create_app

    StreamClosingServer = _server_class()

    token = os.environ.get(TOKEN_ENV) or None
    if allow_actions and not token:
        raise click.UsageError(f"--allow-actions needs a token in the environment variable {TOKEN_ENV}")
    if allow_actions and not _loopback(host):
        click.echo(f"warning: actions are on and the dashboard listens on {host} without TLS: the token and "
                   "session cookie cross the network in clear text. Put a TLS-terminating proxy in front, "
                   "or bind 127.0.0.1.", err=True)
    settings = DashboardSettings(dsn=dsn, allow_actions=allow_actions, action_token=token,
                                 blob_connection_string=blob_connection_string)
    click.echo(f"docstatus dashboard on http://{host}:{port}/ (actions {'on' if settings.actions else 'off'})",
               err=True)
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
    StreamClosingServer(config).run()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_class():
    import uvicorn

    class StreamClosingServer(uvicorn.Server):
        """Ends the open event streams as soon as a shutdown is asked for (Ctrl-C, SIGTERM)."""

        def handle_exit(self, sig, frame) -> None:
            app = cast("Starlette", self.config.app)  # create_app's, as given to uvicorn.Config
            app.state.dashboard.hub.close_streams()
            super().handle_exit(sig, frame)

    return StreamClosingServer
