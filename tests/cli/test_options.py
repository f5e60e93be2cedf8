"""The options every command shares: one name for the blob connection string, old names hidden."""

import click
import pytest
from click.testing import CliRunner

from docstatus.cli import main
from docstatus.options import blob_connection_string_option


@click.command()
@blob_connection_string_option
def show_it(blob_connection_string):
    click.echo(repr(blob_connection_string))


@pytest.mark.parametrize("args, env, expected", [
    (["--blob-connection-string", "new"], {}, "'new'"),
    (["--connection-string", "old"], {}, "'old'"),
    ([], {"AZURE_STORAGE_CONNECTION_STRING": "from-env"}, "'from-env'"),
    ([], {"AZURE_STORAGE_CONNECTION_STRING": ""}, "None"),
])
def test_blob_connection_string_and_its_old_name(args, env, expected):
    result = CliRunner().invoke(show_it, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == expected


@pytest.mark.parametrize("command", ["upload", "retry", "worker"])
def test_every_blob_command_shows_the_one_name(command):
    help_text = CliRunner().invoke(main, [command, "--help"]).output
    assert "--blob-connection-string" in help_text
    assert "--connection-string" not in help_text.replace("--blob-connection-string", "")
