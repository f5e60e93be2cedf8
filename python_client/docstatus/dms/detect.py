"""MIME type detection from a document's first bytes (libmagic), never from its name."""

from __future__ import annotations

import threading

import magic

# libmagic decides every type we allow from far fewer bytes; Office-style containers may
# need more, and reading 64 KiB of a blob is cheap.
HEAD_BYTES = 64 * 1024

_local = threading.local()


def _magic() -> magic.Magic:
    # A libmagic cookie is not safe to share between threads: one per thread.
    cookie = getattr(_local, "cookie", None)
    if cookie is None:
        cookie = _local.cookie = magic.Magic(mime=True)
    return cookie


def detect_mime_type(head: bytes) -> str:
    """The MIME type libmagic sees in ``head`` (e.g. 'application/pdf', 'application/x-empty')."""
    return _magic().from_buffer(bytes(head[:HEAD_BYTES]))
