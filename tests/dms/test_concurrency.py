"""Many uploads at once: none lost, none duplicated."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

FILES = 200
THREADS = 8


def test_200_files_from_8_threads_without_a_lost_or_duplicated_document(store, blob_service, conn, tmp_path):
    paths = []
    for index in range(FILES):
        path = tmp_path / f"doc-{index:03d}.txt"
        path.write_text(f"Document {index}\nDate: 2024-03-{index % 28 + 1:02d}\nAmount: {index}.00 EUR\n")
        paths.append(path)
    # Every fifth file is sent twice, so identical uploads also race each other.
    work = paths + paths[::5]
    random.Random(4).shuffle(work)

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda path: (path, store.upload_and_validate(path)), work))

    ids_by_path: dict = {}
    for path, (document, job) in results:
        ids_by_path.setdefault(path, set()).add(document.id)
        assert document.text_extraction_status == "ready", (path, document.status_reason)
        assert job is not None and job.attempt == 1
    assert set(ids_by_path) == set(paths)
    assert all(len(ids) == 1 for ids in ids_by_path.values())  # a repeat is the same document

    rows = conn.execute(
        "SELECT d.filename, d.text_extraction_status, count(j.id)"
        "  FROM docstatus.documents d LEFT JOIN docstatus.extraction_jobs j ON j.document_id = d.id"
        " GROUP BY d.id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(p.name for p in paths)
    assert {(r[1], r[2]) for r in rows} == {("ready", 1)}

    blobs = {b.name for b in blob_service.get_container_client(store.container).list_blobs()}
    assert blobs == {document.blob_name for _, (document, _) in results}
    assert len(blobs) == FILES
