"""Commands that load on first use, and say which extra to install when theirs is missing.

``pip install docstatus`` is the client and the migrations. The commands that need more (the
blob store, OCR, rich tables) each belong to an extra, ``docstatus[dms]``, ``[worker]`` or
``[ops]``. ``LazyGroup`` imports a command's module only when the command runs or the help
lists it, and first asks the installed package's metadata whether the command's extra is
installed; when it is not, the command is a stand-in that prints one line and exits 1:

    docstatus upload needs the dms extra: pip install 'docstatus[dms]'
"""

from __future__ import annotations

import functools
import importlib
import re
from importlib import metadata

import click

DISTRIBUTION = "docstatus"

# A Requires-Dist line: 'azure-storage-blob>=12.19; extra == "dms"' or 'docstatus[dms]; extra == "all"'.
_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
                          r"[^;]*(?:;(?P<marker>.*))?$")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


@functools.cache  # `docstatus --help` asks once per command, nine of them for `ops`
def missing_distributions(extra: str) -> tuple[str, ...]:
    """The distributions ``docstatus[extra]`` requires that are not installed, in order.

    pyproject.toml stays the one list: this reads it back from the installed metadata. A
    docstatus that is not installed at all (a bare checkout on ``sys.path``) has no metadata,
    and then nothing counts as missing.
    """
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return ()
    declared = distribution.metadata.get_all("Provides-Extra") or []
    if extra not in declared:
        raise LookupError(f"{DISTRIBUTION} has no extra {extra!r} (it has {', '.join(declared)})")
    missing: list[str] = []
    for line in distribution.requires or []:
        requirement = _REQUIREMENT.match(line.strip())
        if requirement is None or extra not in _EXTRA_MARKER.findall(requirement["marker"] or ""):
            continue
        name = requirement["name"]
        if name == DISTRIBUTION:  # docstatus[dms] inside another extra
            wanted = [dist for inner in (requirement["extras"] or "").split(",")
                      for dist in missing_distributions(inner.strip())]
        else:
            wanted = [name] if not _installed(name) else []
        missing += [dist for dist in wanted if dist not in missing]
    return tuple(missing)


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _needs_extra(name: str, extra: str) -> click.Command:
    """Stands in for command ``name``: whatever it is given (``--help`` too), one line, exit 1."""
    message = f"docstatus {name} needs the {extra} extra: pip install 'docstatus[{extra}]'"

    @click.pass_context
    def explain(ctx: click.Context) -> None:
        click.echo(message, err=True)
        ctx.exit(1)

    return click.Command(
        name, callback=explain, help=message, short_help=f"(needs the {extra} extra: pip install "
        f"'docstatus[{extra}]')", add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


class LazyGroup(click.Group):
    """A click group that also has commands named ``name: ("module:attribute", extra or None)``.

    Each loads the first time it is asked for; one whose extra is missing is ``_needs_extra``.
    """

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str | None]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        target, extra = self.lazy_commands[name]
        if extra is not None and missing_distributions(extra):
            return _needs_extra(name, extra)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command
