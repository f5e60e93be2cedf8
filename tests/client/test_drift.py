"""The Python side cannot drift from the database: enums, functions, parameters, row shapes."""

import dataclasses
import inspect
import re

import psycopg
import pytest
from psycopg import sql

from docstatus import (
    Client,
    Document,
    EventDelivery,
    EventKind,
    ExtractionJob,
    JobStatus,
    ProcessingStatus,
    StatusEvent,
    TextExtractionStatus,
)
from docstatus.models import (
    ClaimedJob,
    DocumentListEntry,
    DocumentOverview,
    DocumentResult,
    DocumentsMinute,
    DocumentState,
    DocumentStateInfo,
    FailurePattern,
    MaintenanceAction,
    StatusCount,
    StatusTransition,
    StuckAlert,
    StuckDocument,
)

ENUM_OF_COLUMN = {
    ("documents", "text_extraction_status"): TextExtractionStatus,
    ("documents", "processing_status"): ProcessingStatus,
    ("extraction_jobs", "status"): JobStatus,
    ("status_events", "kind"): EventKind,
    ("status_transitions", "kind"): EventKind,
}


def check_values(conn, table, column):
    """The string literals of the one-column CHECK constraint on docstatus.<table>.<column>."""
    definitions = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
        "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND cardinality(c.conkey) = 1"
        "   AND a.attname = %s",
        (f"docstatus.{table}", column)).fetchall()
    assert len(definitions) == 1, definitions
    return set(re.findall(r"'([^']*)'::text", definitions[0][0]))


@pytest.mark.parametrize("table, column", list(ENUM_OF_COLUMN))
def test_enum_equals_check_constraint(conn, table, column):
    assert {member.value for member in ENUM_OF_COLUMN[table, column]} == check_values(conn, table, column)


@pytest.mark.parametrize("kind, enum", [("text_extraction", TextExtractionStatus),
                                        ("processing", ProcessingStatus), ("job", JobStatus)])
def test_enum_equals_transition_graph(conn, kind, enum):
    named = {status for row in conn.execute(
        "SELECT from_status, to_status FROM docstatus.status_transitions WHERE kind = %s", (kind,))
        for status in row}
    assert named == {member.value for member in enum}


def test_event_kinds_equal_transition_kinds(conn):
    kinds = {row[0] for row in conn.execute("SELECT DISTINCT kind FROM docstatus.status_transitions")}
    assert kinds == {member.value for member in EventKind}


def sql_api_functions(conn):
    """Public functions of schema docstatus: name -> (input names, defaults as SQL text)."""
    rows = conn.execute(
        "SELECT p.proname, coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'), p.pronargs,"
        "       pg_get_expr(p.proargdefaults, 0)"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'docstatus' AND p.proname NOT LIKE '\\_%%' AND p.prorettype <> 'trigger'::regtype"
    ).fetchall()
    functions = {}
    for name, arg_names, modes, input_count, defaults in rows:
        inputs = [arg for arg, mode in zip(arg_names, modes or ["i"] * len(arg_names), strict=True)
                  if mode in ("i", "b")]
        assert len(inputs) == input_count
        assert name not in functions, f"{name} is overloaded: one client method cannot mirror both"
        functions[name] = (inputs, defaults)
    return functions


def client_methods():
    """Client methods that call a SQL function: SQL name -> method."""
    return {method.sql_function: method for _, method in inspect.getmembers(Client, inspect.isfunction)
            if hasattr(method, "sql_function")}


def test_every_sql_function_has_a_client_method_and_back(conn):
    assert set(sql_api_functions(conn)) == set(client_methods())


