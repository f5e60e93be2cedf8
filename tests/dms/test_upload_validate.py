"""Upload and validation against a real Azurite and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from datetime import timedelta

import pytest

from docstatus.dms import SourceChangedError, blob_name
from docstatus.errors import NotFound
from docstatus.models import JobStatus, ProcessingStatus, TextExtractionStatus

from .conftest import DATA

ROUND_TRIP = [
    ("invoice.pdf", "application/pdf"),
    ("invoice.png", "image/png"),
    ("invoice.jpg", "image/jpeg"),
    ("invoice.tiff", "image/tiff"),
    ("invoice.txt", "text/plain"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("sample", "detected"), ROUND_TRIP)
def test_round_trip_promotes_to_ready_with_one_job(store, blob_service, sample, detected):
    path = DATA / sample
    data = path.read_bytes()

    document, job = store.upload_and_validate(path)

    assert document.filename == sample
    assert document.size_bytes == len(data)
    assert document.mime_type == detected
    assert (document.text_extraction_status, document.processing_status) == (
        TextExtractionStatus.READY, ProcessingStatus.PENDING_EXTRACTION)
    assert document.status_reason is None
    assert job is not None
    assert (job.document_id, job.status, job.attempt) == (document.id, JobStatus.PENDING_EXTRACTION, 1)
    assert document.blob_container == store.container
    assert document.blob_name == blob_name(sha256(data), sample)

    blob = blob_service.get_blob_client(document.blob_container, document.blob_name)
    assert blob.download_blob().readall() == data
    properties = blob.get_blob_properties()
    assert properties.metadata == {"sha256": sha256(data), "size_bytes": str(len(data)), "content_type": detected}
    assert properties.content_settings.content_type == detected  # claimed from the name here


def test_upload_registers_not_ready_with_the_claimed_type(store):
    document = store.upload(DATA / "invoice.pdf", content_type="application/x-claimed")
    assert (document.text_extraction_status, document.processing_status) == ("not ready", "pending extraction")
    assert document.mime_type == "application/x-claimed"
    assert store.client.list_jobs(document.id) == []
    # Validation trusts the bytes, not the claim.
    assert store.validate(document.id).mime_type == "application/pdf"


def test_identical_reupload_is_the_same_document_and_blob(store, blob_service):
    first, first_job = store.upload_and_validate(DATA / "invoice.png")
    blob = blob_service.get_blob_client(first.blob_container, first.blob_name)
    etag = blob.get_blob_properties().etag

    again, again_job = store.upload_and_validate(DATA / "invoice.png")
    from_bytes = store.upload((DATA / "invoice.png").read_bytes(), filename="invoice.png")

    assert again.id == first.id == from_bytes.id
    assert again_job == first_job  # no second job
    assert blob.get_blob_properties().etag == etag  # the blob was not written again
    names = [b.name for b in blob_service.get_container_client(store.container).list_blobs()]
    assert names == [first.blob_name]


def test_same_bytes_under_another_name_is_another_document(store):
    data = (DATA / "invoice.txt").read_bytes()
    one = store.upload(data, filename="a.txt")
    other = store.upload(data, filename="b.txt")
    assert one.id != other.id and one.blob_name != other.blob_name


def test_a_changed_file_is_a_new_document(store, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first version\n")
    first = store.upload(path)
    path.write_text("second version\n")
    second = store.upload(path)
    assert first.id != second.id


@pytest.mark.parametrize("sample", ["spoofed_elf.pdf", "spoofed_pe.pdf"])
def test_an_executable_named_pdf_is_rejected(store, sample):
    document, job = store.upload_and_validate(DATA / sample, content_type="application/pdf")
    assert (document.text_extraction_status, document.processing_status) == ("failed", "failed")
    assert document.mime_type in ("application/x-executable", "application/vnd.microsoft.portable-executable",
                                  "application/x-dosexec")
    assert document.status_reason == f"MIME type {document.mime_type} is not allowed"
    assert job is None


def test_an_empty_file_is_rejected_with_its_reason(store, blob_service):
    document, job = store.upload_and_validate(DATA / "empty.txt")
    assert (document.text_extraction_status, document.processing_status) == ("failed", "failed")
    assert document.status_reason == "document is empty (0 bytes)"
    assert document.size_bytes == 0
    assert job is None
    blob = blob_service.get_blob_client(document.blob_container, document.blob_name)
    assert blob.get_blob_properties().size == 0


def test_an_oversize_file_is_rejected_and_passes_once_the_limit_is_raised(store, conn):
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1024")
    document, job = store.upload_and_validate(DATA / "invoice.png")
    assert document.text_extraction_status == "failed"
    assert document.status_reason == (f"document is {document.size_bytes} bytes, more than the limit of 1024 bytes "
                                      "(settings.max_document_bytes)")
    assert job is None

    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1048576")
    assert store.validate(document.id).text_extraction_status == "ready"


def test_blob_deleted_between_upload_and_validate(store, blob_service):
    document = store.upload(DATA / "invoice.pdf")
    blob_service.get_blob_client(document.blob_container, document.blob_name).delete_blob()

    validated = store.validate(document.id)
    assert (validated.text_extraction_status, validated.status_reason) == (
        "not ready", "blob not retrievable: blob not found")
    assert store.client.list_jobs(document.id) == []

    # Uploading it again restores the blob; the same document then passes.
    assert store.upload(DATA / "invoice.pdf").id == document.id
    assert store.validate(document.id).text_extraction_status == "ready"


def test_blob_replaced_with_other_bytes_is_not_retrievable(store, blob_service):
    document = store.upload(DATA / "invoice.txt")
    blob_service.get_blob_client(document.blob_container, document.blob_name).upload_blob(
        b"something else entirely", overwrite=True)
    assert store.validate(document.id).status_reason == (
        "blob not retrievable: blob has 23 bytes, the document was registered with 131")


def test_azurite_stopped_during_validate_then_revalidate_pending(make_store, stoppable_azurite):
    store = make_store(on=stoppable_azurite)
    waiting = [store.upload(DATA / name) for name in ("invoice.pdf", "invoice.txt")]

    stoppable_azurite.stop()
    for document in waiting:
        validated = store.validate(document.id)
        assert (validated.text_extraction_status, validated.processing_status) == ("not ready", "pending extraction")
        assert validated.status_reason.startswith("blob not retrievable: blob store error: ")
    # still down: still waiting, with the store's error as the reason
    assert store.revalidate_pending()[0].status_reason.startswith("blob not retrievable: blob store error: ")

    stoppable_azurite.start()
    revalidated = store.revalidate_pending()
    assert [d.id for d in revalidated] == [d.id for d in waiting]
    assert {d.text_extraction_status for d in revalidated} == {"ready"}
    assert store.revalidate_pending() == []
    assert all(len(store.client.list_jobs(d.id)) == 1 for d in waiting)


def test_revalidate_pending_skips_recent_documents_and_other_containers(store, make_store, conn):
    document = store.upload(DATA / "invoice.txt")
    assert store.revalidate_pending(older_than=timedelta(hours=1)) == []
    conn.execute("SELECT docstatus.register_document('elsewhere', 'x', 'x.txt')")
    assert [d.id for d in store.revalidate_pending()] == [document.id]


def test_validate_unknown_document(store):
    with pytest.raises(NotFound) as raised:
        store.validate(987654)
    assert raised.value.document_id == 987654


# Sources: path, bytes, seekable and non-seekable streams, large files in blocks


class OneWayStream(io.RawIOBase):
    """A pipe-like stream: readable once, not seekable, short reads."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), 1000, len(self._data) - self._at)
        buffer[:size] = self._data[self._at:self._at + size]
        self._at += size
        return size


