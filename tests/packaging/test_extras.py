"""The lazy command table and the extras it names agree with the installed metadata."""

from __future__ import annotations

from importlib import metadata

import click
import pytest

from docstatus.cli import main
from docstatus.lazy_commands import missing_distributions


def test_every_lazy_command_loads_under_its_name_and_names_a_declared_extra():
    declared = metadata.metadata("docstatus").get_all("Provides-Extra")
    assert {"dms", "worker", "ops", "dashboard", "all", "test"} <= set(declared)
    context = click.Context(main)
    for name, (_, extra) in main.lazy_commands.items():
        assert extra is None or extra in declared, (name, extra)
        command = main.get_command(context, name)
        assert isinstance(command, click.Command) and command.name == name
        assert "needs the" not in (command.short_help or ""), f"{name}: its extra is installed here"


def test_a_complete_install_misses_nothing_and_an_unknown_extra_is_an_error():
    # `make venv` installs .[all,test,dashboard]; `worker` pulls in `dms` through docstatus[dms].
    for extra in ("dms", "worker", "ops", "dashboard", "all"):
        assert missing_distributions(extra) == ()
    with pytest.raises(LookupError, match="no extra 'nosuch'"):
        missing_distributions("nosuch")
