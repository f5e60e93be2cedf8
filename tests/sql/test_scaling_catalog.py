"""docs/scaling.md lists what is keyed by document (and what is not) for sharding by document_id;
the lists are read from the catalog here, so the document cannot drift from the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SCALING_MD = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def documented(block: str) -> set[str]:
    """The `names` between <!-- catalog: BLOCK --> and <!-- end --> in docs/scaling.md."""
    text = SCALING_MD.read_text(encoding="utf-8")
    match = re.search(rf"<!-- catalog: {re.escape(block)} -->(.*?)<!-- end -->", text, re.S)
    assert match, f"docs/scaling.md has no block {block!r}"
    return set(re.findall(r"`([^`]+)`", match.group(1)))


def public_functions(conn) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT p.proname, coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}')"
        "  FROM pg_proc p WHERE p.pronamespace = 'docstatus'::regnamespace"
        "   AND p.proname NOT LIKE '\\_%%' AND p.prorettype <> 'trigger'::regtype").fetchall()
    return {name: {arg for arg, mode in zip(names, modes or ["i"] * len(names), strict=True) if mode in ("i", "b")}
            for name, names, modes in rows}


def unique_indexes(conn) -> list[tuple[str, str, list[str], bool]]:
    """(table, index, columns, the table has a document_id) of every unique index, partitions aside."""
    return [(table, index, columns, has_document) for table, index, columns, has_document in conn.execute(
        "SELECT t.relname, c.relname,"
        "       array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a"
        "               ON a.attrelid = t.oid AND a.attnum = k)::text[],"
        "       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attname = 'document_id')"
        "         OR t.relname = 'documents'"
        "  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " WHERE i.indisunique AND t.relnamespace = 'docstatus'::regnamespace AND NOT t.relispartition")]


def keyed_by_document(table: str, columns: list[str]) -> bool:
    return "document_id" in columns or (table == "documents" and columns == ["id"])


def test_functions_keyed_by_document(conn):
    functions = public_functions(conn)
    assert documented("functions keyed by document") == {n for n, args in functions.items() if "p_document_id" in args}
    assert documented("functions keyed by job") == {
        n for n, args in functions.items() if "p_job_id" in args and "p_document_id" not in args}
    assert documented("functions across documents") == {
        n for n, args in functions.items() if not {"p_job_id", "p_document_id"} & args}


def test_unique_indexes_and_foreign_keys(conn):
    indexes = unique_indexes(conn)
    assert documented("unique indexes keyed by document") == {
        index for table, index, columns, _ in indexes if keyed_by_document(table, columns)}
    assert documented("unique indexes across documents") == {
        index for table, index, columns, has_document in indexes
        if has_document and not keyed_by_document(table, columns)}
    assert documented("reference tables") == {table for table, _, _, has_document in indexes if not has_document}

    foreign_keys = conn.execute(
        "SELECT conname, array(SELECT a.attname FROM unnest(conkey) k JOIN pg_attribute a"
        "                       ON a.attrelid = conrelid AND a.attnum = k)::text[]"
        "  FROM pg_constraint WHERE contype = 'f' AND connamespace = 'docstatus'::regnamespace").fetchall()
    assert documented("foreign keys") == {name for name, _ in foreign_keys}
    assert all(columns == ["document_id"] for _, columns in foreign_keys), "every foreign key is by document"


@pytest.mark.parametrize("block", ["functions keyed by document", "unique indexes across documents"])
def test_the_blocks_are_not_empty(block):
    assert documented(block)
