"""``python -m docstatus``: the ``docstatus`` command."""

from docstatus.cli import main

main(prog_name="docstatus")
