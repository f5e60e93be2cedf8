"""The two state machines as plain data, read through ``Client``: nothing here knows a status."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg_pool

from docstatus.client import Client
from docstatus.models import EventKind


@dataclass(frozen=True, slots=True)
class StateNode:
    """One state: ``name`` as the database spells it, ``detail`` a second line (or '')."""

    name: str
    detail: str
    initial: bool
    final: bool


@dataclass(frozen=True, slots=True)
class StateGraph:
    """One state machine: ``key`` names it in identifiers ('document', 'job')."""

    key: str
    title: str
    states: tuple[StateNode, ...]
    moves: tuple[tuple[str, str], ...]


def state_graphs(source: Client | psycopg.Connection | psycopg_pool.ConnectionPool) -> tuple[StateGraph, ...]:
    """The document's six states and the extraction job's, with their moves, in a stable order."""
    client = source if isinstance(source, Client) else Client(source)
    return _document_graph(client), _job_graph(client)


def _document_graph(client: Client) -> StateGraph:
    states = client.document_states()  # display order
    # A document is born with the columns' defaults: the first state of the display order.
    nodes = tuple(StateNode(str(state.state), f"{state.text_extraction_status} / {state.processing_status}",
                            initial=index == 0, final=state.final)
                  for index, state in enumerate(states))
    moves = tuple((str(move.from_state), str(move.to_state)) for move in client.document_state_moves())
    return StateGraph("document", "document", nodes, moves)


def _job_graph(client: Client) -> StateGraph:
    moves = tuple((edge.from_status, edge.to_status) for edge in client.status_transitions()
                  if edge.kind == EventKind.JOB)
    sources = {source for source, _ in moves}
    targets = {target for _, target in moves}
    # A job starts in the state no move leads to and ends in those no move leaves.
    initial = sorted(sources - targets)
    names = initial + sorted((sources | targets) - set(initial))
    nodes = tuple(StateNode(name, "", initial=name not in targets, final=name not in sources) for name in names)
    return StateGraph("job", "extraction job", nodes, moves)