def test_client_parameters_mirror_sql_names_and_defaults(conn):
    methods = client_methods()
    for name, (inputs, defaults_text) in sql_api_functions(conn).items():
        parameters = list(inspect.signature(methods[name]).parameters.values())[1:]  # without self
        assert [p.name for p in parameters] == [arg.removeprefix("p_") for arg in inputs], name
        sql_defaults = list(conn.execute(sql.SQL("SELECT " + defaults_text)).fetchone()) if defaults_text else []
        python_defaults = [p.default for p in parameters if p.default is not inspect.Parameter.empty]
        assert len(python_defaults) == len(sql_defaults), name
        # Defaults come last in both, and xid8 arrives as text.
        assert [p.default is inspect.Parameter.empty for p in parameters] == (
            [True] * (len(parameters) - len(sql_defaults)) + [False] * len(sql_defaults)), name
        for python_value, sql_value in zip(python_defaults, sql_defaults, strict=True):
            assert python_value == sql_value or str(python_value) == str(sql_value), (name, python_value, sql_value)


@pytest.mark.parametrize("model, relation", [
    (Document, "documents"), (ExtractionJob, "extraction_jobs"), (StatusEvent, "status_events"),
    (EventDelivery, "event_delivery"), (StuckDocument, "stuck_documents"),
    (DocumentResult, "document_results"), (StatusCount, "status_counts"), (DocumentOverview, "document_overview"),
    (FailurePattern, "failure_summary"), (StuckAlert, "stuck_alerts"), (DocumentStateInfo, "document_states"),
    (ClaimedJob, "claimed_job"), (MaintenanceAction, "maintenance_action"),
    (DocumentListEntry, "document_list_entry"), (DocumentsMinute, "documents_minute"),
    (StatusTransition, "status_transitions"),
])
def test_models_have_exactly_the_columns(conn, model, relation):
    columns = [row[0] for row in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", (f"docstatus.{relation}",))]
    assert [field.name for field in dataclasses.fields(model)] == columns


def test_document_state_enum_equals_document_states_in_display_order(conn):
    states = [row[0] for row in conn.execute("SELECT state FROM docstatus.document_states ORDER BY display_order")]
    assert states == [member.value for member in DocumentState]


def test_document_states_spell_the_status_enums(conn):
    rows = conn.execute("SELECT text_extraction_status, processing_status FROM docstatus.document_states").fetchall()
    assert {text for text, _ in rows} == {member.value for member in TextExtractionStatus}
    assert {processing for _, processing in rows} == {member.value for member in ProcessingStatus}


def test_the_pair_checks_accept_exactly_the_document_states(conn):
    """The CHECKs keep literal lists (a CHECK must not read a table); they must name the same pairs.

    Copies of the two tables with their CHECKs but without triggers take every combination of
    the known strings; what they accept must be document_states (all six, or the non-final four).
    """
    conn.execute("CREATE TEMP TABLE pair_probe (LIKE docstatus.documents INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.execute("CREATE TEMP TABLE sla_probe (LIKE docstatus.stage_slas INCLUDING CONSTRAINTS)")
    states = conn.execute(
        "SELECT state, text_extraction_status, processing_status, final FROM docstatus.document_states").fetchall()
    accepted_pairs, accepted_slas = set(), set()
    for text in TextExtractionStatus:
        for processing in ProcessingStatus:
            with conn.transaction(force_rollback=True):
                try:
                    with conn.transaction():
                        conn.execute("INSERT INTO pair_probe (id, blob_container, blob_name, filename,"
                                     " text_extraction_status, processing_status)"
                                     " VALUES (1, 'docs', 'b', 'f', %s, %s)", (text.value, processing.value))
                    accepted_pairs.add((text.value, processing.value))
                except psycopg.errors.CheckViolation:
                    pass
            for state, *_ in states:
                with conn.transaction(force_rollback=True):
                    try:
                        with conn.transaction():
                            conn.execute("INSERT INTO sla_probe VALUES (%s, %s, %s, '1 minute')",
                                         (state, text.value, processing.value))
                        accepted_slas.add((state, text.value, processing.value))
                    except psycopg.errors.CheckViolation:
                        pass
    assert accepted_pairs == {(text, processing) for _, text, processing, _ in states}
    assert accepted_slas == {(state, text, processing) for state, text, processing, final in states if not final}
