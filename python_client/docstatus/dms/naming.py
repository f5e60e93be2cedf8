"""Blob names: stable, safe, and one per (content, filename).

    <sha256 of the content>/<16 hex of sha256 of the filename>-<readable, sanitised filename>

The content hash makes an identical re-upload land on the same blob (and so, through
``register_document``, on the same document). The filename hash keeps two filenames apart
even when sanitising makes them look alike ("a/b.pdf" and "a_b.pdf"), so nothing collides.
The readable part is for people browsing the container: ASCII letters, digits, ``.``, ``_``
and ``-`` only, never starting with a dot, at most 100 characters. It has no ``/`` or
``\\``, so no ``..`` segment or absolute path can take a blob out of its folder.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

READABLE_MAX = 100
_NAME_KEY_HEX = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def normalise_filename(filename: str) -> str:
    """The filename as docstatus stores it: NFC (so a macOS NFD name is the same name)."""
    if not isinstance(filename, str) or not filename.strip():
        raise ValueError("a filename must be a non-empty string")
    if "\x00" in filename:
        raise ValueError("a filename must not contain NUL characters")
    return unicodedata.normalize("NFC", filename)


def readable_part(filename: str) -> str:
    """ASCII-only, separator-free rendering of a filename, keeping its extension."""
    # Accents become their base letter ("Überweisung" -> "Uberweisung"); other scripts drop out.
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    safe = _UNSAFE.sub("_", ascii_name).strip("._-")
    if len(safe) > READABLE_MAX:
        extension = match.group(0) if (match := _EXTENSION.search(safe)) else ""
        safe = safe[: READABLE_MAX - len(extension)].rstrip("._-") + extension
    return safe or "file"


def blob_name(content_sha256: str, filename: str) -> str:
    """The blob name for this content under this filename (see the module docstring)."""
    if not re.fullmatch(r"[0-9a-f]{64}", content_sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {content_sha256!r}")
    filename = normalise_filename(filename)
    name_key = hashlib.sha256(filename.encode("utf-8")).hexdigest()[:_NAME_KEY_HEX]
    return f"{content_sha256}/{name_key}-{readable_part(filename)}"
