"""A value as one cell of a human table: control characters escaped, so a row stays one row.

A filename may hold a newline, a tab or an ANSI escape (ESC [ 2 J clears a terminal); an error
message may hold anything a library put in it. Printed as is, they split a row, shift columns
or drive the terminal. Every human table (``upload``, ``show``, ``status``, ``jobs``,
``failures``, ``stuck``, ``watch``...) passes its text through ``escape_cell``; JSON output
keeps the values as they are (JSON escapes them itself).

    escape_cell("a\\nb.pdf")  -> 'a\\\\nb.pdf'      (shown as a\\nb.pdf)
    escape_cell("\\x1b[2J")   -> '\\\\x1b[2J'
"""

from __future__ import annotations

import unicodedata

__all__ = ["escape_cell"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    # Cc: C0/C1 controls and DEL; Cf: invisible format characters (bidi overrides, zero width)
    # that can make a cell read as something else; Zl/Zp: line and paragraph separators.
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def escape_cell(value: object) -> str:
    """``value`` as text for a table cell: '' for None, control characters as escapes."""
    if value is None:
        return ""
    text = str(value)
    if text.isprintable():
        return text  # the common case, without a pass over each character
    return "".join(_escape_char(char) for char in text)