def big_payload(size: int) -> bytes:
    # Not compressible and not repetitive, so a wrong block order would show.
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(size // 32 + 1))[:size]


@pytest.mark.parametrize("kind", ["path", "bytes", "seekable", "one-way"])
def test_every_kind_of_source_stores_the_same_blob(make_store, blob_service, tmp_path, kind):
    # Small chunks, so a ~300 KB payload goes through staged blocks and parallel staging.
    store = make_store(chunk_size=64 * 1024, single_put_max=32 * 1024, max_concurrency=3)
    data = big_payload(300_001)
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    source = {
        "path": lambda: path,
        "bytes": lambda: data,
        "seekable": lambda: open(path, "rb"),
        "one-way": lambda: io.BufferedReader(OneWayStream(data)),
    }[kind]()
    filename = None if kind in ("path", "seekable") else "big.txt"

    document = store.upload(source, filename=filename)

    assert (document.filename, document.size_bytes) == ("big.txt", len(data))
    blob = blob_service.get_blob_client(store.container, document.blob_name)
    assert blob.download_blob().readall() == data
    assert blob.get_blob_properties().metadata["sha256"] == sha256(data)
    blocks, _ = blob.get_block_list()
    assert len(blocks) == 5  # 300,001 bytes in 64 KiB blocks


def test_a_seekable_stream_is_read_from_its_current_position(store, blob_service):
    stream = io.BytesIO(b"HEADER-TO-SKIP" + b"plain text body\n")
    stream.seek(len(b"HEADER-TO-SKIP"))
    document = store.upload(stream, filename="body.txt")
    assert blob_service.get_blob_client(store.container, document.blob_name).download_blob().readall() == \
        b"plain text body\n"


def test_bytes_need_a_filename(store):
    with pytest.raises(ValueError, match="filename"):
        store.upload(b"data")


def test_a_source_that_changes_while_uploading_commits_nothing(make_store, blob_service, conn, tmp_path):
    store = make_store(chunk_size=64 * 1024, single_put_max=0, max_concurrency=1)
    path = tmp_path / "moving.txt"
    path.write_bytes(big_payload(200_000))

    class ChangingFile(io.FileIO):
        """Gives other bytes once rewound after hashing, as a file rewritten under us would."""

        rewound = False

        def seek(self, *args):
            self.rewound = True
            return super().seek(*args)

        def read(self, size=-1):
            data = super().read(size)
            return data.upper() if self.rewound else data

    with ChangingFile(path, "r") as changing, pytest.raises(SourceChangedError):
        store.upload(changing, filename="moving.txt")
    assert list(blob_service.get_container_client(store.container).list_blobs()) == []
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 0


def test_concurrent_identical_large_uploads_race_to_one_blob(make_store, blob_service):
    store = make_store(chunk_size=32 * 1024, single_put_max=0, max_concurrency=2)
    data = big_payload(400_000)
    results, errors = [], []
    barrier = threading.Barrier(6)

    def upload():
        barrier.wait()
        try:
            results.append(store.upload(data, filename="same.bin"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len({document.id for document in results}) == 1 and len(results) == 6
    blob = blob_service.get_blob_client(store.container, results[0].blob_name)
    assert blob.download_blob().readall() == data


def test_pdf_sample_has_a_real_text_layer():
    pypdf = pytest.importorskip("pypdf")
    text = pypdf.PdfReader(DATA / "invoice.pdf").pages[0].extract_text()
    assert "2024-03-15" in text and "1,234.56 EUR" in text and "billing@example.com" in text


def test_samples_are_small():
    assert all(path.stat().st_size < 32 * 1024 for path in DATA.iterdir()), os.listdir(DATA)
