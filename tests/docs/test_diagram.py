"""`docstatus diagram`: the state machine drawn from the database, as the README embeds it."""

import asyncio
import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from docstatus import AsyncClient, Client, EventKind
from docstatus.cli import main
from docstatus.diagram import render, state_diagram, state_graphs


def test_document_moves_are_what_the_triggers_allow(conn):
    """Each drawn move succeeds as a raw UPDATE of a document in its source state; every other
    pair of states is refused: the picture and the rules cannot disagree."""
    document_graph, _ = state_graphs(conn)
    drawn = set(document_graph.moves)
    pairs = {state.state: (state.text_extraction_status, state.processing_status)
             for state in Client(conn).document_states()}
    conn.execute("ALTER TABLE docstatus.documents DISABLE TRIGGER USER")  # to set up any source state
    document_id = conn.execute(
        "INSERT INTO docstatus.documents (blob_container, blob_name, filename) VALUES ('c', 'b', 'f') RETURNING id"
    ).fetchone()[0]
    conn.execute("ALTER TABLE docstatus.documents ENABLE TRIGGER USER")
    allowed = set()
    for source, (source_text, source_processing) in pairs.items():
        for target, (target_text, target_processing) in pairs.items():
            if source == target:
                continue
            with conn.transaction(force_rollback=True):
                conn.execute("ALTER TABLE docstatus.documents DISABLE TRIGGER USER")
                conn.execute("UPDATE docstatus.documents SET text_extraction_status = %s, processing_status = %s"
                             " WHERE id = %s", (source_text, source_processing, document_id))
                conn.execute("ALTER TABLE docstatus.documents ENABLE TRIGGER USER")
                try:
                    with conn.transaction():
                        conn.execute("UPDATE docstatus.documents SET text_extraction_status = %s,"
                                     " processing_status = %s WHERE id = %s",
                                     (target_text, target_processing, document_id))
                    allowed.add((str(source), str(target)))
                except psycopg.Error as exc:
                    assert exc.sqlstate == "DS001", (source, target, exc)
    assert drawn == allowed
    assert ("uploaded", "queued") in drawn and ("failed", "queued") in drawn
    assert ("uploaded", "ocr running") not in drawn


def test_job_states_come_from_the_transition_table(conn):
    _, job_graph = state_graphs(conn)
    assert [node.name for node in job_graph.states] == ["pending extraction", "done", "failed"]
    assert [node.name for node in job_graph.states if node.initial] == ["pending extraction"]
    assert {node.name for node in job_graph.states if node.final} == {"done", "failed"}
    conn.execute("ALTER TABLE docstatus.status_transitions DISABLE TRIGGER USER")
    conn.execute("INSERT INTO docstatus.status_transitions VALUES ('job', 'failed', 'pending extraction')")
    _, changed = state_graphs(conn)
    assert ("failed", "pending extraction") in changed.moves
    assert "job_failed --> job_pending_extraction" in state_diagram(conn)


def test_mermaid_names_each_state_once_with_its_pair(conn):
    text = state_diagram(conn)
    assert text.startswith("stateDiagram-v2\n")
    assert 'state "ocr running" as document_ocr_running' in text
    assert "document_ocr_running : in progress / ocr running" in text
    assert "[*] --> document_uploaded" in text
    assert "document_completed --> [*]" in text and "job_done --> [*]" in text
    assert "document_llm_running --> document_completed" in text
    assert text == state_diagram(conn)  # deterministic


def test_dot_is_a_graph_of_the_same_moves(conn):
    text = state_diagram(conn, "dot")
    assert text.startswith("digraph docstatus {")
    assert "document_queued -> document_ocr_running;" in text
    assert "job_pending_extraction -> job_failed;" in text
    edges = [line.strip() for line in text.splitlines() if " -> " in line and "_start" not in line]
    assert len(edges) == sum(len(graph.moves) for graph in state_graphs(conn)) == 13
    assert "document_completed [label=\"completed\\ncompleted / done\", peripheries=2];" in text


def test_unknown_format_is_refused(conn):
    with pytest.raises(ValueError, match="unknown diagram format 'svg'"):
        state_diagram(conn, "svg")
    with pytest.raises(ValueError):
        render(state_graphs(conn), "png")


def test_command_prints_what_the_function_returns(db_dsn, conn):
    result = CliRunner().invoke(main, ["diagram", "--dsn", db_dsn])
    assert result.exit_code == 0, result.output
    assert result.output == state_diagram(conn)
    dot = CliRunner().invoke(main, ["diagram", "--dsn", db_dsn, "--format", "dot"])
    assert dot.exit_code == 0 and dot.output == state_diagram(conn, "dot")


def test_command_refuses_a_bad_format_and_a_database_without_the_schema(db_dsn, empty_db_dsn):
    bad = CliRunner().invoke(main, ["diagram", "--dsn", db_dsn, "--format", "svg"])
    assert bad.exit_code == 2 and "'svg' is not one of 'mermaid', 'dot'" in bad.output
    empty = subprocess.run([sys.executable, "-m", "docstatus", "diagram", "--dsn", empty_db_dsn],
                           capture_output=True, text=True)
    assert empty.returncode == 1
    assert empty.stderr.startswith("Error: ") and "document_states" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_client_reads_every_transition_and_the_async_client_the_same(db_dsn, conn):
    client = Client(conn)
    transitions = client.status_transitions()
    assert len(transitions) == conn.execute("SELECT count(*) FROM docstatus.status_transitions").fetchone()[0]
    assert transitions == sorted(transitions, key=lambda t: (t.kind, t.from_status, t.to_status))
    assert {t.kind for t in transitions} == set(EventKind)

    async def read():
        async with await AsyncClient.connect(db_dsn) as async_client:
            return await async_client.status_transitions(), await async_client.document_state_moves()

    assert asyncio.run(read()) == (transitions, client.document_state_moves())
