"""Filenames never escape their blob folder or collide, whatever they contain."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pytest

from docstatus.dms import blob_name
from docstatus.dms.naming import READABLE_MAX, readable_part

CONTENT = b"INVOICE 2024-0042, total 1,234.56 EUR\n"
DIGEST = hashlib.sha256(CONTENT).hexdigest()
SAFE_BLOB_NAME = re.compile(r"^[0-9a-f]{64}/[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]*$")

HOSTILE = [
    "../../etc/passwd",
    "/etc/shadow",
    "a/b.txt",
    "a_b.txt",
    "a\\b.txt",
    "C:\\Windows\\System32\\evil.txt",
    "..",
    ".hidden",
    "...",
    "  spaced name .txt",
    "query?x=1&y=%2e%2e#frag.txt",
    "line\nbreak\ttab.txt",
    "Überweisung März.txt",
    unicodedata.normalize("NFD", "Überweisung März.txt"),  # the same name as macOS spells it
    "請求書 2024 ✓.txt",
    "🧾.txt",
    "Ｆｕｌｌｗｉｄｔｈ.txt",
    "x" * 996 + ".txt",  # 1,000 characters
    "ü" * 1000,  # 1,000 characters, 2,000 bytes of UTF-8
]


@pytest.mark.parametrize("filename", HOSTILE)
def test_blob_names_are_safe(filename):
    name = blob_name(DIGEST, filename)
    assert SAFE_BLOB_NAME.match(name), name
    assert len(name) <= 64 + 1 + 16 + 1 + READABLE_MAX
    assert ".." not in name.split("/") and "\\" not in name


def test_blob_names_are_stable():
    assert blob_name(DIGEST, "invoice.pdf") == blob_name(DIGEST, "invoice.pdf")
    assert blob_name(DIGEST, "invoice.pdf").endswith("-invoice.pdf")
    assert blob_name(DIGEST, "Rechnung März.pdf").endswith("-Rechnung_Marz.pdf")


def test_long_names_keep_their_extension():
    readable = readable_part("y" * 1000 + ".pdf")
    assert len(readable) == READABLE_MAX and readable.endswith(".pdf")


def test_names_alike_after_sanitising_do_not_collide():
    names = {blob_name(DIGEST, f) for f in ("a/b.txt", "a_b.txt", "a\\b.txt", "a b.txt", "a?b.txt")}
    assert len(names) == 5


def test_bad_filenames_are_refused():
    for bad in ("", "   ", "nul\x00byte.txt"):
        with pytest.raises(ValueError):
            blob_name(DIGEST, bad)
    with pytest.raises(ValueError):
        blob_name("not-a-digest", "a.txt")


def test_hostile_filenames_round_trip_through_azurite_and_postgres(store, blob_service):
    documents = [store.upload(CONTENT, filename=filename) for filename in HOSTILE]

    expected_names = {unicodedata.normalize("NFC", f) for f in HOSTILE}
    by_filename = {}
    for filename, document in zip(HOSTILE, documents, strict=True):
        nfc = unicodedata.normalize("NFC", filename)
        assert document.filename == nfc  # stored whole, 1,000 characters included
        by_filename.setdefault(nfc, set()).add(document.id)
    # One document per distinct (NFC) filename: no collision, no duplicate.
    assert all(len(ids) == 1 for ids in by_filename.values())
    assert len({d.id for d in documents}) == len(expected_names) == len(HOSTILE) - 1

    container = blob_service.get_container_client(store.container)
    stored = sorted(blob.name for blob in container.list_blobs())
    assert stored == sorted({d.blob_name for d in documents})
    assert all(name.startswith(f"{DIGEST}/") for name in stored)  # nothing escaped its folder
    for document in documents:
        assert container.get_blob_client(document.blob_name).download_blob().readall() == CONTENT
        assert store.validate(document.id).text_extraction_status == "ready"
