"""State graphs as Mermaid (``stateDiagram-v2``) or Graphviz DOT text, one composite per graph."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import psycopg
import psycopg_pool

from docstatus.client import Client
from docstatus.diagram.graph import StateGraph, state_graphs

FORMATS = ("mermaid", "dot")

_NOT_IDENTIFIER = re.compile(r"[^a-z0-9]+")


def _node_id(graph: StateGraph, state: str) -> str:
    # State names have spaces ('ocr running') and repeat across graphs ('failed').
    return f"{graph.key}_{_NOT_IDENTIFIER.sub('_', state.lower()).strip('_')}"


def render_mermaid(graphs: Sequence[StateGraph]) -> str:
    lines = ["stateDiagram-v2"]
    for graph in graphs:
        lines.append(f'    state "{graph.title}" as {graph.key} {{')
        for node in graph.states:
            lines.append(f'        state "{node.name}" as {_node_id(graph, node.name)}')
            if node.detail:
                lines.append(f"        {_node_id(graph, node.name)} : {node.detail}")
        for node in graph.states:
            if node.initial:
                lines.append(f"        [*] --> {_node_id(graph, node.name)}")
        for source, target in graph.moves:
            lines.append(f"        {_node_id(graph, source)} --> {_node_id(graph, target)}")
        for node in graph.states:
            if node.final:
                lines.append(f"        {_node_id(graph, node.name)} --> [*]")
        lines.append("    }")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graphs: Sequence[StateGraph]) -> str:
    lines = ["digraph docstatus {", "    rankdir=LR;", '    node [shape=box, style=rounded];']
    for graph in graphs:
        lines.append(f"    subgraph cluster_{graph.key} {{")
        lines.append(f"        label={_dot_string(graph.title)};")
        for node in graph.states:
            label = node.name + (f"\\n{node.detail}" if node.detail else "")
            shape = ", peripheries=2" if node.final else ""
            lines.append(f'        {_node_id(graph, node.name)} [label="{label}"{shape}];')
        for node in graph.states:
            if node.initial:
                lines.append(f"        {graph.key}_start [shape=point, label=\"\"];")
                lines.append(f"        {graph.key}_start -> {_node_id(graph, node.name)};")
        for source, target in graph.moves:
            lines.append(f"        {_node_id(graph, source)} -> {_node_id(graph, target)};")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


_RENDERERS: dict[str, Callable[[Sequence[StateGraph]], str]] = {"mermaid": render_mermaid, "dot": render_dot}


def render(graphs: Sequence[StateGraph], fmt: str = "mermaid") -> str:
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown diagram format {fmt!r}: one of {', '.join(FORMATS)}") from None
    return renderer(graphs)


def state_diagram(source: Client | psycopg.Connection | psycopg_pool.ConnectionPool, fmt: str = "mermaid") -> str:
    """The state machine read from the database (a ``Client``, connection or pool) as ``fmt`` text."""
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown diagram format {fmt!r}: one of {', '.join(FORMATS)}")
    return render(state_graphs(source), fmt)
