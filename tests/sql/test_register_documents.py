"""register_documents: register_document for a batch, in one statement."""

import psycopg
import pytest

from .states import sqlstate_of

COLUMNS = "id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status"


def register_many(conn, containers, names, filenames, mime_types=None, sizes=None):
    return conn.execute(
        f"SELECT {COLUMNS} FROM docstatus.register_documents(%s, %s, %s, %s, %s)",
        (containers, names, filenames, mime_types, sizes)).fetchall()

def test_registers_in_order_with_history(conn):
    rows = register_many(conn, ["c", "c", "d"], ["b1", "b2", "b1"], ["1.pdf", "2.pdf", "3.pdf"],
                         ["application/pdf", "", None], [10, None, 0])
    assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("c", "b1", "1.pdf", "application/pdf", 10, "not ready"),
        ("c", "b2", "2.pdf", None, None, "not ready"),
        ("d", "b1", "3.pdf", None, 0, "not ready")]
    history = conn.execute(
        "SELECT document_id, kind, from_status, to_status FROM docstatus.status_events"
        " WHERE document_id = ANY(%s) ORDER BY id", ([r[0] for r in rows],)).fetchall()
    assert history == [row for r in rows for row in ((r[0], "text_extraction", None, "not ready"),
                                                     (r[0], "processing", None, "pending extraction"))]

def test_known_blobs_and_repeats_return_the_existing_row(conn):
    (first,) = register_many(conn, ["c"], ["known"], ["a.pdf"])
    rows = register_many(conn, ["c", "c", "c"], ["known", "new", "new"], ["other.pdf", "n.pdf", "again.pdf"])
    assert rows[0] == first
    assert rows[1] == rows[2] and rows[1][3] == "n.pdf"
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s",
                        (rows[1][0],)).fetchone()[0] == 2

def test_empty_batch_returns_nothing(conn):
    assert register_many(conn, [], [], []) == []

@pytest.mark.parametrize("arguments", [
    (["c", "c"], ["a"], ["f", "f"], None, None),
    (["c"], ["a"], ["f"], ["x/y", "x/y"], None),
    (["c"], ["a"], ["f"], None, [1, 2]),
    (None, ["a"], ["f"], None, None),
    (["c", "c"], ["a", ""], ["f", "f"], None, None),
    (["c", None], ["a", "b"], ["f", "f"], None, None),
    (["c"], ["a"], [""], None, None),
    (["c", "c"], ["a", "b"], ["f", "f"], None, [1, -1]),
])
def test_bad_batches_are_refused_whole(conn, arguments):
    before = conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0]
    assert sqlstate_of(lambda: register_many(conn, *arguments)) == "DS003"
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == before

def test_the_dms_role_may_call_it(conn):
    conn.execute("SET ROLE docstatus_dms")
    assert len(register_many(conn, ["c"], ["by-dms"], ["f"])) == 1
    conn.execute("RESET ROLE")
    conn.execute("SET ROLE docstatus_worker")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        register_many(conn, ["c"], ["by-worker"], ["f"])


@pytest.mark.parametrize(("containers", "names", "filenames", "argument"), [
    (["c" * 64], ["b"], ["f"], "blob container"),
    (["c"], ["b" * 1025], ["f"], "blob name"),
    (["c"], ["€" * 1000], ["f"], "blob name"),
    (["c"], ["b"], ["f" * 1025], "filename"),
    (["c", "c"], ["b1", "   "], ["f", "f"], "blob name"),
])
def test_names_beyond_the_limits_of_register_document_are_refused_with_ds003(conn, containers, names, filenames,
                                                                            argument):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM docstatus.register_documents(%s, %s, %s)", (containers, names, filenames))
    assert caught.value.sqlstate == "DS003"
    assert str(caught.value).startswith(argument), str(caught.value)
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 0
