"""The state machine as a picture, read from the database: ``docstatus diagram``.

``state_diagram(conn)`` returns Mermaid (``fmt="dot"``: Graphviz) text for the six document
states and the moves between them (``document_states`` and ``status_transitions``), and the
extraction job's states. The text is deterministic: the README embeds it, and a test compares.
``state_graphs`` and the ``render_*`` functions are the same in two steps, for pages that draw
their own picture (the dashboard).
"""

from docstatus.diagram.graph import StateGraph, StateNode, state_graphs
from docstatus.diagram.render import FORMATS, render, render_dot, render_mermaid, state_diagram

__all__ = ["FORMATS", "StateGraph", "StateNode", "render", "render_dot", "render_mermaid", "state_diagram",
           "state_graphs"]
