"""Every SQLSTATE the database raises on purpose arrives as its docstatus exception."""

import psycopg
import pytest

from docstatus import (
    Client,
    DocStatusError,
    DocumentJobMismatch,
    InvalidArgument,
    InvalidTransition,
    LeaseLost,
    NotFound,
    PermissionDenied,
)
from docstatus.errors import translate, translated

from .helpers import claim_any, new_blob


@pytest.fixture
def client(conn):
    return Client(conn)


def queued_document(client):
    document = client.register_document("docs", new_blob(), "f.pdf")
    return client.validate_document(document.id, True, "application/pdf")


def assert_caused_by(error, sqlstate):
    assert isinstance(error.__cause__, psycopg.Error)
    assert error.__cause__.sqlstate == sqlstate == error.sqlstate


def test_invalid_transition_ds001_with_its_attributes(client):
    document = client.register_document("docs", new_blob(), "f.pdf")
    with pytest.raises(InvalidTransition) as caught:
        client.mark_llm_running(document.id)
    error = caught.value
    # The trigger judges the text extraction column first.
    assert (error.document_id, error.column, error.from_status, error.to_status) == (
        document.id, "text_extraction_status", "not ready", "in progress")
    assert error.kind == "text_extraction" and error.job_id is None
    assert error.hint and "status_transitions" in error.hint
    assert_caused_by(error, "DS001")


def test_invalid_transition_of_a_job_names_it(client):
    document = client.register_document("docs", new_blob(), "f.pdf")
    with pytest.raises(InvalidTransition) as caught:
        client.create_extraction_job(document.id)  # not ready: no job
    assert (caught.value.column, caught.value.from_status, caught.value.to_status) == (
        "status", None, "pending extraction")


def test_not_found_ds002(client):
    with pytest.raises(NotFound) as caught:
        client.validate_document(987654, True, "application/pdf")
    assert caught.value.document_id == 987654
    assert_caused_by(caught.value, "DS002")
    with pytest.raises(NotFound) as caught:
        client.heartbeat_job(876543, "w1")
    assert caught.value.job_id == 876543


@pytest.mark.parametrize("call", [
    lambda client: client.register_document("", "blob", "f.pdf"),
    lambda client: client.register_document("docs", "blob", "f.pdf", size_bytes=-1),
    lambda client: client.claim_extraction_job(""),
    lambda client: client.events_after(limit=0),
])
def test_invalid_argument_ds003(client, call):
    with pytest.raises(InvalidArgument) as caught:
        call(client)
    assert_caused_by(caught.value, "DS003")


def test_unknown_status_check_violation_23514_is_an_invalid_argument(conn, client):
    document = client.register_document("docs", new_blob(), "f.pdf")
    with pytest.raises(InvalidArgument) as caught, translated():
        conn.execute("UPDATE docstatus.documents SET processing_status = 'sleeping' WHERE id = %s", (document.id,))
    assert caught.value.constraint == "documents_processing_status_check"
    assert_caused_by(caught.value, "23514")


def test_lease_lost_ds004_with_its_attributes(client):
    queued_document(client)
    job = claim_any(client, "w1")
    with pytest.raises(LeaseLost) as caught:
        client.mark_ocr_running(job.document_id, "w2")
    error = caught.value
    assert (error.document_id, error.worker_id, error.job_id, error.holder) == (job.document_id, "w2", job.id, "w1")
    assert_caused_by(error, "DS004")


def test_document_job_mismatch_ds005_at_commit(connect, client):
    document = queued_document(client)
    job = client.list_jobs(document.id)[0]
    writer = connect()  # not autocommit: the check runs at COMMIT
    writer.execute("UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = 'by hand'"
                   " WHERE id = %s", (job.id,))
    with pytest.raises(DocumentJobMismatch) as caught, translated():
        writer.commit()
    error = caught.value
    assert (error.document_id, error.text_extraction_status, error.has_active_job) == (document.id, "ready", False)
    assert_caused_by(error, "DS005")


def test_permission_denied_42501(connect):
    reader = connect(autocommit=True)
    reader.execute("SET ROLE docstatus_reader")
    client = Client(reader)
    assert client.events_after() == []  # a reader may read
    with pytest.raises(PermissionDenied) as caught:
        client.register_document("docs", new_blob(), "f.pdf")
    assert_caused_by(caught.value, "42501")


def test_other_ds_codes_are_docstatus_errors(conn, client):
    client.register_document("docs", new_blob(), "f.pdf")
    with pytest.raises(DocStatusError) as caught, translated():
        conn.execute("DELETE FROM docstatus.status_events")
    assert type(caught.value) is DocStatusError
    assert_caused_by(caught.value, "DS006")


def test_every_mapped_class_is_a_docstatus_error():
    for cls in (InvalidTransition, NotFound, InvalidArgument, LeaseLost, DocumentJobMismatch, PermissionDenied):
        assert issubclass(cls, DocStatusError)


def test_foreign_errors_stay_psycopg_errors(conn):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with translated():
            conn.execute("SELECT 1 / 0")
    try:
        conn.execute("SELECT 1 / 0")
    except psycopg.Error as exc:
        assert translate(exc) is None


def test_connection_loss_stays_a_psycopg_operational_error(connect, conn):
    victim = connect(autocommit=True)
    client = Client(victim)
    conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError) as caught:
        client.events_after()
    assert not isinstance(caught.value, DocStatusError)
